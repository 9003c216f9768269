package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/pool"
	"github.com/fnrun/fnrun/test"
)

// newPooledDriver builds a driver with a pre-fork pool of the test image
// (size 1 unless cfg says otherwise) and waits until the pool is full.
func newPooledDriver(t testing.TB, cfg drivers.Config, opts ...Option) *Driver {
	t.Helper()
	e := needEnv(t)
	if cfg.PreForkPoolSize == 0 {
		cfg.PreForkPoolSize = 1
	}
	if cfg.PreForkImage == "" {
		cfg.PreForkImage = e.image
	}
	d := newDriver(t, cfg, opts...)
	waitPoolReady(t, d)
	return d
}

func waitPoolReady(t testing.TB, d *Driver) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.pool.Ready(ctx); err != nil {
		t.Fatalf("pool not ready: %v (stats %+v)", err, d.pool.Stats())
	}
}

// netnsOf runs `readlink /proc/self/ns/net` through the driver and returns
// the namespace, with the network mode the container was created with.
func netnsOf(t *testing.T, d *Driver, image string) (ns, mode string) {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	out := &syncWriter{}
	task := &drivers.Task{ID: "fnrun-netns-" + randomID(), ImageRef: image, Cmd: "readlink /proc/self/ns/net", Stdout: out}
	c, err := d.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	mode = c.(*cookie).createdMode(t)
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res := w.Wait(ctx); res.Status() != drivers.StatusSuccess {
		t.Fatalf("status %s: %v", res.Status(), res.Error())
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	ns = strings.TrimSpace(out.String())
	if !strings.HasPrefix(ns, "net:[") {
		t.Fatalf("readlink printed %q", ns)
	}
	return ns, mode
}

// createdMode is the network mode the daemon recorded for the container.
func (c *cookie) createdMode(t *testing.T) string {
	t.Helper()
	c.mu.Lock()
	id := c.id
	c.mu.Unlock()
	ctr, err := c.d.inspectContainer(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return ctr.HostConfig.NetworkMode
}

// holderNetns reads a running holder's network namespace with an exec.
func holderNetns(t *testing.T, bare *docker.Client, id string) string {
	t.Helper()
	ex, err := bare.CreateExec(docker.CreateExecOptions{Container: id, Cmd: []string{"readlink", "/proc/self/ns/net"}, AttachStdout: true, AttachStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := bare.StartExec(ex.ID, docker.StartExecOptions{OutputStream: &out, ErrorStream: &errOut}); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out.String())
}

// holdersOf lists the holder containers carrying tag, running or not.
func holdersOf(t testing.TB, bare *docker.Client, tag string) []docker.APIContainers {
	t.Helper()
	list, err := bare.ListContainers(docker.ListContainersOptions{All: true, Filters: map[string][]string{"label": {
		LabelTag + "=" + tag, drivers.LabelRole + "=" + drivers.RoleHolder,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startCall creates and runs a call through the driver and returns its
// cookie and result; the test's cleanup closes the cookie.
func startCall(t *testing.T, d *Driver, image, cmd string) (*cookie, drivers.WaitResult) {
	t.Helper()
	ctx := testCtx(t, 2*time.Minute)
	c, err := d.CreateCookie(ctx, &drivers.Task{ID: "fnrun-call-" + randomID(), ImageRef: image, Cmd: cmd})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	if need, err := c.ValidateImage(ctx); err != nil {
		t.Fatalf("ValidateImage: %v", err)
	} else if need {
		if err := c.PullImage(ctx); err != nil {
			t.Fatalf("PullImage: %v", err)
		}
	}
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c.(*cookie), w
}

// TestPoolNetns: pooled runs join the holder's network namespace, so two
// in a row share it with the holder; runs without the pool each get their
// own; use-once gives a fresh one to every run.
func TestPoolNetns(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)

	t.Run("pooled", func(t *testing.T) {
		d := newPooledDriver(t, drivers.Config{})
		ns1, mode1 := netnsOf(t, d, e.localImage)
		ns2, mode2 := netnsOf(t, d, e.localImage)
		hs := holdersOf(t, bare, d.cfg.ContainerLabelTag)
		if len(hs) != 1 {
			t.Fatalf("%d holders, want 1", len(hs))
		}
		want := "container:" + hs[0].ID
		if mode1 != want || mode2 != want {
			t.Errorf("network modes %q, %q, want %q", mode1, mode2, want)
		}
		hns := holderNetns(t, bare, hs[0].ID)
		if ns1 != ns2 || ns1 != hns {
			t.Errorf("namespaces %s, %s and holder's %s differ", ns1, ns2, hns)
		}
		if st, _ := d.PoolStats(); st.Misses != 0 || st.Free != 1 || st.Leased != 0 {
			t.Errorf("stats %+v, want no miss and the holder free", st)
		}
	})
	// Namespace inode numbers are reused once a namespace is gone, so two
	// namespaces are only told apart by number while both exist; and a
	// namespace whose holder and callers are all removed is gone, so a run
	// in another is in a fresh one whatever its number.
	t.Run("unpooled", func(t *testing.T) {
		d := newDriver(t, drivers.Config{}, WithStopGrace(0))
		if _, ok := d.PoolStats(); ok {
			t.Error("PoolStats reports a pool on a driver without one")
		}
		first, _ := startCall(t, d, e.localImage, "sleep 60")
		ns1 := holderNetns(t, bare, first.id)
		ns2, mode := netnsOf(t, d, e.localImage)
		if ns1 == ns2 {
			t.Errorf("two runs without the pool share namespace %s", ns1)
		}
		if strings.HasPrefix(mode, "container:") || strings.HasPrefix(first.createdMode(t), "container:") {
			t.Errorf("network mode %q without a pool", mode)
		}
	})
	t.Run("use-once", func(t *testing.T) {
		d := newPooledDriver(t, drivers.Config{PreForkUseOnce: 1})
		var used []string
		for i := 0; i < 3; i++ {
			waitPoolReady(t, d) // the replacement of the last holder
			hs := holdersOf(t, bare, d.cfg.ContainerLabelTag)
			waitFor(t, 10*time.Second, "the used holder removed", func() bool {
				hs = holdersOf(t, bare, d.cfg.ContainerLabelTag)
				return len(hs) == 1
			})
			h := hs[0].ID
			if slices.Contains(used, h) {
				t.Fatalf("run %d: holder %s served before", i, h)
			}
			used = append(used, h)
			hns := holderNetns(t, bare, h)
			ns, mode := netnsOf(t, d, e.localImage)
			if mode != "container:"+h || ns != hns {
				t.Fatalf("run %d: mode %q namespace %s, want holder %s's %s", i, mode, ns, h, hns)
			}
		}
		st, _ := d.PoolStats()
		if st.Misses != 0 || st.Replacements != 3 {
			t.Errorf("stats %+v, want no miss and 3 replacements", st)
		}
		// The used holders are gone, not left stopped: their namespaces
		// went with them.
		waitFor(t, 10*time.Second, "used holders removed", func() bool {
			hs := holdersOf(t, bare, d.cfg.ContainerLabelTag)
			return len(hs) == 1 && !slices.Contains(used, hs[0].ID)
		})
	})
}

// TestPoolHolderKilled: a holder killed from outside is replaced and the
// pool keeps serving.
func TestPoolHolderKilled(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)
	d := newPooledDriver(t, drivers.Config{})
	old := holdersOf(t, bare, d.cfg.ContainerLabelTag)
	if len(old) != 1 {
		t.Fatalf("%d holders, want 1", len(old))
	}
	if err := bare.KillContainer(docker.KillContainerOptions{ID: old[0].ID, Signal: docker.SIGKILL}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the death noticed", func() bool {
		st, _ := d.PoolStats()
		return st.Deaths == 1
	})
	waitPoolReady(t, d)
	now := holdersOf(t, bare, d.cfg.ContainerLabelTag)
	waitFor(t, 10*time.Second, "the dead holder removed", func() bool {
		now = holdersOf(t, bare, d.cfg.ContainerLabelTag)
		return len(now) == 1
	})
	if now[0].ID == old[0].ID || now[0].State != "running" {
		t.Fatalf("holder %s (%s) after killing %s", now[0].ID, now[0].State, old[0].ID)
	}
	_, mode := netnsOf(t, d, e.localImage)
	if mode != "container:"+now[0].ID {
		t.Errorf("run after the replacement: network mode %q, want the new holder %s", mode, now[0].ID)
	}
	if st, _ := d.PoolStats(); st.Misses != 0 || st.Replacements != 1 {
		t.Errorf("stats %+v, want 1 replacement and no miss", st)
	}
}

// TestPoolExhausted: with every holder leased, a call falls back to a
// network of its own and the miss is counted; the pool then grows up to
// PreForkPoolMax, and the next call joins the new holder.
func TestPoolExhausted(t *testing.T) {
	e := needEnv(t)
	d := newPooledDriver(t, drivers.Config{PreForkPoolSize: 1, PreForkPoolMax: 2}, WithStopGrace(0))
	a, _ := startCall(t, d, e.localImage, "sleep 60")
	b, _ := startCall(t, d, e.localImage, "sleep 60")
	if m := a.createdMode(t); !strings.HasPrefix(m, "container:") {
		t.Errorf("first call: network mode %q, want a holder", m)
	}
	if m := b.createdMode(t); strings.HasPrefix(m, "container:") {
		t.Errorf("second call: network mode %q, want a plain network", m)
	}
	if b.lease != nil {
		t.Error("the fallback call holds a lease")
	}
	waitFor(t, 30*time.Second, "the pool to grow", func() bool {
		st, _ := d.PoolStats()
		return st.Misses == 1 && st.Size == 2 && st.Free == 1 && st.Leased == 1
	})
	c, _ := startCall(t, d, e.localImage, "sleep 60")
	if m := c.createdMode(t); !strings.HasPrefix(m, "container:") || m == a.createdMode(t) {
		t.Errorf("third call: network mode %q, want the new holder (first call has %q)", m, a.createdMode(t))
	}
	if st, _ := d.PoolStats(); st.Misses != 1 || st.Leased != 2 {
		t.Errorf("stats %+v, want 1 miss and 2 leased", st)
	}
	for _, ck := range []*cookie{a, b, c} {
		if err := ck.Close(context.Background()); err != nil {
			t.Error(err)
		}
	}
	if st, _ := d.PoolStats(); st.Leased != 0 || st.Free != 2 {
		t.Errorf("stats after closing %+v, want both holders free", st)
	}
}

// pushPoolImage pushes the local test image to the loopback registry under
// a tag of its own and removes that tag from the daemon, so that only the
// registry has it.
func pushPoolImage(t *testing.T, e testEnv) string {
	t.Helper()
	bare := e.bare(t)
	repo, tag := e.registry+"/fnrun/pool-holder", randomID()
	if err := bare.TagImage(e.localImage, docker.TagImageOptions{Repo: repo, Tag: tag}); err != nil {
		t.Fatal(err)
	}
	ref := repo + ":" + tag
	err := bare.PushImage(docker.PushImageOptions{Name: repo, Tag: tag, OutputStream: io.Discard}, docker.AuthConfiguration{ServerAddress: e.registry})
	if rmErr := bare.RemoveImageExtended(ref, docker.RemoveImageOptions{}); rmErr != nil {
		t.Fatal(rmErr)
	}
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	t.Cleanup(func() {
		_ = bare.RemoveImageExtended(ref, docker.RemoveImageOptions{})
		deleteFromRegistry(t, e.registry, "fnrun/pool-holder", tag)
	})
	return ref
}

// deleteFromRegistry deletes a tag's manifest from the loopback registry
// (plain HTTP, delete enabled).
func deleteFromRegistry(t testing.TB, registry, repo, tag string) {
	req, _ := http.NewRequest(http.MethodHead, "http://"+registry+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Logf("registry cleanup of %s:%s: %v", repo, tag, err)
		return
	}
	resp.Body.Close()
	digest := resp.Header.Get("Docker-Content-Digest")
	if digest == "" {
		return
	}
	req, _ = http.NewRequest(http.MethodDelete, "http://"+registry+"/v2/"+repo+"/manifests/"+digest, nil)
	if resp, err = http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	http.DefaultClient.CloseIdleConnections()
}

// TestPoolPullsImage: the pool pulls its image from the registry when the
// daemon lacks it.
func TestPoolPullsImage(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)
	ref := pushPoolImage(t, e)
	if _, err := bare.InspectImage(ref); !errors.Is(err, docker.ErrNoSuchImage) {
		t.Fatalf("pool image present before the test: %v", err)
	}
	d := newPooledDriver(t, drivers.Config{PreForkImage: ref})
	if _, err := bare.InspectImage(ref); err != nil {
		t.Fatalf("pool image after the pool filled: %v", err)
	}
	hs := holdersOf(t, bare, d.cfg.ContainerLabelTag)
	if len(hs) != 1 || hs[0].Image != ref {
		t.Fatalf("holders %+v, want one of %s", hs, ref)
	}
}

// TestPoolConfig: a pool needs its image; a bad command is refused up front.
func TestPoolConfig(t *testing.T) {
	e := needEnv(t)
	for name, cfg := range map[string]drivers.Config{
		"no image":  {PreForkPoolSize: 1},
		"bad image": {PreForkPoolSize: 1, PreForkImage: "BusyBox"},
		"bad cmd":   {PreForkPoolSize: 1, PreForkImage: e.image, PreForkCmd: "sleep 'forever"},
		"max<size":  {PreForkPoolSize: 2, PreForkPoolMax: 1, PreForkImage: e.image},
	} {
		cfg.Docker = e.host
		if d, err := New(context.Background(), cfg); !errors.Is(err, drivers.ErrInvalidConfig) {
			if d != nil {
				_ = d.Close()
			}
			t.Errorf("%s: %v, want ErrInvalidConfig", name, err)
		}
	}
}

// TestPoolClose: closing the driver stops and removes every holder, with a
// pooled call running, and the call ends as cancelled.
func TestPoolClose(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)
	d := newPooledDriver(t, drivers.Config{PreForkPoolSize: 3}, WithStopGrace(100*time.Millisecond))
	if n := len(holdersOf(t, bare, d.cfg.ContainerLabelTag)); n != 3 {
		t.Fatalf("%d holders, want 3", n)
	}
	c, w := startCall(t, d, e.localImage, "sleep 60")
	if c.lease == nil {
		t.Fatal("the call holds no lease")
	}
	start := time.Now()
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("Close took %v", took)
	}
	if left := holdersOf(t, bare, d.cfg.ContainerLabelTag); len(left) != 0 {
		t.Errorf("holders left after Close: %d", len(left))
	}
	if res := w.Wait(context.Background()); res.Status() != drivers.StatusCancelled {
		t.Errorf("call ended by Close: %s (%v), want cancelled", res.Status(), res.Error())
	}
	if err := c.Close(context.Background()); err != nil {
		t.Errorf("cookie Close after driver Close: %v", err)
	}
	if st, ok := d.PoolStats(); !ok || st.Free+st.Leased+st.Starting != 0 {
		t.Errorf("stats after Close: %+v", st)
	}
}

// TestPoolHolderDiesUnderCall: a container whose holder dies gets a clear
// error wrapping drivers.ErrContainerGone, while running and at Run, and
// never hangs.
func TestPoolHolderDiesUnderCall(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)
	killHolder := func(t *testing.T, c *cookie) {
		t.Helper()
		if c.lease == nil {
			t.Fatal("the call holds no lease")
		}
		if err := bare.KillContainer(docker.KillContainerOptions{ID: c.lease.Holder().ID, Signal: docker.SIGKILL}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("running", func(t *testing.T) {
		d := newPooledDriver(t, drivers.Config{}, WithStopGrace(100*time.Millisecond))
		c, w := startCall(t, d, e.localImage, "sleep 60")
		killHolder(t, c)
		ctx := testCtx(t, 30*time.Second)
		res := w.Wait(ctx)
		if ctx.Err() != nil {
			t.Fatal("Wait hung after the holder died")
		}
		if res.Status() != drivers.StatusError || !errors.Is(res.Error(), drivers.ErrContainerGone) || !errors.Is(res.Error(), pool.ErrHolderDied) {
			t.Fatalf("result %s (%v), want error wrapping ErrContainerGone", res.Status(), res.Error())
		}
		if err := c.Close(ctx); err != nil {
			t.Fatal(err)
		}
		waitPoolReady(t, d) // replaced
	})
	t.Run("before run", func(t *testing.T) {
		d := newPooledDriver(t, drivers.Config{})
		ctx := testCtx(t, time.Minute)
		ck, err := d.CreateCookie(ctx, &drivers.Task{ID: "fnrun-dead-" + randomID(), ImageRef: e.localImage, Cmd: "true"})
		if err != nil {
			t.Fatal(err)
		}
		defer ck.Close(context.Background())
		if err := ck.CreateContainer(ctx); err != nil {
			t.Fatal(err)
		}
		c := ck.(*cookie)
		killHolder(t, c)
		waitFor(t, 10*time.Second, "the death noticed", func() bool { return leaseDead(c.lease) })
		_, err = ck.Run(ctx)
		if !errors.Is(err, drivers.ErrContainerGone) {
			t.Fatalf("Run after the holder died: %v, want ErrContainerGone", err)
		}
		if err := ck.Close(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// TestContainersAndKill: the lister shows calls and holders with their
// roles and states, kills only containers of its label tag, and a killed
// call ends with an error while a killed holder is replaced.
func TestContainersAndKill(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)
	d := newPooledDriver(t, drivers.Config{})
	c, w := startCall(t, d, e.localImage, "sleep 60")
	list, err := d.Containers(testCtx(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var holder, call *drivers.ContainerInfo
	for i := range list {
		switch list[i].ID {
		case c.lease.Holder().ID:
			holder = &list[i]
		case c.id:
			call = &list[i]
		}
	}
	if len(list) != 2 || holder == nil || call == nil {
		t.Fatalf("Containers: %+v, want the holder and the call", list)
	}
	if holder.Role != drivers.RoleHolder || holder.State != drivers.StateRunning || holder.Instance != d.Instance() || holder.Image != e.image {
		t.Errorf("holder %+v", *holder)
	}
	if call.Role != drivers.RoleCall || call.State != drivers.StateRunning || call.Instance != d.Instance() || call.Image != e.localImage || call.Created.IsZero() {
		t.Errorf("call %+v", *call)
	}

	// Not ours: no labels, or another label tag.
	ctx := testCtx(t, time.Minute)
	for name, labels := range map[string]map[string]string{
		"unlabelled": nil,
		"other tag":  {LabelLibrary: libraryName, LabelTag: "other-" + randomID(), LabelInstance: d.Instance()},
	} {
		ctr, err := bare.CreateContainer(docker.CreateContainerOptions{Name: "fnrun-foreign-" + randomID(), Context: ctx,
			Config: &docker.Config{Image: e.localImage, Cmd: []string{"true"}, Labels: labels}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = bare.RemoveContainer(docker.RemoveContainerOptions{ID: ctr.ID, Force: true}) })
		if err := d.KillContainer(ctx, ctr.ID); !errors.Is(err, drivers.ErrContainerGone) {
			t.Errorf("%s: KillContainer: %v, want ErrContainerGone", name, err)
		}
		if _, err := bare.InspectContainer(ctr.ID); err != nil {
			t.Errorf("%s container touched: %v", name, err)
		}
	}
	if err := d.KillContainer(ctx, "fnrun-no-such-"+randomID()); !errors.Is(err, drivers.ErrContainerGone) {
		t.Errorf("KillContainer of a missing container: %v", err)
	}

	if err := d.KillContainer(ctx, call.ID); err != nil {
		t.Fatalf("KillContainer(call): %v", err)
	}
	if res := w.Wait(ctx); res.Status() == drivers.StatusSuccess {
		t.Error("a killed call reported success")
	}
	if err := d.KillContainer(ctx, holder.ID); err != nil {
		t.Fatalf("KillContainer(holder): %v", err)
	}
	waitFor(t, 20*time.Second, "the killed holder replaced", func() bool {
		st, _ := d.PoolStats()
		return st.Deaths == 1 && st.Free == 1
	})
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	list, err = d.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Role != drivers.RoleHolder || list[0].ID == holder.ID {
		t.Errorf("Containers after the kills: %+v, want only the new holder", list)
	}
}

// TestPoolReapsLeakedHolders: holders of a dead instance with the same
// label tag are removed at start, like its calls.
func TestPoolReapsLeakedHolders(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)
	tag := "reap-holders-" + randomID()
	ctx := testCtx(t, time.Minute)
	ctr, err := bare.CreateContainer(docker.CreateContainerOptions{Name: "fnrun-holder-dead-" + randomID(), Context: ctx,
		Config: &docker.Config{Image: e.localImage, Cmd: []string{"sleep", "60"}, Labels: map[string]string{
			LabelLibrary: libraryName, LabelTag: tag, LabelInstance: "dead", drivers.LabelRole: drivers.RoleHolder,
		}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bare.RemoveContainer(docker.RemoveContainerOptions{ID: ctr.ID, Force: true}) })
	if err := bare.StartContainer(ctr.ID, nil); err != nil {
		t.Fatal(err)
	}
	d := newPooledDriver(t, drivers.Config{ContainerLabelTag: tag})
	waitFor(t, 20*time.Second, "the leaked holder removed", func() bool {
		_, err := bare.InspectContainer(ctr.ID)
		return errors.As(err, new(*docker.NoSuchContainer))
	})
	hs := holdersOf(t, bare, tag)
	if len(hs) != 1 || hs[0].Labels[LabelInstance] != d.Instance() {
		t.Errorf("holders %+v, want only this instance's", hs)
	}
}

// TestHolderOptions: holders are unprivileged, log nothing, carry the
// driver's labels with role=holder, and run the configured command on the
// configured network.
func TestHolderOptions(t *testing.T) {
	e := needEnv(t)
	d := newDriver(t, drivers.Config{})
	d.cfg.PreForkPoolSize, d.cfg.PreForkImage, d.cfg.PreForkCmd = 1, e.image, `sh -c "sleep 1000"`
	a, err := newHolderAdapter(d)
	if err != nil {
		t.Fatal(err)
	}
	o := a.holderOptions(pool.HolderSpec{Name: "h", Network: "n1"})
	switch {
	case o.Name != "h" || o.HostConfig.NetworkMode != "n1":
		t.Errorf("name %q network %q", o.Name, o.HostConfig.NetworkMode)
	case o.HostConfig.LogConfig.Type != "none":
		t.Errorf("log config %+v", o.HostConfig.LogConfig)
	case o.Config.User != unprivilegedUser || len(o.HostConfig.CapDrop) != 1 || len(o.HostConfig.SecurityOpt) != 1:
		t.Errorf("not unprivileged: user %q caps %v security %v", o.Config.User, o.HostConfig.CapDrop, o.HostConfig.SecurityOpt)
	case o.Config.Labels[drivers.LabelRole] != drivers.RoleHolder || o.Config.Labels[LabelInstance] != d.Instance() || o.Config.Labels[LabelLibrary] != libraryName:
		t.Errorf("labels %v", o.Config.Labels)
	case fmt.Sprint(o.Config.Cmd) != "[sh -c sleep 1000]" || o.Config.Image != "127.0.0.1:5000/fnrun/busybox:latest":
		t.Errorf("image %q cmd %q", o.Config.Image, o.Config.Cmd)
	}
	d.cfg.PreForkCmd = ""
	if a, _ = newHolderAdapter(d); fmt.Sprint(a.cmd) != "[sleep 2147483647]" {
		t.Errorf("default command %q", a.cmd)
	}
}

// TestPoolNetworks: holders are spread over PreForkNetworks, and a call
// that joins a holder is on the holder's network.
func TestPoolNetworks(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)
	var names []string
	for i := 0; i < 2; i++ {
		name := "fnrun-poolnet-" + randomID()
		nw, err := bare.CreateNetwork(docker.CreateNetworkOptions{Name: name, Driver: "bridge"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = bare.RemoveNetwork(nw.ID) })
		names = append(names, name)
	}
	d := newPooledDriver(t, drivers.Config{PreForkPoolSize: 2, PreForkNetworks: strings.Join(names, " ")})
	hs := holdersOf(t, bare, d.cfg.ContainerLabelTag)
	on := map[string]string{} // network -> holder
	for _, h := range hs {
		ctr, err := bare.InspectContainer(h.ID)
		if err != nil {
			t.Fatal(err)
		}
		on[ctr.HostConfig.NetworkMode] = h.ID
	}
	if len(hs) != 2 || on[names[0]] == "" || on[names[1]] == "" {
		t.Fatalf("holders on %v, want one on each of %v", on, names)
	}
	c, _ := startCall(t, d, e.localImage, "sleep 60")
	ctr, err := bare.InspectContainer(c.lease.Holder().ID)
	if err != nil {
		t.Fatal(err)
	}
	if c.lease.Holder().Network != ctr.HostConfig.NetworkMode || !slices.Contains(names, c.lease.Holder().Network) {
		t.Errorf("lease on network %q, holder on %q", c.lease.Holder().Network, ctr.HostConfig.NetworkMode)
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The driver is closed before the cleanup removes the networks.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPoolWatchSurvivesDroppedConnections: a holder's watch that breaks
// with the connection (a daemon restart, a proxy) is set up again instead
// of taking the holder for dead, and still sees a real death afterwards.
func TestPoolWatchSurvivesDroppedConnections(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)
	p := newDaemonProxy(t, e.host, true)
	var logs test.LogCapture
	d := newPooledDriver(t, drivers.Config{Docker: p.endpoint()}, WithCallTimeout(time.Second), WithLogger(logs.Entry()))
	hs := holdersOf(t, bare, d.cfg.ContainerLabelTag)
	if len(hs) != 1 {
		t.Fatalf("%d holders", len(hs))
	}
	for i := 0; i < 3; i++ {
		p.cut()
		time.Sleep(300 * time.Millisecond)
	}
	// A daemon that stops answering for a while.
	p.hanging.Store(true)
	p.cut()
	time.Sleep(1500 * time.Millisecond)
	p.hanging.Store(false)
	p.cut()
	time.Sleep(time.Second)
	if st, _ := d.PoolStats(); st.Deaths != 0 || st.Free != 1 {
		t.Fatalf("stats %+v after dropped connections, want no death", st)
	}
	if !strings.Contains(logs.String(), "watching a holder broke") {
		t.Fatal("the watch never broke: the test proves nothing")
	}
	if err := bare.KillContainer(docker.KillContainerOptions{ID: hs[0].ID, Signal: docker.SIGKILL}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the death noticed through the new watch", func() bool {
		st, _ := d.PoolStats()
		return st.Deaths == 1
	})
}
