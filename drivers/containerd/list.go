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
)

// ownedFilter matches the containers of every instance with our label tag.
// containerd drops labels with empty values, so without a tag it matches
// the library's containers and owned sorts them.
func (d *daemon) ownedFilter() string {
	f := labelFilter(LabelLibrary, "==", drivers.LibraryName)
	if d.s.Tag != "" {
		f += "," + labelFilter(LabelTag, "==", d.s.Tag)
	}
	return f
}

// owned reports whether labels are the library's with our label tag
// (containerd drops labels with empty values: no tag is an absent label).
func (d *daemon) owned(labels map[string]string) bool {
	return labels[LabelLibrary] == drivers.LibraryName && labels[LabelTag] == d.s.Tag
}

// containers lists the containers and holders
// of every instance with the driver's label tag. The state comes from the
// container's task: created is starting, running, paused or pausing is
// paused, stopped is exited. A container without a task has been created
// and not run yet (a cookie between CreateContainer and Run, or a holder
// being started), so it is starting too; a task the daemon cannot tell
// about is unknown.
func (d *daemon) containers(ctx context.Context) ([]drivers.ContainerInfo, error) {
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
		if !d.owned(r.Labels) {
			continue // the filter already says so; never trust one check
		}
		state := drivers.StateStarting
		if st, ok := status[r.ID]; ok {
			state = taskState(st)
		}
		role := r.Labels[drivers.LabelRole]
		if role == "" {
			role = drivers.RoleCall // made before roles were labelled
		}
		labels := make(map[string]string, len(r.Labels))
		for k, v := range r.Labels {
			labels[k] = v
		}
		out = append(out, drivers.ContainerInfo{
			ID:       r.ID,
			Image:    r.Image,
			State:    state,
			Created:  r.CreatedAt,
			Role:     role,
			Instance: r.Labels[LabelInstance],
			Labels:   labels,
		})
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

// killContainer kills the task of a
// container of our label tag, deletes it and the container with its
// snapshot, and, for a container of another instance, tears down its CNI
// network (the instance that made it would have, and may be gone). A
// cookie of this driver whose container is killed sees its run end; a
// holder is replaced by the pool. A container without our labels, or
// absent, gives an error wrapping drivers.ErrContainerGone and is left
// alone.
func (d *daemon) killContainer(ctx context.Context, id string) error {
	ctx = d.nsCtx(ctx)
	var ctr ctrd.Container
	var labels map[string]string
	err := d.call(ctx, "containers.Get", func(ctx context.Context) error {
		var err error
		if ctr, err = d.client.LoadContainer(ctx, id); err != nil {
			return err
		}
		labels, err = ctr.Labels(ctx)
		return err
	})
	switch {
	case errdefs.IsNotFound(err):
		return fmt.Errorf("kill container %s: %w: %w", id, drivers.ErrContainerGone, err)
	case err != nil:
		return daemonErr(err, "kill container "+id)
	case !d.owned(labels):
		return fmt.Errorf("kill container %s: not managed by this driver's label tag: %w", id, drivers.ErrContainerGone)
	}
	if err := d.removeContainer(ctx, ctr); err != nil {
		return err
	}
	if labels[LabelInstance] != d.s.Instance {
		if ns, ok := d.ownNetNSPath(labels[LabelNetNS]); ok {
			if err := d.detachNetwork(ctx, ns); err != nil {
				return fmt.Errorf("kill container %s: %w", id, err)
			}
		}
	}
	return nil
}
