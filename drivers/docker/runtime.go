package docker

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/lifecycle"
	"github.com/fnrun/fnrun/images/dockerstore"
	"github.com/fnrun/fnrun/stats"
)

var (
	_ lifecycle.Runtime       = (*daemon)(nil)
	_ lifecycle.Joiner        = (*daemon)(nil)
	_ lifecycle.StoreProvider = (*daemon)(nil)
)

// Options implements lifecycle.Runtime with *docker.CreateContainerOptions.
func (d *daemon) Options(t *lifecycle.Task) (any, error) { return d.createOptions(t) }

// Joinable implements lifecycle.Joiner; network mode "none" (DisableNet)
// joins a holder without a network.
func (d *daemon) Joinable(t *lifecycle.Task, opts any) bool {
	o, ok := opts.(*docker.CreateContainerOptions)
	if !ok || o.HostConfig == nil {
		return false
	}
	if t.DisableNet() {
		return o.HostConfig.NetworkMode == networkNone
	}
	return o.HostConfig.NetworkMode == ""
}

// FindImage implements lifecycle.Runtime. An image that declares volumes is
// refused unless the driver enables them: each run would leave an
// anonymous volume with data from the image.
func (d *daemon) FindImage(ctx context.Context, ref drivers.Reference) (bool, error) {
	img, err := dockerstore.InspectImage(ctx, d.storeCall, ref.Familiar)
	switch {
	case errors.Is(err, drivers.ErrImageNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	if img.Config != nil && len(img.Config.Volumes) > 0 && !d.s.Policy.ImageVolumes {
		vols := make([]string, 0, len(img.Config.Volumes))
		for v := range img.Config.Volumes {
			vols = append(vols, v)
		}
		return false, drivers.InvalidTaskf("image %s declares volumes %v and image volumes are disabled (ImageEnableVolume)", ref.Familiar, vols)
	}
	return true, nil
}

// Pull implements lifecycle.Runtime: one daemon pull.
func (d *daemon) Pull(ctx context.Context, ref drivers.Reference, auth *drivers.AuthConfig) error {
	tag := ref.Tag
	if ref.Digest != "" {
		tag = ref.Digest // the API takes a digest in the tag parameter
	}
	return d.doWithin(ctx, "pull", fmt.Sprintf("image %q", ref.Familiar), kindImage, 0, func(ctx context.Context) error {
		return d.client.PullImage(docker.PullImageOptions{
			Repository:        ref.Name(),
			Tag:               tag,
			InactivityTimeout: pullInactivity,
			Context:           ctx,
		}, dockerAuth(auth))
	})
}

// Create implements lifecycle.Runtime. A container that joins no holder gets
// the least used of the configured networks.
func (d *daemon) Create(ctx context.Context, spec lifecycle.CreateSpec) (lifecycle.Container, error) {
	c := &container{d: d, name: spec.Name}
	var opts docker.CreateContainerOptions
	if spec.Holder != nil {
		opts = d.holderOptions(spec)
	} else {
		o, ok := spec.Options.(*docker.CreateContainerOptions)
		if !ok || o.HostConfig == nil || o.Config == nil {
			return nil, drivers.InvalidTaskf("container options %T are not complete *docker.CreateContainerOptions", spec.Options)
		}
		opts = *o
		if o.HostConfig.NetworkMode == "" || spec.Join != nil {
			host := *o.HostConfig
			if spec.Join != nil {
				host.NetworkMode = "container:" + spec.Join.ID
			} else {
				c.network = d.networks.acquire()
				host.NetworkMode = c.network
			}
			opts.HostConfig = &host
		}
	}
	opts.Name = spec.Name
	var ctr *docker.Container
	err := d.do(ctx, "create", fmt.Sprintf("container %q", spec.Name), kindImage, func(ctx context.Context) error {
		opts.Context = ctx
		var err error
		ctr, err = d.client.CreateContainer(opts)
		return err
	})
	switch {
	case err == nil:
		c.id = ctr.ID
		return c, nil
	case !daemonAnswered(err):
		// The container may exist: Remove looks for it by name.
		return c, err
	}
	d.networks.release(c.network)
	if spec.Join != nil && holderGoneMessage(err) {
		return nil, fmt.Errorf("holder %s: %w: %w", spec.Join.ID, drivers.ErrContainerGone, err)
	}
	return nil, err
}

// daemonAnswered reports whether a create's error is the daemon's answer
// (an error status), as opposed to a transport error or a timeout where
// the answer was lost and a container may exist.
func daemonAnswered(err error) bool {
	var apiErr *docker.Error
	return !lifecycle.InDoubt(err) && (errors.As(err, &apiErr) ||
		errors.Is(err, docker.ErrContainerAlreadyExists) ||
		errors.Is(err, docker.ErrNoSuchImage))
}

type container struct {
	d       *daemon
	name    string
	id      string // "" when the create's answer was lost
	network string // leased from the spread; "" when none
}

func (c *container) ID() string {
	if c.id == "" {
		return c.name
	}
	return c.id
}

// Start implements lifecycle.Container, attaching the streams first.
func (c *container) Start(ctx context.Context, io lifecycle.IO) (lifecycle.Process, error) {
	d := c.d
	p := &process{c: c, outDone: make(chan struct{})}
	if io.Stdin != nil || io.Stdout != nil || io.Stderr != nil {
		att, err := d.attach(ctx, c.ID(), io.Stdin, io.Stdout, io.Stderr)
		if err != nil {
			return nil, err
		}
		p.att, p.outDone = att, att.done
	} else {
		close(p.outDone)
	}
	if err := d.startContainer(ctx, c.ID(), fmt.Sprintf("container %q", c.name)); err != nil {
		p.StopOutput()
		<-p.outDone
		if holderGoneMessage(err) {
			err = fmt.Errorf("%w: %w", drivers.ErrContainerGone, err)
		}
		return nil, err
	}
	return p, nil
}

// Pause implements lifecycle.Container.
func (c *container) Pause(ctx context.Context) error { return c.d.setPaused(ctx, c.ID(), true) }

// Resume implements lifecycle.Container.
func (c *container) Resume(ctx context.Context) error { return c.d.setPaused(ctx, c.ID(), false) }

// Remove implements lifecycle.Container. A container whose create's answer
// was lost is removed only if it carries this driver instance's labels.
func (c *container) Remove(ctx context.Context) error {
	d := c.d
	id := c.id
	if id == "" {
		ctr, err := d.findByName(ctx, c.name)
		if err != nil {
			return err
		}
		if ctr != nil && ctr.Config != nil && ctr.Config.Labels[LabelInstance] == d.s.Instance && ctr.Config.Labels[LabelLibrary] == libraryName {
			id = ctr.ID
		}
	}
	if id != "" {
		if err := d.remove(ctx, id); err != nil {
			return err
		}
	}
	d.networks.release(c.network)
	c.network = ""
	return nil
}

// findByName looks up the container a create with a lost answer may have
// made. The daemon may still be working on that create and register the
// name only later, so a missing container is looked for again for a short
// while. It returns nil, nil when there is none.
func (d *daemon) findByName(ctx context.Context, name string) (*docker.Container, error) {
	delay := 50 * time.Millisecond
	deadline := time.Now().Add(findByNameGrace)
	for {
		ctr, err := d.inspectContainer(ctx, name)
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

// findByNameGrace is how long Remove looks for a container whose create's
// answer was lost before deciding there is none.
const findByNameGrace = 2 * time.Second

type process struct {
	c       *container
	att     *attachment // nil when not attached
	outDone chan struct{}
}

// Wait implements lifecycle.Process. Only the daemon's record of an OOM
// kill says "OOM"; exit code 137 is as likely a plain SIGKILL.
func (p *process) Wait(ctx context.Context) (lifecycle.Exit, error) {
	d, id := p.c.d, p.c.ID()
	var code int
	err := d.doWithin(ctx, "wait", fmt.Sprintf("container %q", id), kindContainer, 0, func(ctx context.Context) error {
		var err error
		code, err = d.client.WaitContainerWithContext(id, ctx)
		return err
	})
	if err != nil {
		return lifecycle.Exit{}, err
	}
	exit := lifecycle.Exit{Code: code}
	if code != 0 {
		ctr, err := d.inspectContainer(context.WithoutCancel(ctx), id)
		if err != nil {
			d.log.WithError(err).WithField("container", p.c.name).Warn("cannot tell an OOM kill from the exit code alone")
		} else {
			exit.OOM = ctr.State.OOMKilled
		}
	}
	return exit, nil
}

// Signal implements lifecycle.Process. Killing the main process (tini)
// ends every process of the container.
func (p *process) Signal(ctx context.Context, sig syscall.Signal, _ bool) error {
	err := p.c.d.kill(ctx, p.c.ID(), docker.Signal(sig))
	if isGone(err) || isNotRunning(err) {
		return nil
	}
	return err
}

// InputDone implements lifecycle.Process: the attach closes the input's
// write side itself.
func (p *process) InputDone() <-chan struct{}       { return nil }
func (p *process) CloseInput(context.Context) error { return nil }
func (p *process) OutputDone() <-chan struct{}      { return p.outDone }

// StopOutput implements lifecycle.Process.
func (p *process) StopOutput() {
	if p.att != nil {
		p.att.close()
	}
}

// Stats implements lifecycle.Process.
func (p *process) Stats(ctx context.Context, write func(stats.Stat)) {
	p.c.d.sampleStats(ctx, p.c, write)
}
