package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/fnrun/fnrun/drivers"
)

// Lister is a Runtime that lists the containers of the driver's label
// tag, of every instance, and removes one: what drivers.ContainerLister
// and the leak reaper are made of.
type Lister interface {
	// List returns those containers, calls and holders.
	List(ctx context.Context) ([]drivers.ContainerInfo, error)
	// Kill ends and removes a container List returned, with what it used
	// on the host.
	Kill(ctx context.Context, c drivers.ContainerInfo) error
}

var _ drivers.ContainerLister = (*Driver)(nil)

// Containers implements drivers.ContainerLister, oldest first.
func (d *Driver) Containers(ctx context.Context) ([]drivers.ContainerInfo, error) {
	l, ok := d.rt.(Lister)
	if !ok {
		return nil, fmt.Errorf("%s driver: listing containers: %w", d.s.Name, errors.ErrUnsupported)
	}
	list, err := l.List(ctx)
	if err != nil {
		return nil, err
	}
	out := list[:0]
	for _, c := range list {
		// The runtime's filter already says so; never trust one check.
		if c.Labels[drivers.LabelLibrary] != drivers.LibraryName || c.Labels[drivers.LabelTag] != d.s.Tag {
			continue
		}
		c.Instance = c.Labels[drivers.LabelInstance]
		if c.Role = c.Labels[drivers.LabelRole]; c.Role == "" {
			c.Role = drivers.RoleCall // made before roles were labelled
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b drivers.ContainerInfo) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// KillContainer implements drivers.ContainerLister. A call of this driver
// whose container is killed ends with an error status; a pool holder is
// replaced by the pool.
func (d *Driver) KillContainer(ctx context.Context, id string) error {
	list, err := d.Containers(ctx)
	if err != nil {
		return err
	}
	for _, c := range list {
		if id != "" && (c.ID == id || c.Name == id || strings.HasPrefix(c.ID, id) && len(id) >= 4) {
			return d.rt.(Lister).Kill(ctx, c)
		}
	}
	return fmt.Errorf("kill container %q: not a container of this driver's label tag %q: %w", id, d.s.Tag, drivers.ErrContainerGone)
}

// reapLeaks removes what other instances with the driver's label tag left
// behind (a crashed agent's): their containers, then whatever else the
// runtime keeps (Reaper).
func (d *Driver) reapLeaks(ctx context.Context) {
	if l, ok := d.rt.(Lister); ok {
		list, err := d.Containers(ctx)
		if err != nil && ctx.Err() == nil {
			d.log.WithError(err).Warn("leak reaper: cannot list containers")
		}
		for _, c := range list {
			if ctx.Err() != nil {
				return
			}
			if c.Instance == d.s.Instance {
				continue
			}
			log := d.log.WithFields(map[string]any{"container": c.ID, "instance": c.Instance})
			if err := l.Kill(ctx, c); err != nil {
				log.WithError(err).Warn("leak reaper: cannot remove container")
				continue
			}
			log.Info("removed leftover container")
		}
	}
	if r, ok := d.rt.(Reaper); ok {
		r.ReapLeaks(ctx)
	}
}
