package faults

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	docker "github.com/fsouza/go-dockerclient"
	"golang.org/x/sys/unix"

	"github.com/fnrun/fnrun/test"
)

// Private daemons. A test that kills or stops a daemon must never do it to
// the shared environment other tests use at the same time, so the package
// starts its own containerd and dockerd, once per test process, under one
// short folder in /tmp (unix socket paths must stay under 108 bytes):
//
//	/tmp/fnf-NNNN/owner            pid of the test process, for sweeping after a crash
//	/tmp/fnf-NNNN/c/               containerd: config.toml, root/, state/, opt/, c.sock, log
//	/tmp/fnf-NNNN/d/               dockerd: data/, x/ (exec root, with its own managed containerd), d.sock, log
//
// The containerd uses its own namespace and the dockerd its own cgroup
// parent, both named after the folder, so the containers' cgroups and runc
// state never mix with the shared daemons'. dockerd runs with
// --bridge=none --iptables=false: it must not fight the shared one over
// docker0, so its containers have network "none" (the drivers are given
// DockerNetworks "none"). It still gets a bridge of its own (privateBridge):
// a dockerd started with --bridge=none deletes the host's docker0, which
// would cut the shared dockerd's containers off.

const (
	// readyTimeout bounds a daemon's start or restart.
	readyTimeout = 60 * time.Second
	dirPrefix    = "fnf-"
)

// sharedVars are the variables of the shared environment this package
// reads (test/env/up.sh writes them).
var sharedVars = []string{
	"FNRUN_REGISTRY", "FNRUN_TEST_IMAGE", "FNRUN_LOCAL_IMAGE", "FNRUN_IMAGE_TAR",
	"FNRUN_DOCKER_HOST", "FNRUN_CONTAINERD_ADDRESS",
	"FNRUN_AUTH_REGISTRY", "FNRUN_AUTH_TEST_IMAGE", "FNRUN_AUTH_USER", "FNRUN_AUTH_PASSWORD",
}

// privateEnv is the pair of private daemons and what the tests need to know
// about the shared environment.
type privateEnv struct {
	shared map[string]string
	root   string
	ctr    *daemon // containerd
	dkr    *daemon // dockerd

	ctrAddress  string
	ctrNS       string
	dockerSock  string
	dockerHost  string
	dockerCgrp  string // cgroup parent of dockerd's containers
	localImage  string // FNRUN_LOCAL_IMAGE: the task reference of the loaded image
	ctrLocalRef string // the same, as containerd names it
}

var penv struct {
	once sync.Once
	mu   sync.Mutex
	v    *privateEnv
	err  error
}

// private returns the private daemons, started at the first call and
// healthy (resumed and restarted as needed) at every call. Without the
// shared environment the test is skipped, or fails with CI=true (test.Env);
// private daemons that cannot start fail it with CI=true too.
func private(t testing.TB) *privateEnv {
	t.Helper()
	vals := test.Env(t, sharedVars...)
	penv.once.Do(func() {
		sweepStale()
		penv.v, penv.err = startPrivate(vals)
	})
	if penv.err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but the private daemons cannot start: %v", penv.err)
		}
		t.Skipf("private daemons cannot start (run as root with dockerd, containerd and runc installed): %v", penv.err)
	}
	penv.mu.Lock()
	defer penv.mu.Unlock()
	e := penv.v
	for _, d := range []*daemon{e.ctr, e.dkr} {
		if err := d.ensure(); err != nil {
			t.Fatalf("private %s: %v (log %s: %s)", d.name, err, d.logPath, d.logTail(20))
		}
	}
	return e
}

// stopPrivate stops the private daemons and removes every trace of them; it
// runs after the tests (TestMain).
func stopPrivate() {
	if penv.v == nil {
		return
	}
	e := penv.v
	e.dkr.shutdown()
	e.ctr.shutdown()
	cleanupDir(e.root, os.Getenv("FNRUN_FAULTS_KEEP") == "1")
}

func startPrivate(vals map[string]string) (*privateEnv, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("not root")
	}
	for _, bin := range []string{"containerd", "dockerd", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, err
		}
	}
	root, err := os.MkdirTemp("/tmp", dirPrefix)
	if err != nil {
		return nil, err
	}
	name := filepath.Base(root)
	e := &privateEnv{
		shared:      vals,
		root:        root,
		ctrAddress:  filepath.Join(root, "c", "c.sock"),
		ctrNS:       name,
		dockerSock:  filepath.Join(root, "d", "d.sock"),
		dockerCgrp:  "/" + name + "-d",
		localImage:  vals["FNRUN_LOCAL_IMAGE"],
		ctrLocalRef: "docker.io/" + vals["FNRUN_LOCAL_IMAGE"],
	}
	e.dockerHost = "unix://" + e.dockerSock
	if err := e.start(); err != nil {
		stopPrivateEnv(e)
		return nil, err
	}
	return e, nil
}

func (e *privateEnv) start() error {
	err := os.WriteFile(filepath.Join(e.root, "owner"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	if err != nil {
		return err
	}
	if e.ctr, err = newContainerdDaemon(e); err != nil {
		return err
	}
	if e.dkr, err = newDockerDaemon(e); err != nil {
		return err
	}
	// Started in parallel: dockerd takes a few seconds.
	errs := make(chan error, 2)
	for _, d := range []*daemon{e.ctr, e.dkr} {
		go func(d *daemon) { errs <- d.ensure() }(d)
	}
	var first error
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return first
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return e.loadImages(ctx, e.shared["FNRUN_IMAGE_TAR"])
}

func stopPrivateEnv(e *privateEnv) {
	if e.dkr != nil {
		e.dkr.shutdown()
	}
	if e.ctr != nil {
		e.ctr.shutdown()
	}
	cleanupDir(e.root, false)
}

func newContainerdDaemon(e *privateEnv) (*daemon, error) {
	dir := filepath.Join(e.root, "c")
	for _, sub := range []string{"root", "state", "opt"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o711); err != nil {
			return nil, err
		}
	}
	cfg := fmt.Sprintf(`# written by fnrun test/faults: a private containerd
version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[debug]
  level = "info"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[5]q
  [plugins."io.containerd.service.v1.diff-service"]
    default = ["walking"]
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), e.ctrAddress, e.ctrAddress+".ttrpc", filepath.Join(dir, "opt"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	address := e.ctrAddress
	return &daemon{
		name:    "containerd",
		bin:     "containerd",
		args:    []string{"--config", cfgPath},
		logPath: filepath.Join(dir, "containerd.log"),
		sockets: []string{address, address + ".ttrpc"},
		ready: func(ctx context.Context) error {
			c, err := ctrd.New(address, ctrd.WithTimeout(2*time.Second))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Version(ctx)
			return err
		},
	}, nil
}

func newDockerDaemon(e *privateEnv) (*daemon, error) {
	dir := filepath.Join(e.root, "d")
	for _, sub := range []string{"data", "x"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o711); err != nil {
			return nil, err
		}
	}
	cfgPath := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(cfgPath, []byte("{}\n"), 0o644); err != nil {
		return nil, err
	}
	bridge, err := createPrivateBridge(e.root)
	if err != nil {
		return nil, err
	}
	storage := os.Getenv("FNRUN_STORAGE_DRIVER")
	if storage == "" {
		storage = "overlay2"
	}
	sock := e.dockerSock
	pidfile := filepath.Join(dir, "d.pid")
	managed := filepath.Join(dir, "x", "containerd", "containerd.pid")
	return &daemon{
		name: "dockerd",
		bin:  "dockerd",
		args: []string{
			"--host", "unix://" + sock,
			"--data-root", filepath.Join(dir, "data"),
			"--exec-root", filepath.Join(dir, "x"),
			"--pidfile", pidfile,
			"--config-file", cfgPath,
			"--storage-driver", storage,
			"--exec-opt", "native.cgroupdriver=cgroupfs",
			"--cgroup-parent", e.dockerCgrp,
			"--userland-proxy=false",
			"--bridge=" + bridge,
			"--iptables=false",
			"--ip-forward=false",
			"--ip-masq=false",
			// One download attempt per pull: the driver's retry policy is
			// what the registry tests measure, not dockerd's own.
			"--max-download-attempts=1",
			"--log-level", "info",
		},
		logPath:  filepath.Join(dir, "dockerd.log"),
		sockets:  []string{sock},
		pidfiles: []string{pidfile},
		// dockerd reuses a managed containerd whose pid file names a live
		// process. After a SIGKILL that containerd is dead, but PID 1 of
		// this machine may never reap it: a zombie passes dockerd's
		// liveness check and the restart waits for a socket nobody serves.
		preStart: func() {
			b, err := os.ReadFile(managed)
			if err != nil {
				return
			}
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			if st := procState(pid); st == "" || st == "Z" {
				_ = os.Remove(managed)
			}
		},
		ready: func(ctx context.Context) error {
			hc := unixHTTPClient(sock)
			defer hc.CloseIdleConnections()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("ping: %s", resp.Status)
			}
			return nil
		},
	}, nil
}

// loadImages loads the test image tarball into both private daemons.
func (e *privateEnv) loadImages(ctx context.Context, tar string) error {
	f, err := os.Open(tar)
	if err != nil {
		return err
	}
	defer f.Close() // go-dockerclient closes it too
	dc := e.dockerClient()
	if err := dc.LoadImage(docker.LoadImageOptions{InputStream: f, Context: ctx}); err != nil {
		return fmt.Errorf("docker load %s: %w", tar, err)
	}
	if _, err := dc.InspectImage(e.localImage); err != nil {
		return fmt.Errorf("docker load %s did not give %s: %w", tar, e.localImage, err)
	}
	f2, err := os.Open(tar)
	if err != nil {
		return err
	}
	defer f2.Close()
	c, err := ctrd.New(e.ctrAddress, ctrd.WithTimeout(5*time.Second), ctrd.WithDefaultNamespace(e.ctrNS))
	if err != nil {
		return err
	}
	defer c.Close()
	nctx := namespaces.WithNamespace(ctx, e.ctrNS)
	imgs, err := c.Import(nctx, f2)
	if err != nil {
		return fmt.Errorf("containerd import %s: %w", tar, err)
	}
	found := false
	for _, i := range imgs {
		if i.Name == e.ctrLocalRef {
			found = true
		}
		if err := ctrd.NewImage(c, i).Unpack(nctx, "overlayfs"); err != nil {
			return fmt.Errorf("unpack %s: %w", i.Name, err)
		}
	}
	if !found {
		return fmt.Errorf("containerd import %s gave %v, not %s", tar, imgs, e.ctrLocalRef)
	}
	return nil
}

// dockerClient is a go-dockerclient client on the private dockerd whose
// connections are not kept alive, so it leaves no goroutine behind.
func (e *privateEnv) dockerClient() *docker.Client {
	return newDockerClient(e.dockerHost)
}

func newDockerClient(host string) *docker.Client {
	c, err := docker.NewClient(host)
	if err != nil {
		panic(err) // only a malformed endpoint fails, and ours are fixed
	}
	if strings.HasPrefix(host, "unix://") {
		c.HTTPClient = unixHTTPClient(strings.TrimPrefix(host, "unix://"))
	}
	return c
}

// containerdClient is a client on the private containerd in its namespace.
func (e *privateEnv) containerdClient(t testing.TB) *ctrd.Client {
	t.Helper()
	c, err := ctrd.New(e.ctrAddress, ctrd.WithTimeout(10*time.Second), ctrd.WithDefaultNamespace(e.ctrNS))
	if err != nil {
		t.Fatalf("containerd client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func unixHTTPClient(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
}

// daemon is one private daemon process.
type daemon struct {
	name     string
	bin      string
	args     []string
	logPath  string
	sockets  []string // removed before a (re)start
	pidfiles []string
	ready    func(ctx context.Context) error
	preStart func()

	mu         sync.Mutex
	cmd        *exec.Cmd
	exited     chan struct{}
	starts     int
	sigstopped bool // SIGSTOPped by us
}

// ensure makes the daemon run and answer: resumed if stopped, started if
// dead.
func (d *daemon) ensure() error {
	d.mu.Lock()
	if d.cmd != nil && d.sigstopped {
		_ = d.cmd.Process.Signal(syscall.SIGCONT)
		d.sigstopped = false
	}
	alive := d.cmd != nil && !isClosed(d.exited)
	d.mu.Unlock()
	if alive {
		return d.waitReady(readyTimeout)
	}
	// As a service manager would: a daemon that dies while starting (the
	// leftovers of the one just killed may still hold its sockets) gets
	// two more tries. The log says why in any case.
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if err = d.start(); err != nil {
			return err
		}
		if err = d.waitReady(readyTimeout); !errors.Is(err, errExitedEarly) {
			return err
		}
		time.Sleep(time.Duration(attempt) * time.Second)
	}
	return err
}

// errExitedEarly: the daemon exited before it was ready.
var errExitedEarly = errors.New("exited during start-up")

func (d *daemon) start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range append(append([]string(nil), d.sockets...), d.pidfiles...) {
		_ = os.Remove(s)
	}
	if d.preStart != nil {
		d.preStart()
	}
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(d.bin, d.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session, so no signal meant for the test reaches it; killed
	// with the test process if that dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	d.cmd, d.exited, d.sigstopped = cmd, exited, false
	d.starts++
	return nil
}

func (d *daemon) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		d.mu.Lock()
		exited := d.exited
		d.mu.Unlock()
		if isClosed(exited) {
			return fmt.Errorf("%s %w; its log ends with:\n%s", d.name, errExitedEarly, logTail(d.logPath, 15))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		last = d.ready(ctx)
		cancel()
		if last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %v: %v", d.name, limit, last)
}

// logTail is the last n lines of the file at path.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// pid is the daemon's process id, 0 when it is not running.
func (d *daemon) pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil || isClosed(d.exited) {
		return 0
	}
	return d.cmd.Process.Pid
}

// kill sends SIGKILL and waits for the process to be gone.
func (d *daemon) kill(t testing.TB) {
	t.Helper()
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	if cmd == nil || isClosed(exited) {
		t.Fatalf("%s is not running", d.name)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL %s: %v", d.name, err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not die of SIGKILL", d.name)
	}
}

// freeze sends SIGSTOP; thaw sends SIGCONT.
func (d *daemon) freeze(t testing.TB) {
	t.Helper()
	d.signal(t, syscall.SIGSTOP, true)
	// The signal is asynchronous: wait until the kernel says stopped.
	deadline := time.Now().Add(5 * time.Second)
	for procState(d.pid()) != "T" {
		if time.Now().After(deadline) {
			t.Fatalf("%s not stopped after SIGSTOP (state %q)", d.name, procState(d.pid()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (d *daemon) thaw(t testing.TB) {
	t.Helper()
	d.signal(t, syscall.SIGCONT, false)
}

func (d *daemon) signal(t testing.TB, sig syscall.Signal, stopped bool) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil || isClosed(d.exited) {
		t.Fatalf("%s is not running", d.name)
	}
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%v to %s: %v", sig, d.name, err)
	}
	d.sigstopped = stopped
}

// shutdown ends the daemon: resumed, SIGTERM, then SIGKILL.
func (d *daemon) shutdown() {
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	if cmd == nil || isClosed(exited) {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
}

func (d *daemon) logTail(n int) string {
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func isClosed(ch chan struct{}) bool {
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// procState is the state letter of /proc/pid/stat ("R", "S", "T"...), or
// "" when there is no such process.
func procState(pid int) string {
	if pid <= 0 {
		return ""
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	return s[i+2 : i+3]
}

// sweepStale removes what an earlier test process that died without
// cleaning up left under /tmp/fnf-*: daemons, shims, container processes,
// mounts, cgroups, folders; and the cgroups of private daemons whose
// folder is gone.
func sweepStale() {
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/" + dirPrefix + "*")
	seen := map[string]bool{}
	for _, c := range cgroups {
		dir := "/tmp/" + strings.TrimSuffix(filepath.Base(c), "-d")
		if _, err := os.Stat(dir); os.IsNotExist(err) && !seen[dir] {
			seen[dir] = true
			cleanupDir(dir, false)
		}
	}
	dirs, _ := filepath.Glob("/tmp/" + dirPrefix + "*")
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "owner"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // its owner still runs
		}
		cleanupDir(dir, false)
	}
}

// cleanupDir kills every process that belongs to the private daemons of
// dir (by their command line naming a path in dir, or their cgroup named
// after it), unmounts what is mounted under dir, removes the cgroups, the
// runc state and, unless keep, the folder.
func cleanupDir(dir string, keep bool) {
	name := filepath.Base(dir)
	cgroupNames := []string{name, name + "-d"}
	// A frozen process does not act on SIGKILL until it is thawed.
	for _, n := range cgroupNames {
		thawCgroups(filepath.Join("/sys/fs/cgroup/freezer", n))
		thawCgroups(filepath.Join("/sys/fs/cgroup", n))
	}
	for round := 0; round < 3; round++ {
		pids := procsOf(dir, cgroupNames)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGCONT)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(500 * time.Millisecond)
	}
	unmountUnder(dir)
	for _, n := range cgroupNames {
		ctrls, _ := filepath.Glob("/sys/fs/cgroup/*/" + n)
		ctrls2, _ := filepath.Glob("/sys/fs/cgroup/" + n)
		for _, c := range append(ctrls, ctrls2...) {
			removeCgroupTree(c)
		}
	}
	_ = os.RemoveAll(filepath.Join("/run/containerd/runc", name))
	_ = exec.Command("ip", "link", "delete", privateBridge(dir)).Run()
	if !keep {
		_ = os.RemoveAll(dir)
	}
}

// procsOf lists the processes whose command line names a path under dir,
// or whose cgroup path starts with one of cgroupNames.
func procsOf(dir string, cgroupNames []string) []int {
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid == 1 || procState(pid) == "Z" {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cmdline), dir+"/") {
			out = append(out, pid)
			continue
		}
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		for _, n := range cgroupNames {
			if strings.Contains(string(cg), ":/"+n+"/") {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// unmountUnder detaches every mount whose mount point is under dir,
// deepest first.
func unmountUnder(dir string) {
	for round := 0; round < 3; round++ {
		f, err := os.Open("/proc/self/mountinfo")
		if err != nil {
			return
		}
		var points []string
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
				points = append(points, fields[4])
			}
		}
		f.Close()
		if len(points) == 0 {
			return
		}
		sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
		for _, p := range points {
			_ = unix.Unmount(p, unix.MNT_DETACH)
		}
	}
}

// thawCgroups thaws every frozen cgroup at or under path (cgroup v1
// freezer.state or v2 cgroup.freeze).
func thawCgroups(path string) {
	_ = filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		_ = os.WriteFile(filepath.Join(p, "freezer.state"), []byte("THAWED"), 0o644)
		_ = os.WriteFile(filepath.Join(p, "cgroup.freeze"), []byte("0"), 0o644)
		return nil
	})
}

func removeCgroupTree(path string) {
	entries, _ := os.ReadDir(path)
	for _, e := range entries {
		if e.IsDir() {
			removeCgroupTree(filepath.Join(path, e.Name()))
		}
	}
	_ = syscall.Rmdir(path)
}

// privateBridge names the bridge of the private dockerd of dir: at most 15
// characters, as the kernel requires.
func privateBridge(dir string) string {
	name := strings.ReplaceAll(filepath.Base(dir), "-", "")
	if len(name) > 15 {
		name = name[:15]
	}
	return name
}

// createPrivateBridge makes the private dockerd's bridge, with an address
// of its own, inside this sandbox; the private dockerd's containers run
// with network "none", so nothing is ever sent there.
func createPrivateBridge(dir string) (string, error) {
	name := privateBridge(dir)
	if exec.Command("ip", "link", "show", name).Run() == nil {
		return name, nil
	}
	for _, args := range [][]string{
		{"link", "add", name, "type", "bridge"},
		{"addr", "add", "10.89.199.1/24", "dev", name},
		{"link", "set", name, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return name, nil
}
