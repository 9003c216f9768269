package containerd

import (
	"context"
	"fmt"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/snapshots"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/pool"
)

// Pool defaults for the containerd driver.
const (
	// DefaultPreForkImage is the holders' image when Config.PreForkImage is
	// empty.
	DefaultPreForkImage = "docker.io/library/busybox:latest"
	// DefaultPreForkCmd is the holders' command when Config.PreForkCmd is
	// empty: a sleep as long as the kernel allows, which busybox and
	// coreutils both understand.
	DefaultPreForkCmd = "sleep 2147483647"
	// holderPidsLimit bounds a holder's processes: it runs one.
	holderPidsLimit = 16
)

// LabelNetNS, on a container or holder with a CNI network, is the path of
// its pinned network namespace, so that whoever removes the container can
// tear the network down too.
const LabelNetNS = "io.fnrun.netns"

// holderAdapter is the pre-fork pool's Adapter on containerd. A holder is a
// container of the pool image running the pool command, unprivileged, with
// a read-only root filesystem (its snapshot's writable layer only receives
// the spec's mount points), in a pinned network namespace that CNI set up
// (or, on a host without CNI, the fresh namespace runc gives it, loopback
// only). Containers join it by Holder.NetNSPath.
type holderAdapter struct {
	d     *Driver
	image drivers.Reference
	args  []string
}

var _ pool.Adapter = (*holderAdapter)(nil)

// holderData is the adapter's state of one holder, in Holder.Data.
type holderData struct {
	ctr  ctrd.Container
	task ctrd.Task
	ns   *netNS // nil without CNI
	// info is the network's, for the /etc files of the containers that
	// join the holder. Unlike ns it is never cleared, so it can be read
	// while the holder is being stopped.
	info netInfo
}

func newHolderAdapter(d *Driver, cfg drivers.Config) (*holderAdapter, error) {
	image := cfg.PreForkImage
	if image == "" {
		image = DefaultPreForkImage
	}
	ref, err := drivers.NormalizeImage(image)
	if err != nil {
		return nil, fmt.Errorf("containerd driver: pre-fork image %q: %w: %w", image, drivers.ErrInvalidConfig, err)
	}
	cmd := cfg.PreForkCmd
	if cmd == "" {
		cmd = DefaultPreForkCmd
	}
	args, err := drivers.SplitCommand(cmd)
	if err != nil || len(args) == 0 {
		return nil, fmt.Errorf("containerd driver: pre-fork command %q: %w", cmd, drivers.ErrInvalidConfig)
	}
	return &holderAdapter{d: d, image: ref, args: args}, nil
}

// EnsureImage implements pool.Adapter: the pool image is pulled, through
// the driver's shared pulls and with the credentials of WithDockerConfig
// for its registry, when it is absent.
func (a *holderAdapter) EnsureImage(ctx context.Context) error {
	d := a.d
	ctx = d.nsCtx(ctx)
	img, err := d.findImage(ctx, a.image.Normalized)
	if err != nil || img != nil {
		return err
	}
	auth, err := d.registryAuth.ImageCredentials(ctx, a.image)
	if err != nil {
		return fmt.Errorf("pull %s: %w", a.image.Normalized, err)
	}
	d.log.WithField("image", a.image.Normalized).Info("pulling the pre-fork pool image")
	return d.pull(ctx, a.image, auth)
}

// StartHolder implements pool.Adapter.
func (a *holderAdapter) StartHolder(ctx context.Context, spec pool.HolderSpec) (_ pool.Holder, err error) {
	d := a.d
	ctx = d.nsCtx(ctx)
	img, err := d.findImage(ctx, a.image.Normalized)
	switch {
	case err != nil:
		return pool.Holder{}, err
	case img == nil:
		return pool.Holder{}, fmt.Errorf("holder image %s: %w", a.image.Normalized, drivers.ErrImageNotFound)
	}
	hd := &holderData{}
	defer func() {
		if err != nil {
			cctx, cancel := d.cleanupCtx(ctx)
			defer cancel()
			if rerr := a.remove(cctx, hd); rerr != nil {
				d.log.WithError(rerr).WithField("holder", spec.Name).Warn("cannot remove a holder that failed to start")
			}
		}
	}()
	if d.cni != nil {
		if hd.ns, err = d.attachNetwork(ctx); err != nil {
			return pool.Holder{}, fmt.Errorf("holder %s: %w", spec.Name, err)
		}
		hd.info = hd.ns.info
	}

	labels := d.Labels()
	labels[drivers.LabelRole] = drivers.RoleHolder
	opts := []oci.SpecOpts{
		withImageConfig(img.config.Config, a.args, false),
		oci.WithHostname(hostname(spec.Name)),
		oci.WithUIDGID(UnprivilegedUID, UnprivilegedGID), oci.WithCapabilities(nil), withNoAmbientCaps, oci.WithNoNewPrivileges,
		oci.WithRootFSReadonly(),
		oci.WithPidsLimit(holderPidsLimit),
		seccomp.WithDefaultProfile(),
	}
	ctrLabels := labels
	if hd.ns != nil {
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: hd.ns.path}))
		ctrLabels = d.Labels()
		ctrLabels[drivers.LabelRole] = drivers.RoleHolder
		ctrLabels[LabelNetNS] = hd.ns.path
	}
	lctx, release, err := d.withLease(ctx, "holder")
	if err != nil {
		return pool.Holder{}, err
	}
	defer release(false)
	err = d.call(lctx, "containers.Create", func(ctx context.Context) error {
		var err error
		hd.ctr, err = d.client.NewContainer(ctx, spec.Name,
			ctrd.WithSnapshotter(d.opts.snapshotter),
			ctrd.WithNewSnapshot(spec.Name, img.image, snapshots.WithLabels(labels)),
			ctrd.WithNewSpec(opts...),
			ctrd.WithRuntime(d.opts.runtime, nil),
			ctrd.WithContainerLabels(ctrLabels))
		return err
	})
	if err != nil {
		if errdefs.IsNotFound(err) {
			d.images.forget(img.image.Target().Digest)
		}
		return pool.Holder{}, notFoundErr(err, drivers.ErrImageNotFound, "create holder "+spec.Name)
	}
	err = d.call(ctx, "tasks.Create", func(ctx context.Context) error {
		var err error
		hd.task, err = hd.ctr.NewTask(ctx, cio.NullIO)
		return err
	})
	if err != nil {
		return pool.Holder{}, daemonErr(err, "create holder task "+spec.Name)
	}
	if err := d.call(ctx, "tasks.Start", hd.task.Start); err != nil {
		return pool.Holder{}, daemonErr(err, "start holder "+spec.Name)
	}
	h := pool.Holder{ID: spec.Name, Name: spec.Name, Data: hd}
	if hd.ns != nil {
		h.NetNSPath = hd.ns.path
	} else {
		h.NetNSPath = fmt.Sprintf("/proc/%d/ns/net", hd.task.Pid())
	}
	return h, nil
}

// StopHolder implements pool.Adapter: the task is killed and deleted, the
// container and its snapshot removed, then the network torn down.
func (a *holderAdapter) StopHolder(ctx context.Context, h pool.Holder) error {
	hd, ok := h.Data.(*holderData)
	if !ok {
		return fmt.Errorf("holder %s: foreign holder data %T", h.ID, h.Data)
	}
	return a.remove(a.d.nsCtx(ctx), hd)
}

func (a *holderAdapter) remove(ctx context.Context, hd *holderData) error {
	d := a.d
	if hd.ctr != nil {
		if err := d.removeContainer(ctx, hd.ctr); err != nil {
			return err
		}
		hd.ctr, hd.task = nil, nil
	}
	if hd.ns != nil {
		if err := d.detachNetwork(ctx, hd.ns); err != nil {
			return err
		}
		hd.ns = nil
	}
	return nil
}

// holderWaitBackOff paces new waits on a holder after the wait stream broke
// (a daemon restart, a lost connection): the holder is most likely still
// running, and returning would make the pool replace it for nothing.
var holderWaitBackOff = drivers.BackOffConfig{MaxRetries: 1 << 40, Interval: 100, MinDelay: 50, MaxDelay: 5000}

// WaitHolder implements pool.Adapter: it returns only once the holder's
// task has exited or is gone, or ctx ends. A broken wait is established
// again.
func (a *holderAdapter) WaitHolder(ctx context.Context, h pool.Holder) error {
	hd, ok := h.Data.(*holderData)
	if !ok {
		return fmt.Errorf("holder %s: foreign holder data %T", h.ID, h.Data)
	}
	ctx = a.d.nsCtx(ctx)
	var backoff *drivers.BackOff
	for {
		statusC, err := hd.task.Wait(ctx)
		var st ctrd.ExitStatus
		if err == nil {
			select {
			case st = <-statusC:
				err = st.Error()
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			return fmt.Errorf("holder %s exited with code %d", h.ID, st.ExitCode())
		}
		if err = errdefs.FromGRPC(err); errdefs.IsNotFound(err) {
			return fmt.Errorf("holder %s: task gone: %w", h.ID, err)
		}
		if backoff == nil {
			backoff, _ = drivers.NewBackOff(holderWaitBackOff) // valid
		}
		delay, _ := backoff.Next()
		a.d.log.WithError(err).WithField("holder", h.ID).WithField("retry_in", delay).Debug("holder wait broke; waiting again")
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// poolLease is a cookie's lease of a holder, as a NetworkLease.
type poolLease struct{ l *pool.Lease }

func (p poolLease) Path() string { return p.l.Holder().NetNSPath }

func (p poolLease) Release(context.Context) error {
	p.l.Release()
	return nil
}

// Dead and Err make the cookie fail a container whose holder died.
func (p poolLease) Dead() <-chan struct{} { return p.l.Dead() }
func (p poolLease) Err() error            { return p.l.Err() }

// deadNotifier is the optional side of a NetworkLease whose namespace can
// disappear under the container (a pool holder that died).
type deadNotifier interface {
	Dead() <-chan struct{}
	Err() error
}

// PoolStats implements pool.Reporter.
func (d *Driver) PoolStats() (pool.Stats, bool) {
	if d.pool == nil {
		return pool.Stats{}, false
	}
	return d.pool.Stats(), true
}
