package containerd

import (
	"os/exec"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/internal/logs"
	"github.com/fnrun/fnrun/pool"
)

// Defaults of the options.
const (
	DefaultSnapshotter   = "overlayfs"
	DefaultRuntime       = "io.containerd.runc.v2"
	DefaultDialTimeout   = 5 * time.Second
	DefaultCallTimeout   = 30 * time.Second
	DefaultPullTimeout   = 10 * time.Minute
	DefaultStopGrace     = time.Second
	DefaultStatsInterval = time.Second
	// DefaultLeaseExpiry bounds how long a lease of a crashed process keeps
	// content from the garbage collector.
	DefaultLeaseExpiry = time.Hour
)

// Option configures a Driver.
type Option func(*options)

type options struct {
	log           *logrus.Entry
	dockerConfig  string
	snapshotter   string
	runtime       string
	dialTimeout   time.Duration
	callTimeout   time.Duration
	pullTimeout   time.Duration
	stopGrace     time.Duration
	statsInterval time.Duration
	leaseExpiry   time.Duration
	fifoDir       string
	network       NetworkProvider
	init          string
	initSet       bool
	stateDir      string
	noReaper      bool
	poolConfig    func(*pool.Config)
	cleanerConfig func(*images.Config)
}

func defaultOptions() options {
	return options{
		log:           logs.Discard(),
		snapshotter:   DefaultSnapshotter,
		runtime:       DefaultRuntime,
		dialTimeout:   DefaultDialTimeout,
		callTimeout:   DefaultCallTimeout,
		pullTimeout:   DefaultPullTimeout,
		stopGrace:     DefaultStopGrace,
		statsInterval: DefaultStatsInterval,
		leaseExpiry:   DefaultLeaseExpiry,
		stateDir:      DefaultStateDir,
	}
}

// WithLogger sets the logger; the default discards everything.
func WithLogger(log *logrus.Entry) Option {
	return func(o *options) {
		if log != nil {
			o.log = log
		}
	}
}

// WithDockerConfig reads registry credentials from a Docker config.json, or
// from the config.json inside the folder path names (as DOCKER_CONFIG does),
// as the docker driver's option of the same name does: "auths" and the
// credential helpers of credsStore and credHelpers, run per pull (bounded
// by the call timeout) and for the image's registry only. A task's own
// credentials (drivers.Auther) come first; the file's are offered to the
// exact host they were stored for and to no other, Docker Hub's key
// "https://index.docker.io/v1/" standing for registry-1.docker.io. A file
// that cannot be read or parsed fails New with drivers.ErrInvalidConfig.
func WithDockerConfig(path string) Option {
	return func(o *options) { o.dockerConfig = path }
}

// WithSnapshotter names the snapshotter that images are unpacked into and
// root filesystems are prepared with.
func WithSnapshotter(name string) Option {
	return func(o *options) {
		if name != "" {
			o.snapshotter = name
		}
	}
}

// WithRuntime names the containerd runtime (shim) that runs the tasks.
func WithRuntime(name string) Option {
	return func(o *options) {
		if name != "" {
			o.runtime = name
		}
	}
}

// WithDialTimeout bounds the connection to the daemon in New.
func WithDialTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.dialTimeout = d
		}
	}
}

// WithCallTimeout bounds every daemon call besides pulls, on top of the
// caller's context, so a hung daemon cannot hang the caller.
func WithCallTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.callTimeout = d
		}
	}
}

// WithPullTimeout bounds one shared image pull, retries included.
func WithPullTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.pullTimeout = d
		}
	}
}

// WithStopGrace is how long a container has to exit after SIGTERM before
// it gets SIGKILL.
func WithStopGrace(d time.Duration) Option {
	return func(o *options) {
		if d >= 0 {
			o.stopGrace = d
		}
	}
}

// WithStatsInterval is the period of the metric samples written to a
// running task.
func WithStatsInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.statsInterval = d
		}
	}
}

// WithLeaseExpiry bounds the life of the leases the driver takes, which is
// what a crash can leave behind.
func WithLeaseExpiry(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.leaseExpiry = d
		}
	}
}

// WithFIFODir sets where the task IO FIFOs are created; it must be on the
// same host as the daemon. Empty is containerd's default.
func WithFIFODir(dir string) Option {
	return func(o *options) { o.fifoDir = dir }
}

// WithNetworkProvider makes every container that wants a network join the
// namespace the provider hands out, instead of a pool holder's or a fresh
// CNI network (see acquireNetwork).
func WithNetworkProvider(p NetworkProvider) Option {
	return func(o *options) { o.network = p }
}

// WithInit sets the host path of a statically linked init (tini) to run as
// every container's process 1; "" runs the command itself as process 1.
// By default the driver looks for tini-static or docker-init on the PATH.
// The daemon's host must have the file: runc bind-mounts it.
func WithInit(path string) Option {
	return func(o *options) { o.init, o.initSet = path, true }
}

// initCandidates are static builds of tini, which any image can run.
var initCandidates = []string{"tini-static", "docker-init"}

// findInit returns the first init candidate on the PATH, symlinks
// resolved, or "".
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
	return func(o *options) {
		if dir != "" {
			o.stateDir = dir
		}
	}
}

// WithPoolConfig adjusts the pre-fork pool's configuration, as derived
// from the driver's, before the pool starts (idle shrink delay, retry
// pacing, start concurrency...). It does nothing when the pool is off.
func WithPoolConfig(f func(*pool.Config)) Option {
	return func(o *options) { o.poolConfig = f }
}

// WithImageCleanerConfig adjusts the image cleaner's configuration, as
// derived from the driver's, before it starts (low-water mark, intervals).
// It does nothing when the cleaner is off.
func WithImageCleanerConfig(f func(*images.Config)) Option {
	return func(o *options) { o.cleanerConfig = f }
}

// WithoutLeakReaper keeps New from removing what other instances with the
// same label tag left behind. A tool that inspects or manages the
// containers of a running instance (listing them with Containers, ending
// one with KillContainer) builds its driver with this option: without it,
// the running instance's containers and holders would be taken for the
// leftovers of a crashed one.
func WithoutLeakReaper() Option {
	return func(o *options) { o.noReaper = true }
}
