package faults

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	docker "github.com/fsouza/go-dockerclient"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/fnrun/fnrun/drivers"
	ctrdriver "github.com/fnrun/fnrun/drivers/containerd"
	_ "github.com/fnrun/fnrun/drivers/docker" // registers "docker"
	"github.com/fnrun/fnrun/test"
)

// target is one driver over its private daemon: what a fault test needs to
// build drivers, break the daemon and count what was left behind.
type target struct {
	name  string // "docker" or "containerd"
	e     *privateEnv
	d     *daemon // the daemon the driver talks to, to kill or stop
	image string  // the loaded test image, as a task names it

	dc *docker.Client // docker only
	cc *ctrd.Client   // containerd only

	// configure points a driver's configuration at the private daemon.
	configure func(cfg *drivers.Config, o driverOpts, opts *[]drivers.Option)
}

// targets returns both drivers' targets on the private daemons. Their
// inspection clients exist before the caller takes a goroutine snapshot.
func targets(t *testing.T) []*target {
	t.Helper()
	e := private(t)
	return []*target{
		{name: "docker", e: e, d: e.dkr, image: e.localImage, dc: e.dockerClient(),
			configure: func(cfg *drivers.Config, o driverOpts, _ *[]drivers.Option) {
				cfg.Docker = cmp.Or(o.address, e.dockerHost)
				cfg.DockerNetworks = "none" // the private dockerd has no bridge
				if o.pool > 0 {
					cfg.PreForkNetworks = "none"
				}
			}},
		{name: "containerd", e: e, d: e.ctr, image: e.localImage, cc: e.containerdClient(t),
			configure: func(cfg *drivers.Config, o driverOpts, opts *[]drivers.Option) {
				cfg.Containerd = cmp.Or(o.address, e.ctrAddress)
				cfg.ContainerdNamespace = e.ctrNS
				// Pinned namespaces go under the private folder, not the
				// shared default.
				*opts = append(*opts, ctrdriver.WithStateDir(filepath.Join(e.root, "c", "fnrun")))
				if o.dialTimeout > 0 {
					*opts = append(*opts, ctrdriver.WithDialTimeout(o.dialTimeout))
				}
			}},
	}
}

// forEach runs f as a subtest per target.
func forEach(t *testing.T, f func(t *testing.T, tg *target)) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			// A subtest that broke its daemon leaves it healthy for the next.
			private(t)
			f(t, tg)
		})
	}
}

// driverOpts are the settings of a driver under test; zero values mean the
// package's defaults.
type driverOpts struct {
	tag         string // label tag; "" gives a fresh one
	instance    string
	callTimeout time.Duration
	pullTimeout time.Duration
	dialTimeout time.Duration
	stopGrace   time.Duration // 0 means 300ms: fault tests end many containers
	log         *logrus.Entry
	readOnly    bool
	address     string // the daemon's address instead of the private one (a proxy)
	noTag       bool   // no label tag at all (no reaper)
	newCtx      context.Context
	pool        int // pre-fork pool size; 0 runs no pool
}

// newDriver builds a driver; the test's cleanup closes it.
func (tg *target) newDriver(t testing.TB, o driverOpts) (drivers.Driver, error) {
	t.Helper()
	d, err := tg.build(o)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = d.Close() })
	return d, nil
}

// mustDriver is newDriver failing the test on error.
func (tg *target) mustDriver(t testing.TB, o driverOpts) drivers.Driver {
	t.Helper()
	d, err := tg.newDriver(t, o)
	if err != nil {
		t.Fatalf("new %s driver: %v", tg.name, err)
	}
	return d
}

func (tg *target) build(o driverOpts) (drivers.Driver, error) {
	if o.tag == "" && !o.noTag {
		o.tag = "faults-" + randomID()
	}
	if o.log == nil {
		o.log = testLogger()
	}
	if o.stopGrace == 0 {
		o.stopGrace = 300 * time.Millisecond
	}
	ctx := o.newCtx
	if ctx == nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
	}
	cfg := drivers.Config{
		ContainerLabelTag:    o.tag,
		InstanceId:           o.instance,
		EnableReadOnlyRootFs: o.readOnly,
	}
	if o.pool > 0 {
		cfg.PreForkPoolSize = uint64(o.pool)
		cfg.PreForkImage = tg.image
	}
	opts := []drivers.Option{drivers.WithLogger(o.log), drivers.WithStopGrace(o.stopGrace)}
	if o.callTimeout > 0 {
		opts = append(opts, drivers.WithCallTimeout(o.callTimeout))
	}
	if o.pullTimeout > 0 {
		opts = append(opts, drivers.WithPullTimeout(o.pullTimeout))
	}
	// Each target points the driver at its private daemon; the rest of
	// the set-up is the registry's.
	tg.configure(&cfg, o, &opts)
	return drivers.Open(ctx, tg.name, cfg, opts...)
}

// nsCtx puts the private containerd namespace on ctx.
func (tg *target) nsCtx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, tg.e.ctrNS)
}

// leftovers lists what carries the label tag: containers (docker); or
// containers, tasks, snapshots and leases (containerd).
func (tg *target) leftovers(ctx context.Context, tag string) ([]string, error) {
	var out []string
	if tg.name == "docker" {
		list, err := tg.dc.ListContainers(docker.ListContainersOptions{All: true, Context: ctx,
			Filters: map[string][]string{"label": {drivers.LabelTag + "=" + tag}}})
		if err != nil {
			return nil, err
		}
		for _, c := range list {
			out = append(out, "container "+strings.Join(c.Names, ",")+" ("+c.State+")")
		}
		return out, nil
	}
	ctx = tg.nsCtx(ctx)
	filter := fmt.Sprintf("labels.%q==%q", drivers.LabelTag, tag)
	ctrs, err := tg.cc.Containers(ctx, filter)
	if err != nil {
		return nil, err
	}
	for _, c := range ctrs {
		out = append(out, "container "+c.ID())
		if _, err := c.Task(ctx, nil); err == nil {
			out = append(out, "task "+c.ID())
		}
	}
	err = tg.cc.SnapshotService(ctrdriver.DefaultSnapshotter).Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		out = append(out, "snapshot "+info.Name)
		return nil
	}, filter)
	if err != nil {
		return nil, err
	}
	ls, err := tg.cc.LeasesService().List(ctx, filter)
	if err != nil {
		return nil, err
	}
	for _, l := range ls {
		out = append(out, "lease "+l.ID+" ("+l.Labels[ctrdriver.LabelLease]+")")
	}
	sort.Strings(out)
	return out, nil
}

// ingests lists the content ingests in progress in the private containerd's
// namespace: what a pull that failed half-way may leave.
func (tg *target) ingests(ctx context.Context) ([]string, error) {
	if tg.cc == nil {
		return nil, nil
	}
	st, err := tg.cc.ContentStore().ListStatuses(tg.nsCtx(ctx))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range st {
		out = append(out, fmt.Sprintf("%s (%d/%d bytes)", s.Ref, s.Offset, s.Total))
	}
	return out, nil
}

// pollIngests polls the content ingests until there are none or limit
// passes, and returns the last list.
func (tg *target) pollIngests(t testing.TB, limit time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		in, err := tg.ingests(context.Background())
		if err != nil {
			return []string{"cannot list: " + err.Error()}
		}
		if len(in) == 0 || time.Now().After(deadline) {
			return in
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitNoLeftovers polls leftovers until none remain or limit passes, and
// fails the test with what is left.
func (tg *target) waitNoLeftovers(t testing.TB, tag string, limit time.Duration) {
	t.Helper()
	left := tg.pollLeftovers(t, tag, limit)
	if len(left) > 0 {
		t.Errorf("%s: left behind after %v: %v", tg.name, limit, left)
	}
}

func (tg *target) pollLeftovers(t testing.TB, tag string, limit time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		left, err := tg.leftovers(ctx, tag)
		cancel()
		if err == nil && len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return []string{"cannot list: " + err.Error()}
			}
			return left
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// removeImage removes one reference from the daemon's store (the content
// stays while another reference holds it).
func (tg *target) removeImage(ctx context.Context, ref string) error {
	if tg.name == "docker" {
		err := tg.dc.RemoveImageExtended(ref, docker.RemoveImageOptions{Force: true, Context: ctx})
		if errors.Is(err, docker.ErrNoSuchImage) {
			return nil
		}
		return err
	}
	norm, err := drivers.NormalizeImage(ref)
	if err != nil {
		return err
	}
	err = tg.cc.ImageService().Delete(tg.nsCtx(ctx), norm.Normalized, images.SynchronousDelete())
	if err != nil && !strings.Contains(err.Error(), "not found") {
		return err
	}
	return nil
}

// tagImage gives the loaded test image another reference.
func (tg *target) tagImage(ctx context.Context, ref string) error {
	norm, err := drivers.NormalizeImage(ref)
	if err != nil {
		return err
	}
	if tg.name == "docker" {
		return tg.dc.TagImage(tg.image, docker.TagImageOptions{Repo: norm.Name(), Tag: norm.Tag, Force: true, Context: ctx})
	}
	ctx = tg.nsCtx(ctx)
	src, err := tg.cc.ImageService().Get(ctx, tg.e.ctrLocalRef)
	if err != nil {
		return err
	}
	_, err = tg.cc.ImageService().Create(ctx, images.Image{Name: norm.Normalized, Target: src.Target})
	return err
}

// hasImage reports whether the daemon's store has ref.
func (tg *target) hasImage(ctx context.Context, ref string) (bool, error) {
	norm, err := drivers.NormalizeImage(ref)
	if err != nil {
		return false, err
	}
	if tg.name == "docker" {
		_, err := tg.dc.InspectImage(norm.Familiar)
		if errors.Is(err, docker.ErrNoSuchImage) {
			return false, nil
		}
		return err == nil, err
	}
	_, err = tg.cc.ImageService().Get(tg.nsCtx(ctx), norm.Normalized)
	if err != nil && strings.Contains(err.Error(), "not found") {
		return false, nil
	}
	return err == nil, err
}

// task returns a task of the loaded image.
func (tg *target) task(name, cmd string) *drivers.Task {
	return &drivers.Task{ID: newID(name), ImageRef: tg.image, Cmd: cmd}
}

// newID returns a container id unique to this run.
func newID(name string) string {
	name = strings.ToLower(strings.NewReplacer("/", "-", " ", "-", "_", "-", "#", "-").Replace(name))
	if len(name) > 40 {
		name = name[:40]
	}
	return "fnf-" + strings.Trim(name, "-.") + "-" + randomID()[:8]
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// mustRun runs a task and fails the test if a step before Wait fails.
func mustRun(t testing.TB, ctx context.Context, drv drivers.Driver, task *drivers.Task) test.Outcome {
	t.Helper()
	out, err := test.Lifecycle(ctx, drv, task)
	if err != nil {
		t.Fatalf("life cycle of %s: %v", task.ID, err)
	}
	return out
}

func wantSuccess(t testing.TB, out test.Outcome) {
	t.Helper()
	if out.Result.Status() != drivers.StatusSuccess || out.Result.Error() != nil {
		t.Fatalf("status %q, error %v, want success (stdout %q, stderr %q)",
			out.Result.Status(), out.Result.Error(), out.Stdout, out.Stderr)
	}
}

// eventually runs a `true` life cycle until it succeeds or limit passes,
// and returns how long that took: how a driver shows it works again.
func eventually(t testing.TB, drv drivers.Driver, tg *target, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last error
	for time.Since(start) < limit {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := test.Lifecycle(ctx, drv, tg.task("again", "echo again"))
		cancel()
		switch {
		case err != nil:
			last = err
		case out.Result.Status() != drivers.StatusSuccess:
			last = fmt.Errorf("status %s: %v", out.Result.Status(), out.Result.Error())
		case out.Stdout != "again\n":
			last = fmt.Errorf("stdout %q", out.Stdout)
		default:
			return time.Since(start)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s driver did not work again within %v: %v", tg.name, limit, last)
	return 0
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// classOf names the typed errors err matches, for the reports.
func classOf(err error) string {
	if err == nil {
		return "nil"
	}
	var names []string
	for _, c := range []struct {
		err  error
		name string
	}{
		{drivers.ErrDaemonUnavailable, "ErrDaemonUnavailable"},
		{context.DeadlineExceeded, "DeadlineExceeded"},
		{context.Canceled, "Canceled"},
		{drivers.ErrImageNotFound, "ErrImageNotFound"},
		{drivers.ErrContainerGone, "ErrContainerGone"},
		{drivers.ErrInvalidTask, "ErrInvalidTask"},
		{drivers.ErrUnauthorized, "ErrUnauthorized"},
		{drivers.ErrRegistryUnavailable, "ErrRegistryUnavailable"},
		{drivers.ErrClosed, "ErrClosed"},
		{drivers.ErrNotRunning, "ErrNotRunning"},
		{drivers.ErrOutOfMemory, "ErrOutOfMemory"},
	} {
		if errors.Is(err, c.err) {
			names = append(names, c.name)
		}
	}
	var exit *drivers.ExitError
	if errors.As(err, &exit) {
		names = append(names, "ExitError("+strconv.Itoa(exit.ExitCode)+")")
	}
	if len(names) == 0 {
		return "untyped"
	}
	return strings.Join(names, "+")
}

// testLogger discards, or logs to stderr at the level FNRUN_TEST_LOG names.
func testLogger() *logrus.Entry {
	l := logrus.New()
	lvl, err := logrus.ParseLevel(os.Getenv("FNRUN_TEST_LOG"))
	if err != nil {
		l.Out = io.Discard
		return logrus.NewEntry(l)
	}
	l.SetLevel(lvl)
	l.Out = os.Stderr
	return logrus.NewEntry(l)
}

// leakOptions ignore the process-wide goroutines that are not the
// drivers': OpenCensus's view worker, started at init.
func leakOptions(ignore goleak.Option) []goleak.Option {
	return []goleak.Option{ignore, goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start")}
}

// procFigures are one sample of the test process's resources.
type procFigures struct {
	goroutines int
	fds        int
	heap       uint64 // HeapAlloc after a GC
	threads    int
}

func sampleProc() procFigures {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return procFigures{
		goroutines: runtime.NumGoroutine(),
		fds:        countFDs(os.Getpid()),
		heap:       ms.HeapAlloc,
		threads:    countThreads(os.Getpid()),
	}
}

func countFDs(pid int) int {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(entries)
}

func countThreads(pid int) int {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return -1
	}
	return len(entries)
}

// timed runs f and returns how long it took.
func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// within runs f in a goroutine and fails the test if it takes longer than
// limit; it returns f's duration. A call that never returns is reported
// and left running (the test has failed anyway).
func within(t testing.TB, what string, limit time.Duration, f func()) time.Duration {
	t.Helper()
	done := make(chan time.Duration, 1)
	go func() { done <- timed(f) }()
	select {
	case d := <-done:
		if d > limit {
			t.Errorf("%s took %v, want at most %v", what, d.Round(time.Millisecond), limit)
		}
		return d
	case <-time.After(limit + 30*time.Second):
		t.Fatalf("%s hung: no return within %v", what, limit+30*time.Second)
		return 0
	}
}
