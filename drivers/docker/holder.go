package docker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/pool"
)

// defaultPreForkCmd is the holders' command when drivers.Config.PreForkCmd
// is empty: sleep for 68 years, in a form every sleep (busybox's too)
// accepts. A holder runs no code of its own; it only keeps its network
// namespace alive for the containers that join it.
const defaultPreForkCmd = "sleep 2147483647"

// holderRewaitMin and holderRewaitMax pace the attempts to watch a holder
// again after the watch broke for a passing reason (the daemon restarting,
// a dropped connection).
const (
	holderRewaitMin = 100 * time.Millisecond
	holderRewaitMax = 5 * time.Second
)

// holderAdapter is the pool.Adapter of the docker driver: holders are
// containers of drivers.Config.PreForkImage running PreForkCmd, with no
// logging, unprivileged like calls, carrying the driver's labels with
// role=holder. A container joins one with network mode
// "container:<holder id>".
type holderAdapter struct {
	d     *Driver
	image drivers.Reference
	cmd   []string
}

var _ pool.Adapter = (*holderAdapter)(nil)

// newHolderAdapter checks the pre-fork settings. PreForkImage is required:
// there is no default image a host without a public registry is sure to
// have, and a pool that pulls a default from Docker Hub would fail
// forever on such a host.
func newHolderAdapter(d *Driver) (*holderAdapter, error) {
	if strings.TrimSpace(d.cfg.PreForkImage) == "" {
		return nil, fmt.Errorf("docker driver: PreForkPoolSize is %d but PreForkImage is empty: %w", d.cfg.PreForkPoolSize, drivers.ErrInvalidConfig)
	}
	ref, err := drivers.NormalizeImage(d.cfg.PreForkImage)
	if err != nil {
		return nil, fmt.Errorf("docker driver: PreForkImage: %w: %w", drivers.ErrInvalidConfig, err)
	}
	line := d.cfg.PreForkCmd
	if strings.TrimSpace(line) == "" {
		line = defaultPreForkCmd
	}
	cmd, err := drivers.SplitCommand(line)
	if err != nil {
		return nil, fmt.Errorf("docker driver: PreForkCmd: %w: %w", drivers.ErrInvalidConfig, err)
	}
	return &holderAdapter{d: d, image: ref, cmd: cmd}, nil
}

// EnsureImage implements pool.Adapter: one pull attempt when the image is
// absent, with the credentials of the driver's config.json (or its
// credential helper) for its registry. The pool paces retries.
func (a *holderAdapter) EnsureImage(ctx context.Context) error {
	_, err := a.d.inspectImage(ctx, a.image.Familiar)
	if !errors.Is(err, drivers.ErrImageNotFound) {
		return err
	}
	conf, err := a.d.configCredentials(ctx, a.image)
	if err != nil {
		return err
	}
	return a.d.pullOnce(ctx, a.image, conf)
}

// holderOptions are the create options of one holder.
func (a *holderAdapter) holderOptions(spec pool.HolderSpec) docker.CreateContainerOptions {
	labels := a.d.labels()
	labels[drivers.LabelRole] = drivers.RoleHolder
	host := &docker.HostConfig{
		NetworkMode: spec.Network, // "" is the daemon's default bridge
		LogConfig:   docker.LogConfig{Type: "none"},
		// An init reaps nothing here but makes the holder end at once on
		// SIGTERM, which a bare sleep as PID 1 ignores.
		Init: true,
	}
	cfg := &docker.Config{
		Image:  a.image.Familiar,
		Cmd:    a.cmd,
		Labels: labels,
	}
	if !a.d.cfg.DisableUnprivilegedContainers {
		cfg.User = unprivilegedUser
		host.CapDrop = []string{"ALL"}
		host.SecurityOpt = []string{"no-new-privileges"}
	}
	return docker.CreateContainerOptions{Name: spec.Name, Config: cfg, HostConfig: host}
}

// StartHolder implements pool.Adapter: create, start, and on any failure
// remove what was created.
func (a *holderAdapter) StartHolder(ctx context.Context, spec pool.HolderSpec) (pool.Holder, error) {
	d := a.d
	opts := a.holderOptions(spec)
	var ctr *docker.Container
	err := d.do(ctx, "create", fmt.Sprintf("holder %q", spec.Name), kindImage, func(ctx context.Context) error {
		o := opts
		o.Context = ctx
		var err error
		ctr, err = d.client.CreateContainer(o)
		return err
	})
	if err != nil {
		// A create whose answer was lost may have made the container:
		// remove it by name (the name is unique to this holder).
		if !errors.Is(err, docker.ErrContainerAlreadyExists) {
			a.cleanup(spec.Name)
		}
		return pool.Holder{}, err
	}
	err = d.startContainer(ctx, ctr.ID, fmt.Sprintf("holder %q", spec.Name))
	if err != nil {
		a.cleanup(ctr.ID)
		return pool.Holder{}, err
	}
	return pool.Holder{ID: ctr.ID, Name: spec.Name, Network: spec.Network}, nil
}

// cleanup removes a holder that failed to start, with a context of its own:
// the caller's may be what ended the start.
func (a *holderAdapter) cleanup(idOrName string) {
	ctx, cancel := context.WithTimeout(context.Background(), a.d.opts.callTimeout)
	defer cancel()
	if err := a.d.remove(ctx, idOrName); err != nil {
		a.d.log.WithError(err).WithField("holder", idOrName).Warn("cannot remove a holder that failed to start; the leak reaper of the next instance will")
	}
}

// StopHolder implements pool.Adapter: a forced removal, which kills the
// holder. Containers still in its namespace keep it; the pool only stops a
// holder nobody leases, or whose lease it has just marked dead.
func (a *holderAdapter) StopHolder(ctx context.Context, h pool.Holder) error {
	return a.d.remove(ctx, h.ID)
}

// WaitHolder implements pool.Adapter with the daemon's wait call, which
// answers once the container is not running. It returns only when the
// holder is really gone or stopped: when the wait breaks for another
// reason (the daemon restarting, a dropped connection, a timeout of a
// proxy), it asks the daemon whether the holder still runs and, if so or
// if the daemon cannot tell yet, waits again after a growing pause.
func (a *holderAdapter) WaitHolder(ctx context.Context, h pool.Holder) error {
	d := a.d
	pause := holderRewaitMin
	for {
		// Tagged apart from the calls' waits, which last as long as a
		// call, not as long as a holder.
		err := d.doWithin(ctx, "wait_holder", fmt.Sprintf("holder %q", h.ID), kindContainer, 0, func(ctx context.Context) error {
			_, err := d.client.WaitContainerWithContext(h.ID, ctx)
			return err
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil || isGone(err) {
			return err
		}
		running, ierr := a.running(ctx, h.ID)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case ierr == nil && !running:
			return nil
		case isGone(ierr):
			return ierr
		}
		d.log.WithError(err).WithField("holder", h.ID).Debug("watching a holder broke; watching again")
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, holderRewaitMax)
	}
}

// running reports whether the container runs (paused counts as running).
func (a *holderAdapter) running(ctx context.Context, id string) (bool, error) {
	ctr, err := a.d.inspectContainer(ctx, id)
	if err != nil {
		return false, err
	}
	return ctr.State.Running, nil
}

// holderGoneMessage reports an error of a create or start that joined a
// holder which is gone or stopped: the daemon answers "No such container"
// (404, which a create would otherwise read as a missing image) or
// "cannot join network of a non running container".
func holderGoneMessage(err error) bool {
	var apiErr *docker.Error
	if !errors.As(err, &apiErr) {
		return false
	}
	m := strings.ToLower(apiErr.Message)
	return strings.Contains(m, "no such container") || strings.Contains(m, "non running container") ||
		strings.Contains(m, "cannot join network")
}
