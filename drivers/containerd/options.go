package containerd

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/lifecycle"
	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/pool"
)

// Defaults of the options.
const (
	DefaultSnapshotter = "overlayfs"
	// DefaultRuntime is containerd's runc shim, the runtime when FnrunShim
	// is not on the PATH.
	DefaultRuntime = "io.containerd.runc.v2"
	// FnrunRuntime is the runc shim behind this module's
	// containerd-shim-fnrun-v2 (FnrunShim), which spares every task a second
	// `runc delete` (see cmd/containerd-shim-fnrun-v2).
	FnrunRuntime = "io.containerd.fnrun.v2"
	// FnrunShim is FnrunRuntime's binary, as containerd names it.
	FnrunShim            = "containerd-shim-fnrun-v2"
	DefaultDialTimeout   = 5 * time.Second
	DefaultStatsInterval = time.Second
	// DefaultLeaseExpiry bounds how long a lease of a crashed process keeps
	// content from the garbage collector.
	DefaultLeaseExpiry = time.Hour
	// DefaultStateDir is where the driver keeps what it owns on the host:
	// the pinned network namespaces and the /etc files of its containers
	// (package cninet describes the layout). A tmpfs is the right place:
	// neither survives a reboot.
	DefaultStateDir = "/run/fnrun/containerd"
)

// Option configures a Driver: any drivers.Option (logger, timeouts, Docker
// config, no leak reaper), or one of this package.
type Option = drivers.Option

type options struct {
	snapshotter   string
	runtime       string
	runtimeSet    bool
	dialTimeout   time.Duration
	statsInterval time.Duration
	leaseExpiry   time.Duration
	fifoDir       string
	network       NetworkProvider
	init          string
	initSet       bool
	stateDir      string
}

type option func(*options)

func with(f func(*options)) Option { return drivers.WithExtra(option(f)) }

func defaultOptions() options {
	return options{
		snapshotter:   DefaultSnapshotter,
		dialTimeout:   DefaultDialTimeout,
		statsInterval: DefaultStatsInterval,
		leaseExpiry:   DefaultLeaseExpiry,
		stateDir:      DefaultStateDir,
	}
}

func (o options) validate() error {
	switch {
	case o.snapshotter == "" || (o.runtimeSet && o.runtime == "") || o.stateDir == "":
		return fmt.Errorf("containerd driver: empty snapshotter, runtime or state dir: %w", drivers.ErrInvalidConfig)
	case o.dialTimeout <= 0 || o.statsInterval <= 0 || o.leaseExpiry <= 0:
		return fmt.Errorf("containerd driver: dial timeout %v, stats interval %v and lease expiry %v must be positive: %w",
			o.dialTimeout, o.statsInterval, o.leaseExpiry, drivers.ErrInvalidConfig)
	}
	return nil
}

// WithSnapshotter names the snapshotter that images are unpacked into and
// root filesystems are prepared with.
func WithSnapshotter(name string) Option {
	return with(func(o *options) { o.snapshotter = name })
}

// WithRuntime names the containerd runtime (shim) that runs the tasks. By
// default the driver uses FnrunRuntime when FnrunShim is on its PATH, and
// DefaultRuntime otherwise. containerd looks for the shim on its own PATH:
// install it where the daemon finds it too (`make up` puts it in
// /usr/local/bin).
func WithRuntime(name string) Option {
	return with(func(o *options) { o.runtime, o.runtimeSet = name, true })
}

// findRuntime is the default runtime (see WithRuntime).
func findRuntime() string {
	if _, err := exec.LookPath(FnrunShim); err == nil {
		return FnrunRuntime
	}
	return DefaultRuntime
}

// WithDialTimeout bounds the connection to the daemon in New.
func WithDialTimeout(d time.Duration) Option {
	return with(func(o *options) { o.dialTimeout = d })
}

// WithStatsInterval is the period of the metric samples written to a
// running task.
func WithStatsInterval(d time.Duration) Option {
	return with(func(o *options) { o.statsInterval = d })
}

// WithLeaseExpiry bounds the life of the leases the driver takes, which is
// what a crash can leave behind.
func WithLeaseExpiry(d time.Duration) Option {
	return with(func(o *options) { o.leaseExpiry = d })
}

// WithFIFODir sets where the task IO FIFOs are created; it must be on the
// same host as the daemon. Empty is containerd's default.
func WithFIFODir(dir string) Option {
	return with(func(o *options) { o.fifoDir = dir })
}

// WithNetworkProvider makes every container that wants a network join the
// namespace the provider hands out, instead of a pool holder's or a fresh
// CNI network (see acquireNetwork).
func WithNetworkProvider(p NetworkProvider) Option {
	return with(func(o *options) { o.network = p })
}

// WithInit sets the host path of a statically linked init (tini) to run as
// every container's process 1; "" runs the command itself as process 1.
// By default the driver looks for tini-static or docker-init on the PATH.
// The daemon's host must have the file: runc bind-mounts it.
func WithInit(path string) Option {
	return with(func(o *options) { o.init, o.initSet = path, true })
}

// initCandidates are static builds of tini, which any image can run.
var initCandidates = []string{"tini-static", "docker-init"}

// findInit returns the first init candidate on the PATH, or "".
func findInit() string {
	for _, name := range initCandidates {
		p, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return real
		}
	}
	return ""
}

// WithStateDir sets the folder where the driver keeps what it owns on the
// host (the pinned network namespaces, the containers' /etc files); default
// DefaultStateDir. Every driver instance that shares a label tag must share
// it too, so that one can remove what another left.
func WithStateDir(dir string) Option {
	return with(func(o *options) { o.stateDir = dir })
}

// WithPoolConfig adjusts the pre-fork pool's configuration (see
// lifecycle.PoolOption); it does nothing when the pool is off.
func WithPoolConfig(f func(*pool.Config)) Option { return drivers.WithExtra(lifecycle.PoolOption(f)) }

// WithImageCleanerConfig adjusts the image cleaner's configuration (see
// lifecycle.CleanerOption); it does nothing when the cleaner is off.
func WithImageCleanerConfig(f func(*images.Config)) Option {
	return drivers.WithExtra(lifecycle.CleanerOption(f))
}
