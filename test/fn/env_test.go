package fn

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	docker "github.com/fsouza/go-dockerclient"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/fnrun/fnrun/drivers"
	_ "github.com/fnrun/fnrun/drivers/containerd" // registers "containerd"
	_ "github.com/fnrun/fnrun/drivers/docker"     // registers "docker"
	"github.com/fnrun/fnrun/pool"
	"github.com/fnrun/fnrun/test"
)

// TestMain checks, once every test has closed its drivers, that none of
// them left a goroutine behind.
func TestMain(m *testing.M) {
	code := m.Run()
	closeBareClients()
	if code == 0 {
		// OpenCensus's view worker is started at init, not by a driver.
		if err := goleak.Find(goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start")); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines left after every driver closed: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// The runtimes every scenario runs on, unless it is Docker's alone.
const (
	rtDocker     = "docker"
	rtContainerd = "containerd"
)

var runtimes = []string{rtDocker, rtContainerd}

// envOf are the variables of test/env/up.sh each runtime needs.
var envOf = map[string][]string{
	rtDocker:     {"FNRUN_DOCKER_HOST", "FNRUN_TEST_IMAGE", "FNRUN_REGISTRY"},
	rtContainerd: {"FNRUN_CONTAINERD_ADDRESS", "FNRUN_CONTAINERD_NAMESPACE", "FNRUN_CNI_CONF", "FNRUN_CNI_BIN", "FNRUN_TEST_IMAGE", "FNRUN_REGISTRY"},
}

// rig is one runtime under test: its environment and how to reach its
// daemon without fnrun.
type rig struct {
	name string
	env  map[string]string
}

// newRig reads the runtime's environment (test.Env: a skip without it, a
// failure with CI=true), with the extra variables the test needs.
func newRig(t *testing.T, name string, extra ...string) *rig {
	t.Helper()
	return &rig{name: name, env: test.Env(t, append(envOf[name], extra...)...)}
}

// eachRuntime runs f on every runtime, in parallel subtests.
func eachRuntime(t *testing.T, f func(t *testing.T, r *rig)) {
	for _, name := range runtimes {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t, newRig(t, name))
		})
	}
}

// image is the busybox of the loopback registry, which every runtime can
// pull without credentials.
func (r *rig) image() string { return r.env["FNRUN_TEST_IMAGE"] }

// config is cfg with the runtime's connection settings (its daemon unless
// cfg names one) and, unless cfg has one, a label tag of its own.
func (r *rig) config(cfg drivers.Config) drivers.Config {
	switch r.name {
	case rtDocker:
		if cfg.Docker == "" {
			cfg.Docker = r.env["FNRUN_DOCKER_HOST"]
		}
	case rtContainerd:
		if cfg.Containerd == "" {
			cfg.Containerd = r.env["FNRUN_CONTAINERD_ADDRESS"]
		}
		cfg.ContainerdNamespace = r.env["FNRUN_CONTAINERD_NAMESPACE"]
		cfg.CNIConfDir = r.env["FNRUN_CNI_CONF"]
		cfg.CNIBinDir = r.env["FNRUN_CNI_BIN"]
	}
	if cfg.ContainerLabelTag == "" {
		cfg.ContainerLabelTag = "fn-" + randomID()
	}
	return cfg
}

// open opens the runtime's driver through the registry, as an agent does.
// When the test ends it closes the driver and checks, with the bare
// client, that nothing with the driver's label tag is left.
func (r *rig) open(t *testing.T, cfg drivers.Config, opts ...drivers.Option) drivers.Driver {
	t.Helper()
	drv, err := r.tryOpen(t, cfg, opts...)
	if err != nil {
		t.Fatalf("open %s: %v", r.name, err)
	}
	return drv
}

// tryOpen is open that returns the error.
func (r *rig) tryOpen(t *testing.T, cfg drivers.Config, opts ...drivers.Option) (drivers.Driver, error) {
	t.Helper()
	cfg = r.config(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logs := &test.LogCapture{}
	log := logs.Entry()
	log.Logger.SetLevel(logrus.InfoLevel)
	drv, err := drivers.Open(ctx, r.name, cfg, append([]drivers.Option{drivers.WithLogger(log)}, opts...)...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if err := drv.Close(); err != nil {
			t.Errorf("%s driver Close: %v", r.name, err)
		}
		r.checkNoLeftovers(t, cfg.ContainerLabelTag)
		if t.Failed() {
			t.Logf("%s driver log:\n%s", r.name, logs.String())
		}
	})
	return drv, nil
}

// checkNoLeftovers fails t when a container carrying tag is left.
func (r *rig) checkNoLeftovers(t *testing.T, tag string) {
	t.Helper()
	// A shim may finish its removal just after the answer.
	deadline := time.Now().Add(10 * time.Second)
	for {
		left, err := r.tagged(tag)
		if err != nil {
			t.Errorf("listing containers of tag %s: %v", tag, err)
			return
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("left behind with tag %s: %v", tag, left)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tagged lists, with the bare client, the containers carrying tag.
func (r *rig) tagged(tag string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []string
	switch r.name {
	case rtDocker:
		list, err := r.docker().ListContainers(docker.ListContainersOptions{All: true, Context: ctx,
			Filters: map[string][]string{"label": {drivers.LabelTag + "=" + tag}}})
		if err != nil {
			return nil, err
		}
		for _, c := range list {
			out = append(out, c.ID)
		}
	case rtContainerd:
		list, err := r.containerd().ContainerService().List(r.nsCtx(ctx), fmt.Sprintf("labels.%q==%q", drivers.LabelTag, tag))
		if err != nil {
			return nil, err
		}
		for _, c := range list {
			out = append(out, c.ID)
		}
	}
	return out, nil
}

// exists reports, with the bare client, whether a container named or
// numbered id exists.
func (r *rig) exists(t *testing.T, id string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch r.name {
	case rtDocker:
		_, err := r.docker().InspectContainerWithContext(id, ctx)
		var gone *docker.NoSuchContainer
		if err != nil && !errors.As(err, &gone) {
			t.Fatalf("inspect %s: %v", id, err)
		}
		return err == nil
	default:
		_, err := r.containerd().ContainerService().Get(r.nsCtx(ctx), id)
		if err != nil && !errdefs.IsNotFound(err) {
			t.Fatalf("get container %s: %v", id, err)
		}
		return err == nil
	}
}

// Bare clients, one per runtime for the whole package, closed by TestMain.
var (
	bareMu         sync.Mutex
	bareDocker     *docker.Client
	bareContainerd *ctrd.Client
)

func (r *rig) docker() *docker.Client {
	bareMu.Lock()
	defer bareMu.Unlock()
	if bareDocker == nil {
		c, err := docker.NewClient(r.env["FNRUN_DOCKER_HOST"])
		if err != nil {
			panic(fmt.Sprintf("docker client for %s: %v", r.env["FNRUN_DOCKER_HOST"], err))
		}
		bareDocker = c
	}
	return bareDocker
}

func (r *rig) containerd() *ctrd.Client {
	bareMu.Lock()
	defer bareMu.Unlock()
	if bareContainerd == nil {
		c, err := ctrd.New(r.env["FNRUN_CONTAINERD_ADDRESS"], ctrd.WithTimeout(10*time.Second))
		if err != nil {
			panic(fmt.Sprintf("containerd client for %s: %v", r.env["FNRUN_CONTAINERD_ADDRESS"], err))
		}
		bareContainerd = c
	}
	return bareContainerd
}

// nsCtx puts the driver's containerd namespace on ctx.
func (r *rig) nsCtx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, r.env["FNRUN_CONTAINERD_NAMESPACE"])
}

func closeBareClients() {
	bareMu.Lock()
	defer bareMu.Unlock()
	if bareDocker != nil {
		bareDocker.HTTPClient.CloseIdleConnections()
	}
	if bareContainerd != nil {
		_ = bareContainerd.Close()
	}
}

// removeImage removes ref from the runtime's store with the bare client,
// leaving the image when other references or a container still use it.
func (r *rig) removeImage(ref string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch r.name {
	case rtDocker:
		_ = r.docker().RemoveImageExtended(ref, docker.RemoveImageOptions{Context: ctx})
	case rtContainerd:
		n, err := drivers.NormalizeImage(ref)
		if err == nil {
			_ = r.containerd().ImageService().Delete(r.nsCtx(ctx), n.Normalized)
		}
	}
}

// task is a task of the rig's busybox with a unique id.
func (r *rig) task(name, cmd string) *drivers.Task {
	return &drivers.Task{ID: "fn-" + name + "-" + randomID(), ImageRef: r.image(), Cmd: cmd}
}

// imageTask is a task of ref with a unique id that runs true.
func (r *rig) imageTask(name, ref string) *drivers.Task {
	task := r.task(name, "true")
	task.ImageRef = ref
	return task
}

// newCookie creates a cookie of task on drv; the caller closes it.
func newCookie(t *testing.T, ctx context.Context, drv drivers.Driver, task drivers.ContainerTask) drivers.Cookie {
	t.Helper()
	cookie, err := drv.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	return cookie
}

// prepared creates a cookie of task on drv and prepares it up to its
// container (test.Prepare); the test's end closes it.
func prepared(t *testing.T, ctx context.Context, drv drivers.Driver, task *drivers.Task) drivers.Cookie {
	t.Helper()
	cookie := newCookie(t, ctx, drv, task)
	t.Cleanup(func() { _ = cookie.Close(context.Background()) })
	if err := test.Prepare(ctx, cookie); err != nil {
		t.Fatal(err)
	}
	return cookie
}

// run takes task through the whole life cycle on drv.
func run(t *testing.T, ctx context.Context, drv drivers.Driver, task *drivers.Task) test.Outcome {
	t.Helper()
	out, err := test.Lifecycle(ctx, drv, task)
	if err != nil {
		t.Fatalf("life cycle of %s: %v", task.ID, err)
	}
	return out
}

// wantSuccess fails t unless out is a success.
func wantSuccess(t *testing.T, out test.Outcome) {
	t.Helper()
	if out.Result.Status() != drivers.StatusSuccess || out.Result.Error() != nil {
		t.Fatalf("status %s (%v), want success; stdout %q, stderr %q", out.Result.Status(), out.Result.Error(), out.Stdout, out.Stderr)
	}
}

// started is a cookie whose container runs.
type started struct {
	cookie drivers.Cookie
	wait   drivers.WaitResult
}

// start creates, prepares and runs task; the test's end closes it.
func start(t *testing.T, ctx context.Context, drv drivers.Driver, task *drivers.Task) started {
	t.Helper()
	cookie := prepared(t, ctx, drv, task)
	wait, err := cookie.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return started{cookie, wait}
}

// stop closes a started cookie and waits for its end.
func (s started) stop(t *testing.T) {
	t.Helper()
	if err := s.cookie.Close(context.Background()); err != nil {
		t.Errorf("Close: %v", err)
	}
	s.wait.Wait(context.Background())
}

// poolStats are the driver's pool figures.
func poolStats(t *testing.T, drv drivers.Driver) pool.Stats {
	t.Helper()
	r, ok := drv.(pool.Reporter)
	if !ok {
		t.Fatalf("%T does not report its pool", drv)
	}
	st, ok := r.PoolStats()
	if !ok {
		t.Fatal("the driver runs no pool")
	}
	return st
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// holders lists the driver's running pool holders, by id.
func holders(t *testing.T, drv drivers.Driver) []string {
	t.Helper()
	list, err := drv.(drivers.ContainerLister).Containers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range list {
		if c.Role == drivers.RoleHolder && c.State == drivers.StateRunning {
			ids = append(ids, c.ID)
		}
	}
	return ids
}

func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func randomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// discardLogger is a logger whose output no test reads.
func discardLogger() *logrus.Entry {
	l := logrus.New()
	l.Out = io.Discard
	return logrus.NewEntry(l)
}
