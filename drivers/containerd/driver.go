package containerd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"sync"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/defaults"
	"github.com/containerd/containerd/namespaces"
	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/lifecycle"
	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/images/containerdstore"
	"github.com/fnrun/fnrun/internal/cninet"
	"github.com/fnrun/fnrun/internal/registry"
)

// DriverName is the name the driver registers under and tags metrics with.
const DriverName = "containerd"

// Labels set on every container, snapshot, image and lease the driver
// creates: the shared keys of package drivers, plus LabelLease.
const (
	LabelLibrary  = drivers.LabelLibrary
	LabelDriver   = drivers.LabelDriver
	LabelTag      = drivers.LabelTag
	LabelInstance = drivers.LabelInstance
	// LabelLease says what a lease protects (pull, create...).
	LabelLease = "io.fnrun.lease"
	// LabelLastUse is the image label of an image's last use (see
	// containerdstore.LabelLastUse).
	LabelLastUse = containerdstore.LabelLastUse
)

// Driver runs tasks as containerd containers over the shared life cycle.
type Driver struct {
	*lifecycle.Driver
	d *daemon
}

var _ drivers.Driver = (*Driver)(nil)

// daemon is the lifecycle.Runtime of containerd.
type daemon struct {
	s       *lifecycle.Settings
	opts    options
	log     *logrus.Entry
	caller  lifecycle.Caller
	client  *ctrd.Client
	ns      string
	http    *http.Transport // registry connections, closed by Close
	oom     *oomWatcher
	janitor *janitor
	images  imageCache
	// cni gives containers and holders a network; nil on a host without
	// CNI networking (loopback only).
	cni   *cninet.Network
	etc   *cninet.EtcFiles
	store *containerdstore.Store

	// bg ends the daemon's own watchers (OOM events, the janitor) when it
	// closes; wg counts them.
	bg     context.Context
	stopBG context.CancelFunc
	wg     sync.WaitGroup
}

// New connects to the containerd daemon at cfg.Containerd (containerd's
// default socket when empty) in namespace cfg.Namespace() and starts what
// cfg asks for. An unreachable daemon gives an error wrapping
// drivers.ErrDaemonUnavailable; unusable settings drivers.ErrInvalidConfig.
func New(ctx context.Context, cfg drivers.Config, opts ...Option) (*Driver, error) {
	s, err := lifecycle.Configure(DriverName, cfg, opts)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d, err := connect(ctx, cfg, s)
	if err != nil {
		return nil, err
	}
	ld, err := lifecycle.New(d.nsCtx(ctx), s, d)
	if err != nil {
		_ = d.Close()
		return nil, err
	}
	return &Driver{Driver: ld, d: d}, nil
}

func connect(ctx context.Context, cfg drivers.Config, s *lifecycle.Settings) (*daemon, error) {
	o := defaultOptions()
	for _, x := range s.Extra {
		if f, ok := x.(option); ok {
			f(&o)
		}
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	if !o.runtimeSet {
		o.runtime = findRuntime()
	}
	address := cfg.Containerd
	if address == "" {
		address = defaults.DefaultAddress
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
			s.Logger.Warn("no static tini found (tini-static, docker-init): commands run as process 1, which ignores SIGTERM and SIGKILL from inside")
		}
	}
	host := cninet.Config{
		ConfDir: cfg.CNIConfDir, BinDir: cfg.CNIBinDir, StateDir: o.stateDir,
		Namespace: cfg.Namespace(), Tag: s.Tag, Instance: s.Instance,
	}
	bg, stop := context.WithCancel(namespaces.WithNamespace(context.Background(), cfg.Namespace()))
	d := &daemon{
		s:      s,
		opts:   o,
		log:    s.Logger.WithField("namespace", cfg.Namespace()),
		caller: lifecycle.Caller{Driver: DriverName, Timeout: s.CallTimeout},
		client: client,
		ns:     cfg.Namespace(),
		etc:    cninet.NewEtcFiles(host),
		http:   registry.NewTransport(),
		bg:     bg,
		stopBG: stop,
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
	d.store = containerdstore.New(client, d.ns, o.snapshotter, d.caller,
		containerdstore.WithLogger(d.log),
		containerdstore.WithRemoveTimeout(s.PullTimeout),
		containerdstore.WithOnRemove(d.images.forget))
	d.janitor = newJanitor(d)
	if d.cni, err = cninet.New(host, d.caller, d.log); err != nil {
		_ = d.Close()
		return nil, fmt.Errorf("containerd driver: %w", err)
	}
	if s.Pool != nil && len(s.Pool.Networks) > 0 {
		// Holders get the CNI network every container gets; there is no
		// choice of network to spread them over.
		d.log.WithField("networks", s.Pool.Networks).Warn("PreForkNetworks is ignored by the containerd driver: holders use the CNI network")
		s.Pool.Networks = nil
	}
	d.oom = newOOMWatcher(d)
	d.spawn(func() { d.oom.run(d.bg) })
	d.spawn(func() { d.janitor.run(d.bg) })
	return d, nil
}

// Close implements lifecycle.Closer.
func (d *daemon) Close() error {
	d.stopBG()
	d.wg.Wait()
	d.etc.RemoveDirs()
	if d.cni != nil {
		d.cni.RemoveDirs()
	}
	d.http.CloseIdleConnections()
	if err := d.client.Close(); err != nil {
		return fmt.Errorf("close containerd client: %w", err)
	}
	return nil
}

// Capabilities implements drivers.Capable: everything the contract names.
func (d *daemon) Capabilities() drivers.Capability {
	return drivers.CapRunsCommands | drivers.CapResourceLimits | drivers.CapOOMDetection |
		drivers.CapFreeze | drivers.CapReadOnlyRoot | drivers.CapUnprivileged | drivers.CapImagePull
}

// ImageStore implements lifecycle.StoreProvider.
func (d *daemon) ImageStore() images.Store { return d.store }

// Client is the containerd client the driver uses, for callers that need
// what the contract does not offer. Its default namespace is the driver's.
func (dr *Driver) Client() *ctrd.Client { return dr.d.client }

// Namespace is the containerd namespace of every object the driver makes.
func (dr *Driver) Namespace() string { return dr.d.ns }

// Labels returns the ownership labels the driver puts on what it creates.
func (dr *Driver) Labels() map[string]string { return dr.Settings().Labels("") }

// RemoveImage deletes ref from the image store and waits for the garbage
// collector, so its content and snapshots are gone on return; an absent
// image is no error. Containers of the image keep their snapshots.
func (dr *Driver) RemoveImage(ctx context.Context, ref string) error {
	return dr.d.removeImage(ctx, ref)
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// spawn runs f in a goroutine the daemon owns; Close waits for it.
func (d *daemon) spawn(f func()) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		f()
	}()
}

// nsCtx puts the driver's namespace on ctx: the client's interceptor covers
// the RPCs, but client-side helpers (spec generation, leases) read it
// from the context.
func (d *daemon) nsCtx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, d.ns)
}

// call runs one daemon call (see lifecycle.Caller).
func (d *daemon) call(ctx context.Context, api string, f func(context.Context) error) error {
	return d.caller.Call(ctx, api, f)
}

func (d *daemon) callWithin(ctx context.Context, api string, limit time.Duration, f func(context.Context) error) error {
	return d.caller.CallWithin(ctx, api, limit, f)
}

// cleanupCtx is lifecycle.Detached(ctx) in our namespace, bounded by the
// call timeout.
func (d *daemon) cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(d.nsCtx(context.WithoutCancel(ctx)), d.s.CallTimeout)
}
