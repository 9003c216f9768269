package docker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
)

// containers lists the containers carrying the library label and this
// driver's label tag, of every instance, calls and pool holders alike,
// oldest first.
func (d *daemon) containers(ctx context.Context) ([]drivers.ContainerInfo, error) {
	list, err := d.listOwned(ctx, d.s.Tag)
	if err != nil {
		return nil, err
	}
	out := make([]drivers.ContainerInfo, 0, len(list))
	for _, ctr := range list {
		out = append(out, containerInfo(ctr))
	}
	slices.SortFunc(out, func(a, b drivers.ContainerInfo) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

func containerInfo(ctr docker.APIContainers) drivers.ContainerInfo {
	role := ctr.Labels[drivers.LabelRole]
	if role == "" {
		role = drivers.RoleCall // containers made before roles were labelled
	}
	labels := make(map[string]string, len(ctr.Labels))
	for k, v := range ctr.Labels {
		labels[k] = v
	}
	return drivers.ContainerInfo{
		ID:       ctr.ID,
		Image:    ctr.Image,
		State:    containerState(ctr.State),
		Created:  time.Unix(ctr.Created, 0),
		Role:     role,
		Instance: ctr.Labels[LabelInstance],
		Labels:   labels,
	}
}

// containerState maps Docker's container states to the drivers' ones.
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

// killContainer kills and removes one container that containers lists, by id, id prefix or name. A
// container without the library label and this driver's label tag is left
// alone with an error wrapping drivers.ErrContainerGone. A call of this
// driver whose container is killed ends with an error status; a pool
// holder is replaced by the pool.
func (d *daemon) killContainer(ctx context.Context, id string) error {
	if strings.TrimSpace(id) == "" {
		return fmt.Errorf("kill container: empty id: %w", drivers.ErrContainerGone)
	}
	ctr, err := d.inspectContainer(ctx, id)
	if err != nil {
		return err
	}
	var labels map[string]string
	if ctr.Config != nil {
		labels = ctr.Config.Labels
	}
	if labels[LabelLibrary] != libraryName || labels[LabelTag] != d.s.Tag {
		return fmt.Errorf("kill container %q: not a container of this driver's label tag %q: %w", id, d.s.Tag, drivers.ErrContainerGone)
	}
	return d.remove(ctx, ctr.ID)
}
