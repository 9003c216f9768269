package containerd

import (
	"context"
	"errors"
	"fmt"
	"os"
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
	// etcDir holds the container's /etc files; "" when none were written
	// or they are removed.
	etcDir string
	// releaseImage ends the cookie's use of its image in the image
	// cleaner; nil when not holding one.
	releaseImage func()
	run          *run
	// taskLeft is set when a task may exist that run does not track (a
	// Run that failed half-way and could not remove it).
	taskLeft bool
	// createSent is set when a container create was sent but no container
	// recorded: the daemon may have made it all the same.
	createSent bool
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
	// Busy from before the lookup to Close, across the pull: the cleaner
	// never removes an image a cookie is about to use.
	c.useImage()
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
// implements drivers.Auther), else those of WithDockerConfig for the
// image's registry, and the driver's retry policy.
func (c *cookie) PullImage(ctx context.Context) error {
	if err := c.usable(ctx); err != nil {
		return err
	}
	auth, err := c.d.registryAuth.PullCredentials(ctx, c.task, c.checked.Image, c.d.log)
	if err != nil {
		return fmt.Errorf("pull %s: %w", c.image(), err)
	}
	err = c.d.pull(ctx, c.checked.Image, auth)
	if err == nil && c.d.cleaner != nil {
		c.d.cleaner.Kick() // the store grew
	}
	return err
}

// useImage marks the image busy in the image cleaner, once per cookie.
func (c *cookie) useImage() {
	cl := c.d.cleaner
	if cl == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.releaseImage == nil && !c.cleaned {
		c.releaseImage = cl.Use(c.image())
	}
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

	// A task without network keeps the fresh namespace runc makes
	// (loopback only) rather than joining or building one.
	var extraLabels map[string]string
	if !c.task.DisableNet() && c.opts.NetNSPath == "" {
		var lease NetworkLease
		// Not :=, so the deferred release below sees every later error.
		if lease, err = d.acquireNetwork(ctx, c.task); err != nil {
			return fmt.Errorf("create container %s: %w", c.id(), err)
		}
		if lease != nil {
			c.netLease = lease
			c.opts.NetNSPath = lease.Path()
			if cl, ok := lease.(*cniLease); ok {
				extraLabels = map[string]string{LabelNetNS: cl.ns.path}
			}
			defer func() {
				if err != nil {
					cctx, cancel := d.cleanupCtx(ctx)
					defer cancel()
					if rerr := c.releaseNetwork(cctx); rerr != nil {
						d.log.WithError(rerr).WithField("container", c.id()).Warn("cannot release network namespace")
					}
				}
			}()
		}
	}
	if c.releaseImage == nil && d.cleaner != nil && !c.cleaned {
		c.releaseImage = d.cleaner.Use(c.image()) // a caller that skipped ValidateImage
	}
	// Kept until Close even when the create fails: a create in doubt may
	// have made the container all the same.
	if c.etcDir, err = d.writeEtcFiles(c.id(), hostname(c.id()), leaseNetInfo(c.netLease)); err != nil {
		return fmt.Errorf("create container %s: %w", c.id(), err)
	}

	lctx, release, err := d.withLease(ctx, "create")
	if err != nil {
		return fmt.Errorf("create container %s: %w", c.id(), err)
	}
	// A container record holds its snapshot once created; on failure the
	// prepared snapshot is only the lease's and goes with it.
	defer release(false)
	specOpts := append(c.opts.specOpts(img, c.checked.Args, d.cfg.DisableUnprivilegedContainers), withEtcFiles(c.etcDir))
	var ctr ctrd.Container
	// Not cancelled with the caller: a create the daemon completes after
	// the caller gave up would otherwise leave a container nobody knows
	// of. The per-operation timeout bounds it; Close looks for a
	// container a create in doubt may have left (createSent).
	c.createSent = true
	err = d.call(context.WithoutCancel(lctx), "containers.Create", func(ctx context.Context) error {
		var err error
		opts := c.opts.newContainerOpts(c.id(), img, specOpts)
		if extraLabels != nil {
			opts = append(opts, ctrd.WithAdditionalContainerLabels(extraLabels))
		}
		ctr, err = d.client.NewContainer(ctx, c.id(), opts...)
		return err
	})
	if err == nil {
		c.container = ctr
		c.createSent = false
		if cerr := ctx.Err(); cerr != nil {
			// The caller gave up meanwhile; Close removes the container.
			return fmt.Errorf("create container %s: %w", c.id(), cerr)
		}
		return nil
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w: %w", cerr, err)
	}
	{
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
	if r == nil || r.Finished() {
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
		r.RequestEnd(nil)
		<-r.Done() // bounded: the stop grace, then SIGKILL and bounded waits
	}
	// No shared deadline: every call is bounded on its own.
	if err := c.cleanup(c.d.detachedCtx(ctx)); err != nil {
		return err
	}
	c.mu.Lock()
	c.cleaned = true
	release := c.releaseImage
	c.releaseImage = nil
	c.mu.Unlock()
	if release != nil {
		release()
	}
	c.d.forget(c)
	return nil
}

func (c *cookie) cleanup(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.d
	ctr := c.container
	if ctr == nil && c.createSent {
		// A create whose answer we lost may have made the container:
		// remove it when it is this driver instance's.
		var found ctrd.Container
		err := d.call(ctx, "containers.Get", func(ctx context.Context) error {
			var err error
			found, err = d.client.LoadContainer(ctx, c.id())
			return err
		})
		switch {
		case err == nil:
			labels, lerr := found.Labels(ctx)
			if lerr != nil {
				if !errdefs.IsNotFound(lerr) {
					return daemonErr(lerr, "close "+c.id()+": load container labels")
				}
			} else if labels[LabelInstance] == d.instance {
				ctr = found
				c.taskLeft = true // a task is unlikely, but look
			}
		case !errdefs.IsNotFound(err):
			return daemonErr(err, "close "+c.id()+": load container")
		}
		if ctr == nil {
			c.createSent = false
		}
	}
	if ctr == nil {
		return c.releaseHostState(ctx)
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
		if err := c.deleteTask(ctx, task); err != nil {
			return err
		}
		c.taskLeft = false
	}
	err := d.call(ctx, "containers.Delete", func(ctx context.Context) error {
		return ctr.Delete(ctx, ctrd.WithSnapshotCleanup)
	})
	if err != nil && !errdefs.IsNotFound(err) {
		c.container = ctr // a later Close tries again
		return daemonErr(err, "close "+c.id()+": delete container")
	}
	c.container = nil
	c.createSent = false
	return c.releaseHostState(ctx)
}

// deleteTask deletes the container's task; c.mu is held. A task whose
// exit the run saw is deleted as it is: none of its processes is left, and
// the kill of WithProcessKill (runc kill --all, a process of its own) would
// only add a third to Close. Any other task may still run, or be frozen:
// its wait may have broken (the daemon died) or its end could not kill it
// (the daemon hung). It is thawed, then killed with the delete.
func (c *cookie) deleteTask(ctx context.Context, task ctrd.Task) error {
	d := c.d
	if c.run != nil && c.run.exited.Load() {
		err := d.call(ctx, "tasks.Delete", func(ctx context.Context) error {
			_, err := task.Delete(ctx)
			return err
		})
		switch {
		case err == nil, errdefs.IsNotFound(err):
			return nil
		case errors.Is(err, drivers.ErrDaemonUnavailable):
			return daemonErr(err, "close "+c.id()+": delete task")
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
		return daemonErr(err, "close "+c.id()+": task status")
	case err == nil && (st.Status == ctrd.Paused || st.Status == ctrd.Pausing):
		if err := d.call(ctx, "tasks.Resume", task.Resume); err != nil && !errdefs.IsNotFound(err) {
			d.log.WithError(err).WithField("container", c.id()).Warn("cannot thaw container before deleting it")
		}
	}
	err = d.call(ctx, "tasks.Delete", func(ctx context.Context) error {
		_, err := task.Delete(ctx, ctrd.WithProcessKill)
		return err
	})
	if err != nil && !errdefs.IsNotFound(err) {
		return daemonErr(err, "close "+c.id()+": delete task")
	}
	return nil
}

// releaseHostState removes what the container used on the host once it is
// gone: its /etc files and its network; c.mu is held. On error what is
// left is kept, so a later Close tries again.
func (c *cookie) releaseHostState(ctx context.Context) error {
	if c.etcDir != "" {
		if err := os.RemoveAll(c.etcDir); err != nil {
			return fmt.Errorf("close %s: remove /etc files: %w", c.id(), err)
		}
		c.etcDir = ""
	}
	return c.releaseNetwork(ctx)
}

// releaseNetwork gives the network namespace back (a pool lease returned,
// a CNI network torn down); c.mu is held. On error the lease is kept, so
// a later Close tries again.
func (c *cookie) releaseNetwork(ctx context.Context) error {
	if c.netLease == nil {
		return nil
	}
	if err := c.netLease.Release(ctx); err != nil {
		return fmt.Errorf("close %s: release network: %w", c.id(), err)
	}
	c.netLease = nil
	c.opts.NetNSPath = ""
	return nil
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
