package docker

import (
	"context"
	"fmt"

	docker "github.com/fsouza/go-dockerclient"
)

// ReapLeaks implements lifecycle.Reaper: it removes the containers that
// other driver instances with the same label tag left behind (a crashed
// agent's).
func (d *daemon) ReapLeaks(ctx context.Context) {
	leaked, err := d.leakedContainers(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.log.WithError(err).Warn("cannot list leftover containers")
		}
		return
	}
	for _, ctr := range leaked {
		if ctx.Err() != nil {
			return
		}
		log := d.log.WithFields(map[string]any{"container": ctr.ID, "instance": ctr.Labels[LabelInstance]})
		if err := d.remove(ctx, ctr.ID); err != nil {
			log.WithError(err).Warn("cannot remove leftover container")
			continue
		}
		log.Info("removed leftover container")
	}
}

// leakedContainers lists containers with this driver's library label and
// label tag that belong to another instance.
func (d *daemon) leakedContainers(ctx context.Context) ([]docker.APIContainers, error) {
	all, err := d.listOwned(ctx, d.s.Tag)
	if err != nil {
		return nil, err
	}
	var out []docker.APIContainers
	for _, ctr := range all {
		if ctr.Labels[LabelInstance] != d.s.Instance {
			out = append(out, ctr)
		}
	}
	return out, nil
}

// listOwned lists every container, running or not, carrying the library
// label and the label tag tag.
func (d *daemon) listOwned(ctx context.Context, tag string) ([]docker.APIContainers, error) {
	var list []docker.APIContainers
	err := d.do(ctx, "list", fmt.Sprintf("containers tagged %q", tag), kindNone, func(ctx context.Context) error {
		var err error
		list, err = d.client.ListContainers(docker.ListContainersOptions{
			All: true,
			Filters: map[string][]string{"label": {
				LabelLibrary + "=" + libraryName,
				LabelTag + "=" + tag,
			}},
			Context: ctx,
		})
		return err
	})
	return list, err
}
