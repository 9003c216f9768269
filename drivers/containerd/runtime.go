package containerd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/snapshots"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/lifecycle"
	"github.com/fnrun/fnrun/internal/cninet"
	"github.com/fnrun/fnrun/stats"
)

// holderPidsLimit bounds a pool holder's processes: it runs one.
const holderPidsLimit = 16

// LabelNetNS is the path of the pinned namespace of a container with a CNI
// network, so that whoever removes the container can tear the network down.
const LabelNetNS = "io.fnrun.netns"

var (
	_ lifecycle.Runtime       = (*daemon)(nil)
	_ lifecycle.Joiner        = (*daemon)(nil)
	_ lifecycle.Reaper        = (*daemon)(nil)
	_ lifecycle.Closer        = (*daemon)(nil)
	_ lifecycle.StoreProvider = (*daemon)(nil)
)

// Options implements lifecycle.Runtime: a *ContainerOptions.
func (d *daemon) Options(t *lifecycle.Task) (any, error) {
	if t.FsSize() != 0 {
		// Overlay snapshots share the host filesystem: there is nothing to
		// put a size limit on, and silently ignoring it would be worse.
		return nil, fmt.Errorf("task %s: FsSize %d MB with the %s snapshotter: %w",
			t.Id(), t.FsSize(), d.opts.snapshotter, drivers.ErrFsSizeUnsupported)
	}
	return d.containerOptions(t), nil
}

// Joinable implements lifecycle.Joiner.
func (d *daemon) Joinable(_ *lifecycle.Task, opts any) bool {
	o, ok := opts.(*ContainerOptions)
	return ok && o.NetNSPath == "" && d.opts.network == nil
}

// FindImage implements lifecycle.Runtime.
func (d *daemon) FindImage(ctx context.Context, ref drivers.Reference) (bool, error) {
	img, err := d.findImage(d.nsCtx(ctx), ref.Normalized)
	if err != nil || img == nil {
		return false, err
	}
	return true, d.checkImageConfig(ref.Normalized, img.config)
}

// Pull implements lifecycle.Runtime.
func (d *daemon) Pull(ctx context.Context, ref drivers.Reference, auth *drivers.AuthConfig) error {
	return d.pullOnce(d.nsCtx(ctx), ref, auth)
}

// Create implements lifecycle.Runtime.
func (d *daemon) Create(ctx context.Context, spec lifecycle.CreateSpec) (lifecycle.Container, error) {
	ctx = d.nsCtx(ctx)
	var ref drivers.Reference
	if spec.Holder != nil {
		ref = spec.Holder.Image
	} else {
		ref = spec.Task.Ref
	}
	img, err := d.findImage(ctx, ref.Normalized)
	switch {
	case err != nil:
		return nil, err
	case img == nil:
		return nil, fmt.Errorf("image %s is not present: %w", ref.Normalized, drivers.ErrImageNotFound)
	}
	c := &container{d: d, name: spec.Name}
	var opts []ctrd.NewContainerOpts
	if spec.Holder != nil {
		opts, err = c.holderOpts(ctx, spec, img)
	} else {
		opts, err = c.callOpts(ctx, spec, img)
	}
	if err == nil {
		err = c.create(ctx, img, opts)
	}
	switch {
	case err == nil:
		return c, nil
	case c.createSent:
		return c, err // Remove looks for what the create may have made
	}
	cctx, cancel := d.cleanupCtx(ctx)
	defer cancel()
	if rerr := c.releaseHostState(cctx); rerr != nil {
		d.log.WithError(rerr).WithField("container", c.name).Warn("cannot release what a failed create took")
	}
	return nil, err
}

// callOpts prepares a call's container: its network, /etc files and spec.
func (c *container) callOpts(ctx context.Context, spec lifecycle.CreateSpec, img *localImage) ([]ctrd.NewContainerOpts, error) {
	d, task := c.d, spec.Task
	o, ok := spec.Options.(*ContainerOptions)
	if !ok {
		return nil, drivers.InvalidTaskf("container options %T are not *containerd.ContainerOptions", spec.Options)
	}
	copied := *o
	o = &copied
	labels := map[string]string{}
	switch {
	case o.NetNSPath != "":
	case spec.Join != nil:
		// A holder with a network, or without one for a DisableNet task.
		o.NetNSPath = spec.Join.NetNSPath
		if h, ok := lifecycle.JoinedContainer(spec.Join).(*container); ok {
			c.info = h.info
		}
		o.SpecOpts = append(o.SpecOpts[:len(o.SpecOpts):len(o.SpecOpts)], withShimGroup(spec.Join.ID))
	case !task.DisableNet():
		if err := c.acquireNetwork(ctx, task); err != nil {
			return nil, err
		} else if c.net != nil {
			o.NetNSPath = c.net.Path()
			if ns, ok := c.net.(*cninet.NS); ok {
				labels[LabelNetNS] = ns.Path()
			}
		}
	}
	var err error
	if c.etcDir, err = d.etc.Write(c.name, hostname(c.name), c.info); err != nil {
		return nil, err
	}
	specOpts := append(o.specOpts(img, task.Args, !d.s.Policy.Unprivileged), withEtcFiles(c.etcDir))
	return append(o.newContainerOpts(c.name, img, specOpts), ctrd.WithAdditionalContainerLabels(labels)), nil
}

// holderOpts prepares a pool holder: a read-only root (its writable layer
// only receives the spec's mount points) and a CNI network of its own.
func (c *container) holderOpts(ctx context.Context, spec lifecycle.CreateSpec, img *localImage) ([]ctrd.NewContainerOpts, error) {
	d := c.d
	specOpts := holderSpecOpts(spec, img)
	ctrLabels := make(map[string]string, len(spec.Labels)+1)
	for k, v := range spec.Labels {
		ctrLabels[k] = v
	}
	if d.cni != nil && spec.Holder.Network != lifecycle.NoNetwork {
		ns, err := d.cni.Attach(ctx)
		if err != nil {
			return nil, fmt.Errorf("holder %s: %w", spec.Name, err)
		}
		c.net, c.info = ns, ns.Info()
		specOpts = append(specOpts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: ns.Path()}))
		ctrLabels[LabelNetNS] = ns.Path()
	}
	return []ctrd.NewContainerOpts{
		ctrd.WithSnapshotter(d.opts.snapshotter),
		withSnapshot(spec.Name, img, snapshots.WithLabels(spec.Labels)),
		ctrd.WithNewSpec(specOpts...),
		ctrd.WithRuntime(d.opts.runtime, nil),
		ctrd.WithContainerLabels(ctrLabels),
	}, nil
}

// holderSpecOpts build a holder's spec, its network namespace aside; like a
// call's container it gets a cgroup namespace (see withCgroupNamespace).
func holderSpecOpts(spec lifecycle.CreateSpec, img *localImage) []oci.SpecOpts {
	opts := []oci.SpecOpts{
		withImageConfig(img.config.Config, spec.Holder.Args, false),
		oci.WithHostname(hostname(spec.Name)),
		oci.WithUIDGID(UnprivilegedUID, UnprivilegedGID), oci.WithCapabilities(nil), withNoAmbientCaps, oci.WithNoNewPrivileges,
		oci.WithRootFSReadonly(),
		oci.WithPidsLimit(holderPidsLimit),
	}
	opts = append(opts, withCgroupNamespace(hostCgroupMode())...)
	return append(opts, seccomp.WithDefaultProfile())
}

// create sends the create under a lease. A create whose answer is lost
// sets createSent: the container may exist all the same.
func (c *container) create(ctx context.Context, img *localImage, opts []ctrd.NewContainerOpts) error {
	d := c.d
	lctx, release, err := d.withLease(ctx, "create")
	if err != nil {
		return err
	}
	// A container record holds its snapshot once created; on failure the
	// prepared snapshot is only the lease's and goes with it.
	defer release(false)
	err = d.call(lctx, "containers.Create", func(ctx context.Context) error {
		ctr, err := d.client.NewContainer(ctx, c.name, opts...)
		c.ctr = ctr
		return err
	})
	switch {
	case err == nil:
		return nil
	case lifecycle.InDoubt(err):
		c.ctr, c.createSent = nil, true
		return daemonErr(err, "create container "+c.name)
	case errors.Is(err, drivers.ErrInvalidTask):
		return err
	case errdefs.IsAlreadyExists(err):
		return fmt.Errorf("container %s: %w: %w", c.name, drivers.ErrAlreadyExists, err)
	case errdefs.IsNotFound(err):
		// The image's snapshots or content went away under its record:
		// look again next time instead of trusting the cache.
		d.images.forget(img.image.Target().Digest)
	}
	return notFoundErr(err, drivers.ErrImageNotFound, "create container "+c.name)
}

// acquireNetwork gives a call's container a network of its own: the
// NetworkProvider's, else a fresh CNI one, else none (loopback only).
func (c *container) acquireNetwork(ctx context.Context, task drivers.ContainerTask) error {
	d := c.d
	if p := d.opts.network; p != nil {
		l, err := p.Acquire(ctx, task)
		if err != nil {
			return fmt.Errorf("network: %w", err)
		}
		c.net = l
		return nil
	}
	if d.cni == nil {
		return nil
	}
	ns, err := d.cni.Attach(ctx)
	if err != nil {
		return err
	}
	c.net, c.info = ns, ns.Info()
	return nil
}

// container is one containerd container with what it uses on the host.
type container struct {
	d    *daemon
	name string

	mu         sync.Mutex
	ctr        ctrd.Container // nil until created, or when the create is in doubt
	createSent bool           // a create whose answer was lost: the container may exist
	net        NetworkLease   // its own network, released once no process can use it (see Remove); nil when none
	info       cninet.Info    // of its network, for its /etc files
	etcDir     string         // "" when none were written or they are removed
	task       ctrd.Task
	taskLeft   bool // a task may exist that task does not hold
	p          *process
	init       *initProcess // the started task's first process; nil when not held
}

func (c *container) ID() string { return c.name }

// NetNSPath implements lifecycle.NetNSHolder.
func (c *container) NetNSPath() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.net != nil:
		return c.net.Path()
	case c.task != nil:
		return fmt.Sprintf("/proc/%d/ns/net", c.task.Pid())
	}
	return ""
}

// Start implements lifecycle.Container, with the streams wired through FIFOs.
func (c *container) Start(ctx context.Context, sio lifecycle.IO) (lifecycle.Process, error) {
	d := c.d
	ctx = d.nsCtx(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctr == nil || c.task != nil {
		return nil, fmt.Errorf("start %s: not created, or started already", c.name)
	}
	p := &process{c: c, outDone: make(chan struct{})}
	var stdin io.Reader
	if sio.Stdin != nil {
		p.inputDone = make(chan struct{})
		stdin = &eofReader{r: sio.Stdin, done: p.inputDone}
	}
	outW, errW := sio.Stdout, sio.Stderr
	creator := cio.NullIO
	if stdin != nil || outW != nil || errW != nil {
		// The shim opens every FIFO path it is given, and an empty one
		// fails: a stream nobody reads still gets a FIFO.
		if outW == nil {
			outW = io.Discard
		}
		if errW == nil {
			errW = io.Discard
		}
		streams := []cio.Opt{cio.WithStreams(stdin, outW, errW)}
		if d.opts.fifoDir != "" {
			streams = append(streams, cio.WithFIFODir(d.opts.fifoDir))
		}
		creator = cio.NewCreator(streams...)
	}
	var task ctrd.Task
	err := d.call(ctx, "tasks.Create", func(ctx context.Context) error {
		var err error
		task, err = c.ctr.NewTask(ctx, creator)
		return err
	})
	if err != nil {
		c.taskLeft = true // the daemon may have made it before failing
		return nil, notFoundErr(err, drivers.ErrContainerGone, "create task of "+c.name)
	}
	p.task = task
	// Held before the start, while the process waits for it and its pid
	// cannot have gone to another.
	held := holdInit(task.Pid(), c.name)
	// The exit stream outlives Start, so it is not bound to ctx.
	if err = p.rewait(); err == nil {
		p.oomSeen, p.unwatch = d.oom.watch(c.name)
		if err = d.call(ctx, "tasks.Start", task.Start); err == nil {
			c.task, c.p, c.init = task, p, held
			go p.collectOutput()
			return p, nil
		}
		p.unwatch()
	}
	held.release()
	p.stopWaiting()
	// Remove the task made above, so the container is left as it was.
	cctx, cancel := d.cleanupCtx(ctx)
	defer cancel()
	derr := d.call(cctx, "tasks.Delete", func(ctx context.Context) error {
		_, err := task.Delete(ctx, ctrd.WithProcessKill)
		return err
	})
	if derr != nil && !errdefs.IsNotFound(derr) {
		c.taskLeft = true
	}
	if tio := task.IO(); tio != nil {
		tio.Cancel()
		_ = tio.Close()
	}
	return nil, notFoundErr(err, drivers.ErrContainerGone, "start task of "+c.name)
}

func (c *container) started() (ctrd.Task, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.task == nil {
		return nil, fmt.Errorf("container %s: %w", c.name, drivers.ErrNotRunning)
	}
	return c.task, nil
}

// Pause implements lifecycle.Container with the cgroup freezer.
func (c *container) Pause(ctx context.Context) error {
	task, err := c.started()
	if err != nil {
		return err
	}
	err = c.d.call(c.d.nsCtx(ctx), "tasks.Pause", task.Pause)
	return notFoundErr(err, drivers.ErrContainerGone, "freeze "+c.name)
}

// Resume implements lifecycle.Container.
func (c *container) Resume(ctx context.Context) error {
	task, err := c.started()
	if err != nil {
		return err
	}
	err = c.d.call(c.d.nsCtx(ctx), "tasks.Resume", task.Resume)
	if errdefs.IsFailedPrecondition(err) {
		return nil
	}
	return notFoundErr(err, drivers.ErrContainerGone, "unfreeze "+c.name)
}

// Remove implements lifecycle.Container.
func (c *container) Remove(ctx context.Context) error {
	d := c.d
	ctx = d.nsCtx(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctr == nil && c.createSent {
		if err := c.findInDoubt(ctx); err != nil {
			return err
		}
	}
	if c.ctr != nil {
		task := c.task
		if task == nil && c.taskLeft {
			err := d.call(ctx, "tasks.Get", func(ctx context.Context) error {
				var err error
				task, err = c.ctr.Task(ctx, nil)
				return err
			})
			if err != nil && !errdefs.IsNotFound(err) {
				return daemonErr(err, "remove "+c.name+": load task")
			}
		}
		// Once no process of the container is left, its network and files
		// go while the daemon deletes the task, the record and the
		// snapshot. A seen exit means none is left already (the kernel
		// kills a PID namespace with its first process); otherwise only
		// the task's delete, which kills, makes sure of it.
		var released chan error
		release := func() {
			released = make(chan error, 1)
			go func() { released <- c.releaseHostState(ctx) }()
		}
		if c.p != nil && c.p.exited.Load() {
			release()
		}
		if task != nil {
			// Let go of the first process whatever happens: nothing
			// retries a failed Remove.
			held := c.init
			c.init = nil
			err := c.deleteTask(ctx, task)
			if err == nil && held != nil {
				err = held.end()
			} else {
				held.release()
			}
			if err != nil {
				if released != nil {
					<-released // it uses c, which is not to change once c.mu is let go
				}
				return err
			}
		}
		c.task, c.taskLeft = nil, false
		if released == nil {
			release()
		}
		err := d.call(ctx, "containers.Delete", func(ctx context.Context) error {
			return c.ctr.Delete(ctx, ctrd.WithSnapshotCleanup)
		})
		if rerr := <-released; rerr != nil {
			return rerr
		}
		if err != nil && !errdefs.IsNotFound(err) {
			return daemonErr(err, "remove "+c.name+": delete container")
		}
		c.ctr = nil
	}
	if c.p != nil {
		c.p.stopWaiting()
		c.p.unwatch()
	}
	return c.releaseHostState(ctx)
}

// findInDoubt loads the container a create whose answer was lost may have
// made, if it is this driver instance's.
func (c *container) findInDoubt(ctx context.Context) error {
	d := c.d
	var found ctrd.Container
	var labels map[string]string
	err := d.call(ctx, "containers.Get", func(ctx context.Context) error {
		var err error
		if found, err = d.client.LoadContainer(ctx, c.name); err == nil {
			labels, err = found.Labels(ctx)
		}
		return err
	})
	switch {
	case errdefs.IsNotFound(err):
	case err != nil:
		return daemonErr(err, "remove "+c.name+": load container")
	case labels[LabelInstance] == d.s.Instance:
		c.ctr, c.taskLeft = found, true // a task is unlikely, but look
	}
	c.createSent = false
	return nil
}

// deleteTask deletes the container's task; c.mu is held. A task whose exit
// was seen is deleted without WithProcessKill: no process is left, and its
// runc kill --all would only add a third process to Close. Any other task
// may still run or be frozen: it is thawed, then killed with the delete.
func (c *container) deleteTask(ctx context.Context, task ctrd.Task) error {
	d := c.d
	if c.p != nil && c.p.exited.Load() {
		err := d.call(ctx, "tasks.Delete", func(ctx context.Context) error {
			_, err := task.Delete(ctx)
			return err
		})
		switch {
		case err == nil, errdefs.IsNotFound(err):
			return nil
		case errors.Is(err, drivers.ErrDaemonUnavailable):
			return daemonErr(err, "remove "+c.name+": delete task")
		}
		// Still running after all (FailedPrecondition): kill it below.
	}
	var st ctrd.Status
	err := d.call(ctx, "tasks.Status", func(ctx context.Context) error {
		var err error
		st, err = task.Status(ctx)
		return err
	})
	switch {
	case errors.Is(err, drivers.ErrDaemonUnavailable):
		// A silent daemon would let the delete wait as long.
		return daemonErr(err, "remove "+c.name+": task status")
	case err == nil && (st.Status == ctrd.Paused || st.Status == ctrd.Pausing):
		if err := d.call(ctx, "tasks.Resume", task.Resume); err != nil && !errdefs.IsNotFound(err) {
			d.log.WithError(err).WithField("container", c.name).Warn("cannot thaw container before deleting it")
		}
	}
	err = d.call(ctx, "tasks.Delete", func(ctx context.Context) error {
		_, err := task.Delete(ctx, ctrd.WithProcessKill)
		return err
	})
	if err != nil && !errdefs.IsNotFound(err) && !d.taskGone(ctx, c.ctr, err) {
		return daemonErr(err, "remove "+c.name+": delete task")
	}
	return nil
}

// releaseHostState removes the container's /etc files and network (c.mu held).
func (c *container) releaseHostState(ctx context.Context) error {
	if c.etcDir != "" {
		if err := os.RemoveAll(c.etcDir); err != nil {
			return fmt.Errorf("remove %s: /etc files: %w", c.name, err)
		}
		c.etcDir = ""
	}
	if c.net != nil {
		if err := c.net.Release(ctx); err != nil {
			return fmt.Errorf("remove %s: release network: %w", c.name, err)
		}
		c.net = nil
	}
	return nil
}

// process is a started task.
type process struct {
	c         *container
	task      ctrd.Task
	inputDone chan struct{} // nil without input
	oomSeen   <-chan struct{}
	unwatch   func()
	outDone   chan struct{}
	stopOut   sync.Once
	// exited: the task's exit was seen, so none of its processes is left.
	exited atomic.Bool

	mu       sync.Mutex
	statusC  <-chan ctrd.ExitStatus // nil: the next Wait waits anew
	stopWait context.CancelFunc
}

// rewait sets up the stream of the task's exit.
func (p *process) rewait() error {
	d := p.c.d
	ctx, stop := context.WithCancel(d.nsCtx(context.Background()))
	statusC, err := p.task.Wait(ctx)
	if err != nil {
		stop()
		return notFoundErr(err, drivers.ErrContainerGone, "wait for "+p.c.name)
	}
	p.mu.Lock()
	if p.stopWait != nil {
		p.stopWait()
	}
	p.statusC, p.stopWait = statusC, stop
	p.mu.Unlock()
	return nil
}

func (p *process) stopWaiting() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopWait != nil {
		p.stopWait()
	}
}

// Wait implements lifecycle.Process. The OOM event can arrive after the
// exit, so a non-zero exit also reads the cgroup's OOM-kill counter (see
// statconv.FromContainerd).
func (p *process) Wait(ctx context.Context) (lifecycle.Exit, error) {
	p.mu.Lock()
	statusC := p.statusC
	p.mu.Unlock()
	if statusC == nil {
		if err := p.rewait(); err != nil {
			return lifecycle.Exit{}, err
		}
		p.mu.Lock()
		statusC = p.statusC
		p.mu.Unlock()
	}
	var st ctrd.ExitStatus
	select {
	case st = <-statusC:
	case <-ctx.Done():
		return lifecycle.Exit{}, ctx.Err()
	}
	if err := st.Error(); err != nil {
		p.mu.Lock()
		p.statusC = nil // the stream broke: wait anew next time
		p.mu.Unlock()
		return lifecycle.Exit{}, notFoundErr(errdefs.FromGRPC(err), drivers.ErrContainerGone, "wait for "+p.c.name)
	}
	p.exited.Store(st.ExitCode() != ctrd.UnknownExitStatus)
	exit := lifecycle.Exit{Code: int(st.ExitCode())}
	if exit.Code != 0 {
		exit.OOM = p.oomReported()
		if !exit.OOM {
			_, kills, ok := p.sample(context.WithoutCancel(ctx), false)
			exit.OOM = ok && kills > 0
		}
	}
	return exit, nil
}

func (p *process) oomReported() bool {
	select {
	case <-p.oomSeen:
		return true
	default:
		return false
	}
}

// Signal implements lifecycle.Process.
func (p *process) Signal(ctx context.Context, sig syscall.Signal, all bool) error {
	var opts []ctrd.KillOpts
	if all {
		opts = append(opts, ctrd.WithKillAll)
	}
	d := p.c.d
	err := d.call(d.nsCtx(ctx), "tasks.Kill", func(ctx context.Context) error { return p.task.Kill(ctx, sig, opts...) })
	if err == nil || errdefs.IsNotFound(err) || errdefs.IsFailedPrecondition(err) {
		return nil
	}
	return daemonErr(err, "signal "+p.c.name)
}

// InputDone implements lifecycle.Process.
func (p *process) InputDone() <-chan struct{} { return p.inputDone }

// CloseInput implements lifecycle.Process: the shim closes the task's
// stdin once the data still in the FIFO is delivered.
func (p *process) CloseInput(ctx context.Context) error {
	d := p.c.d
	err := d.call(d.nsCtx(ctx), "tasks.CloseIO", func(ctx context.Context) error {
		return p.task.CloseIO(ctx, ctrd.WithStdinCloser)
	})
	if errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

func (p *process) collectOutput() {
	if tio := p.task.IO(); tio != nil {
		tio.Wait()
		_ = tio.Close()
	}
	close(p.outDone)
}

func (p *process) OutputDone() <-chan struct{} { return p.outDone }

// StopOutput implements lifecycle.Process: closing the FIFOs ends the copies.
func (p *process) StopOutput() {
	p.stopOut.Do(func() {
		if tio := p.task.IO(); tio != nil {
			tio.Cancel()
		}
	})
}

// Stats implements lifecycle.Process.
func (p *process) Stats(ctx context.Context, write func(stats.Stat)) {
	t := time.NewTicker(p.c.d.opts.statsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s, _, ok := p.sample(ctx, true); ok {
				write(s)
			}
		}
	}
}

// eofReader closes done once its reader has returned EOF or an error, so
// the run knows when to tell the shim that stdin is over.
type eofReader struct {
	r    io.Reader
	done chan struct{}
	once sync.Once
}

func (e *eofReader) Read(b []byte) (int, error) {
	n, err := e.r.Read(b)
	if err != nil {
		e.once.Do(func() { close(e.done) })
	}
	return n, err
}
