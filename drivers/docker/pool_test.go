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
	"github.com/fnrun/fnrun/drivers/lifecycle"
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
	if err := d.Pool().Ready(ctx); err != nil {
		t.Fatalf("pool not ready: %v (stats %+v)", err, d.Pool().Stats())
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
	mode = networkMode(t, needEnv(t).bare(t), task.ID)
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

// call is a call started through the driver, as the tests see it: its
// cookie and the container the daemon made for it.
type call struct {
	drivers.Cookie
	bare *docker.Client
	id   string // the container's id
}

// createdMode is the network mode the daemon recorded for the container.
func (c *call) createdMode(t testing.TB) string {
	t.Helper()
	return networkMode(t, c.bare, c.id)
}

// holder is the id of the pool holder whose network namespace the call's
// container joined (network mode "container:<holder id>"), or "" when it
// got a network of its own. It is what the cookie's pool lease names.
func (c *call) holder(t testing.TB) string {
	t.Helper()
	id, joined := strings.CutPrefix(c.createdMode(t), "container:")
	if !joined {
		return ""
	}
	return id
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
// call and result; the test's cleanup closes the cookie.
func startCall(t *testing.T, d *Driver, image, cmd string) (*call, drivers.WaitResult) {
	t.Helper()
	ctx := testCtx(t, 2*time.Minute)
	task := &drivers.Task{ID: "fnrun-call-" + randomID(), ImageRef: image, Cmd: cmd}
	c, err := d.CreateCookie(ctx, task)
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
	bare := needEnv(t).bare(t)
	ctr, err := bare.InspectContainer(task.ID) // the container is named after the task
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &call{Cookie: c, bare: bare, id: ctr.ID}, w
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
		hs := holdersOf(t, bare, d.Settings().Tag)
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
		d := newDriver(t, drivers.Config{}, drivers.WithStopGrace(0))
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
			hs := holdersOf(t, bare, d.Settings().Tag)
			waitFor(t, 10*time.Second, "the used holder removed", func() bool {
				hs = holdersOf(t, bare, d.Settings().Tag)
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
			hs := holdersOf(t, bare, d.Settings().Tag)
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
	old := holdersOf(t, bare, d.Settings().Tag)
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
	now := holdersOf(t, bare, d.Settings().Tag)
	waitFor(t, 10*time.Second, "the dead holder removed", func() bool {
		now = holdersOf(t, bare, d.Settings().Tag)
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
	d := newPooledDriver(t, drivers.Config{PreForkPoolSize: 1, PreForkPoolMax: 2}, drivers.WithStopGrace(0))
	a, _ := startCall(t, d, e.localImage, "sleep 60")
	b, _ := startCall(t, d, e.localImage, "sleep 60")
	if m := a.createdMode(t); !strings.HasPrefix(m, "container:") {
		t.Errorf("first call: network mode %q, want a holder", m)
	}
	if m := b.createdMode(t); strings.HasPrefix(m, "container:") {
		t.Errorf("second call: network mode %q, want a plain network", m)
	}
	if st, _ := d.PoolStats(); st.Leased != 1 {
		t.Errorf("stats %+v: the fallback call holds a lease", st)
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
	for _, ck := range []*call{a, b, c} {
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
	hs := holdersOf(t, bare, d.Settings().Tag)
	if len(hs) != 1 || hs[0].Image != ref {
		t.Fatalf("holders %+v, want one of %s", hs, ref)
	}
}

// TestPoolConfig: a pool without an image holds busybox sleeping, as Fn's
// does (the image was required before the life cycle took the pool over);
// a bad image or command, or a maximum below the size, is refused up front.
func TestPoolConfig(t *testing.T) {
	e := needEnv(t)
	for name, cfg := range map[string]drivers.Config{
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
	// No image: the default. The pool starts filling (pulling busybox, which
	// the test daemon lacks) and closing the driver ends that at once.
	d := newDriver(t, drivers.Config{PreForkPoolSize: 1})
	if pf := d.Settings().PreFork; pf.Image.Familiar != "busybox:latest" || fmt.Sprint(pf.Args) != "[sleep 2147483647]" {
		t.Errorf("default holder %q %q, want busybox sleeping", pf.Image.Familiar, pf.Args)
	}
	start := time.Now()
	if err := d.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Close of a pool filling with the default image took %v", took)
	}
}

// TestPoolClose: closing the driver stops and removes every holder, with a
// pooled call running, and the call ends as cancelled.
func TestPoolClose(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)
	d := newPooledDriver(t, drivers.Config{PreForkPoolSize: 3}, drivers.WithStopGrace(100*time.Millisecond))
	if n := len(holdersOf(t, bare, d.Settings().Tag)); n != 3 {
		t.Fatalf("%d holders, want 3", n)
	}
	c, w := startCall(t, d, e.localImage, "sleep 60")
	if c.holder(t) == "" {
		t.Fatal("the call joined no holder")
	}
	if st, _ := d.PoolStats(); st.Leased != 1 {
		t.Fatalf("stats %+v: the call holds no lease", st)
	}
	start := time.Now()
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("Close took %v", took)
	}
	if left := holdersOf(t, bare, d.Settings().Tag); len(left) != 0 {
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

// TestPoolHolderDiesUnderCall: a running container whose holder dies gets
// a clear error wrapping drivers.ErrContainerGone and never hangs (one
// whose holder died before Run: the suite's HolderDiesBeforeRun).
func TestPoolHolderDiesUnderCall(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)
	killHolder := func(t *testing.T, c *call) {
		t.Helper()
		h := c.holder(t)
		if h == "" {
			t.Fatal("the call joined no holder")
		}
		if err := bare.KillContainer(docker.KillContainerOptions{ID: h, Signal: docker.SIGKILL}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("running", func(t *testing.T) {
		d := newPooledDriver(t, drivers.Config{}, drivers.WithStopGrace(100*time.Millisecond))
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
}

// TestContainersAndKill: the lister shows calls and holders with their
// roles and states, kills only containers of its label tag, and a killed
// call ends with an error while a killed holder is replaced.
func TestContainersAndKill(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)
	d := newPooledDriver(t, drivers.Config{})
	c, w := startCall(t, d, e.localImage, "sleep 60")
	holderID := c.holder(t)
	list, err := d.Containers(testCtx(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var holder, call *drivers.ContainerInfo
	for i := range list {
		switch list[i].ID {
		case holderID:
			holder = &list[i]
		case c.id:
			call = &list[i]
		}
	}
	if len(list) != 2 || holderID == "" || holder == nil || call == nil {
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
	// The dead holder is removed in the background, as its replacement starts.
	waitFor(t, 20*time.Second, "only the new holder listed", func() bool {
		list, err = d.Containers(ctx)
		return err == nil && len(list) == 1 && list[0].Role == drivers.RoleHolder && list[0].ID != holder.ID
	})
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
// driver's labels with role=holder, are named as the pool names them, and
// run the configured image and command on the configured network, as the
// daemon records them; without a command, a holder sleeps.
func TestHolderOptions(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)
	network := "fnrun-holdernet-" + randomID()
	nw, err := bare.CreateNetwork(docker.CreateNetworkOptions{Name: network, Driver: "bridge"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bare.RemoveNetwork(nw.ID) }) // after the driver's cleanup
	prefix := "fnrun-holderopts-" + randomID()
	d := newPooledDriver(t, drivers.Config{PreForkCmd: `sh -c "sleep 1000"`, PreForkNetworks: network},
		drivers.WithExtra(lifecycle.PoolOption(func(c *pool.Config) { c.NamePrefix = prefix })))
	hs := holdersOf(t, bare, d.Settings().Tag)
	if len(hs) != 1 {
		t.Fatalf("%d holders, want 1", len(hs))
	}
	ctr, err := bare.InspectContainer(hs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	o := docker.CreateContainerOptions{Name: strings.TrimPrefix(ctr.Name, "/"), Config: ctr.Config, HostConfig: ctr.HostConfig}
	switch {
	case !strings.HasPrefix(o.Name, prefix+"-") || o.HostConfig.NetworkMode != network:
		t.Errorf("name %q network %q", o.Name, o.HostConfig.NetworkMode)
	case o.HostConfig.LogConfig.Type != "none":
		t.Errorf("log config %+v", o.HostConfig.LogConfig)
	case o.Config.User != unprivilegedUser || !slices.Equal(o.HostConfig.CapDrop, []string{"ALL"}) || !slices.Equal(o.HostConfig.SecurityOpt, []string{"no-new-privileges"}):
		t.Errorf("not unprivileged: user %q caps %v security %v", o.Config.User, o.HostConfig.CapDrop, o.HostConfig.SecurityOpt)
	case o.Config.Labels[drivers.LabelRole] != drivers.RoleHolder || o.Config.Labels[LabelInstance] != d.Instance() || o.Config.Labels[LabelLibrary] != libraryName || o.Config.Labels[LabelTag] != d.Settings().Tag:
		t.Errorf("labels %v", o.Config.Labels)
	case fmt.Sprint(o.Config.Cmd) != "[sh -c sleep 1000]" || o.Config.Image != "127.0.0.1:5000/fnrun/busybox:latest":
		t.Errorf("image %q cmd %q", o.Config.Image, o.Config.Cmd)
	case !o.HostConfig.Init:
		t.Error("no init: the holder would ignore SIGTERM")
	}
	// The default command, as New configures it (lifecycle.Configure, its
	// first step), without starting a second pool for it.
	s, err := lifecycle.Configure(driverName, drivers.Config{PreForkPoolSize: 1, PreForkImage: e.image}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.PreFork.Args; fmt.Sprint(got) != "[sleep 2147483647]" {
		t.Errorf("default command %q", got)
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
	hs := holdersOf(t, bare, d.Settings().Tag)
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
	h := c.holder(t)
	if h == "" {
		t.Fatal("the call joined no holder")
	}
	ctr, err := bare.InspectContainer(h)
	if err != nil {
		t.Fatal(err)
	}
	// The lease's network is the pool's record, checked in package pool;
	// here, what the daemon says: the call is in the namespace of a holder
	// on one of the networks.
	if on[ctr.HostConfig.NetworkMode] != h || !slices.Contains(names, ctr.HostConfig.NetworkMode) {
		t.Errorf("call joined holder %s on network %q, holders on %v", h, ctr.HostConfig.NetworkMode, on)
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
	d := newPooledDriver(t, drivers.Config{Docker: p.endpoint()}, drivers.WithCallTimeout(time.Second), drivers.WithLogger(logs.Entry()))
	hs := holdersOf(t, bare, d.Settings().Tag)
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
	// The life cycle's holder watch logs each break (lifecycle/holders.go).
	if !strings.Contains(logs.String(), "holder watch broke") {
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
