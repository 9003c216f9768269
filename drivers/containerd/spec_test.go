package containerd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/lifecycle"
)

func u64(v uint64) *uint64 { return &v }

// createAndLoadSpec creates task's container with d and returns the spec
// containerd recorded for it, and the container's labels.
func createAndLoadSpec(t *testing.T, d *Driver, in *inspector, task *drivers.Task, modify func(*ContainerOptions)) (*oci.Spec, map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := d.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	if modify != nil {
		modify(c.ContainerOptions().(*ContainerOptions))
	}
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	ctr, err := in.client.LoadContainer(in.ctx(ctx), task.ID)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := ctr.Spec(in.ctx(ctx))
	if err != nil {
		t.Fatal(err)
	}
	labels, err := ctr.Labels(in.ctx(ctx))
	if err != nil {
		t.Fatal(err)
	}
	return spec, labels
}

func findMount(spec *oci.Spec, dst string) (specs.Mount, bool) {
	for _, m := range spec.Mounts {
		if m.Destination == dst {
			return m, true
		}
	}
	return specs.Mount{}, false
}

func rlimit(spec *oci.Spec, kind string) (specs.POSIXRlimit, bool) {
	for _, r := range spec.Process.Rlimits {
		if r.Type == kind {
			return r, true
		}
	}
	return specs.POSIXRlimit{}, false
}

// TestSpecEveryKnob creates a container with every task knob set and reads
// back the OCI spec containerd stored.
func TestSpecEveryKnob(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	d := newTestDriver(t, env, drivers.Config{EnableReadOnlyRootFs: true, MaxTmpFsInodes: 4096, InstanceId: "spec-instance"})
	vol := t.TempDir()
	uds := t.TempDir()
	task := &drivers.Task{
		ID:                "fnrun-spec-" + randomID(),
		ImageRef:          env.localImage,
		Cmd:               `sh -c 'echo "a b"' x`,
		Env:               map[string]string{"FOO": "bar baz", "PATH": "/custom/bin"},
		Dir:               "/tmp",
		MemoryBytes:       64 << 20,
		MilliCPUs:         250,
		MaxPIDs:           42,
		MaxOpenFiles:      u64(321),
		MaxLockedMemory:   u64(65536),
		MaxPendingSignals: u64(77),
		MaxMessageQueue:   u64(8192),
		TmpFsSizeMB:       16,
		Mounts:            [][2]string{{vol, "/data"}},
		UDSHost:           uds,
		UDSDest:           "/run/fnrun",
	}
	spec, labels := createAndLoadSpec(t, d, in, task, nil)
	p := spec.Process

	// Command: tini first, then the image's entrypoint (none) and the task's
	// arguments, quoting kept.
	wantArgs := []string{InitPath, "--", "sh", "-c", `echo "a b"`, "x"}
	if d.d.opts.init == "" {
		wantArgs = wantArgs[2:]
	}
	if !reflect.DeepEqual(p.Args, wantArgs) {
		t.Errorf("args %q, want %q", p.Args, wantArgs)
	}
	if !slices.Contains(p.Env, "FOO=bar baz") || !slices.Contains(p.Env, "PATH=/custom/bin") {
		t.Errorf("env %q lacks the task's variables", p.Env)
	}
	if n := countPrefix(p.Env, "PATH="); n != 1 {
		t.Errorf("env has %d PATH entries, want the task's to replace the image's", n)
	}
	if p.Cwd != "/tmp" {
		t.Errorf("cwd %q", p.Cwd)
	}
	if spec.Hostname != task.ID {
		t.Errorf("hostname %q", spec.Hostname)
	}

	// Security.
	if p.User.UID != 1000 || p.User.GID != 1000 {
		t.Errorf("user %d:%d, want 1000:1000", p.User.UID, p.User.GID)
	}
	if c := p.Capabilities; c != nil && (len(c.Bounding)+len(c.Effective)+len(c.Permitted)+len(c.Inheritable)+len(c.Ambient)) != 0 {
		t.Errorf("capabilities %+v, want none", c)
	}
	if !p.NoNewPrivileges {
		t.Error("no-new-privileges not set")
	}
	if spec.Linux.Seccomp == nil {
		t.Error("no seccomp profile")
	}

	// Limits.
	r := spec.Linux.Resources
	if r.Memory == nil || r.Memory.Limit == nil || *r.Memory.Limit != 64<<20 {
		t.Errorf("memory %+v, want limit 64MiB", r.Memory)
	} else if r.Memory.Swap == nil || *r.Memory.Swap != 64<<20 {
		t.Errorf("memory+swap %v, want equal to memory (no swap)", r.Memory.Swap)
	}
	if r.CPU == nil || r.CPU.Quota == nil || r.CPU.Period == nil || *r.CPU.Quota != 25000 || *r.CPU.Period != 100000 {
		t.Errorf("cpu %+v, want 25000/100000", r.CPU)
	}
	if r.Pids == nil || r.Pids.Limit != 42 {
		t.Errorf("pids %+v, want 42", r.Pids)
	}
	for kind, want := range map[string]uint64{"RLIMIT_NOFILE": 321, "RLIMIT_MEMLOCK": 65536, "RLIMIT_SIGPENDING": 77, "RLIMIT_MSGQUEUE": 8192} {
		if l, ok := rlimit(spec, kind); !ok || l.Hard != want || l.Soft != want {
			t.Errorf("%s = %+v, want %d", kind, l, want)
		}
	}
	if spec.Linux.CgroupsPath != "/"+env.namespace+"/"+task.ID {
		t.Errorf("cgroups path %q", spec.Linux.CgroupsPath)
	}

	// Filesystems.
	if !spec.Root.Readonly {
		t.Error("root is not read-only")
	}
	if m, ok := findMount(spec, "/tmp"); !ok || m.Type != "tmpfs" || !slices.Contains(m.Options, "size=16m") || !slices.Contains(m.Options, "nr_inodes=4096") || !slices.Contains(m.Options, "mode=1777") {
		t.Errorf("/tmp mount %+v, want a 16m tmpfs with 4096 inodes", m)
	}
	if m, ok := findMount(spec, "/data"); !ok || m.Type != "bind" || m.Source != vol || !slices.Contains(m.Options, "rw") {
		t.Errorf("volume mount %+v", m)
	}
	if m, ok := findMount(spec, "/run/fnrun"); !ok || m.Type != "bind" || m.Source != uds {
		t.Errorf("unix socket mount %+v", m)
	}
	// This host's mode: cgroup2 in a cgroup namespace of its own on a v2
	// host (TestSpecCgroupModes covers every mode).
	mode := hostCgroupMode()
	if m, ok := findMount(spec, "/sys/fs/cgroup"); !ok || m.Type != cgroupMount(mode).Type || !slices.Contains(m.Options, "ro") {
		t.Errorf("cgroup mount %+v, want a read-only %s mount", m, cgroupMount(mode).Type)
	}
	if hasCgroupNS(spec) != (mode == cgroups.Unified) {
		t.Errorf("namespaces %+v: a cgroup namespace of its own only on a v2 host", spec.Linux.Namespaces)
	}
	if d.d.opts.init != "" {
		if m, ok := findMount(spec, InitPath); !ok || m.Source != d.d.opts.init || !slices.Contains(m.Options, "ro") {
			t.Errorf("init mount %+v", m)
		}
	}

	// A namespace of its own, pinned by the driver and set up by CNI.
	var netns *specs.LinuxNamespace
	for i, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			netns = &spec.Linux.Namespaces[i]
		}
	}
	if netns == nil {
		t.Errorf("no network namespace")
	} else if _, own := d.d.cni.OwnNS(netns.Path); !own || labels[LabelNetNS] != netns.Path {
		t.Errorf("network namespace %+v (label %q), want one the driver pinned", netns, labels[LabelNetNS])
	}

	// Labels.
	for k, v := range map[string]string{LabelLibrary: "fnrun", LabelDriver: DriverName, LabelTag: d.Settings().Tag, LabelInstance: "spec-instance", drivers.LabelRole: drivers.RoleCall} {
		if labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, labels[k], v)
		}
	}
	snaps, err := in.leftovers(context.Background(), d.Settings().Tag)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(snaps, "snapshot "+task.ID) {
		t.Errorf("root snapshot is not labelled: %v", snaps)
	}
}

func countPrefix(list []string, prefix string) int {
	n := 0
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

// TestSpecDefaults checks what a task with no knob gets: no tmpfs, a
// writable root, the image's command, no limits.
func TestSpecDefaults(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	d := newTestDriver(t, env, drivers.Config{})
	task := &drivers.Task{ID: "fnrun-spec-" + randomID(), ImageRef: env.localImage, NoNetwork: true}
	spec, _ := createAndLoadSpec(t, d, in, task, nil)
	if spec.Root.Readonly {
		t.Error("root is read-only by default")
	}
	if _, ok := findMount(spec, "/tmp"); ok {
		t.Error("a /tmp tmpfs without TmpFsSize or a read-only root")
	}
	if r := spec.Linux.Resources; r.Memory != nil || (r.CPU != nil && r.CPU.Quota != nil) || r.Pids != nil {
		t.Errorf("limits without knobs: %+v", r)
	}
	if len(spec.Process.Args) == 0 || spec.Process.Args[len(spec.Process.Args)-1] != "sh" {
		t.Errorf("args %q, want the image's command (sh)", spec.Process.Args)
	}
	if spec.Process.User.UID != 1000 {
		t.Errorf("uid %d, want 1000", spec.Process.User.UID)
	}
}

// TestSpecPrivileged checks DisableUnprivilegedContainers: the image's
// user (root here) with containerd's default capabilities.
func TestSpecPrivileged(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	d := newTestDriver(t, env, drivers.Config{DisableUnprivilegedContainers: true})
	spec, _ := createAndLoadSpec(t, d, in, &drivers.Task{ID: "fnrun-spec-" + randomID(), ImageRef: env.localImage, Cmd: "true"}, nil)
	p := spec.Process
	if p.User.UID != 0 || p.User.GID != 0 {
		t.Errorf("user %d:%d, want the image's (0:0)", p.User.UID, p.User.GID)
	}
	if p.Capabilities == nil || !slices.Contains(p.Capabilities.Bounding, "CAP_CHOWN") {
		t.Errorf("capabilities %+v, want containerd's defaults", p.Capabilities)
	}
	if p.NoNewPrivileges {
		t.Error("no-new-privileges set for a privileged container")
	}
}

// TestContainerOptionsModifiable changes the options before create: extra
// spec options and a network namespace to join (what the pool will do).
func TestContainerOptionsModifiable(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	d := newTestDriver(t, env, drivers.Config{})
	task := &drivers.Task{ID: "fnrun-spec-" + randomID(), ImageRef: env.localImage, Cmd: "true"}
	spec, labels := createAndLoadSpec(t, d, in, task, func(o *ContainerOptions) {
		o.SpecOpts = append(o.SpecOpts, oci.WithAnnotations(map[string]string{"fnrun.test": "yes"}))
		o.NetNSPath = "/proc/1/ns/net"
		o.Labels["extra"] = "label"
	})
	if spec.Annotations["fnrun.test"] != "yes" {
		t.Errorf("annotations %v: added spec option not applied", spec.Annotations)
	}
	found := false
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			found = ns.Path == "/proc/1/ns/net"
		}
	}
	if !found {
		t.Errorf("namespaces %+v, want the network namespace joined by path", spec.Linux.Namespaces)
	}
	if labels["extra"] != "label" {
		t.Errorf("labels %v", labels)
	}
}

// TestNetworkProvider makes a container join the namespace a provider
// hands out, and checks the lease is released at Close.
func TestNetworkProvider(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	p := &fakeNetwork{path: "/proc/self/ns/net"}
	d := newTestDriver(t, env, drivers.Config{}, WithNetworkProvider(p))
	task := &drivers.Task{ID: "fnrun-spec-" + randomID(), ImageRef: env.localImage, Cmd: "true"}
	ctx := context.Background()
	c, err := d.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	ctr, err := in.client.LoadContainer(in.ctx(ctx), task.ID)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := ctr.Spec(in.ctx(ctx))
	if err != nil {
		t.Fatal(err)
	}
	joined := false
	for _, ns := range spec.Linux.Namespaces {
		joined = joined || (ns.Type == specs.NetworkNamespace && ns.Path == p.path)
	}
	if !joined {
		t.Errorf("namespaces %+v, want the provider's", spec.Linux.Namespaces)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if p.acquired != 1 || p.released != 1 {
		t.Errorf("acquired %d, released %d; want 1 and 1", p.acquired, p.released)
	}

	// DisableNet: a fresh namespace with loopback only, not the shared one.
	task = &drivers.Task{ID: "fnrun-spec-" + randomID(), ImageRef: env.localImage, Cmd: "true", NoNetwork: true}
	spec, _ = createAndLoadSpec(t, d, in, task, nil)
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace && ns.Path != "" {
			t.Errorf("a task without network joined %s", ns.Path)
		}
	}
	if p.acquired != 1 {
		t.Errorf("a task without network acquired a namespace")
	}
}

type fakeNetwork struct {
	path               string
	acquired, released int
}

func (f *fakeNetwork) Acquire(context.Context, drivers.ContainerTask) (NetworkLease, error) {
	f.acquired++
	return fakeLease{f}, nil
}

type fakeLease struct{ f *fakeNetwork }

func (l fakeLease) Path() string { return l.f.path }
func (l fakeLease) Release(context.Context) error {
	l.f.released++
	return nil
}

// TestFsSizeRefused: overlay snapshots cannot limit a root filesystem, so
// the task is refused before any daemon call rather than run unlimited.
func TestFsSizeRefused(t *testing.T) {
	env := requireEnv(t)
	d := newTestDriver(t, env, drivers.Config{})
	_, err := d.CreateCookie(context.Background(), &drivers.Task{ID: "fnrun-fs-" + randomID(), ImageRef: env.localImage, FsSizeMB: 100})
	if !errors.Is(err, drivers.ErrInvalidTask) {
		t.Fatalf("got %v, want ErrInvalidTask", err)
	}
}

// TestImageVolumesRefused checks the image configuration rule without an
// image that declares volumes: the decision is the driver's alone.
func TestImageVolumesRefused(t *testing.T) {
	cfg := ocispec.Image{Config: ocispec.ImageConfig{Volumes: map[string]struct{}{"/data": {}}}}
	for _, enable := range []bool{false, true} {
		// The policy as the driver derives it from its configuration.
		s, err := lifecycle.Configure(DriverName, drivers.Config{ImageEnableVolume: enable}, nil)
		if err != nil {
			t.Fatal(err)
		}
		d := &daemon{s: s}
		err = d.checkImageConfig("x", cfg)
		switch {
		case !enable && !errors.Is(err, drivers.ErrInvalidTask):
			t.Errorf("image with volumes: %v, want ErrInvalidTask", err)
		case enable && err != nil:
			t.Errorf("image with volumes allowed: %v", err)
		}
	}
}

// TestWithImageConfig covers entrypoint/command merging without a daemon.
func TestWithImageConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  ocispec.ImageConfig
		args []string
		want []string
		cwd  string
		fail bool
	}{
		{"command from image", ocispec.ImageConfig{Cmd: []string{"sh"}}, nil, []string{"sh"}, "/", false},
		{"task replaces command", ocispec.ImageConfig{Cmd: []string{"sh"}}, []string{"echo", "x"}, []string{"echo", "x"}, "/", false},
		{"entrypoint kept", ocispec.ImageConfig{Entrypoint: []string{"/entry"}, Cmd: []string{"a"}, WorkingDir: "/w"}, []string{"b"}, []string{"/entry", "b"}, "/w", false},
		{"nothing to run", ocispec.ImageConfig{}, nil, nil, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &oci.Spec{Process: &specs.Process{}}
			err := withImageConfig(tc.cfg, tc.args, false)(context.Background(), nil, &containers.Container{}, s)
			if tc.fail {
				if !errors.Is(err, drivers.ErrInvalidTask) {
					t.Fatalf("got %v, want ErrInvalidTask", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(s.Process.Args, tc.want) || s.Process.Cwd != tc.cwd {
				t.Errorf("args %q cwd %q, want %q %q", s.Process.Args, s.Process.Cwd, tc.want, tc.cwd)
			}
			if !slices.Contains(s.Process.Env, defaultPath) {
				t.Errorf("env %q, want the default PATH", s.Process.Env)
			}
		})
	}
}

// TestLimitsSeenInside runs a container that reads its limits from the
// read-only cgroup mount and its rlimits, checks that every cgroup
// filesystem it sees (the v1 hierarchies, or the cgroup2 mount) is mounted
// read-only, and that a task without network has loopback only.
func TestLimitsSeenInside(t *testing.T) {
	env := requireEnv(t)
	d := newTestDriver(t, env, drivers.Config{})
	var out, errOut syncBuf
	task := &drivers.Task{
		ID:                "fnrun-lim-" + randomID(),
		ImageRef:          env.localImage,
		Cmd:               `sh -c 'cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.swap.max; ulimit -l; ulimit -i; ulimit -q; grep -E " cgroup2? " /proc/self/mounts | cut -d" " -f4 | cut -d, -f1 | sort -u | tr "\n" ,; echo; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " " | tr "\n" ,'`,
		MemoryBytes:       64 << 20,
		MaxLockedMemory:   u64(64 << 10),
		MaxPendingSignals: u64(77),
		MaxMessageQueue:   u64(8192),
		NoNetwork:         true,
		Stdout:            &out,
		Stderr:            &errOut,
	}
	runTask(t, d, task, drivers.StatusSuccess)
	lines := strings.Fields(out.String())
	if len(lines) < 6 {
		t.Fatalf("output %q (stderr %q)", out.String(), errOut.String())
	}
	// v1: memory+swap equal to memory; v2: no swap at all.
	if lines[0] != "67108864" && lines[0] != "0" {
		t.Errorf("memory+swap limit %s, want no swap", lines[0])
	}
	if lines[1] != "64" || lines[2] != "77" || lines[3] != "8192" {
		t.Errorf("rlimits memlock=%s KiB sigpending=%s msgqueue=%s, want 64, 77, 8192", lines[1], lines[2], lines[3])
	}
	if lines[4] != "ro," {
		t.Errorf("cgroup mounts are %s, want ro only", lines[4])
	}
	if lines[5] != "lo," {
		t.Errorf("network interfaces %q, want loopback only", lines[5])
	}
}

// runTask runs a task through the whole life cycle and checks its status.
func runTask(t *testing.T, d *Driver, task *drivers.Task, want string) drivers.RunResult {
	t.Helper()
	res := runTaskResult(t, d, task)
	if res.Status() != want {
		t.Fatalf("status %q (%v), want %q", res.Status(), res.Error(), want)
	}
	return res
}

// TestVolumeWritable writes through a volume as the unprivileged user.
func TestVolumeWritable(t *testing.T) {
	env := requireEnv(t)
	d := newTestDriver(t, env, drivers.Config{EnableReadOnlyRootFs: true})
	vol := t.TempDir()
	if err := os.Chmod(vol, 0o777); err != nil {
		t.Fatal(err)
	}
	task := &drivers.Task{ID: "fnrun-vol-" + randomID(), ImageRef: env.localImage, Cmd: `sh -c 'echo hi > /data/f'`, Mounts: [][2]string{{vol, "/data"}}}
	runTask(t, d, task, drivers.StatusSuccess)
	b, err := os.ReadFile(filepath.Join(vol, "f"))
	if err != nil || string(b) != "hi\n" {
		t.Fatalf("volume file: %q, %v", b, err)
	}
}

// onCgroupMode makes the driver build specs for a host in mode for the rest
// of the test. Such tests are never parallel: the mode is the package's.
func onCgroupMode(t *testing.T, mode cgroups.CGMode) {
	t.Helper()
	saved := hostCgroupMode
	hostCgroupMode = func() cgroups.CGMode { return mode }
	t.Cleanup(func() { hostCgroupMode = saved })
}

// generateSpec applies opts to containerd's default spec, as NewContainer
// does, without a daemon.
func generateSpec(t *testing.T, id string, opts []oci.SpecOpts) *oci.Spec {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), "fnrun-test")
	spec, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: id}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func hasCgroupNS(spec *oci.Spec) bool {
	return slices.ContainsFunc(spec.Linux.Namespaces, func(ns specs.LinuxNamespace) bool {
		return ns.Type == specs.CgroupNamespace && ns.Path == ""
	})
}

var cgroupModeNames = map[cgroups.CGMode]string{cgroups.Legacy: "v1", cgroups.Hybrid: "hybrid", cgroups.Unified: "v2"}

// TestSpecCgroupModes builds the spec of a call's container and of a pool
// holder for a v1, a hybrid and a v2 host, with no daemon: on v2 both get
// a cgroup namespace of their own and the call's cgroup mount is cgroup2,
// read-only; on v1 and hybrid hosts the spec is as before (v1 cgroup
// mount, the host's cgroup namespace). The other namespaces are kept.
func TestSpecCgroupModes(t *testing.T) {
	s, err := lifecycle.Configure(DriverName, drivers.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{s: s, opts: defaultOptions()}
	img := &localImage{config: ocispec.Image{Config: ocispec.ImageConfig{Cmd: []string{"sh"}}}}
	task, err := lifecycle.CheckTask(&drivers.Task{ID: "fnrun-cg", ImageRef: "127.0.0.1:5000/fnrun/busybox", Cmd: "true", MemoryBytes: 64 << 20, MaxPIDs: 50})
	if err != nil {
		t.Fatal(err)
	}
	holder := lifecycle.CreateSpec{Name: "fnrun-cg-holder", Holder: &lifecycle.HolderSpec{Args: []string{"sleep", "1000"}}}
	for _, mode := range []cgroups.CGMode{cgroups.Legacy, cgroups.Hybrid, cgroups.Unified} {
		t.Run(cgroupModeNames[mode], func(t *testing.T) {
			onCgroupMode(t, mode)
			v2 := mode == cgroups.Unified
			o := d.containerOptions(task)
			call := generateSpec(t, "fnrun-cg", o.specOpts(img, task.Args, false))
			m, ok := findMount(call, "/sys/fs/cgroup")
			wantType := map[bool]string{true: "cgroup2", false: "cgroup"}[v2]
			if !ok || m.Type != wantType || !slices.Contains(m.Options, "ro") || !slices.Contains(m.Options, "nosuid") {
				t.Errorf("cgroup mount %+v, want a read-only %s mount", m, wantType)
			}
			if got := hasCgroupNS(call); got != v2 {
				t.Errorf("call: a cgroup namespace of its own %v, want %v (namespaces %+v)", got, v2, call.Linux.Namespaces)
			}
			if r := call.Linux.Resources; r.Memory == nil || *r.Memory.Limit != 64<<20 || r.Pids == nil || r.Pids.Limit != 50 {
				t.Errorf("limits %+v lost", r)
			}
			h := generateSpec(t, holder.Name, holderSpecOpts(holder, img))
			if got := hasCgroupNS(h); got != v2 {
				t.Errorf("holder: a cgroup namespace of its own %v, want %v (namespaces %+v)", got, v2, h.Linux.Namespaces)
			}
			for _, spec := range []*oci.Spec{call, h} {
				for _, want := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.MountNamespace, specs.NetworkNamespace} {
					if !slices.ContainsFunc(spec.Linux.Namespaces, func(ns specs.LinuxNamespace) bool { return ns.Type == want }) {
						t.Errorf("namespace %s lost: %+v", want, spec.Linux.Namespaces)
					}
				}
			}
		})
	}
}

// TestCgroupV2SpecRuns creates containers from the spec of a v2 host on
// this host's real runc: a call's container and a pool holder. This host
// is not unified, so no v2 limit is in force; what it shows is that runc
// takes the spec (the cgroup namespace and the cgroup2 mount), that the
// container sees itself at the root of every hierarchy, and that the
// cgroup filesystem it sees is cgroup2 and read-only.
func TestCgroupV2SpecRuns(t *testing.T) {
	env := requireEnv(t)
	onCgroupMode(t, cgroups.Unified) // before the driver, whose cleanup comes first
	d := newTestDriver(t, env, drivers.Config{PreForkPoolSize: 1, PreForkImage: env.localImage})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.Pool().Ready(ctx); err != nil {
		t.Fatalf("a holder with a cgroup namespace did not start: %v", err)
	}
	in := newInspector(t, env)
	holders, err := in.client.Containers(in.ctx(ctx), labelFilter(LabelTag, "==", d.Settings().Tag)+","+labelFilter(drivers.LabelRole, "==", drivers.RoleHolder))
	if err != nil || len(holders) != 1 {
		t.Fatalf("holders %v, %v; want 1", holders, err)
	}
	if spec, err := holders[0].Spec(in.ctx(ctx)); err != nil || !hasCgroupNS(spec) {
		t.Errorf("holder spec without a cgroup namespace (%v)", err)
	}
	var out, errOut syncBuf
	task := &drivers.Task{
		ID:       "fnrun-cg2-" + randomID(),
		ImageRef: env.localImage,
		Cmd: `sh -c 'echo "cgroup=$(tr "\n" " " < /proc/self/cgroup)"; echo "fs=$(stat -f -c %t /sys/fs/cgroup)";
echo "dirs=$(ls -p /sys/fs/cgroup | grep -c /)"; echo "mount=$(grep " /sys/fs/cgroup cgroup2 " /proc/self/mounts | cut -d" " -f4 | cut -d, -f1)"'`,
		Stdout: &out,
		Stderr: &errOut,
	}
	runTask(t, d, task, drivers.StatusSuccess)
	got := map[string]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			got[k] = strings.TrimSpace(v)
		}
	}
	lines := strings.Fields(got["cgroup"])
	if len(lines) == 0 {
		t.Fatalf("output %q (stderr %q)", out.String(), errOut.String())
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, ":/") {
			t.Errorf("/proc/self/cgroup line %q: the container sees its place in the host's tree", l)
		}
	}
	if got["fs"] != "63677270" { // CGROUP2_SUPER_MAGIC
		t.Errorf("/sys/fs/cgroup is of type %q, want cgroup2 (63677270)", got["fs"])
	}
	if got["dirs"] != "0" {
		t.Errorf("/sys/fs/cgroup has %s cgroups below the container's, want none (the host's tree?)", got["dirs"])
	}
	if got["mount"] != "ro" {
		t.Errorf("cgroup2 mount options begin %q, want ro", got["mount"])
	}
	if t.Failed() {
		t.Logf("the container printed:\n%s", out.String())
	}
}
