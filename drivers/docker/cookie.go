package docker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/pool"
)

// cookie is one task's container.
type cookie struct {
	d       *Driver
	task    drivers.ContainerTask
	checked *drivers.CheckedTask
	opts    *docker.CreateContainerOptions
	// baseMode is the network mode newCookie chose. CreateContainer joins a
	// pool holder instead only while the options still ask for it, so a
	// change made through ContainerOptions wins.
	baseMode string

	mu        sync.Mutex
	network   string      // leased from the driver's spread; "" when none
	lease     *pool.Lease // the pool holder the container joined; nil when none
	imageUse  func()      // releases the image in the cleaner; nil when not held
	attempted bool        // a create was sent: a container may exist
	sentName  string      // the name the create asked for
	id        string      // the container's id once created
	run       *run
	starting  bool // Run is between attach and start
	frozen    bool
	closed    bool
	removed   bool // nothing of the cookie is left in the daemon
}

var _ drivers.Cookie = (*cookie)(nil)

func newCookie(d *Driver, task drivers.ContainerTask, checked *drivers.CheckedTask) (*cookie, error) {
	network := networkNone
	if !task.DisableNet() {
		network = d.networks.acquire()
	}
	opts, err := d.createOptions(task, checked, network)
	if err != nil {
		if network != networkNone {
			d.networks.release(network)
		}
		return nil, err
	}
	c := &cookie{d: d, task: task, checked: checked, opts: opts, baseMode: network}
	if network != networkNone {
		c.network = network
	}
	return c, nil
}

func (c *cookie) image() string { return c.checked.Image.Familiar }

func (c *cookie) name() string { return c.task.Id() }

// usable fails when ctx is done or the cookie closed.
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

// ContainerOptions returns the *docker.CreateContainerOptions that
// CreateContainer sends. Changes made before CreateContainer are used.
func (c *cookie) ContainerOptions() interface{} { return c.opts }

// ValidateImage implements drivers.Cookie: true when the image is not in
// the daemon's store. An image that declares volumes is refused unless the
// driver enables them, since each run would leave an anonymous volume
// with data from the image. With the image cleaner on, the image is marked
// busy from here (before the lookup, so across a pull too) until Close.
func (c *cookie) ValidateImage(ctx context.Context) (bool, error) {
	if err := c.usable(ctx); err != nil {
		return false, err
	}
	if cl := c.d.cleaner; cl != nil {
		c.mu.Lock()
		if c.imageUse == nil && !c.closed {
			c.imageUse = cl.Use(c.checked.Image.Normalized)
		}
		c.mu.Unlock()
	}
	img, err := c.d.inspectImage(ctx, c.image())
	if errors.Is(err, drivers.ErrImageNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if img.Config != nil && len(img.Config.Volumes) > 0 && !c.d.cfg.ImageEnableVolume {
		vols := make([]string, 0, len(img.Config.Volumes))
		for v := range img.Config.Volumes {
			vols = append(vols, v)
		}
		return false, drivers.InvalidTaskf("image %s declares volumes %v and image volumes are disabled (ImageEnableVolume)", c.image(), vols)
	}
	return false, nil
}

// PullImage implements drivers.Cookie through the driver's shared puller.
func (c *cookie) PullImage(ctx context.Context) error {
	if err := c.usable(ctx); err != nil {
		return err
	}
	conf, err := c.d.credentials(ctx, c.task, c.checked.Image)
	if err != nil {
		return err
	}
	if err := c.d.puller.pull(ctx, c.checked.Image, conf); err != nil {
		return err
	}
	if cl := c.d.cleaner; cl != nil {
		cl.Kick() // the store grew
	}
	return nil
}

// CreateContainer implements drivers.Cookie. With the pre-fork pool on and
// the network not disabled, the container joins a free pool holder's
// network namespace (network mode "container:<holder id>"); when none is
// free it gets a network of its own as without the pool, and the pool
// counts the miss. The lease lasts until Close has removed the container.
func (c *cookie) CreateContainer(ctx context.Context) error {
	if err := c.usable(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return fmt.Errorf("cookie %s: %w", c.name(), drivers.ErrClosed)
	}
	if c.attempted {
		c.mu.Unlock()
		return fmt.Errorf("create container %s: already created", c.name())
	}
	// From here a container may exist, even if the call times out: Close
	// looks for it.
	c.attempted = true
	opts := *c.opts
	c.sentName = opts.Name
	c.mu.Unlock()

	// The create is sent detached from the caller's context, bounded by
	// the per-call timeout only: dockerd finishes a create whose request
	// was aborted, and the container would appear after Close had looked
	// for it by name. A caller that gave up meanwhile gets its error below.
	createCtx := context.WithoutCancel(ctx)
	lease, joined := c.leaseHolder(ctx, opts)
	if lease != nil {
		opts = joined
	}
	ctr, err := c.create(createCtx, opts)
	if err != nil && lease != nil && holderGoneMessage(err) {
		// The holder died between the lease and the create, and the
		// daemon refused to join it: nothing was created. Fall back to a
		// network of the container's own, as on a miss.
		c.d.log.WithError(err).WithFields(map[string]any{"container": c.name(), "holder": lease.Holder().ID}).Debug("leased holder gone at create; using a plain network")
		lease.Release()
		lease = nil
		opts = *c.opts
		ctr, err = c.create(createCtx, opts)
	}
	if err != nil {
		if lease != nil {
			// Nothing runs in the holder's namespace: a container the
			// lost answer of a create may have made is not started.
			lease.Release()
		}
		if daemonAnswered(err) {
			// The daemon refused the create: nothing was made (or, for a
			// name conflict, someone else's container has this name and is
			// not ours to remove). The create may be tried again.
			c.mu.Lock()
			c.attempted = false
			c.mu.Unlock()
		}
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("create container %s: %w (%v)", c.name(), cerr, err)
		}
		return err
	}
	c.mu.Lock()
	if c.closed {
		// Close ran while the create was under way and may have found
		// nothing to remove: remove what the create made here.
		c.mu.Unlock()
		if err := c.d.remove(context.WithoutCancel(ctx), ctr.ID); err != nil {
			c.d.log.WithError(err).WithField("container", c.name()).Warn("cannot remove a container created after its cookie closed")
			c.mu.Lock()
			if c.id == "" {
				c.id = ctr.ID // a later Close tries again
			}
			c.mu.Unlock()
		} else {
			c.mu.Lock()
			c.attempted = false // nothing left for Close to look for
			c.mu.Unlock()
		}
		if lease != nil {
			lease.Release() // never started: nothing runs in the namespace
		}
		return fmt.Errorf("cookie %s: %w", c.name(), drivers.ErrClosed)
	}
	c.id = ctr.ID
	if lease != nil {
		c.lease = lease
		// The container does not use the driver's own network.
		c.d.networks.release(c.network)
		c.network = ""
	}
	c.mu.Unlock()
	if cerr := ctx.Err(); cerr != nil {
		// The caller gave up while the create was under way. The container
		// exists and its id is kept: Close removes it.
		return fmt.Errorf("create container %s: %w", c.name(), cerr)
	}
	return nil
}

// daemonAnswered reports whether a create's error is the daemon's answer
// (an error status), as opposed to a transport error or a timeout where
// the answer was lost and a container may exist.
func daemonAnswered(err error) bool {
	var apiErr *docker.Error
	return errors.As(err, &apiErr) ||
		errors.Is(err, docker.ErrContainerAlreadyExists) ||
		errors.Is(err, docker.ErrNoSuchImage)
}

// leaseHolder leases a pool holder for the container, unless there is no
// pool, the network is disabled, or the options no longer ask for the
// network newCookie chose. It returns the options that join the holder.
func (c *cookie) leaseHolder(ctx context.Context, opts docker.CreateContainerOptions) (*pool.Lease, docker.CreateContainerOptions) {
	p := c.d.pool
	if p == nil || c.task.DisableNet() || opts.HostConfig == nil || opts.HostConfig.NetworkMode != c.baseMode {
		return nil, opts
	}
	lease, ok := p.Lease(ctx)
	if !ok {
		return nil, opts
	}
	host := *opts.HostConfig
	host.NetworkMode = "container:" + lease.Holder().ID
	opts.HostConfig = &host
	return lease, opts
}

// create sends one create call.
func (c *cookie) create(ctx context.Context, opts docker.CreateContainerOptions) (*docker.Container, error) {
	var ctr *docker.Container
	err := c.d.do(ctx, "create", fmt.Sprintf("container %q", c.name()), kindImage, func(ctx context.Context) error {
		opts.Context = ctx
		var err error
		ctr, err = c.d.client.CreateContainer(opts)
		return err
	})
	return ctr, err
}

// holderError is the error of a container whose leased holder is gone:
// the pool's reason when it has noticed (wrapping pool.ErrHolderDied and
// so drivers.ErrContainerGone, or drivers.ErrClosed when the pool closed),
// else pool.ErrHolderDied with what the daemon said.
func holderError(lease *pool.Lease, daemonErr error) error {
	if err := lease.Err(); err != nil {
		return err
	}
	if daemonErr != nil {
		return fmt.Errorf("holder %s: %w: %w", lease.Holder().ID, pool.ErrHolderDied, daemonErr)
	}
	return fmt.Errorf("holder %s: %w", lease.Holder().ID, pool.ErrHolderDied)
}

// leaseDead reports whether the lease's holder is gone.
func leaseDead(lease *pool.Lease) bool {
	select {
	case <-lease.Dead():
		return true
	default:
		return false
	}
}

// Freeze implements drivers.Cookie by pausing the container.
func (c *cookie) Freeze(ctx context.Context) error { return c.setFrozen(ctx, true) }

// Unfreeze implements drivers.Cookie by unpausing the container.
func (c *cookie) Unfreeze(ctx context.Context) error { return c.setFrozen(ctx, false) }

func (c *cookie) setFrozen(ctx context.Context, frozen bool) error {
	if err := c.usable(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	r, id, already := c.run, c.id, c.frozen == frozen
	c.mu.Unlock()
	if r == nil || r.Finished() {
		return notRunning(c.name())
	}
	if already {
		return nil // only this cookie pauses its container: nothing to do
	}
	var err error
	if frozen {
		err = c.d.pause(ctx, id)
	} else {
		err = c.d.unpause(ctx, id)
	}
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.frozen = frozen
	c.mu.Unlock()
	return nil
}

func (c *cookie) isFrozen() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frozen
}

// Close implements drivers.Cookie: it ends a running container (SIGTERM,
// then SIGKILL), removes it with its volumes, returns the network or pool
// lease and frees the image in the cleaner.
// It is idempotent and succeeds when the container is already gone; if the
// removal fails, a later Close tries again.
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
		r.RequestEnd(closedContext())
		select {
		case <-r.Done():
		case <-ctx.Done():
			// Removal below kills the container anyway.
		}
	}
	err := c.removeContainer(ctx)
	c.mu.Lock()
	// The image may go idle even if the removal failed: a container left
	// behind keeps it in use in the daemon's eyes.
	if c.imageUse != nil {
		defer c.imageUse()
		c.imageUse = nil
	}
	if err != nil {
		c.mu.Unlock()
		return fmt.Errorf("close %s: %w", c.name(), err)
	}
	var lease *pool.Lease
	if !c.removed {
		c.removed = true
		c.d.networks.release(c.network)
		c.network = ""
		// Only now is nothing of the call left in the holder's namespace.
		lease, c.lease = c.lease, nil
	}
	c.mu.Unlock()
	if lease != nil {
		lease.Release()
	}
	if c.d.isClosed() {
		// The driver's Close has already emptied the pool; do not leave
		// this cookie's connection behind.
		c.d.api.closeIdle()
	}
	return nil
}

// removeContainer removes the cookie's container, if one may exist.
func (c *cookie) removeContainer(ctx context.Context) error {
	c.mu.Lock()
	attempted, id, name := c.attempted, c.id, c.sentName
	c.mu.Unlock()
	if !attempted {
		return nil
	}
	if id == "" {
		// The create's answer was lost: find the container by name, and
		// remove it only if it carries this driver's labels.
		if name == "" {
			return nil // Docker chose a random name: nothing to find it by
		}
		ctr, err := c.findByName(ctx, name)
		if ctr == nil || err != nil {
			return err
		}
		if ctr.Config == nil || ctr.Config.Labels[LabelInstance] != c.d.instance || ctr.Config.Labels[LabelLibrary] != libraryName {
			return nil
		}
		id = ctr.ID
	}
	return c.d.remove(ctx, id)
}

// findByName looks up the container a create with a lost answer may have
// made. The daemon may still be working on that create and register the
// name only later, so a missing container is looked for again for a short
// while. It returns nil, nil when there is none.
func (c *cookie) findByName(ctx context.Context, name string) (*docker.Container, error) {
	delay := 50 * time.Millisecond
	deadline := time.Now().Add(findByNameGrace)
	for {
		ctr, err := c.d.inspectContainer(ctx, name)
		if err == nil {
			return ctr, nil
		}
		if !isGone(err) {
			return nil, err
		}
		if time.Now().Add(delay).After(deadline) {
			return nil, nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		delay *= 2
	}
}

// findByNameGrace is how long Close looks for a container whose create's
// answer was lost before deciding there is none.
const findByNameGrace = 2 * time.Second
