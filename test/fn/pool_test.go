package fn

import (
	"context"
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dockerclient "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/test"
)

// netnsCmd prints the network namespace the container runs in: the same
// for calls that joined the same holder, as long as the holder lives.
const netnsCmd = "readlink /proc/self/ns/net"

// pooled opens the rig's driver with a pre-fork pool of its busybox, and
// waits until size holders are free.
func (r *rig) pooled(t *testing.T, cfg drivers.Config) drivers.Driver {
	t.Helper()
	if cfg.PreForkImage == "" {
		cfg.PreForkImage = r.image()
	}
	drv := r.open(t, cfg)
	waitFor(t, time.Minute, "pool filled", func() bool { return poolStats(t, drv).Free == int(cfg.PreForkPoolSize) })
	return drv
}

// Fn's TestRunnerDockerPool: calls lease the holders, one each; with every
// holder leased a call gets a network of its own (Fn's AllocPoolId fails,
// fnrun counts a miss), and a fixed pool does not grow; a released holder
// is leased again. Fn reads its pool's ids; here each call says which
// network namespace it runs in.
func TestPoolLease(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, r *rig) {
		drv := r.pooled(t, drivers.Config{PreForkPoolSize: 2})
		ctx := testContext(t, 2*time.Minute)
		var busy []started
		var outs []*test.SyncBuffer
		for range 2 {
			task := r.task("lease", "sh -c '"+netnsCmd+"; sleep 30'")
			out := &test.SyncBuffer{}
			task.Stdout = out
			busy = append(busy, start(t, ctx, drv, task))
			outs = append(outs, out)
		}
		if st := poolStats(t, drv); st.Leased != 2 || st.Free != 0 {
			t.Fatalf("pool %+v with two calls running, want both holders leased", st)
		}
		var leased []string
		for _, out := range outs {
			waitFor(t, 30*time.Second, "a call's namespace", func() bool { return strings.HasSuffix(out.String(), "\n") })
			leased = append(leased, strings.TrimSpace(out.String()))
		}
		if leased[0] == leased[1] {
			t.Fatalf("two calls share the network namespace %s", leased[0])
		}
		third := run(t, ctx, drv, r.task("miss", netnsCmd))
		wantSuccess(t, third)
		if ns := strings.TrimSpace(third.Stdout); slices.Contains(leased, ns) {
			t.Errorf("a call beyond the pool ran in a leased holder's namespace %s", ns)
		}
		if st := poolStats(t, drv); st.Misses != 1 || st.Size != 2 {
			t.Errorf("pool %+v after a call found it empty, want one miss and no growth", st)
		}
		for _, b := range busy {
			b.stop(t)
		}
		waitFor(t, 30*time.Second, "holders free again", func() bool { return poolStats(t, drv).Free == 2 })
		again := run(t, ctx, drv, r.task("again", netnsCmd))
		wantSuccess(t, again)
		if ns := strings.TrimSpace(again.Stdout); !slices.Contains(leased, ns) {
			t.Errorf("a call after the holders were released ran in %s, want one of theirs %v", ns, leased)
		}
		if st := poolStats(t, drv); st.Replacements != 0 || st.Misses != 1 {
			t.Errorf("pool %+v, want no replacement and no new miss", st)
		}
	})
}

// PreForkPoolMax (fnrun's, not Fn's) lets a pool grow on misses, up to
// the bound, and only when asked: Fn's pool never grows.
func TestPoolGrowthOptIn(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, r *rig) {
		drv := r.pooled(t, drivers.Config{PreForkPoolSize: 1, PreForkPoolMax: 2})
		ctx := testContext(t, 2*time.Minute)
		busy := start(t, ctx, drv, r.task("grow", "sleep 30"))
		wantSuccess(t, run(t, ctx, drv, r.task("grow-miss", "true")))
		waitFor(t, 30*time.Second, "pool grown to its bound", func() bool {
			st := poolStats(t, drv)
			return st.Size == 2 && st.Free == 1 && st.Leased == 1
		})
		wantSuccess(t, run(t, ctx, drv, r.task("grown", "true")))
		if st := poolStats(t, drv); st.Misses != 1 {
			t.Errorf("pool %+v, want the grown holder to serve without a second miss", st)
		}
		busy.stop(t)
	})
}

// Fn's use-once pool (PreForkUseOnce): a holder serves one call and is
// then replaced, so no two calls share a network namespace.
func TestPoolUseOnce(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, r *rig) {
		drv := r.pooled(t, drivers.Config{PreForkPoolSize: 1, PreForkUseOnce: 1})
		first := holders(t, drv)
		ctx := testContext(t, 2*time.Minute)
		wantSuccess(t, run(t, ctx, drv, r.task("once", "true")))
		waitFor(t, 30*time.Second, "used holder replaced", func() bool {
			now := holders(t, drv)
			return len(now) == 1 && !slices.Contains(first, now[0]) && poolStats(t, drv).Free == 1
		})
		waitFor(t, 30*time.Second, "used holder removed", func() bool { return !r.exists(t, first[0]) })
		wantSuccess(t, run(t, ctx, drv, r.task("once-again", "true")))
		if st := poolStats(t, drv); st.Misses != 0 || st.Replacements < 1 {
			t.Errorf("pool %+v, want replacements and no miss", st)
		}
	})
}

// Fn's TestRunnerDockerPoolFaulty, and holders that die: a holder killed
// from outside is replaced while calls go on; with holders whose command
// exits at once, calls go on too, and the driver closes cleanly. Such a
// holder looks free for the moment between its start and its exit: a call
// that leased it has its container made again with a network of its own
// when the holder died before the start, and fails with an error wrapping
// ErrContainerGone, which an agent retries, when it died during the start.
// The pool, counting each holder that dies so soon, backs off, so later
// calls get networks of their own.
func TestPoolFaultyHolders(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, r *rig) {
		t.Run("killed", func(t *testing.T) {
			t.Parallel()
			drv := r.pooled(t, drivers.Config{PreForkPoolSize: 2})
			before := holders(t, drv)
			r.killFromOutside(t, before[0])
			waitFor(t, 30*time.Second, "killed holder replaced", func() bool {
				now := holders(t, drv)
				st := poolStats(t, drv)
				return st.Deaths >= 1 && st.Free == 2 && len(now) == 2 && !slices.Contains(now, before[0])
			})
			waitFor(t, 30*time.Second, "killed holder removed", func() bool { return !r.exists(t, before[0]) })
			ctx := testContext(t, time.Minute)
			wantSuccess(t, run(t, ctx, drv, r.task("after-kill", "true")))
		})
		t.Run("command exits", func(t *testing.T) {
			t.Parallel()
			drv := r.open(t, drivers.Config{PreForkPoolSize: 2, PreForkImage: r.image(), PreForkCmd: "true"})
			ctx := testContext(t, time.Minute)
			succeeded := 0
			for i := range 4 {
				out, err := test.Lifecycle(ctx, drv, r.task("faulty", "true"))
				if err == nil {
					err = out.Result.Error()
				}
				switch {
				case err == nil:
					succeeded++
				case !errors.Is(err, drivers.ErrContainerGone):
					t.Errorf("call %d: %v, want success or ErrContainerGone", i, err)
				}
				time.Sleep(500 * time.Millisecond) // Fn's test waits as long between its leases
			}
			if succeeded == 0 {
				t.Error("no call succeeded: none fell back to a network of its own")
			}
			waitFor(t, 30*time.Second, "failing holders counted", func() bool { return poolStats(t, drv).Failures > 0 })
		})
	})
}

// killFromOutside kills a container with the bare client, as an operator
// or the OOM killer would.
func (r *rig) killFromOutside(t *testing.T, id string) {
	t.Helper()
	ctx, cancel := withTimeout()
	defer cancel()
	switch r.name {
	case rtDocker:
		if err := r.docker().KillContainer(dockerclient.KillContainerOptions{ID: id, Context: ctx}); err != nil {
			t.Fatal(err)
		}
	case rtContainerd:
		ctr, err := r.containerd().LoadContainer(r.nsCtx(ctx), id)
		if err != nil {
			t.Fatal(err)
		}
		tk, err := ctr.Task(r.nsCtx(ctx), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := tk.Kill(r.nsCtx(ctx), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
}

// The pool image is pulled when the store lacks it (Fn means to, but its
// pull loop never runs: the image must be there), and the image cleaner
// never evicts it: Fn and fnrun both add it to the exempt images.
func TestPoolImage(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, r *rig) {
		reg := newRegistry(t, r.env["FNRUN_REGISTRY"], "", "")
		ref := reg.derive(t, "fnrun/fn-pool-"+randomID(), "v1", imageSpec{})
		t.Cleanup(func() { r.removeImage(ref) })
		drv := r.pooled(t, drivers.Config{PreForkPoolSize: 1, PreForkImage: ref, ImageCleanMaxSize: 1 << 50})

		ctx := testContext(t, time.Minute)
		cookie := newCookie(t, ctx, drv, r.imageTask("poolimg", ref))
		defer cookie.Close(context.Background())
		if pull, err := cookie.ValidateImage(ctx); err != nil || pull {
			t.Fatalf("ValidateImage of the pool image: pull %v, %v; want it present", pull, err)
		}
		cl, ok := drv.(images.Provider).ImageCleaner()
		if !ok {
			t.Fatal("no image cleaner")
		}
		if _, err := cl.CleanOnce(ctx, images.DryRun()); err != nil {
			t.Fatal(err)
		}
		info, ok := tracked(cl.Snapshot(), ref)
		if !ok {
			t.Fatalf("the cleaner does not track the pool image %s", ref)
		}
		if !info.Exempt {
			t.Errorf("pool image %+v not exempt", info)
		}
		if err := cookie.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if info, _ := tracked(cl.Snapshot(), ref); info.Evictable() {
			t.Errorf("pool image %+v evictable once idle", info)
		}
	})
}

// tracked finds the image with reference ref in a cleaner's snapshot.
func tracked(s images.Snapshot, ref string) (images.ImageInfo, bool) {
	for _, img := range s.Images {
		if hasRef(img.References, ref) {
			return img, true
		}
	}
	return images.ImageInfo{}, false
}
