package containerd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
)

// netLeftovers lists the pinned network namespaces and the CNI address
// leases of a label tag, but for the namespaces in keep (a live pool's
// holders).
func (in *inspector) netLeftovers(env testEnv, tag string, keep map[string]bool) ([]string, error) {
	var out []string
	host := hostConfig(env.namespace, tag)
	err := filepath.WalkDir(host.NetNSDir(), func(path string, e os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if !e.IsDir() && !keep[path] {
			out = append(out, "netns "+path)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	keepIDs := map[string]bool{}
	for p := range keep {
		keepIDs[filepath.Base(p)] = true
	}
	prefix := host.IDPrefix()
	leases, err := cniLeases(env)
	if err != nil {
		return nil, err
	}
	for ip, id := range leases {
		if strings.HasPrefix(id, prefix) && !keepIDs[id] {
			out = append(out, "cni lease "+ip+" "+id)
		}
	}
	slices.Sort(out)
	return out, nil
}

// cniLeases reads host-local's leases: address -> CNI container id.
func cniLeases(env testEnv) (map[string]string, error) {
	out := map[string]string{}
	ipFile := regexp.MustCompile(`^[0-9.]+$|:`)
	err := filepath.WalkDir(env.cniLeases, func(path string, e os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if e.IsDir() || !ipFile.MatchString(e.Name()) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil // released while walking
			}
			return err
		}
		id, _, _ := strings.Cut(string(b), "\n")
		out[e.Name()] = strings.TrimSpace(id)
		return nil
	})
	return out, err
}

// waitNoNetLeftovers fails the test if namespaces or leases of tag are
// still there after a short settle time.
func waitNoNetLeftovers(t *testing.T, in *inspector, env testEnv, tag string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left, err := in.netLeftovers(env, tag, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("network leftovers: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runOutput runs task with d and returns its standard output.
func runOutput(t *testing.T, d *Driver, task *drivers.Task) string {
	t.Helper()
	var out, errOut syncBuf
	task.Stdout, task.Stderr = &out, &errOut
	res := runTaskResult(t, d, task)
	if res.Status() != drivers.StatusSuccess {
		t.Fatalf("status %s (%v); stdout %q stderr %q", res.Status(), res.Error(), out.String(), errOut.String())
	}
	return out.String()
}

// runTaskResult runs task through the whole life cycle and returns the
// result, whatever it is.
func runTaskResult(t *testing.T, d *Driver, task *drivers.Task) drivers.RunResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := d.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if need, err := c.ValidateImage(ctx); err != nil || need {
		t.Fatalf("ValidateImage: %v, %v", need, err)
	}
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res := w.Wait(ctx)
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return res
}

// TestCNINetwork: a plain container gets eth0 with an address of the
// environment's bridge network and reaches the bridge's gateway; once it
// is closed, its address lease and its namespace are gone.
func TestCNINetwork(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	// Root with the runtime's default capabilities, so that ping may open
	// its raw socket; the network is the same for every container.
	d := newTestDriver(t, env, drivers.Config{DisableUnprivilegedContainers: true})
	tag := d.Settings().Tag
	out := runOutput(t, d, &drivers.Task{
		ID:       "fnrun-cni-" + randomID(),
		ImageRef: env.localImage,
		Cmd:      `sh -c 'ls /sys/class/net | tr "\n" " "; echo; ip -4 -o addr show dev eth0; ping -c 1 -W 5 10.88.0.1 >/dev/null && echo gateway-ok'`,
	})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("output %q", out)
	}
	if got := strings.Fields(lines[0]); !slices.Equal(got, []string{"eth0", "lo"}) {
		t.Errorf("interfaces %q, want eth0 and lo", got)
	}
	if !regexp.MustCompile(`inet 10\.88\.\d+\.\d+/16`).MatchString(lines[1]) {
		t.Errorf("eth0: %q, want an address in 10.88.0.0/16", lines[1])
	}
	if lines[2] != "gateway-ok" {
		t.Errorf("gateway 10.88.0.1 not reachable: %q", lines[2])
	}
	waitNoNetLeftovers(t, in, env, tag)
}

// TestCNIDisableNet: a task without network gets loopback only, and no
// CNI lease is taken for it.
func TestCNIDisableNet(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	d := newTestDriver(t, env, drivers.Config{})
	before, err := cniLeases(env)
	if err != nil {
		t.Fatal(err)
	}
	prefix := hostConfig(env.namespace, d.Settings().Tag).IDPrefix()
	task := &drivers.Task{ID: "fnrun-cni-" + randomID(), ImageRef: env.localImage, Cmd: "ls /sys/class/net", NoNetwork: true}
	var out syncBuf
	task.Stdout = &out
	ctx := context.Background()
	c, err := d.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leases, err := cniLeases(env)
	if err != nil {
		t.Fatal(err)
	}
	for ip, id := range leases {
		if _, old := before[ip]; !old && strings.HasPrefix(id, prefix) {
			t.Errorf("a task without network took CNI lease %s", ip)
		}
	}
	if res := w.Wait(ctx); res.Status() != drivers.StatusSuccess {
		t.Fatalf("status %s: %v", res.Status(), res.Error())
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(out.String()); !slices.Equal(got, []string{"lo"}) {
		t.Errorf("output %q, want lo only", got)
	}
	waitNoNetLeftovers(t, in, env, d.Settings().Tag)
}

// TestCNIConfiguration: networking asked for and unusable is an error at
// New (package cninet tests each way it can be unusable); a host with no CNI
// configuration at the default place runs with loopback only.
func TestCNIConfiguration(t *testing.T) {
	env := requireEnv(t)
	newDriver := func(cfg drivers.Config) (*Driver, error) {
		cfg.Containerd, cfg.ContainerdNamespace = env.address, env.namespace
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d, err := New(ctx, cfg, drivers.WithLogger(testLogger(t)))
		if err == nil {
			t.Cleanup(func() { _ = d.Close() })
		}
		return d, err
	}
	t.Run("BrokenConfig", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "10-bad.conflist"), []byte("{not json"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := newDriver(drivers.Config{CNIConfDir: dir, CNIBinDir: env.cniBin})
		if !errors.Is(err, drivers.ErrInvalidConfig) {
			t.Fatalf("got %v, want ErrInvalidConfig", err)
		}
	})
	t.Run("NoneAtDefaultPlace", func(t *testing.T) {
		if files, _ := filepath.Glob(filepath.Join(drivers.DefaultCNIConfDir, "*.conf*")); len(files) > 0 {
			t.Skipf("this host has a CNI configuration in %s", drivers.DefaultCNIConfDir)
		}
		d, err := newDriver(drivers.Config{ContainerLabelTag: "cni-none-" + randomID()})
		if err != nil {
			t.Fatal(err)
		}
		if d.d.cni != nil {
			t.Fatal("networking enabled without a configuration")
		}
		out := runOutput(t, d, &drivers.Task{ID: "fnrun-cni-" + randomID(), ImageRef: env.localImage, Cmd: "ls /sys/class/net"})
		if strings.TrimSpace(out) != "lo" {
			t.Errorf("interfaces %q, want lo only", out)
		}
	})
}

// TestCNILeakReaped: the namespaces and address leases that a crashed
// instance left are torn down by the next instance with its label tag;
// another tag's are left alone.
func TestCNILeakReaped(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	tag := "cni-reap-" + randomID()
	ctx := context.Background()

	// A crashed instance: its attachments are made, then it goes away
	// without tearing them down (its Close only sees cookies and holders).
	crashed := newTestDriver(t, env, drivers.Config{ContainerLabelTag: tag, InstanceId: "crashed-" + randomID()})
	var leaked []string
	for i := 0; i < 2; i++ {
		ns, err := crashed.d.cni.Attach(ctx)
		if err != nil {
			t.Fatal(err)
		}
		leaked = append(leaked, ns.Path())
	}
	// A process killed between creating a namespace's file and pinning
	// the namespace leaves a plain file.
	unpinned := filepath.Join(filepath.Dir(leaked[0]), hostConfig(env.namespace, tag).IDPrefix()+randomID())
	if err := os.WriteFile(unpinned, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	other := newTestDriver(t, env, drivers.Config{ContainerLabelTag: "other-" + tag})
	kept, err := other.d.cni.Attach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kept.Release(context.Background()) })
	left, err := in.netLeftovers(env, tag, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 5 { // three namespace files, two leases
		t.Fatalf("before the reaper: %v, want three namespace files and two leases", left)
	}

	newTestDriver(t, env, drivers.Config{ContainerLabelTag: tag})
	waitNoNetLeftovers(t, in, env, tag)
	for _, path := range append(leaked, unpinned) {
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s: %v, want removed", path, err)
		}
	}
	if _, err := os.Stat(kept.Path()); err != nil {
		t.Errorf("another tag's namespace: %v", err)
	}
}

// TestCNIReleasedOnCreateFailure: a container that cannot be created (its
// id is taken) leaves no network behind. A second open cookie of the same
// driver with the id is refused before anything is made; another driver
// instance (here with a tag of its own) asks the daemon, which refuses
// after the network was set up: that network must be released.
func TestCNIReleasedOnCreateFailure(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	d := newTestDriver(t, env, drivers.Config{})
	tag := d.Settings().Tag
	other := newTestDriver(t, env, drivers.Config{ContainerLabelTag: "other-" + tag})
	otherTag := other.Settings().Tag
	ctx := context.Background()
	id := "fnrun-cni-" + randomID()
	first, err := d.CreateCookie(ctx, &drivers.Task{ID: id, ImageRef: env.localImage, Cmd: "true"})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close(ctx)
	if err := first.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	for _, dr := range []*Driver{d, other} {
		second, err := dr.CreateCookie(ctx, &drivers.Task{ID: id, ImageRef: env.localImage, Cmd: "true"})
		if err != nil {
			t.Fatal(err)
		}
		defer second.Close(ctx)
		if err := second.CreateContainer(ctx); !errors.Is(err, drivers.ErrAlreadyExists) {
			t.Fatalf("two containers with one id: %v, want ErrAlreadyExists", err)
		}
		if err := second.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	left, err := in.netLeftovers(env, tag, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 { // the first container's namespace and lease
		t.Errorf("network objects %v, want the first container's only", left)
	}
	if left, err := in.netLeftovers(env, otherTag, nil); err != nil || len(left) != 0 {
		t.Errorf("network objects of the create the daemon refused: %v, %v", left, err)
	}
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitNoNetLeftovers(t, in, env, tag)
	if left, err := in.allLeftovers(ctx, env, otherTag, false); err != nil || len(left) != 0 {
		t.Errorf("leftovers of the refused create: %v, %v", left, err)
	}
}
