package containerd

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/leases"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/cninet"
)

// testEnv is the real environment test/env/up.sh starts, read from the
// FNRUN_* variables it writes.
type testEnv struct {
	address      string
	namespace    string
	localImage   string // present in the store, in no registry
	registry     string // plain HTTP, anonymous
	testImage    string // in registry
	pullImage    string // in registry, removed and pulled by the conformance suite
	authRegistry string // plain HTTP, htpasswd
	authImage    string
	authUser     string
	authPassword string
	dockerConfig string // a folder whose config.json logs in to authRegistry
	cniConf      string // CNI configuration folder
	cniBin       string // CNI plugins
	cniLeases    string // host-local's leases, under the network's name
}

func getenv(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// requireEnv returns the environment, or skips the test when there is no
// daemon; in CI (CI=true) a missing daemon fails the test instead, so the
// suite cannot pass silently.
func requireEnv(t testing.TB) testEnv {
	t.Helper()
	env := testEnv{
		address:      getenv("FNRUN_CONTAINERD_ADDRESS", "/var/tmp/fnrun-env/containerd.sock"),
		namespace:    getenv("FNRUN_CONTAINERD_NAMESPACE", drivers.DefaultContainerdNamespace),
		localImage:   getenv("FNRUN_CONTAINERD_LOCAL_IMAGE", "docker.io/fnrun-test/busybox:latest"),
		registry:     getenv("FNRUN_REGISTRY", "127.0.0.1:5000"),
		testImage:    getenv("FNRUN_TEST_IMAGE", "127.0.0.1:5000/fnrun/busybox:latest"),
		pullImage:    getenv("FNRUN_PULL_TEST_IMAGE", "127.0.0.1:5000/fnrun/pull-test:latest"),
		authRegistry: getenv("FNRUN_AUTH_REGISTRY", "127.0.0.1:5001"),
		authImage:    getenv("FNRUN_AUTH_TEST_IMAGE", "127.0.0.1:5001/fnrun/busybox:latest"),
		authUser:     getenv("FNRUN_AUTH_USER", "fnrun"),
		authPassword: getenv("FNRUN_AUTH_PASSWORD", "fnrun-secret"),
		dockerConfig: getenv("FNRUN_DOCKER_CONFIG", "/var/tmp/fnrun-env/docker-config"),
		cniConf:      getenv("FNRUN_CNI_CONF", "/var/tmp/fnrun-env/cni/conf"),
		cniBin:       getenv("FNRUN_CNI_BIN", drivers.DefaultCNIBinDir),
		cniLeases:    filepath.Join(getenv("FNRUN_STATE", "/var/tmp/fnrun-env"), "cni", "networks"),
	}
	// Probe once per process: without a daemon, every test would wait for
	// the dial timeout.
	probeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d, err := New(ctx, drivers.Config{Containerd: env.address, ContainerdNamespace: env.namespace})
		if err != nil {
			probeErr = err
			return
		}
		_ = d.Close()
	})
	if probeErr != nil {
		msg := "no containerd at " + env.address + " (start it with test/env/up.sh and source its env file): " + probeErr.Error()
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return env
}

var (
	probeOnce sync.Once
	probeErr  error
)

// testLogger logs to the test output with FNRUN_TEST_LOG=debug (or any
// logrus level); by default it discards like the driver's own default.
func testLogger(t testing.TB) *logrus.Entry {
	l := logrus.New()
	lvl, err := logrus.ParseLevel(os.Getenv("FNRUN_TEST_LOG"))
	if err != nil {
		l.Out = discard{}
		return logrus.NewEntry(l)
	}
	l.SetLevel(lvl)
	l.Out = testWriter{t}
	return logrus.NewEntry(l)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newTestDriver builds a driver on the environment with a label tag of its
// own, the environment's CNI network, and closes it at the end of the test.
func newTestDriver(t testing.TB, env testEnv, cfg drivers.Config, opts ...Option) *Driver {
	t.Helper()
	cfg.Containerd = env.address
	cfg.ContainerdNamespace = env.namespace
	if cfg.CNIConfDir == "" && cfg.CNIBinDir == "" {
		cfg.CNIConfDir, cfg.CNIBinDir = env.cniConf, env.cniBin
	}
	if cfg.ContainerLabelTag == "" {
		cfg.ContainerLabelTag = "test-" + randomID()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := New(ctx, cfg, append([]Option{drivers.WithLogger(testLogger(t))}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("driver Close: %v", err)
		}
	})
	return d
}

// inspector looks at the daemon with a client of its own, so checks do not
// depend on the driver under test (which may be closed by then).
type inspector struct {
	client *ctrd.Client
	ns     string
}

func newInspector(t testing.TB, env testEnv) *inspector {
	t.Helper()
	c, err := ctrd.New(env.address, ctrd.WithTimeout(5*time.Second), ctrd.WithDefaultNamespace(env.namespace), ctrd.WithDefaultRuntime(DefaultRuntime))
	if err != nil {
		t.Fatalf("inspector client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &inspector{client: c, ns: env.namespace}
}

func (in *inspector) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, in.ns)
}

// leftovers lists the containers, tasks, snapshots and leases that carry
// tag, and the containers' /etc file folders of the tag.
func (in *inspector) leftovers(ctx context.Context, tag string) ([]string, error) {
	ctx = in.ctx(ctx)
	filter := labelFilter(LabelTag, "==", tag)
	var out []string
	ctrs, err := in.client.Containers(ctx, filter)
	if err != nil {
		return nil, err
	}
	for _, c := range ctrs {
		out = append(out, "container "+c.ID())
		if _, err := c.Task(ctx, nil); err == nil {
			out = append(out, "task "+c.ID())
		}
	}
	err = in.client.SnapshotService(DefaultSnapshotter).Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		out = append(out, "snapshot "+info.Name)
		return nil
	}, filter)
	if err != nil {
		return nil, err
	}
	ls, err := in.client.LeasesService().List(ctx, filter)
	if err != nil {
		return nil, err
	}
	for _, l := range ls {
		out = append(out, "lease "+l.ID)
	}
	etc, err := etcLeftovers(in.ns, tag)
	if err != nil {
		return nil, err
	}
	out = append(out, etc...)
	sort.Strings(out)
	return out, nil
}

// etcLeftovers lists the /etc file folders of the containers of tag, in
// every instance's folder. An empty instance folder is a live driver's.
func etcLeftovers(namespace, tag string) ([]string, error) {
	dirs, err := filepath.Glob(filepath.Join(hostConfig(namespace, tag).EtcDir(), "*", "*"))
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(dirs))
	for _, dir := range dirs {
		out = append(out, "etc "+dir)
	}
	return out, nil
}

// hostConfig places the namespaces and /etc files of the drivers of tag
// with the default state folder, as newTestDriver makes them.
func hostConfig(namespace, tag string) cninet.Config {
	return cninet.Config{StateDir: DefaultStateDir, Namespace: namespace, Tag: tag}
}

// fnrunLeases lists every lease of the library in the namespace.
func (in *inspector) fnrunLeases(ctx context.Context, tag string) ([]leases.Lease, error) {
	return in.client.LeasesService().List(in.ctx(ctx), labelFilter(LabelTag, "==", tag))
}

// syncBuf is a strings.Builder safe for the run's writers and the test.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
