package containerd

import (
	"context"
	"errors"
	"fmt"
	"sync"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"

	"github.com/fnrun/fnrun/drivers"
)

// cookie is one task's container. Its methods are safe for concurrent use.
type cookie struct {
	d       *Driver
	task    drivers.ContainerTask
	checked *drivers.CheckedTask
	opts    *ContainerOptions

	mu        sync.Mutex
	closed    bool // no new work; cleanup may still be pending
	cleaned   bool // everything removed: Close is a no-op from now on
	container ctrd.Container
	netLease  NetworkLease
	run       *run
	// taskLeft is set when a task may exist that run does not track (a
	// Run that failed half-way and could not remove it).
	taskLeft bool
}

var _ drivers.Cookie = (*cookie)(nil)

func (c *cookie) id() string    { return c.task.Id() }
func (c *cookie) image() string { return c.checked.Image.Normalized }

// ValidateImage implements drivers.Cookie: true when the image is absent or
// not unpacked for the snapshotter (and cannot be unpacked locally).
func (c *cookie) ValidateImage(ctx context.Context) (bool, error) {
	if err := c.usable(ctx); err != nil {
		return false, err
	}
	img, err := c.d.findImage(c.d.nsCtx(ctx), c.image())
	if err != nil || img == nil {
		return err == nil, err
	}
	if err := c.d.checkImageConfig(c.image(), img.config); err != nil {
		return false, err
	}
	return false, nil
}

// PullImage implements drivers.Cookie with the task's credentials (when it
// implements drivers.Auther) and the driver's retry policy.
func (c *cookie) PullImage(ctx context.Context) error {
	if err := c.usable(ctx); err != nil {
		return err
	}
	var auth *drivers.AuthConfig
	if a, ok := c.task.(drivers.Auther); ok {
		var err error
		if auth, err = a.Auth(ctx); err != nil {
			return fmt.Errorf("pull %s: credentials: %w", c.image(), err)
		}
	}
	return c.d.pull(ctx, c.checked.Image, auth)
}

// ContainerOptions implements drivers.Cookie: a *ContainerOptions, which a
// caller may change until CreateContainer.
func (c *cookie) ContainerOptions() interface{} { return c.opts }

// CreateContainer implements drivers.Cookie: the container named after the
// task, with a fresh snapshot of the image and the spec of ContainerOptions.
// A lease covers the snapshot until the container record holds it.
func (c *cookie) CreateContainer(ctx context.Context) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	// Held throughout, so Close waits for a create in flight instead of
	// missing the container it makes.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("cookie %s: %w", c.id(), drivers.ErrClosed)
	}
	if c.container != nil {
		return fmt.Errorf("create container %s: already created", c.id())
	}
	d := c.d
	ctx = d.nsCtx(ctx)
	img, err := d.findImage(ctx, c.image())
	switch {
	case err != nil:
		return fmt.Errorf("create container %s: %w", c.id(), err)
	case img == nil:
		return fmt.Errorf("create container %s: image %s is not present: %w", c.id(), c.image(), drivers.ErrImageNotFound)
	}
	if err := d.checkImageConfig(c.image(), img.config); err != nil {
		return fmt.Errorf("create container %s: %w", c.id(), err)
	}

	// A task without network keeps the fresh namespace (loopback only)
	// rather than joining a shared one.
	if p := d.opts.network; p != nil && c.opts.NetNSPath == "" && !c.task.DisableNet() {
		lease, err := p.Acquire(ctx, c.task)
		if err != nil {
			return fmt.Errorf("create container %s: network: %w", c.id(), err)
		}
		c.netLease = lease
		c.opts.NetNSPath = lease.Path()
		defer func() {
			if err != nil {
				c.releaseNetwork(ctx)
			}
		}()
	}

	lctx, release, err := d.withLease(ctx, "create")
	if err != nil {
		return fmt.Errorf("create container %s: %w", c.id(), err)
	}
	// A container record holds its snapshot once created; on failure the
	// prepared snapshot is only the lease's and goes with it.
	defer release(false)
	specOpts := c.opts.specOpts(img, c.checked.Args, d.cfg.DisableUnprivilegedContainers)
	var ctr ctrd.Container
	err = d.call(lctx, "containers.Create", func(ctx context.Context) error {
		var err error
		ctr, err = d.client.NewContainer(ctx, c.id(), c.opts.newContainerOpts(c.id(), img, specOpts)...)
		return err
	})
	if err != nil {
		if errors.Is(err, drivers.ErrInvalidTask) {
			return fmt.Errorf("create container %s: %w", c.id(), err)
		}
		if errdefs.IsNotFound(err) {
			// The image's snapshots or content went away under its record:
			// look again next time instead of trusting the cache.
			d.images.forget(img.image.Target().Digest)
		}
		return notFoundErr(err, drivers.ErrImageNotFound, fmt.Sprintf("create container %s", c.id()))
	}
	c.container = ctr
	return nil
}

// Freeze implements drivers.Cookie: the task is paused (cgroup freezer).
func (c *cookie) Freeze(ctx context.Context) error {
	r, err := c.running(ctx, "freeze")
	if err != nil {
		return err
	}
	err = c.d.call(c.d.nsCtx(ctx), "tasks.Pause", r.task.Pause)
	return notFoundErr(err, drivers.ErrContainerGone, "freeze "+c.id())
}

// Unfreeze implements drivers.Cookie.
func (c *cookie) Unfreeze(ctx context.Context) error {
	r, err := c.running(ctx, "unfreeze")
	if err != nil {
		return err
	}
	err = c.d.call(c.d.nsCtx(ctx), "tasks.Resume", r.task.Resume)
	return notFoundErr(err, drivers.ErrContainerGone, "unfreeze "+c.id())
}

func (c *cookie) running(ctx context.Context, what string) (*run, error) {
	if err := c.usable(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	r := c.run
	c.mu.Unlock()
	if r == nil || r.finished() {
		return nil, fmt.Errorf("%s %s: %w", what, c.id(), drivers.ErrNotRunning)
	}
	return r, nil
}

// Close implements drivers.Cookie: it ends a running container (gracefully),
// then deletes its task, the container and its snapshot. It is idempotent,
// and works when any of them is already gone.
//
// Close finishes even when ctx has already ended (a timed-out call's
// context is the usual one at hand): leaving a container behind is worse
// than returning late, and every daemon call stays bounded by the
// per-operation timeout. If a daemon call fails, Close returns the error
// and a later Close, or the driver's, tries again.
func (c *cookie) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.cleaned {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	r := c.run
	c.mu.Unlock()

	if r != nil {
		r.requestStop(nil)
		<-r.done // bounded: the stop grace, then SIGKILL and bounded waits
	}
	cctx, cancel := c.d.cleanupCtx(ctx)
	defer cancel()
	if err := c.cleanup(cctx); err != nil {
		return err
	}
	c.mu.Lock()
	c.cleaned = true
	c.mu.Unlock()
	c.d.forget(c)
	return nil
}

func (c *cookie) cleanup(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.d
	ctr := c.container
	if ctr == nil {
		c.releaseNetwork(ctx)
		return nil
	}
	var task ctrd.Task
	switch {
	case c.run != nil:
		task = c.run.task
	case c.taskLeft:
		err := d.call(ctx, "tasks.Get", func(ctx context.Context) error {
			var err error
			task, err = ctr.Task(ctx, nil)
			return err
		})
		if err != nil && !errdefs.IsNotFound(err) {
			return daemonErr(err, "close "+c.id()+": load task")
		}
	}
	if task != nil {
		var opts []ctrd.ProcessDeleteOpts
		if c.run == nil || !c.run.finished() {
			opts = append(opts, ctrd.WithProcessKill)
		}
		err := d.call(ctx, "tasks.Delete", func(ctx context.Context) error {
			_, err := task.Delete(ctx, opts...)
			return err
		})
		if err != nil && !errdefs.IsNotFound(err) {
			return daemonErr(err, "close "+c.id()+": delete task")
		}
		c.taskLeft = false
	}
	err := d.call(ctx, "containers.Delete", func(ctx context.Context) error {
		return ctr.Delete(ctx, ctrd.WithSnapshotCleanup)
	})
	if err != nil && !errdefs.IsNotFound(err) {
		return daemonErr(err, "close "+c.id()+": delete container")
	}
	c.releaseNetwork(ctx)
	return nil
}

// releaseNetwork gives the network namespace back; c.mu is held.
func (c *cookie) releaseNetwork(ctx context.Context) {
	if c.netLease == nil {
		return
	}
	if err := c.netLease.Release(ctx); err != nil {
		c.d.log.WithError(err).WithField("container", c.id()).Warn("cannot release network namespace")
	}
	c.netLease = nil
	c.opts.NetNSPath = ""
}

// usable reports ctx's error or a closed cookie.
func (c *cookie) usable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("cookie %s: %w", c.id(), drivers.ErrClosed)
	}
	return nil
}
