package containerd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/remotes/docker"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/pool"
)

// poolDriver is a test driver with the pre-fork pool on (holders of the
// local test image unless cfg names another), filled before it returns.
func poolDriver(t testing.TB, env testEnv, cfg drivers.Config, opts ...Option) *Driver {
	t.Helper()
	if cfg.PreForkPoolSize == 0 {
		cfg.PreForkPoolSize = 1
	}
	if cfg.PreForkImage == "" {
		cfg.PreForkImage = env.localImage
	}
	d := newTestDriver(t, env, cfg, opts...)
	waitPool(t, d, func(s pool.Stats) bool { return s.Free >= int(cfg.PreForkPoolSize) })
	return d
}

// waitPool waits until the pool's figures satisfy ok.
func waitPool(t testing.TB, d *Driver, ok func(pool.Stats) bool) pool.Stats {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, on := d.PoolStats()
		if !on {
			t.Fatal("the driver runs no pool")
		}
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool never got there: %+v", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// netnsTask prints the container's network namespace.
func netnsTask(env testEnv) *drivers.Task {
	return &drivers.Task{ID: "fnrun-pool-" + randomID(), ImageRef: env.localImage, Cmd: "readlink /proc/self/ns/net"}
}

func netnsOf(t *testing.T, d *Driver, env testEnv) string {
	t.Helper()
	return strings.TrimSpace(runOutput(t, d, netnsTask(env)))
}

// hostNetNS is how a container sees the namespace pinned at path.
func hostNetNS(t *testing.T, path string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("net:[%d]", st.Ino)
}

// holders lists the pool's holders through the driver's ContainerLister.
func holders(t *testing.T, d *Driver) []drivers.ContainerInfo {
	t.Helper()
	all, err := d.Containers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []drivers.ContainerInfo
	for _, c := range all {
		if c.Role == drivers.RoleHolder && c.Instance == d.Settings().Instance {
			out = append(out, c)
		}
	}
	return out
}

// oneHolder waits until the pool has exactly one holder, running (a dead
// one is removed in the background), and returns it.
func oneHolder(t *testing.T, d *Driver) drivers.ContainerInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h := holders(t, d)
		if len(h) == 1 && h[0].State == drivers.StateRunning {
			return h[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("holders %+v, want one running", h)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// loadTask returns the task of container id.
func loadTask(t *testing.T, in *inspector, id string) ctrd.Task {
	t.Helper()
	ctx := in.ctx(context.Background())
	ctr, err := in.client.LoadContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// killTask kills a container's task from outside, as an operator would.
func killTask(t *testing.T, in *inspector, id string) {
	t.Helper()
	if err := loadTask(t, in, id).Kill(in.ctx(context.Background()), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
}

// TestPoolSharesNamespace: two pooled runs in a row join the one holder's
// namespace; without the pool each run has its own.
func TestPoolSharesNamespace(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	d := poolDriver(t, env, drivers.Config{PreForkPoolSize: 1})
	a, b := netnsOf(t, d, env), netnsOf(t, d, env)
	if a != b {
		t.Errorf("pooled runs in %s and %s, want the holder's namespace twice", a, b)
	}
	h := holders(t, d)
	if len(h) != 1 {
		t.Fatalf("holders %+v, want one", h)
	}
	if s, _ := d.PoolStats(); s.Misses != 0 {
		t.Errorf("misses %d, want 0", s.Misses)
	}
	if path := h[0].Labels[LabelNetNS]; path == "" || hostNetNS(t, path) != a {
		t.Errorf("runs in %s, holder's namespace is at %q", a, path)
	}

	// Without the pool: a run while another container is still running
	// (so that the kernel cannot hand its namespace's number out again)
	// gets a namespace of its own.
	plain := newTestDriver(t, env, drivers.Config{})
	if _, on := plain.PoolStats(); on {
		t.Fatal("pool on without PreForkPoolSize")
	}
	_, _, sid := startSleeperID(t, plain, env)
	c := taskNetNS(t, in, sid)
	e := netnsOf(t, plain, env)
	if c == e || c == a {
		t.Errorf("runs without the pool in %s and %s (pool's %s), want fresh namespaces", c, e, a)
	}
}

// taskNetNS is the network namespace of container id's running task, read
// on the host.
func taskNetNS(t *testing.T, in *inspector, id string) string {
	t.Helper()
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", loadTask(t, in, id).Pid()))
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// TestPoolUseOnce: with PreForkUseOnce every lease gets a fresh holder,
// hence a fresh namespace. (Namespaces are told apart by holder: the
// kernel may give a new namespace the number of one that is gone.)
func TestPoolUseOnce(t *testing.T) {
	env := requireEnv(t)
	d := poolDriver(t, env, drivers.Config{PreForkPoolSize: 1, PreForkUseOnce: 1})
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		waitPool(t, d, func(s pool.Stats) bool { return s.Free == 1 })
		h := oneHolder(t, d)
		if seen[h.ID] {
			t.Fatalf("run %d: holder %s used again", i, h.ID)
		}
		seen[h.ID] = true
		want := hostNetNS(t, h.Labels[LabelNetNS])
		if ns := netnsOf(t, d, env); ns != want {
			t.Fatalf("run %d in %s, want the fresh holder's %s", i, ns, want)
		}
	}
	s := waitPool(t, d, func(s pool.Stats) bool { return s.Free == 1 })
	if s.Misses != 0 || s.Replacements != 3 {
		t.Errorf("stats %+v, want no miss and three replacements", s)
	}
}

// TestPoolHolderKilled: a holder killed from outside is replaced, and the
// pool keeps serving from the new one.
func TestPoolHolderKilled(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	d := poolDriver(t, env, drivers.Config{PreForkPoolSize: 1})
	old := oneHolder(t, d)
	killTask(t, in, old.ID)
	waitPool(t, d, func(s pool.Stats) bool { return s.Deaths == 1 && s.Free == 1 })
	now := oneHolder(t, d)
	if now.ID == old.ID {
		t.Fatalf("holder %s still there after its kill", old.ID)
	}
	ns := netnsOf(t, d, env)
	if want := hostNetNS(t, now.Labels[LabelNetNS]); ns != want {
		t.Errorf("run in %s, want the new holder's %s", ns, want)
	}
	if s, _ := d.PoolStats(); s.Misses != 0 {
		t.Errorf("misses %d, want 0", s.Misses)
	}
}

// startSleeper creates and runs a long container and returns its cookie
// and wait result; the test closes it.
func startSleeper(t *testing.T, d *Driver, env testEnv) (drivers.Cookie, drivers.WaitResult) {
	t.Helper()
	c, w, _ := startSleeperID(t, d, env)
	return c, w
}

// startSleeperID is startSleeper that also returns the container's id;
// edits change the task first.
func startSleeperID(t *testing.T, d *Driver, env testEnv, edits ...func(*drivers.Task)) (drivers.Cookie, drivers.WaitResult, string) {
	t.Helper()
	ctx := context.Background()
	task := &drivers.Task{ID: "fnrun-pool-" + randomID(), ImageRef: env.localImage, Cmd: "sleep 120"}
	for _, edit := range edits {
		edit(task)
	}
	id := task.ID
	c, err := d.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, w, id
}

// TestPoolSharesShim: a pooled call runs in its holder's shim (no shim of
// its own), and the shim goes once the driver has closed, holder and call
// removed.
func TestPoolSharesShim(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	d := poolDriver(t, env, drivers.Config{PreForkPoolSize: 1})
	holder := oneHolder(t, d)
	c, _, id := startSleeperID(t, d, env)
	holderShim, callShim := shimOf(t, in, holder.ID), shimOf(t, in, id)
	if holderShim != callShim {
		t.Fatalf("call in shim %d, holder in shim %d: want one shim", callShim, holderShim)
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(holderShim, 0); err != nil {
		t.Fatalf("the holder's shim went with the call: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(holderShim, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("shim %d still runs after the driver closed", holderShim)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// shimOf returns the pid of the shim that runs a container's task: the
// parent of its main process.
func shimOf(t *testing.T, in *inspector, id string) int {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", loadTask(t, in, id).Pid()))
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ppid ...: comm may hold spaces, so read after ')'.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		t.Fatal(err)
	}
	return ppid
}

// TestPoolExhausted: with every holder leased, a container falls back to a
// fresh CNI network and the miss is counted; the pool then grows up to
// PreForkPoolMax and the next container is pooled again.
func TestPoolExhausted(t *testing.T) {
	env := requireEnv(t)
	d := poolDriver(t, env, drivers.Config{PreForkPoolSize: 1, PreForkPoolMax: 2})
	holderNS := hostNetNS(t, oneHolder(t, d).Labels[LabelNetNS])
	busy, _ := startSleeper(t, d, env)
	if s, _ := d.PoolStats(); s.Leased != 1 || s.Free != 0 {
		t.Fatalf("stats %+v, want the one holder leased", s)
	}
	ns := netnsOf(t, d, env)
	if ns == holderNS {
		t.Fatalf("a container joined the leased holder's namespace")
	}
	s := waitPool(t, d, func(s pool.Stats) bool { return s.Size == 2 && s.Free == 1 })
	if s.Misses != 1 {
		t.Errorf("misses %d, want 1", s.Misses)
	}
	// Served from the grown pool: no new miss.
	netnsOf(t, d, env)
	if s, _ := d.PoolStats(); s.Misses != 1 || s.Size != 2 {
		t.Errorf("stats %+v, want the grown pool to serve without a miss", s)
	}
	if err := busy.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s, _ := d.PoolStats(); s.Free != 2 || s.Leased != 0 {
		t.Errorf("stats %+v after closing, want both holders free", s)
	}
}

// pushAs pushes the local image src to the loopback registry as dst.
func pushAs(t *testing.T, in *inspector, src, dst string) {
	t.Helper()
	ctx := in.ctx(context.Background())
	img, err := in.client.GetImage(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost)),
	})
	if err := in.client.Push(ctx, dst, img.Target(), ctrd.WithResolver(resolver)); err != nil {
		t.Fatalf("push %s: %v", dst, err)
	}
	// Remove the pushed manifest from the registry afterwards (its blobs
	// are the source image's, shared).
	t.Cleanup(func() {
		host, rest, _ := strings.Cut(dst, "/")
		repo, _, _ := strings.Cut(rest, ":")
		req, err := http.NewRequest(http.MethodDelete, "http://"+host+"/v2/"+repo+"/manifests/"+img.Target().Digest.String(), nil)
		if err != nil {
			t.Error(err)
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("delete %s from the registry: %v", dst, err)
			return
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Errorf("delete %s from the registry: %s", dst, resp.Status)
		}
	})
}

// TestPoolImagePulled: a pool image absent from the store is pulled from
// the registry before the first holder starts.
func TestPoolImagePulled(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	ref := env.registry + "/fnrun/pool-" + randomID() + ":latest"
	pushAs(t, in, env.localImage, ref)
	ctx := in.ctx(context.Background())
	if _, err := in.client.GetImage(ctx, ref); err == nil {
		t.Fatalf("%s present before the test", ref)
	}
	t.Cleanup(func() { _ = in.client.ImageService().Delete(in.ctx(context.Background()), ref) })
	d := poolDriver(t, env, drivers.Config{PreForkPoolSize: 1, PreForkImage: ref})
	if _, err := in.client.GetImage(ctx, ref); err != nil {
		t.Fatalf("pool image not pulled: %v", err)
	}
	if h := holders(t, d); len(h) != 1 || h[0].Image != ref {
		t.Errorf("holders %+v, want one of %s", h, ref)
	}
}

// TestPoolCloseLeavesNothing: after Driver.Close no holder, task,
// snapshot, lease, network namespace or CNI address lease of the driver
// remains, even with a container still open when Close is called.
func TestPoolCloseLeavesNothing(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	d := poolDriver(t, env, drivers.Config{PreForkPoolSize: 2})
	tag := d.Settings().Tag
	netnsOf(t, d, env)
	startSleeper(t, d, env)
	h := holders(t, d)
	if len(h) != 2 {
		t.Fatalf("holders %+v, want two", h)
	}
	left, err := in.allLeftovers(context.Background(), env, tag, false)
	if err != nil {
		t.Fatal(err)
	}
	// Two holders (a container, task, snapshot, namespace and address
	// lease each) and a pooled call (a container, task, snapshot and /etc
	// file folder).
	if len(left) != 14 {
		t.Fatalf("before Close: %v, want 14 objects (meaningful check)", left)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	left, err = in.allLeftovers(context.Background(), env, tag, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Fatalf("after Close: %v", left)
	}
	for _, c := range h {
		if _, err := os.Stat(c.Labels[LabelNetNS]); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("holder namespace %s: %v", c.Labels[LabelNetNS], err)
		}
	}
}

// TestPoolHolderDiesWhileLeased: a running container whose holder is
// killed ends at once with an error wrapping ErrContainerGone (one whose
// holder died before Run: the suite's HolderDiesBeforeRun).
func TestPoolHolderDiesWhileLeased(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	d := poolDriver(t, env, drivers.Config{PreForkPoolSize: 1})

	c, w := startSleeper(t, d, env)
	killTask(t, in, oneHolder(t, d).ID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	res := w.Wait(ctx)
	if ctx.Err() != nil {
		t.Fatal("Wait hung on a container whose holder died")
	}
	if res.Status() != drivers.StatusError || !errors.Is(res.Error(), drivers.ErrContainerGone) {
		t.Fatalf("status %s, error %v; want error wrapping ErrContainerGone", res.Status(), res.Error())
	}
	t.Logf("ended %v after the kill: %v", time.Since(start).Round(time.Millisecond), res.Error())
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestPoolLeftoversReaped: the holders of an instance that crashed (a
// child process killed with its pool full) are removed, with their
// namespaces and address leases, by the next instance with its tag.
func TestPoolLeftoversReaped(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	tag := "pool-reap-" + randomID()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCrashWithPool$", "-test.v")
	cmd.Env = append(os.Environ(), "FNRUN_CRASH_HELPER_TAG="+tag)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if sc.Text() == "POOL READY" {
				ok = true
				break
			}
		}
		ready <- ok
		for sc.Scan() {
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatal("helper ended without filling its pool")
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("helper never filled its pool")
	}
	_ = cmd.Process.Kill() // a crash: no Close
	_ = cmd.Wait()

	left, err := in.allLeftovers(context.Background(), env, tag, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 10 { // two holders: container, task, snapshot, namespace, lease
		t.Fatalf("the crashed instance left %v, want two holders' worth (meaningful check)", left)
	}
	newTestDriver(t, env, drivers.Config{ContainerLabelTag: tag})
	deadline := time.Now().Add(30 * time.Second)
	for {
		left, err = in.allLeftovers(context.Background(), env, tag, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leftovers of the crashed instance remain: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestHelperCrashWithPool is the crashed instance of
// TestPoolLeftoversReaped; it does nothing in a normal run.
func TestHelperCrashWithPool(t *testing.T) {
	tag := os.Getenv("FNRUN_CRASH_HELPER_TAG")
	if tag == "" {
		t.Skip("helper of TestPoolLeftoversReaped")
	}
	env := requireEnv(t)
	cfg := drivers.Config{
		Containerd: env.address, ContainerdNamespace: env.namespace,
		CNIConfDir: env.cniConf, CNIBinDir: env.cniBin,
		ContainerLabelTag: tag, PreForkPoolSize: 2, PreForkImage: env.localImage,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Pool().Ready(ctx); err != nil {
		t.Fatal(err)
	}
	fmt.Println("POOL READY")
	time.Sleep(time.Minute) // killed before this ends
}
