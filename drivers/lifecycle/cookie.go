package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/syslog"
	"github.com/fnrun/fnrun/pool"
)

// cookie is one task's container. Its methods are safe for concurrent use.
type cookie struct {
	d    *Driver
	task *Task
	opts any

	// step serialises the steps that make or remove something in the
	// daemon (create, start, Close's removal), so Close never misses what
	// a step in flight makes.
	step sync.Mutex

	mu      sync.Mutex
	closed  bool // no new work; cleanup may still be pending
	removed bool // nothing of the cookie is left: Close is a no-op
	// ctr is the container, or the one a create in doubt may have made.
	ctr   Container
	lease *pool.Lease // the holder ctr joined; released once ctr is gone
	named bool        // the task's id is reserved in the driver
	run   *run
	// frozen: a Freeze was sent and no Unfreeze succeeded since, so the
	// container may be paused whatever the answers said.
	frozen bool
	// imageFound: ValidateImage found the image, so one missing at create
	// was removed meanwhile.
	imageFound   bool
	releaseImage func() // ends the use of the image in the cleaner; nil when not held
}

var _ drivers.Cookie = (*cookie)(nil)

func (c *cookie) name() string { return c.task.Id() }

func (c *cookie) usable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("cookie %s: %w", c.name(), drivers.ErrClosed)
	}
	return nil
}

// ContainerOptions implements drivers.Cookie.
func (c *cookie) ContainerOptions() interface{} { return c.opts }

// ValidateImage implements drivers.Cookie. The image is busy in the cleaner
// from before the lookup, so across a pull too.
func (c *cookie) ValidateImage(ctx context.Context) (bool, error) {
	if err := c.usable(ctx); err != nil {
		return false, err
	}
	c.useImage()
	found, err := c.d.rt.FindImage(ctx, c.task.Ref)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	c.imageFound = found
	c.mu.Unlock()
	return !found, nil
}

// useImage marks the image busy in the cleaner, once per cookie.
func (c *cookie) useImage() {
	cl := c.d.cleaner
	if cl == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.releaseImage == nil && !c.removed {
		c.releaseImage = cl.Use(c.task.Ref.Normalized)
	}
}

// PullImage implements drivers.Cookie.
func (c *cookie) PullImage(ctx context.Context) error {
	if err := c.usable(ctx); err != nil {
		return err
	}
	return c.pull(ctx)
}

func (c *cookie) pull(ctx context.Context) error {
	d := c.d
	// The caller's task, not the checked one: *Task has only the methods
	// of drivers.ContainerTask, so the optional drivers.Auther would be
	// lost and the task's credentials never sent.
	auth, err := d.s.Credentials.PullCredentials(ctx, c.task.ContainerTask, c.task.Ref, d.log)
	if err != nil {
		return fmt.Errorf("pull %s: %w", c.task.Ref.Familiar, err)
	}
	return d.pull(ctx, c.task.Ref, auth)
}

// CreateContainer implements drivers.Cookie. The container joins a free pool
// holder when it can, else it gets a network of its own (a pool miss).
func (c *cookie) CreateContainer(ctx context.Context) error {
	if err := c.usable(ctx); err != nil {
		return err
	}
	c.step.Lock()
	defer c.step.Unlock()
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return fmt.Errorf("cookie %s: %w", c.name(), drivers.ErrClosed)
	case c.ctr != nil:
		c.mu.Unlock()
		return fmt.Errorf("create container %s: already created", c.name())
	}
	c.mu.Unlock()
	if err := c.reserveName(); err != nil {
		return err
	}
	c.useImage() // a caller that skipped ValidateImage
	ctr, lease, err := c.create(ctx, true)
	c.mu.Lock()
	c.ctr, c.lease = ctr, lease
	c.mu.Unlock()
	if ctr == nil {
		c.d.releaseName(c)
		c.mu.Lock()
		c.named = false
		c.mu.Unlock()
	}
	if cerr := ctx.Err(); cerr != nil && (err == nil || !errors.Is(err, cerr)) {
		// The caller gave up meanwhile; Close removes what was made.
		if err == nil {
			return fmt.Errorf("create container %s: %w", c.name(), cerr)
		}
		return fmt.Errorf("create container %s: %w: %w", c.name(), cerr, err)
	}
	return err
}

// reserveName claims the task's id among the driver's open cookies.
func (c *cookie) reserveName() error {
	c.mu.Lock()
	named := c.named
	c.mu.Unlock()
	if named {
		return nil
	}
	if !c.d.reserveName(c) {
		return fmt.Errorf("create container %s: used by another open cookie: %w", c.name(), drivers.ErrAlreadyExists)
	}
	c.mu.Lock()
	c.named = true
	c.mu.Unlock()
	return nil
}

// create sends the create detached from ctx (see the package doc). With
// pooled false the container never joins a pool holder.
func (c *cookie) create(ctx context.Context, pooled bool) (Container, *pool.Lease, error) {
	d := c.d
	spec := CreateSpec{Name: c.name(), Labels: d.s.Labels(drivers.RoleCall), Task: c.task, Options: c.opts}
	var lease *pool.Lease
	p := d.pool
	if c.task.DisableNet() {
		p = d.noNet
	}
	if j, ok := d.rt.(Joiner); ok && pooled && p != nil && j.Joinable(c.task, c.opts) {
		if l, ok := p.Lease(ctx); ok {
			lease = l
			h := l.Holder()
			spec.Join = &h
		}
	}
	createCtx := Detached(ctx)
	ctr, err := d.rt.Create(createCtx, spec)
	if err != nil && ctr == nil && lease != nil && (leaseDead(lease) || errors.Is(err, drivers.ErrContainerGone)) {
		// The holder died between the lease and the create, and nothing
		// was made: a network of the container's own, as on a miss.
		d.log.WithError(err).WithField("container", c.name()).Debug("leased holder gone at create; using a network of its own")
		lease.Release()
		lease, spec.Join = nil, nil
		ctr, err = d.rt.Create(createCtx, spec)
	}
	if err != nil && ctr == nil && errors.Is(err, drivers.ErrImageNotFound) && c.foundImage() && ctx.Err() == nil {
		// ValidateImage found the image and someone (the cleaner, a user)
		// removed it since: pull it again rather than fail the call.
		d.log.WithField("image", c.task.Ref.Familiar).Info("image removed since validation; pulling it again")
		if perr := c.pull(ctx); perr != nil {
			err = fmt.Errorf("%w (pulling it again: %v)", err, perr)
		} else {
			ctr, err = d.rt.Create(createCtx, spec)
		}
	}
	if ctr == nil && lease != nil {
		lease.Release() // nothing runs in the holder's namespace
		lease = nil
	}
	if err != nil {
		err = fmt.Errorf("create container %s: %w", c.name(), err)
	}
	return ctr, lease, err
}

func (c *cookie) foundImage() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.imageFound
}

// Run implements drivers.Cookie. A container whose pool holder died before
// it started is made again with a network of its own; if the holder dies as
// it starts, Run fails with drivers.ErrContainerGone, and while it runs, the
// result is StatusError with that error.
func (c *cookie) Run(ctx context.Context) (drivers.WaitResult, error) {
	if err := c.usable(ctx); err != nil {
		return nil, err
	}
	c.step.Lock()
	defer c.step.Unlock()
	c.mu.Lock()
	ctr, lease, r := c.ctr, c.lease, c.run
	c.mu.Unlock()
	switch {
	case ctr == nil:
		return nil, fmt.Errorf("run %s: container not created", c.name())
	case r != nil:
		return nil, fmt.Errorf("run %s: already started", c.name())
	case lease != nil && leaseDead(lease):
		var err error
		if ctr, lease, err = c.recreateUnpooled(ctx, ctr, lease); err != nil {
			return nil, fmt.Errorf("run %s: %w", c.name(), err)
		}
	}
	stdout, stderr := c.task.Logger()
	out, outW, errW := newOutput(stdout, stderr)
	sink, err := c.dialSyslog(ctx)
	if err != nil {
		_ = out.shut()
		return nil, fmt.Errorf("run %s: %w", c.name(), err)
	}
	if sink != nil {
		outW, errW = sink.Stdout(outW), sink.Stderr(errW)
	}
	// Detached, as a create is: a start completed after the caller gave up
	// would leave a container running unwatched. The monitor ends at once a
	// run whose context ended meanwhile.
	p, err := ctr.Start(Detached(ctx), IO{Stdin: c.task.Input(), Stdout: outW, Stderr: errW})
	if err != nil {
		_ = out.shut()
		sink.Close()
		if lease != nil && (leaseDead(lease) || errors.Is(err, drivers.ErrContainerGone)) {
			err = holderError(lease, err)
		}
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w: %w", cerr, err)
		}
		return nil, fmt.Errorf("run %s: %w", c.name(), err)
	}
	r = newRun(c, p, out, sink, lease)
	if !c.d.spawn(func() { r.monitor(ctx) }) {
		// The driver is closing and its Close will remove the container:
		// only the streams and the watch of this run need ending here.
		_ = out.shut()
		p.StopOutput()
		<-p.OutputDone()
		sink.Close()
		return nil, fmt.Errorf("run %s: %w", c.name(), drivers.ErrClosed)
	}
	c.mu.Lock()
	c.run = r
	closed := c.closed
	c.mu.Unlock()
	if closed {
		r.requestEnd(nil) // Close began while the container started
	}
	return r, nil
}

// dialSyslog connects to the task's syslog endpoint when the run, not the
// runtime, sends the output there.
func (c *cookie) dialSyslog(ctx context.Context) (*syslog.Sink, error) {
	if _, ok := c.d.rt.(SyslogSender); ok || c.task.Syslog == nil {
		return nil, nil
	}
	return syslog.Dial(ctx, c.task.Syslog, c.name(), c.d.log.WithField("container", c.name()))
}

// recreateUnpooled replaces a container whose holder died before it started
// (nothing of the task reached it yet) by one with a network of its own.
func (c *cookie) recreateUnpooled(ctx context.Context, ctr Container, lease *pool.Lease) (Container, *pool.Lease, error) {
	if err := ctr.Remove(Detached(ctx)); err != nil {
		return ctr, lease, fmt.Errorf("%w (removing the container to make it again: %v)", holderError(lease, nil), err)
	}
	lease.Release()
	c.d.log.WithField("container", c.name()).Debug("leased holder died before the start; making the container again with a network of its own")
	ctr, _, err := c.create(ctx, false)
	c.mu.Lock()
	c.ctr, c.lease = ctr, nil
	c.mu.Unlock()
	return ctr, nil, err
}

// Freeze implements drivers.Cookie by pausing every process.
func (c *cookie) Freeze(ctx context.Context) error {
	ctr, err := c.running(ctx, "freeze")
	if err != nil {
		return err
	}
	// From the moment the pause is sent the container may be paused,
	// whatever becomes of the answer.
	c.setFrozen(true)
	return ctr.Pause(ctx)
}

// Unfreeze implements drivers.Cookie.
func (c *cookie) Unfreeze(ctx context.Context) error {
	ctr, err := c.running(ctx, "unfreeze")
	if err != nil {
		return err
	}
	if err := ctr.Resume(ctx); err != nil {
		return err
	}
	c.setFrozen(false)
	return nil
}

func (c *cookie) running(ctx context.Context, what string) (Container, error) {
	if err := c.usable(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	r, ctr := c.run, c.ctr
	c.mu.Unlock()
	if r == nil || r.finished() {
		return nil, fmt.Errorf("%s %s: %w", what, c.name(), drivers.ErrNotRunning)
	}
	return ctr, nil
}

func (c *cookie) setFrozen(frozen bool) {
	c.mu.Lock()
	c.frozen = frozen
	c.mu.Unlock()
}

func (c *cookie) mayBeFrozen() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frozen
}

// Close implements drivers.Cookie. It finishes even when ctx has ended (the
// call's timed-out context is the usual one at hand): leaving a container
// behind is worse than returning late.
func (c *cookie) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.removed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	r := c.run
	c.mu.Unlock()
	if r != nil {
		r.requestEnd(nil)
		<-r.done // bounded: the stop grace, then bounded calls
	}
	c.step.Lock()
	defer c.step.Unlock()
	c.mu.Lock()
	if c.removed {
		c.mu.Unlock()
		return nil
	}
	r, ctr := c.run, c.ctr
	release := c.releaseImage
	c.releaseImage = nil
	c.mu.Unlock()
	// The image may go idle even if the removal fails: a container left
	// behind keeps it in use in the store's eyes.
	if release != nil {
		defer release()
	}
	if r != nil {
		r.requestEnd(nil)
		<-r.done
	}
	if ctr != nil {
		if err := ctr.Remove(Detached(ctx)); err != nil {
			return fmt.Errorf("close %s: %w", c.name(), err)
		}
	}
	c.mu.Lock()
	c.removed, c.ctr = true, nil
	lease := c.lease
	c.lease = nil
	c.mu.Unlock()
	if lease != nil {
		lease.Release() // only now is nothing of the call in the namespace
	}
	c.d.forget(c)
	return nil
}
