package docker

import (
	"context"
	"fmt"
	"strings"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/lifecycle"
)

var _ lifecycle.Lister = (*daemon)(nil)

// List implements lifecycle.Lister.
func (d *daemon) List(ctx context.Context) ([]drivers.ContainerInfo, error) {
	var list []docker.APIContainers
	err := d.do(ctx, "list", fmt.Sprintf("containers tagged %q", d.s.Tag), kindNone, func(ctx context.Context) error {
		var err error
		list, err = d.client.ListContainers(docker.ListContainersOptions{
			All:     true,
			Filters: map[string][]string{"label": {LabelLibrary + "=" + libraryName, LabelTag + "=" + d.s.Tag}},
			Context: ctx,
		})
		return err
	})
	out := make([]drivers.ContainerInfo, 0, len(list))
	for _, ctr := range list {
		name := ""
		if len(ctr.Names) > 0 {
			name = strings.TrimPrefix(ctr.Names[0], "/")
		}
		out = append(out, drivers.ContainerInfo{
			ID:      ctr.ID,
			Name:    name,
			Image:   ctr.Image,
			State:   containerState(ctr.State),
			Created: time.Unix(ctr.Created, 0),
			Labels:  ctr.Labels,
		})
	}
	return out, err
}

func containerState(s string) string {
	switch s {
	case "created":
		return drivers.StateStarting
	case "running":
		return drivers.StateRunning
	case "paused":
		return drivers.StatePaused
	case "exited", "dead":
		return drivers.StateExited
	}
	return drivers.StateUnknown // restarting, removing, or a state Docker adds later
}

// Kill implements lifecycle.Lister: a forced removal.
func (d *daemon) Kill(ctx context.Context, c drivers.ContainerInfo) error { return d.remove(ctx, c.ID) }
