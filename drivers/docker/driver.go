package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	docker "github.com/fsouza/go-dockerclient"
	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/internal/dockerconfig"
	"github.com/fnrun/fnrun/internal/logs"
	"github.com/fnrun/fnrun/pool"
)

const (
	driverName      = "docker"
	defaultEndpoint = "unix:///var/run/docker.sock"
)

// Labels put on every container the driver creates: the shared keys of
// package drivers. The driver never touches a container that lacks
// LabelLibrary.
const (
	LabelLibrary  = drivers.LabelLibrary
	LabelTag      = drivers.LabelTag
	LabelInstance = drivers.LabelInstance
	libraryName   = drivers.LibraryName
)

// Default timeouts. The short one bounds every call that answers at once
// (inspect, create, start, kill, pause, remove...); a pull or a load moves
// data and gets longer. Wait and the stats stream last as long as the
// container, so only their contexts bound them.
const (
	defaultCallTimeout = 30 * time.Second
	defaultPullTimeout = 10 * time.Minute
	defaultLoadTimeout = 10 * time.Minute
	defaultStopGrace   = 2 * time.Second
	// defaultStatsDelay: the daemon publishes a sample a second, so a run
	// shorter than this would get none worth having; not subscribing saves
	// short calls a daemon request (about 6% of a `true` life cycle on a
	// loaded host).
	defaultStatsDelay = 250 * time.Millisecond
	// pullInactivity ends a pull whose progress stream went silent: a
	// registry that stalls mid-layer.
	pullInactivity = 2 * time.Minute
)

// Option configures a Driver.
type Option func(*options)

type options struct {
	log          *logrus.Entry
	dockerConfig string
	callTimeout  time.Duration
	pullTimeout  time.Duration
	loadTimeout  time.Duration
	stopGrace    time.Duration
	statsDelay   time.Duration
	tls          tlsRequest
	// wrapStore, for tests, changes the image store the cleaner and
	// ImageStore use (to confine a test to its own images on a shared
	// daemon).
	wrapStore func(images.Store) images.Store
}

// WithLogger sets the logger; the default discards everything.
func WithLogger(log *logrus.Entry) Option { return func(o *options) { o.log = log } }

// WithDockerConfig reads registry credentials from a Docker config.json, or
// from the config.json inside the folder path names (as DOCKER_CONFIG does).
// The credential helpers it names (credsStore, credHelpers) are run as the
// docker CLI runs them, per pull and for the image's registry only.
func WithDockerConfig(path string) Option { return func(o *options) { o.dockerConfig = path } }

// WithTLS connects to a tcp:// endpoint over TLS, as DOCKER_TLS_VERIFY=1
// does for the docker CLI: certPath is a folder with ca.pem, which the
// daemon's certificate must verify against, and cert.pem and key.pem, the
// client certificate (both or neither). An empty certPath means
// DOCKER_CERT_PATH, else ~/.docker. It takes precedence over
// DOCKER_TLS_VERIFY; on a unix:// endpoint New fails.
func WithTLS(certPath string) Option {
	return func(o *options) { o.tls = tlsRequest{enabled: true, certPath: certPath, explicit: true} }
}

// WithCallTimeout bounds every short daemon call (default 30s).
func WithCallTimeout(d time.Duration) Option { return func(o *options) { o.callTimeout = d } }

// WithPullTimeout bounds one pull attempt (default 10m).
func WithPullTimeout(d time.Duration) Option { return func(o *options) { o.pullTimeout = d } }

// WithLoadTimeout bounds the load of drivers.Config.DockerLoadFile (default 10m).
func WithLoadTimeout(d time.Duration) Option { return func(o *options) { o.loadTimeout = d } }

// WithStopGrace is how long a container has between SIGTERM and SIGKILL
// when it is ended early (default 2s).
func WithStopGrace(d time.Duration) Option { return func(o *options) { o.stopGrace = d } }

// WithStatsDelay is how long a container runs before its stats are
// streamed to the task (default 250ms; 0 streams from the start).
func WithStatsDelay(d time.Duration) Option { return func(o *options) { o.statsDelay = d } }

func (o *options) validate() error {
	for _, t := range []struct {
		name string
		d    time.Duration
	}{{"call timeout", o.callTimeout}, {"pull timeout", o.pullTimeout}, {"load timeout", o.loadTimeout}} {
		if t.d <= 0 {
			return fmt.Errorf("docker driver: %s %v must be positive: %w", t.name, t.d, drivers.ErrInvalidConfig)
		}
	}
	if o.stopGrace < 0 || o.statsDelay < 0 {
		return fmt.Errorf("docker driver: stop grace %v or stats delay %v is negative: %w", o.stopGrace, o.statsDelay, drivers.ErrInvalidConfig)
	}
	if o.log == nil {
		return fmt.Errorf("docker driver: nil logger: %w", drivers.ErrInvalidConfig)
	}
	return nil
}

// Driver runs cookies as Docker containers. It is safe for concurrent use.
type Driver struct {
	cfg      drivers.Config
	opts     options
	log      *logrus.Entry
	client   *docker.Client
	api      *rawAPI
	instance string
	host     hostInfo
	puller   *puller
	networks *networkSpread
	store    images.Store
	pool     *pool.Pool      // nil when PreForkPoolSize is 0
	cleaner  *images.Cleaner // nil when ImageCleanMaxSize is 0

	// registryAuth holds the credentials of WithDockerConfig; nil without.
	registryAuth *dockerconfig.Config

	// ctx ends background work (reaper, runs, shared pulls) when the
	// driver closes; wg counts every goroutine the driver started.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	policy  drivers.BackOffConfig
	checker drivers.RetryErrorChecker
}

var (
	_ drivers.Driver          = (*Driver)(nil)
	_ drivers.Capable         = (*Driver)(nil)
	_ drivers.ContainerLister = (*Driver)(nil)
	_ pool.Reporter           = (*Driver)(nil)
	_ images.Provider         = (*Driver)(nil)
)

// hostInfo is what the driver learns about the daemon at start.
type hostInfo struct {
	version       string // engine version, e.g. "20.10.24+dfsg1"
	storageDriver string
	backingFs     string
	cgroupVersion string // "1" or "2"
}

// New connects to the daemon of cfg.Docker (DOCKER_HOST or the default
// socket when empty), over TLS when WithTLS is given or DOCKER_TLS_VERIFY
// is set (certificates from DOCKER_CERT_PATH, else ~/.docker), checks its
// version against cfg.ServerVersion, loads cfg.DockerLoadFile and, when
// cfg.ContainerLabelTag is set, starts removing what earlier instances
// left behind. ctx bounds the start-up calls only. New never exits the
// process: an unreachable daemon, or one whose TLS handshake fails, gives
// an error wrapping drivers.ErrDaemonUnavailable; unusable certificate
// files give drivers.ErrInvalidConfig.
func New(ctx context.Context, cfg drivers.Config, opts ...Option) (*Driver, error) {
	o := options{
		log:         logs.Discard(),
		callTimeout: defaultCallTimeout,
		pullTimeout: defaultPullTimeout,
		loadTimeout: defaultLoadTimeout,
		stopGrace:   defaultStopGrace,
		statsDelay:  defaultStatsDelay,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	endpoint := cfg.Docker
	if endpoint == "" {
		endpoint = os.Getenv("DOCKER_HOST")
	}
	if endpoint == "" {
		endpoint = defaultEndpoint
	}
	if !o.tls.enabled {
		o.tls = tlsFromEnv()
	}
	tlsConfig, err := clientTLSConfig(o.tls, endpoint)
	if err != nil {
		return nil, err
	}
	api, err := newRawAPI(endpoint, o.callTimeout, tlsConfig)
	if err != nil {
		return nil, err
	}
	client, err := docker.NewClient(api.clientEndpoint())
	if err != nil {
		return nil, fmt.Errorf("docker driver: endpoint %q: %w: %v", endpoint, drivers.ErrInvalidConfig, err)
	}
	api.share(client)

	d := &Driver{
		cfg:      cfg,
		opts:     o,
		log:      o.log.WithField("driver", driverName),
		client:   client,
		api:      api,
		instance: cfg.InstanceId,
		networks: newNetworkSpread(cfg.DockerNetworks),
	}
	if d.instance == "" {
		d.instance = randomID()
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.puller = newPuller(d)
	var adapter *holderAdapter
	if cfg.PreForkPoolSize > 0 {
		if adapter, err = newHolderAdapter(d); err != nil {
			d.cancel()
			return nil, err
		}
	}
	d.store = newImageStore(d)
	if o.wrapStore != nil {
		d.store = o.wrapStore(d.store)
	}
	if err := d.start(ctx); err != nil {
		d.cancel()
		d.api.closeIdle()
		return nil, err
	}
	if err := d.startBackground(ctx, adapter); err != nil {
		d.cancel()
		d.api.closeIdle()
		return nil, err
	}
	if cfg.ContainerLabelTag != "" {
		d.wg.Add(1)
		go d.reapLeaks()
	}
	d.log.WithFields(logrus.Fields{"endpoint": endpoint, "version": d.host.version, "storage": d.host.storageDriver, "instance": d.instance}).Debug("docker driver ready")
	return d, nil
}

// start does the checks and loads of New that need the daemon.
func (d *Driver) start(ctx context.Context) error {
	if err := d.do(ctx, "ping", "", kindNone, func(ctx context.Context) error {
		return d.client.PingWithContext(ctx)
	}); err != nil {
		return fmt.Errorf("docker driver: daemon at %s: %w", d.api.endpoint, err)
	}
	info, err := d.info(ctx)
	if err != nil {
		return fmt.Errorf("docker driver: %w", err)
	}
	d.host = info
	if want := d.cfg.ServerVersion; want != "" {
		if err := checkVersion(info.version, want); err != nil {
			return err
		}
	}
	if path := d.opts.dockerConfig; path != "" {
		if d.registryAuth, err = dockerconfig.Load(path, d.opts.callTimeout, d.log); err != nil {
			return fmt.Errorf("docker driver: %w", err)
		}
	}
	if path := d.cfg.DockerLoadFile; path != "" {
		if err := d.loadImages(ctx, path); err != nil {
			return err
		}
	}
	return nil
}

// startBackground starts the image cleaner and then the pre-fork pool, as
// the configuration asks. On error nothing of either is left running.
func (d *Driver) startBackground(ctx context.Context, adapter *holderAdapter) error {
	if icfg, ok := images.ConfigFromDriver(driverName, d.cfg); ok {
		icfg.StateDir = d.cfg.ImageCleanStateDir
		cleaner, err := images.New(d.store, icfg, images.WithLogger(d.log))
		if err != nil {
			return fmt.Errorf("docker driver: image cleaner: %w", err)
		}
		if err := cleaner.Start(ctx); err != nil {
			_ = cleaner.Close()
			return fmt.Errorf("docker driver: image cleaner: %w", err)
		}
		d.cleaner = cleaner
	}
	if adapter != nil {
		p, err := pool.New(adapter, pool.ConfigFromDriver(d.cfg, driverName), pool.WithLogger(d.log))
		if err != nil {
			if d.cleaner != nil {
				_ = d.cleaner.Close()
			}
			return fmt.Errorf("docker driver: pre-fork pool: %w", err)
		}
		d.pool = p
	}
	return nil
}

// checkVersion compares dotted numeric versions, ignoring a suffix such as
// "-ce" or "+dfsg1".
func checkVersion(have, want string) error {
	w, err := parseVersion(want)
	if err != nil {
		return fmt.Errorf("docker driver: server version %q: %w", want, drivers.ErrInvalidConfig)
	}
	h, err := parseVersion(have)
	if err != nil {
		return fmt.Errorf("docker driver: daemon reports an unreadable version %q", have)
	}
	for i := 0; i < len(w); i++ {
		var hv int
		if i < len(h) {
			hv = h[i]
		}
		if hv != w[i] {
			if hv < w[i] {
				return fmt.Errorf("docker driver: daemon version %s is older than the required %s: %w", have, want, drivers.ErrInvalidConfig)
			}
			return nil
		}
	}
	return nil
}

func parseVersion(v string) ([]int, error) {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	if i := strings.IndexAny(v, "-+~ "); i >= 0 {
		v = v[:i]
	}
	if v == "" {
		return nil, fmt.Errorf("empty version")
	}
	parts := strings.Split(v, ".")
	out := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("version part %q is not a number", p)
		}
		out[i] = n
	}
	return out, nil
}

// loadImages loads an image tarball (docker save format) into the daemon.
func (d *Driver) loadImages(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("docker driver: load file: %w", err)
	}
	defer f.Close()
	var out strings.Builder
	err = d.doWithin(ctx, "load", path, kindNone, d.opts.loadTimeout, func(ctx context.Context) error {
		if err := d.client.LoadImage(docker.LoadImageOptions{InputStream: f, OutputStream: &out, Context: ctx}); err != nil {
			return err
		}
		// The daemon answers 200 and reports a bad archive inside the
		// stream, which go-dockerclient copies as is.
		return streamError(out.String())
	})
	if err != nil {
		return fmt.Errorf("docker driver: %w", err)
	}
	d.log.WithField("file", path).Info("loaded images")
	return nil
}

// Capabilities implements drivers.Capable.
func (d *Driver) Capabilities() drivers.Capability {
	return drivers.CapRunsCommands | drivers.CapResourceLimits | drivers.CapOOMDetection |
		drivers.CapFreeze | drivers.CapReadOnlyRoot | drivers.CapUnprivileged | drivers.CapImagePull
}

// CreateCookie implements drivers.Driver. It validates the task and builds
// the create options; it makes no daemon call.
func (d *Driver) CreateCookie(ctx context.Context, task drivers.ContainerTask) (drivers.Cookie, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	checked, err := drivers.CheckTask(task)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("docker driver: %w", drivers.ErrClosed)
	}
	return newCookie(d, task, checked)
}

// SetPullImageRetryPolicy implements drivers.Driver.
func (d *Driver) SetPullImageRetryPolicy(policy drivers.BackOffConfig, checker drivers.RetryErrorChecker) error {
	if err := policy.Validate(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.policy, d.checker = policy, checker
	return nil
}

func (d *Driver) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

func (d *Driver) retryPolicy() (drivers.BackOffConfig, drivers.RetryErrorChecker) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.policy, d.checker
}

// GetSlotKeyExtensions implements drivers.Driver. No extension changes what
// a Docker container is, so any hot container can serve any call.
func (d *Driver) GetSlotKeyExtensions(map[string]string) string { return "" }

// Close implements drivers.Driver. In the reverse order of starting, it
// ends the containers still running (with the leak reaper and shared pulls,
// which stop with them) and waits for their goroutines; then it closes the
// pre-fork pool, which stops and removes every holder; then the image
// cleaner, which writes its last-use state; and it closes idle
// connections. Cookies still open can be closed afterwards to remove their
// containers. Close is idempotent; it returns the pool's and the cleaner's
// errors (a holder that could not be removed is left for the leak reaper
// of the next instance).
func (d *Driver) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
	var errs []error
	if d.pool != nil {
		if err := d.pool.Close(); err != nil {
			errs = append(errs, fmt.Errorf("docker driver: pre-fork pool: %w", err))
		}
	}
	if d.cleaner != nil {
		if err := d.cleaner.Close(); err != nil {
			errs = append(errs, fmt.Errorf("docker driver: image cleaner: %w", err))
		}
	}
	d.api.closeIdle()
	return errors.Join(errs...)
}

// PoolStats implements pool.Reporter.
func (d *Driver) PoolStats() (pool.Stats, bool) {
	if d.pool == nil {
		return pool.Stats{}, false
	}
	return d.pool.Stats(), true
}

// ImageStore implements images.Provider: the daemon's image store, for a
// one-shot cleanup job (images.New on it, then CleanOnce) even when the
// driver runs no cleaner.
func (d *Driver) ImageStore() images.Store { return d.store }

// ImageCleaner implements images.Provider: the cleaner the driver runs
// when ImageCleanMaxSize is set.
func (d *Driver) ImageCleaner() (*images.Cleaner, bool) { return d.cleaner, d.cleaner != nil }

// Instance is the instance id in this driver's labels.
func (d *Driver) Instance() string { return d.instance }

// labels are the labels of every container of this driver; callers add
// drivers.LabelRole.
func (d *Driver) labels() map[string]string {
	return map[string]string{
		LabelLibrary:  libraryName,
		LabelTag:      d.cfg.ContainerLabelTag,
		LabelInstance: d.instance,
	}
}

// goOwned runs f in a goroutine the driver owns: Close waits for it. It
// returns false, without running f, once Close has begun, so that no
// goroutine is added while Close waits.
func (d *Driver) goOwned(f func()) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		f()
	}()
	return true
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
