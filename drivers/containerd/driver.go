package containerd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/defaults"
	"github.com/containerd/containerd/namespaces"
	"github.com/golang/groupcache/singleflight"
	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/internal/dockerconfig"
	"github.com/fnrun/fnrun/pool"
	"github.com/fnrun/fnrun/stats"
)

// DriverName is the name the driver registers under and tags its metrics
// with.
const DriverName = "containerd"

// Labels set on every container, snapshot, image and lease the driver
// creates: the shared keys of package drivers, plus LabelLease. The driver
// never removes an object without them.
const (
	LabelLibrary  = drivers.LabelLibrary
	LabelDriver   = drivers.LabelDriver
	LabelTag      = drivers.LabelTag
	LabelInstance = drivers.LabelInstance
	// LabelLease says what a lease protects (pull, create...).
	LabelLease = "io.fnrun.lease"
)

// Driver runs tasks as containerd containers. It is safe for concurrent use.
type Driver struct {
	cfg      drivers.Config
	opts     options
	log      *logrus.Entry
	client   *ctrd.Client
	ns       string
	instance string
	labels   map[string]string // the ownership labels, never modified
	http     *http.Transport   // registry connections, closed by Close
	init     string            // host path of the init binary, "" for none
	oom      *oomWatcher
	janitor  *janitor
	images   imageCache
	// cni gives containers and holders a network; nil on a host without
	// CNI networking (loopback only). pool and cleaner are nil when the
	// configuration disables them.
	cni     *cniNetwork
	etc     etcDirs
	pool    *pool.Pool
	store   *imageStore
	cleaner *images.Cleaner

	// registryAuth holds the credentials of WithDockerConfig; nil without.
	registryAuth *dockerconfig.Config

	// bg ends when the driver closes: it stops the leak reaper, the OOM
	// event stream and shared pulls. wg counts every goroutine the driver
	// owns.
	bg     context.Context
	stopBG context.CancelFunc
	wg     sync.WaitGroup
	pulls  singleflight.Group

	mu        sync.Mutex
	closed    bool
	cookies   map[*cookie]struct{}
	policy    drivers.BackOffConfig
	checker   drivers.RetryErrorChecker
	closeOnce sync.Once
	closeErr  error
}

var (
	_ drivers.Driver  = (*Driver)(nil)
	_ drivers.Capable = (*Driver)(nil)
	_ pool.Reporter   = (*Driver)(nil)
	_ images.Provider = (*Driver)(nil)
)

// New connects to the containerd daemon at cfg.Containerd (containerd's
// default socket when empty) in namespace cfg.Namespace(). An unreachable
// daemon gives an error wrapping drivers.ErrDaemonUnavailable. When
// cfg.ContainerLabelTag is set, what other instances with that tag left
// behind is removed in the background.
//
// New also loads the CNI configuration (see cniNetwork for what happens
// when there is none), starts the pre-fork pool when
// cfg.PreForkPoolSize > 0 (it fills in the background), and starts the
// image cleaner when cfg.ImageCleanMaxSize > 0 (it lists the store first:
// exempt images larger than the budget fail New). Unusable settings give
// an error wrapping drivers.ErrInvalidConfig.
func New(ctx context.Context, cfg drivers.Config, opts ...Option) (*Driver, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Read before dialling: a bad file is the caller's to fix, whatever
	// the daemon's state.
	var registryAuth *dockerconfig.Config
	if o.dockerConfig != "" {
		var err error
		if registryAuth, err = dockerconfig.Load(o.dockerConfig, o.callTimeout, o.log.WithField("driver", DriverName)); err != nil {
			return nil, fmt.Errorf("containerd driver: %w", err)
		}
	}
	address := cfg.Containerd
	if address == "" {
		address = defaults.DefaultAddress
	}
	instance := cfg.InstanceId
	if instance == "" {
		instance = randomID()
	}
	dial := o.dialTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < dial {
		dial = time.Until(dl)
	}
	// Naming the runtime also spares New the namespace-label lookup the
	// client would otherwise make without any deadline.
	client, err := ctrd.New(address,
		ctrd.WithTimeout(dial),
		ctrd.WithDefaultNamespace(cfg.Namespace()),
		ctrd.WithDefaultRuntime(o.runtime))
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: %w: %w", address, drivers.ErrDaemonUnavailable, err)
	}
	if !o.initSet {
		o.init = findInit()
		if o.init == "" {
			o.log.Warn("no static tini found (tini-static, docker-init): commands run as process 1, which ignores SIGTERM and SIGKILL from inside")
		}
	}
	bg, stop := context.WithCancel(namespaces.WithNamespace(context.Background(), cfg.Namespace()))
	d := &Driver{
		cfg:      cfg,
		opts:     o,
		log:      o.log.WithFields(logrus.Fields{"driver": DriverName, "namespace": cfg.Namespace()}),
		client:   client,
		ns:       cfg.Namespace(),
		instance: instance,
		labels: map[string]string{
			LabelLibrary:  "fnrun",
			LabelDriver:   DriverName,
			LabelTag:      cfg.ContainerLabelTag,
			LabelInstance: instance,
		},
		etc:          newEtcDirs(o.stateDir, cfg.Namespace(), cfg.ContainerLabelTag, instance),
		http:         newTransport(),
		registryAuth: registryAuth,
		init:         o.init,
		bg:           bg,
		stopBG:       stop,
		cookies:      make(map[*cookie]struct{}),
	}
	// The handshake is lazy past the dial: ask for the version so that a
	// socket nobody answers on fails here, not on the first call.
	if err := d.call(d.nsCtx(ctx), "Version", func(ctx context.Context) error {
		_, err := client.Version(ctx)
		return err
	}); err != nil {
		stop()
		_ = client.Close()
		return nil, fmt.Errorf("containerd at %s: %w: %w", address, drivers.ErrDaemonUnavailable, err)
	}
	d.store = &imageStore{d: d}
	d.janitor = newJanitor(d)
	if d.cni, err = newCNINetwork(cfg, o.stateDir, instance, d.log); err != nil {
		d.abort()
		return nil, err
	}
	d.oom = newOOMWatcher(d)
	d.spawn(func() { d.oom.run(d.bg) })
	d.spawn(func() { d.janitor.run(d.bg) })
	if cfg.ContainerLabelTag != "" && !o.noReaper {
		d.spawn(func() { d.reapLeaks(d.bg) })
	}
	if cfg.PreForkPoolSize > 0 {
		if err := d.startPool(cfg); err != nil {
			d.abort()
			return nil, err
		}
	}
	if err := d.startCleaner(ctx, cfg); err != nil {
		d.abort()
		return nil, err
	}
	return d, nil
}

// startPool starts the pre-fork pool; it fills in the background.
func (d *Driver) startPool(cfg drivers.Config) error {
	adapter, err := newHolderAdapter(d, cfg)
	if err != nil {
		return err
	}
	pcfg := pool.ConfigFromDriver(cfg, DriverName)
	if len(pcfg.Networks) > 0 {
		// Holders get the CNI network every container gets; there is no
		// choice of network to spread them over.
		d.log.WithField("networks", pcfg.Networks).Warn("PreForkNetworks is ignored by the containerd driver: holders use the CNI network")
		pcfg.Networks = nil
	}
	if d.opts.poolConfig != nil {
		d.opts.poolConfig(&pcfg)
	}
	p, err := pool.New(adapter, pcfg, pool.WithLogger(d.log))
	if err != nil {
		return fmt.Errorf("containerd driver: %w", err)
	}
	d.pool = p
	return nil
}

// startCleaner starts the image cleaner when the configuration asks for
// one. The pool image, the configured one or the default, is exempt.
func (d *Driver) startCleaner(ctx context.Context, cfg drivers.Config) error {
	icfg, ok := images.ConfigFromDriver(DriverName, cfg)
	if !ok {
		return nil
	}
	if cfg.PreForkPoolSize > 0 && cfg.PreForkImage == "" {
		icfg.Exempt = append(icfg.Exempt, DefaultPreForkImage)
	}
	// Last uses live in image labels (imageStore is a LastUseStore), so
	// ImageCleanStateDir is not needed.
	if d.opts.cleanerConfig != nil {
		d.opts.cleanerConfig(&icfg)
	}
	c, err := images.New(d.store, icfg, images.WithLogger(d.log))
	if err != nil {
		return fmt.Errorf("containerd driver: %w", err)
	}
	if err := c.Start(d.nsCtx(ctx)); err != nil {
		return fmt.Errorf("containerd driver: image cleaner: %w", err)
	}
	d.cleaner = c
	return nil
}

// abort undoes a New that failed after the client connected.
func (d *Driver) abort() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	if d.pool != nil {
		_ = d.pool.Close()
	}
	d.stopBG()
	d.wg.Wait()
	d.removeStateDirs()
	d.http.CloseIdleConnections()
	_ = d.client.Close()
}

// removeStateDirs removes our namespace folder, and the tag's, when they
// are empty: nothing of ours is left, and another instance of the tag may
// still be using the tag's folder.
func (d *Driver) removeStateDirs() {
	_ = os.Remove(d.etc.dir)
	_ = os.Remove(d.etc.tagDir)
	if d.cni != nil {
		_ = os.Remove(d.cni.dir)
		_ = os.Remove(d.cni.tagDir)
	}
}

// Capabilities implements drivers.Capable: everything the contract names.
func (d *Driver) Capabilities() drivers.Capability {
	return drivers.CapRunsCommands | drivers.CapResourceLimits | drivers.CapOOMDetection |
		drivers.CapFreeze | drivers.CapReadOnlyRoot | drivers.CapUnprivileged | drivers.CapImagePull
}

// Client is the containerd client the driver uses, for callers that need
// what the contract does not offer. Its default namespace is the driver's.
func (d *Driver) Client() *ctrd.Client { return d.client }

// Namespace is the containerd namespace of every object the driver makes.
func (d *Driver) Namespace() string { return d.ns }

// Labels returns a copy of the ownership labels the driver puts on
// everything it creates.
func (d *Driver) Labels() map[string]string {
	out := make(map[string]string, len(d.labels))
	for k, v := range d.labels {
		out[k] = v
	}
	return out
}

// CreateCookie implements drivers.Driver. The task is checked before any
// daemon call: bad values give an error wrapping drivers.ErrInvalidTask.
func (d *Driver) CreateCookie(ctx context.Context, task drivers.ContainerTask) (drivers.Cookie, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	checked, err := drivers.CheckTask(task)
	if err != nil {
		return nil, err
	}
	if task.FsSize() != 0 {
		// Overlay snapshots share the host filesystem: there is nothing to
		// put a size limit on, and silently ignoring it would be worse.
		return nil, fmt.Errorf("task %s: FsSize %d MB with the %s snapshotter: %w",
			task.Id(), task.FsSize(), d.opts.snapshotter, drivers.ErrFsSizeUnsupported)
	}
	c := &cookie{d: d, task: task, checked: checked}
	c.opts = d.containerOptions(task, checked)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("containerd driver: %w", drivers.ErrClosed)
	}
	d.cookies[c] = struct{}{}
	return c, nil
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

// GetSlotKeyExtensions implements drivers.Driver. No extension changes what
// a containerd container does, so every call can share a hot container.
func (d *Driver) GetSlotKeyExtensions(map[string]string) string { return "" }

// Close implements drivers.Driver: it closes the cookies still open (ending
// their containers and removing them, and returning their pool leases),
// then stops the pool (removing every holder), then the image cleaner, then
// the rest of the background work; it waits for every goroutine of the
// driver and closes the client. It is idempotent.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		open := make([]*cookie, 0, len(d.cookies))
		for c := range d.cookies {
			open = append(open, c)
		}
		d.mu.Unlock()

		// In parallel: each running container may take the stop grace.
		var (
			errs  []error
			errMu sync.Mutex
			wg    sync.WaitGroup
		)
		for _, c := range open {
			wg.Add(1)
			go func(c *cookie) {
				defer wg.Done()
				if err := c.Close(context.Background()); err != nil {
					errMu.Lock()
					errs = append(errs, err)
					errMu.Unlock()
				}
			}(c)
		}
		wg.Wait()
		if d.pool != nil {
			if err := d.pool.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if d.cleaner != nil {
			if err := d.cleaner.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		d.stopBG()
		d.wg.Wait()
		d.removeStateDirs()
		d.http.CloseIdleConnections()
		if err := d.client.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close containerd client: %w", err))
		}
		if len(errs) > 0 {
			d.closeErr = fmt.Errorf("containerd driver close: %v", errs)
		}
	})
	return d.closeErr
}

// spawn runs f in a goroutine the driver owns; Close waits for it. It
// refuses once the driver is closing, so no goroutine can start after
// Close began to wait.
func (d *Driver) spawn(f func()) bool {
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

func (d *Driver) forget(c *cookie) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.cookies, c)
}

func (d *Driver) retryPolicy() (drivers.BackOffConfig, drivers.RetryErrorChecker) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.policy, d.checker
}

// nsCtx puts the driver's namespace on ctx: the client's interceptor covers
// the RPCs, but client-side helpers (spec generation, leases) read it
// from the context.
func (d *Driver) nsCtx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, d.ns)
}

// call runs one daemon call bounded by ctx and the per-operation timeout,
// and records its latency and outcome. When our own bound ends the call
// while ctx is still live, the daemon did not answer in time: that is
// drivers.ErrDaemonUnavailable.
func (d *Driver) call(ctx context.Context, api string, f func(context.Context) error) error {
	return d.callWithin(ctx, api, d.opts.callTimeout, f)
}

func (d *Driver) callWithin(ctx context.Context, api string, limit time.Duration, f func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	start := time.Now()
	err := f(cctx)
	stats.RecordDaemonCall(ctx, DriverName, api, start, err)
	switch cerr := ctx.Err(); {
	case err == nil:
	case cerr == nil && cctx.Err() != nil:
		err = fmt.Errorf("containerd %s: no answer within %v: %w: %w", api, limit, drivers.ErrDaemonUnavailable, err)
	case cerr != nil && !errors.Is(err, cerr):
		// The caller's context ended: say so in a way errors.Is sees
		// (gRPC reports it as a status, "code = Canceled").
		err = fmt.Errorf("containerd %s: %w: %w", api, cerr, err)
	}
	return err
}

// cleanupCtx is the context of work that must happen even when the
// caller's context has ended (ending a container, deleting a lease): the
// namespace and values of ctx, none of its cancellation, and the
// per-operation bound.
func (d *Driver) cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(d.nsCtx(context.WithoutCancel(ctx)), d.opts.callTimeout)
}

// detachedCtx is the context of cleanup that must finish whatever happened
// to ctx (Close): the namespace and values of ctx, none of its cancellation
// and no deadline of its own. Each daemon call under it is bounded on its
// own by the per-operation timeout, so a silent daemon gives
// drivers.ErrDaemonUnavailable rather than a shared deadline's error.
func (d *Driver) detachedCtx(ctx context.Context) context.Context {
	return d.nsCtx(context.WithoutCancel(ctx))
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
