package cninet

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/logs"
	"github.com/fnrun/fnrun/test"
)

// direct makes the call as it is.
type direct struct{}

func (direct) Call(ctx context.Context, _ string, f func(context.Context) error) error { return f(ctx) }

// bridgeConf is a configuration with a bridge and host-local, for the
// checks that never set it up.
const bridgeConf = `{"cniVersion": "1.0.0", "name": "unit", "plugins": [
	{"type": "bridge", "bridge": "unit0", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/16"}]]}}]}`

// TestNewInvalid: networking asked for and unusable is
// drivers.ErrInvalidConfig, found before any namespace is made.
func TestNewInvalid(t *testing.T) {
	writeConf := func(t *testing.T, content string) string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "10-unit.conflist"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	for _, tc := range []struct {
		name string
		cfg  func(t *testing.T) Config
		want string // in the message
	}{{
		name: "EmptyConfDir",
		cfg:  func(t *testing.T) Config { return Config{ConfDir: t.TempDir()} },
		want: "no network configuration",
	}, {
		name: "MissingPlugins",
		cfg:  func(t *testing.T) Config { return Config{ConfDir: writeConf(t, bridgeConf), BinDir: t.TempDir()} },
		want: `plugin "bridge"`,
	}, {
		name: "BrokenConfig",
		cfg:  func(t *testing.T) Config { return Config{ConfDir: writeConf(t, "{not json")} },
		want: "load configuration",
	}, {
		name: "NoStateDir",
		cfg:  func(t *testing.T) Config { return Config{ConfDir: writeConf(t, bridgeConf)} },
		want: "no state folder",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg(t)
			if tc.name != "NoStateDir" {
				cfg.StateDir = t.TempDir()
			}
			n, err := New(cfg, direct{}, logs.Discard())
			if !errors.Is(err, drivers.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, %v; want ErrInvalidConfig saying %q", n, err, tc.want)
			}
		})
	}
}

// TestNewNoneAtDefaultPlace: without a configuration at the default place,
// and none asked for, there is no network and no error.
func TestNewNoneAtDefaultPlace(t *testing.T) {
	if files, _ := filepath.Glob(filepath.Join(drivers.DefaultCNIConfDir, "*.conf*")); len(files) > 0 {
		t.Skipf("this host has a CNI configuration in %s", drivers.DefaultCNIConfDir)
	}
	n, err := New(Config{StateDir: t.TempDir()}, direct{}, logs.Discard())
	if n != nil || err != nil {
		t.Fatalf("got %v, %v; want no network", n, err)
	}
}

// cniEnv is the CNI network of the real test environment (test/env/up.sh).
type cniEnv struct {
	conf, bin string
	leases    string // host-local's leases, a folder per network
}

// requireCNI returns the environment, which takes root, or skips the test
// (fails it with CI=true).
func requireCNI(t *testing.T) cniEnv {
	t.Helper()
	env := test.Env(t, "FNRUN_CNI_CONF", "FNRUN_CNI_BIN", "FNRUN_STATE")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs as root; network namespaces need it")
		}
		t.Skip("needs root")
	}
	return cniEnv{conf: env["FNRUN_CNI_CONF"], bin: env["FNRUN_CNI_BIN"], leases: filepath.Join(env["FNRUN_STATE"], "cni", "networks")}
}

func (e cniEnv) network(t *testing.T, cfg Config) *Network {
	t.Helper()
	cfg.ConfDir, cfg.BinDir = e.conf, e.bin
	n, err := New(cfg, direct{}, logs.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.RemoveDirs)
	return n
}

// leaseIDs reads host-local's leases: CNI container id -> address.
func (e cniEnv) leaseIDs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	files, err := filepath.Glob(filepath.Join(e.leases, "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		ip := filepath.Base(f)
		if _, err := netip.ParseAddr(ip); err != nil {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			continue // released while reading
		}
		id, _, _ := strings.Cut(string(b), "\n")
		out[strings.TrimSpace(id)] = ip
	}
	return out
}

// TestAttachRelease: an attachment is a pinned namespace of the instance's
// folder with an address of the environment's bridge; Release takes both
// away.
func TestAttachRelease(t *testing.T) {
	env := requireCNI(t)
	cfg := Config{StateDir: t.TempDir(), Namespace: "fnrun", Tag: "attach-" + randomID(), Instance: "one"}
	n := env.network(t, cfg)
	ctx := context.Background()
	ns, err := n.Attach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.Release(context.Background()) })
	if dir := filepath.Join(cfg.NetNSDir(), "one"); filepath.Dir(ns.Path()) != dir || !strings.HasPrefix(ns.id, cfg.IDPrefix()) {
		t.Errorf("namespace %s (id %s), want one in %s named %s...", ns.Path(), ns.id, dir, cfg.IDPrefix())
	}
	if len(ns.Info().IPs) != 1 || !regexp.MustCompile(`^10\.88\.\d+\.\d+$`).MatchString(ns.Info().IPs[0]) {
		t.Errorf("addresses %q, want one in 10.88.0.0/16", ns.Info().IPs)
	}
	if ip := env.leaseIDs(t)[ns.id]; ip == "" || ip != ns.Info().IPs[0] {
		t.Errorf("host-local lease of %s: %q, want %q", ns.id, ip, ns.Info().IPs)
	}
	if own, ok := n.OwnNS(ns.Path()); !ok || own.id != ns.id {
		t.Errorf("OwnNS(%s) = %v, %v", ns.Path(), own, ok)
	}
	for _, p := range []string{"", "/proc/1/ns/net", filepath.Join(cfg.NetNSDir(), "one"), filepath.Join(cfg.NetNSDir(), "one", "probe-x")} {
		if _, ok := n.OwnNS(p); ok {
			t.Errorf("OwnNS(%q) is ours", p)
		}
	}
	if err := ns.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ns.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace after Release: %v", err)
	}
	if ip := env.leaseIDs(t)[ns.id]; ip != "" {
		t.Errorf("lease %s left after Release", ip)
	}
}

// TestReap: another instance's attachments of our tag are torn down, its
// other files removed, and its folder with them; our own namespaces and
// another tag's are kept.
func TestReap(t *testing.T) {
	env := requireCNI(t)
	ctx := context.Background()
	cfg := Config{StateDir: t.TempDir(), Namespace: "fnrun", Tag: "reap-" + randomID(), Instance: "crashed"}
	crashed := env.network(t, cfg)
	leaked, err := crashed.Attach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = leaked.Release(context.Background()) })
	// A namespace file that was never pinned, and one that is not an
	// attachment (a probe).
	unpinned := filepath.Join(crashed.dir, cfg.IDPrefix()+randomID())
	probe := filepath.Join(crashed.dir, "probe-"+randomID())
	for _, p := range []string{unpinned, probe} {
		if err := os.WriteFile(p, nil, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	otherCfg := cfg
	otherCfg.Tag = "other-" + cfg.Tag
	kept, err := env.network(t, otherCfg).Attach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kept.Release(context.Background()) })
	cfg.Instance = "reaper"
	reaper := env.network(t, cfg)
	mine, err := reaper.Attach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mine.Release(context.Background()) })

	if n := reaper.Reap(ctx, logs.Discard()); n != 3 {
		t.Errorf("reaped %d, want 3 (an attachment, an unpinned file, a probe)", n)
	}
	if _, err := os.Stat(crashed.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("crashed instance's folder: %v, want removed", err)
	}
	if ip := env.leaseIDs(t)[leaked.id]; ip != "" {
		t.Errorf("lease %s of the crashed instance left", ip)
	}
	for _, ns := range []*NS{mine, kept} {
		if !strings.HasPrefix(ns.Path(), cfg.StateDir) {
			t.Fatalf("%s not under the test's state folder", ns.Path())
		}
		if _, err := os.Stat(ns.Path()); err != nil {
			t.Errorf("%s: %v, want kept", ns.Path(), err)
		}
		if env.leaseIDs(t)[ns.id] == "" {
			t.Errorf("lease of %s gone, want kept", ns.Path())
		}
	}
}
