package docker

import (
	"context"
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/lifecycle"
	"github.com/fnrun/fnrun/internal/syslog"
)

func u64(v uint64) *uint64 { return &v }

// TestCreateKnobs creates a container with every knob set and checks what
// the daemon recorded, field by field.
func TestCreateKnobs(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)
	ctx := testCtx(t, time.Minute)
	net := "fnrun-test-" + randomID()
	if _, err := bare.CreateNetwork(docker.CreateNetworkOptions{Name: net, Driver: "bridge", Context: ctx}); err != nil {
		t.Fatalf("create network: %v", err)
	}
	t.Cleanup(func() { _ = bare.RemoveNetwork(net) })

	d := newDriver(t, drivers.Config{
		DockerNetworks:       net,
		MaxTmpFsInodes:       1000,
		EnableReadOnlyRootFs: true,
		InstanceId:           "knobs-instance",
	})
	vol, uds := t.TempDir(), t.TempDir()
	task := &drivers.Task{
		ID:                "fnrun-knobs-" + randomID(),
		ImageRef:          e.localImage,
		Cmd:               `sh -c 'echo "a b"'`,
		Env:               map[string]string{"B": "2", "A": "1 1"},
		Stdin:             strings.NewReader("in"),
		MemoryBytes:       64 << 20,
		MilliCPUs:         250,
		MaxPIDs:           20,
		MaxOpenFiles:      u64(100),
		MaxLockedMemory:   u64(65536),
		MaxPendingSignals: u64(50),
		MaxMessageQueue:   u64(8192),
		TmpFsSizeMB:       8,
		Dir:               "/tmp",
		Mounts:            [][2]string{{vol, "/data"}},
		UDSHost:           uds,
		UDSDest:           "/run/fnrun",
		Logging: drivers.LoggerConfig{URL: "syslog://127.0.0.1:5514", Tags: []drivers.LoggerTag{
			{Name: "app", Value: "a1"}, {Name: "fn", Value: "f1"},
		}},
	}
	c, err := d.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, ok := c.ContainerOptions().(*docker.CreateContainerOptions); !ok {
		t.Fatalf("ContainerOptions is %T, want *docker.CreateContainerOptions", c.ContainerOptions())
	}
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	ctr, err := bare.InspectContainerWithOptions(docker.InspectContainerOptions{ID: task.ID, Context: ctx})
	if err != nil {
		t.Fatal(err)
	}
	cfg, host := ctr.Config, ctr.HostConfig

	check := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", what, got, want)
		}
	}
	check("name", ctr.Name, "/"+task.ID)
	check("image", cfg.Image, e.localImage)
	check("cmd", cfg.Cmd, []string{"sh", "-c", `echo "a b"`})
	check("env has A and B", containsAll(cfg.Env, "A=1 1", "B=2"), true)
	check("work dir", cfg.WorkingDir, "/tmp")
	check("user", cfg.User, "1000:1000")
	check("stdin open once", []bool{cfg.OpenStdin, cfg.StdinOnce, cfg.AttachStdin}, []bool{true, true, true})
	check("tty", cfg.Tty, false)
	// The image's own labels are merged in by the daemon.
	check("labels", []string{cfg.Labels[LabelLibrary], cfg.Labels[LabelTag], cfg.Labels[LabelInstance]},
		[]string{"fnrun", d.Settings().Tag, "knobs-instance"})
	check("memory", host.Memory, int64(64<<20))
	check("memory+swap", host.MemorySwap, int64(64<<20))
	check("kernel memory", host.KernelMemory, int64(0))
	check("cpu period", host.CPUPeriod, int64(100000))
	check("cpu quota", host.CPUQuota, int64(25000))
	check("pids", *host.PidsLimit, int64(20))
	ul := map[string][2]int64{}
	for _, u := range host.Ulimits {
		ul[u.Name] = [2]int64{u.Soft, u.Hard}
	}
	check("ulimits", ul, map[string][2]int64{
		"nofile": {100, 100}, "memlock": {65536, 65536}, "sigpending": {50, 50}, "msgqueue": {8192, 8192},
	})
	check("tmpfs", host.Tmpfs, map[string]string{"/tmp": "rw,nosuid,nodev,mode=1777,size=8m,nr_inodes=1000"})
	check("read-only root", host.ReadonlyRootfs, true)
	binds := append([]string(nil), host.Binds...)
	sort.Strings(binds)
	want := []string{vol + ":/data", uds + ":/run/fnrun"}
	sort.Strings(want)
	check("binds", binds, want)
	check("network", host.NetworkMode, net)
	check("log type", host.LogConfig.Type, "syslog")
	check("log config", host.LogConfig.Config, map[string]string{
		"syslog-address": "udp://127.0.0.1:5514", "syslog-facility": "user", "syslog-format": "rfc5424", "tag": "app=a1,fn=f1",
	})
	check("init", host.Init, true)
	check("cap drop", host.CapDrop, []string{"ALL"})
	check("security opt", host.SecurityOpt, []string{"no-new-privileges"})
	check("storage opt", len(host.StorageOpt), 0)

	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := bare.InspectContainer(task.ID); !errors.As(err, new(*docker.NoSuchContainer)) {
		t.Fatalf("container still there after Close: %v", err)
	}
	if got := d.d.networks.usage()[net]; got != 0 {
		t.Errorf("network %s still leased %d times after Close", net, got)
	}
}

func containsAll(list []string, want ...string) bool {
	have := map[string]bool{}
	for _, s := range list {
		have[s] = true
	}
	for _, w := range want {
		if !have[w] {
			return false
		}
	}
	return true
}

// TestCreateDefaults checks the options of a bare task: no log, no tmpfs,
// Docker's default network; and what the configuration switches turn off.
func TestCreateDefaults(t *testing.T) {
	e := needEnv(t)
	d := newDriver(t, drivers.Config{})
	task := &drivers.Task{ID: "fnrun-defaults", ImageRef: e.localImage}
	c, err := d.CreateCookie(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	opts := c.ContainerOptions().(*docker.CreateContainerOptions)
	if opts.Config.Cmd != nil || opts.HostConfig.LogConfig.Type != "none" || opts.HostConfig.Tmpfs != nil ||
		opts.HostConfig.NetworkMode != "" || opts.Config.OpenStdin || opts.HostConfig.Memory != 0 || opts.HostConfig.PidsLimit != nil {
		t.Errorf("unexpected defaults: config %+v host %+v", opts.Config, opts.HostConfig)
	}

	priv := newDriver(t, drivers.Config{DisableUnprivilegedContainers: true, EnableReadOnlyRootFs: true})
	c2, err := priv.CreateCookie(context.Background(), &drivers.Task{ID: "fnrun-priv", ImageRef: e.localImage, NoNetwork: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close(context.Background())
	opts = c2.ContainerOptions().(*docker.CreateContainerOptions)
	if opts.Config.User != "" || opts.HostConfig.CapDrop != nil || opts.HostConfig.SecurityOpt != nil {
		t.Errorf("DisableUnprivilegedContainers left user %q, cap drop %v, security %v", opts.Config.User, opts.HostConfig.CapDrop, opts.HostConfig.SecurityOpt)
	}
	if opts.HostConfig.NetworkMode != "none" {
		t.Errorf("DisableNet gave network %q, want none", opts.HostConfig.NetworkMode)
	}
	if got := opts.HostConfig.Tmpfs["/tmp"]; got != "rw,nosuid,nodev,mode=1777" {
		t.Errorf("read-only root without a tmpfs size gave /tmp %q, want a writable tmpfs", got)
	}
}

// TestContainerOptionsAreUsed checks that changes to ContainerOptions
// before CreateContainer reach the daemon.
func TestContainerOptionsAreUsed(t *testing.T) {
	e := needEnv(t)
	d := newDriver(t, drivers.Config{})
	ctx := testCtx(t, time.Minute)
	task := &drivers.Task{ID: "fnrun-opts-" + randomID(), ImageRef: e.localImage}
	c, err := d.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	c.ContainerOptions().(*docker.CreateContainerOptions).Config.Labels["extra"] = "yes"
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	ctr, err := e.bare(t).InspectContainer(task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ctr.Config.Labels["extra"] != "yes" {
		t.Fatalf("labels %v lack the change made through ContainerOptions", ctr.Config.Labels)
	}
}

// TestFsSize: overlay2 on anything but xfs cannot limit the root
// filesystem; the task fails with a typed error before any daemon call.
// Where the storage driver can, the limit is a "size" storage option.
func TestFsSize(t *testing.T) {
	e := needEnv(t)
	d := newDriver(t, drivers.Config{})
	task := &drivers.Task{ID: "fnrun-fssize", ImageRef: e.localImage, FsSizeMB: 100}
	_, err := d.CreateCookie(context.Background(), task)
	if h := d.d.host; h.supportsStorageSize() {
		if err != nil {
			t.Fatalf("storage driver %s/%s supports sizes, yet: %v", h.storageDriver, h.backingFs, err)
		}
	} else if !errors.Is(err, drivers.ErrInvalidTask) || !errors.Is(err, ErrFsSizeUnsupported) {
		t.Fatalf("FsSize on %s/%s: %v, want ErrFsSizeUnsupported wrapping ErrInvalidTask", h.storageDriver, h.backingFs, err)
	}

	s, err := lifecycle.Configure(driverName, drivers.Config{InstanceId: "x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []hostInfo{{storageDriver: "btrfs"}, {storageDriver: "overlay2", backingFs: "xfs"}} {
		fake := &daemon{s: s, host: h}
		checked, err := lifecycle.CheckTask(task)
		if err != nil {
			t.Fatal(err)
		}
		opts, err := fake.createOptions(checked)
		if err != nil {
			t.Fatalf("%+v: %v", h, err)
		}
		if got := opts.HostConfig.StorageOpt["size"]; got != "100M" {
			t.Errorf("%+v: storage opt size %q, want 100M", h, got)
		}
	}
}

func TestNetworkSpread(t *testing.T) {
	n := newNetworkSpread("a b c")
	var got []string
	for i := 0; i < 4; i++ {
		got = append(got, n.acquire())
	}
	if want := []string{"a", "b", "c", "a"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("acquired %v, want %v", got, want)
	}
	n.release("b")
	if got := n.acquire(); got != "b" {
		t.Fatalf("after releasing b, acquired %q", got)
	}
	if got := newNetworkSpread("").acquire(); got != "" {
		t.Fatalf("no networks configured gave %q", got)
	}
}

func TestLogConfig(t *testing.T) {
	for _, tc := range []struct {
		in      drivers.LoggerConfig
		typ     string
		addr    string
		tag     string
		invalid bool
	}{
		{in: drivers.LoggerConfig{}, typ: "none"},
		{in: drivers.LoggerConfig{URL: "syslog://10.0.0.1", Tags: []drivers.LoggerTag{{Name: "fn", Value: "app"}, {Name: "call", Value: "c1"}}},
			typ: "syslog", addr: "udp://10.0.0.1:514", tag: "fn=app,call=c1"},
		{in: drivers.LoggerConfig{URL: "tcp://10.0.0.1:514"}, typ: "syslog", addr: "tcp://10.0.0.1:514"},
		{in: drivers.LoggerConfig{URL: "unix:///dev/log"}, typ: "syslog", addr: "unix:///dev/log"},
		{in: drivers.LoggerConfig{URL: "http://x"}, invalid: true},
		{in: drivers.LoggerConfig{URL: "udp://x:1", Tags: []drivers.LoggerTag{{Name: "a", Value: "{{.ID}}"}}}, invalid: true},
	} {
		target, err := syslog.Parse(tc.in)
		if tc.invalid {
			if !errors.Is(err, drivers.ErrInvalidTask) {
				t.Errorf("%+v: %v, want ErrInvalidTask", tc.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%+v: %v", tc.in, err)
			continue
		}
		if lc := logConfig(target); lc.Type != tc.typ || lc.Config["syslog-address"] != tc.addr || lc.Config["tag"] != tc.tag {
			t.Errorf("%+v: %+v", tc.in, lc)
		}
	}
}

// TestImageVolumes: an image that declares a volume is refused unless
// ImageEnableVolume; when enabled, Close removes the anonymous volume.
func TestImageVolumes(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)
	ctx := testCtx(t, 2*time.Minute)
	img := "fnrun-test/with-volume:" + randomID()
	base, err := bare.CreateContainer(docker.CreateContainerOptions{Config: &docker.Config{Image: e.localImage, Cmd: []string{"true"}}, Context: ctx})
	if err != nil {
		t.Fatal(err)
	}
	repo, tag, _ := strings.Cut(img, ":")
	_, err = bare.CommitContainer(docker.CommitContainerOptions{Container: base.ID, Repository: repo, Tag: tag,
		Run: &docker.Config{Volumes: map[string]struct{}{"/data": {}}, Cmd: []string{"true"}}, Context: ctx})
	_ = bare.RemoveContainer(docker.RemoveContainerOptions{ID: base.ID, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = removeImage(bare, img) })

	refusing := newDriver(t, drivers.Config{})
	c, err := refusing.CreateCookie(ctx, &drivers.Task{ID: "fnrun-vol-" + randomID(), ImageRef: img})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.ValidateImage(ctx); !errors.Is(err, drivers.ErrInvalidTask) {
		t.Fatalf("ValidateImage of an image with volumes: %v, want ErrInvalidTask", err)
	}

	allowing := newDriver(t, drivers.Config{ImageEnableVolume: true})
	task := &drivers.Task{ID: "fnrun-vol-" + randomID(), ImageRef: img}
	c2, err := allowing.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close(context.Background())
	if need, err := c2.ValidateImage(ctx); err != nil || need {
		t.Fatalf("ValidateImage with volumes enabled: %v, %v", need, err)
	}
	if err := c2.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	ctr, err := bare.InspectContainer(task.ID)
	if err != nil {
		t.Fatal(err)
	}
	var volume string
	for _, m := range ctr.Mounts {
		if m.Destination == "/data" {
			volume = m.Name
		}
	}
	if volume == "" {
		t.Fatalf("no anonymous volume on /data: %+v", ctr.Mounts)
	}
	if err := c2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := bare.InspectVolume(volume); !errors.Is(err, docker.ErrNoSuchVolume) {
		t.Fatalf("volume %s still there after Close: %v", volume, err)
	}
}

// TestCgroupnsMode: on a cgroup v2 daemon every container, call or pool
// holder, asks for a private cgroup namespace, whatever the daemon's
// default; on v1 the daemon's default ("host") is kept. No daemon: the
// version is the one New learns from /info.
func TestCgroupnsMode(t *testing.T) {
	s, err := lifecycle.Configure(driverName, drivers.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	task, err := lifecycle.CheckTask(&drivers.Task{ID: "fnrun-cgns", ImageRef: "127.0.0.1:5000/fnrun/busybox", Cmd: "true", MemoryBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := drivers.NormalizeImage("127.0.0.1:5000/fnrun/busybox")
	if err != nil {
		t.Fatal(err)
	}
	holder := lifecycle.CreateSpec{Name: "fnrun-cgns-holder", Holder: &lifecycle.HolderSpec{Image: ref, Args: []string{"sleep", "1000"}}}
	for version, want := range map[string]string{"1": "", "2": "private"} {
		d := &daemon{s: s, host: hostInfo{cgroupVersion: version, storageDriver: "overlay2"}}
		call, err := d.createOptions(task)
		if err != nil {
			t.Fatal(err)
		}
		if got := call.HostConfig.CgroupnsMode; got != want {
			t.Errorf("cgroup v%s: call's cgroupns mode %q, want %q", version, got, want)
		}
		if call.HostConfig.Memory != 64<<20 || call.HostConfig.MemorySwap != 64<<20 {
			t.Errorf("cgroup v%s: memory %d, memory+swap %d, want both 64MiB (no swap)", version, call.HostConfig.Memory, call.HostConfig.MemorySwap)
		}
		if got := d.holderOptions(holder).HostConfig.CgroupnsMode; got != want {
			t.Errorf("cgroup v%s: holder's cgroupns mode %q, want %q", version, got, want)
		}
	}
}

// TestCgroupnsPrivateOnDaemon sends the create options of a cgroup v2
// daemon to this (v1) daemon: the daemon records the private mode, and
// the container sees itself at the root of every hierarchy. That the v2
// limits are then at /sys/fs/cgroup is Docker's doing on a v2 host, which
// this one is not.
func TestCgroupnsPrivateOnDaemon(t *testing.T) {
	e := needEnv(t)
	d := newDriver(t, drivers.Config{})
	d.d.host.cgroupVersion = "2" // before any cookie reads it
	ctx := testCtx(t, time.Minute)
	var out syncWriter
	task := &drivers.Task{ID: "fnrun-cgns-" + randomID(), ImageRef: e.localImage, Cmd: "cat /proc/self/cgroup", Stdout: &out, NoNetwork: true}
	c, err := d.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	ctr, err := e.bare(t).InspectContainerWithOptions(docker.InspectContainerOptions{ID: task.ID, Context: ctx})
	if err != nil {
		t.Fatal(err)
	}
	if ctr.HostConfig.CgroupnsMode != "private" {
		t.Errorf("the daemon recorded cgroupns mode %q, want private", ctr.HostConfig.CgroupnsMode)
	}
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res := w.Wait(ctx); res.Status() != drivers.StatusSuccess {
		t.Fatalf("status %s: %v", res.Status(), res.Error())
	}
	lines := strings.Fields(out.String())
	if len(lines) == 0 {
		t.Fatal("no /proc/self/cgroup output")
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, ":/") {
			t.Errorf("/proc/self/cgroup line %q: the container sees its place in the host's tree", l)
		}
	}
}
