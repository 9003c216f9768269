package docker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
)

// cookie is one task's container.
type cookie struct {
	d       *Driver
	task    drivers.ContainerTask
	checked *drivers.CheckedTask
	opts    *docker.CreateContainerOptions
	network string // leased from the driver's spread; "" when none

	mu        sync.Mutex
	attempted bool   // a create was sent: a container may exist
	sentName  string // the name the create asked for
	id        string // the container's id once created
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
	c := &cookie{d: d, task: task, checked: checked, opts: opts}
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
// with data from the image.
func (c *cookie) ValidateImage(ctx context.Context) (bool, error) {
	if err := c.usable(ctx); err != nil {
		return false, err
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
	return c.d.puller.pull(ctx, c.checked.Image, conf)
}

// CreateContainer implements drivers.Cookie.
func (c *cookie) CreateContainer(ctx context.Context) error {
	if err := c.usable(ctx); err != nil {
		return err
	}
	c.mu.Lock()
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

	var ctr *docker.Container
	err := c.d.do(ctx, "create", fmt.Sprintf("container %q", c.name()), kindImage, func(ctx context.Context) error {
		opts.Context = ctx
		var err error
		ctr, err = c.d.client.CreateContainer(opts)
		return err
	})
	if errors.Is(err, docker.ErrContainerAlreadyExists) {
		// Someone else's container has this name: not ours to remove.
		c.mu.Lock()
		c.attempted = false
		c.mu.Unlock()
		return err
	}
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.id = ctr.ID
	c.mu.Unlock()
	return nil
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
	r, id := c.run, c.id
	c.mu.Unlock()
	if r == nil || r.finished() {
		return notRunning(c.name())
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
// then SIGKILL), removes it with its volumes and returns the network lease.
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
		r.requestEnd(closedContext())
		select {
		case <-r.done:
		case <-ctx.Done():
			// Removal below kills the container anyway.
		}
	}
	if err := c.removeContainer(ctx); err != nil {
		return fmt.Errorf("close %s: %w", c.name(), err)
	}
	c.mu.Lock()
	if !c.removed {
		c.removed = true
		c.d.networks.release(c.network)
	}
	c.mu.Unlock()
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
		ctr, err := c.d.inspectContainer(ctx, name)
		if isGone(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if ctr.Config == nil || ctr.Config.Labels[LabelInstance] != c.d.instance || ctr.Config.Labels[LabelLibrary] != libraryName {
			return nil
		}
		id = ctr.ID
	}
	return c.d.remove(ctx, id)
}
