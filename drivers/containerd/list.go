package containerd

import (
	"context"
	"fmt"

	ctrd "github.com/containerd/containerd"

	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	taskapi "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/errdefs"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/lifecycle"
)

var _ lifecycle.Lister = (*daemon)(nil)

// labelFilter is a containerd filter matching our label key op value.
func labelFilter(key, op, value string) string {
	return fmt.Sprintf("labels.%q%s%q", key, op, value)
}

// ownedFilter matches the containers of every instance with our label tag.
// containerd drops labels with empty values, so without a tag it matches
// every container of the library, and the life cycle sorts them out.
func (d *daemon) ownedFilter() string {
	f := labelFilter(LabelLibrary, "==", drivers.LibraryName)
	if d.s.Tag != "" {
		f += "," + labelFilter(LabelTag, "==", d.s.Tag)
	}
	return f
}

// List implements lifecycle.Lister, the state from the container's task. A
// container without a task is starting: created and not run yet.
func (d *daemon) List(ctx context.Context) ([]drivers.ContainerInfo, error) {
	ctx = d.nsCtx(ctx)
	var recs []containers.Container
	if err := d.call(ctx, "containers.List", func(ctx context.Context) error {
		var err error
		recs, err = d.client.ContainerService().List(ctx, d.ownedFilter())
		return err
	}); err != nil {
		return nil, daemonErr(err, "list containers")
	}
	var resp *tasksapi.ListTasksResponse
	if err := d.call(ctx, "tasks.List", func(ctx context.Context) error {
		var err error
		resp, err = d.client.TaskService().List(ctx, &tasksapi.ListTasksRequest{})
		return errdefs.FromGRPC(err)
	}); err != nil {
		return nil, daemonErr(err, "list tasks")
	}
	status := make(map[string]taskapi.Status, len(resp.Tasks))
	for _, t := range resp.Tasks {
		status[t.ID] = t.Status
	}
	out := make([]drivers.ContainerInfo, 0, len(recs))
	for _, r := range recs {
		state := drivers.StateStarting
		if st, ok := status[r.ID]; ok {
			state = taskState(st)
		}
		out = append(out, drivers.ContainerInfo{ID: r.ID, Name: r.ID, Image: r.Image, State: state, Created: r.CreatedAt, Labels: r.Labels})
	}
	return out, nil
}

func taskState(st taskapi.Status) string {
	switch st {
	case taskapi.Status_CREATED:
		return drivers.StateStarting
	case taskapi.Status_RUNNING:
		return drivers.StateRunning
	case taskapi.Status_PAUSED, taskapi.Status_PAUSING:
		return drivers.StatePaused
	case taskapi.Status_STOPPED:
		return drivers.StateExited
	}
	return drivers.StateUnknown
}

// Kill implements lifecycle.Lister. The CNI network of another instance's
// container goes too: that instance would have torn it down, and may be gone.
func (d *daemon) Kill(ctx context.Context, c drivers.ContainerInfo) error {
	ctx = d.nsCtx(ctx)
	var ctr ctrd.Container
	err := d.call(ctx, "containers.Get", func(ctx context.Context) error {
		var err error
		ctr, err = d.client.LoadContainer(ctx, c.ID)
		return err
	})
	switch {
	case errdefs.IsNotFound(err):
		return nil
	case err != nil:
		return daemonErr(err, "kill container "+c.ID)
	}
	if err := d.removeContainer(ctx, ctr); err != nil {
		return err
	}
	if c.Labels[LabelInstance] != d.s.Instance && d.cni != nil {
		if ns, ok := d.cni.OwnNS(c.Labels[LabelNetNS]); ok {
			if err := ns.Release(ctx); err != nil {
				return fmt.Errorf("kill container %s: %w", c.ID, err)
			}
		}
	}
	return nil
}
