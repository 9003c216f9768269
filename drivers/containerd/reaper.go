package containerd

import (
	"context"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/leases"
	"github.com/containerd/containerd/snapshots"

	"github.com/fnrun/fnrun/drivers/lifecycle"
)

// ReapLeaks implements lifecycle.Reaper. Objects without our tag are never
// touched.
func (d *daemon) ReapLeaks(ctx context.Context) {
	tag := d.s.Tag
	others := labelFilter(LabelLibrary, "==", "fnrun") + "," + labelFilter(LabelTag, "==", tag) + "," + labelFilter(LabelInstance, "!=", d.s.Instance)
	log := d.log.WithField("label_tag", tag)

	// Snapshots prepared by an instance that died before recording the
	// container belong to no container; their lease usually expires, but
	// removing them now frees the space at once.
	sn := d.client.SnapshotService(d.opts.snapshotter)
	var orphans []string
	err := d.call(ctx, "snapshots.Walk", func(ctx context.Context) error {
		return sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			orphans = append(orphans, info.Name)
			return nil
		}, others)
	})
	if err != nil {
		log.WithError(err).Warn("leak reaper: cannot list snapshots")
	}
	for _, key := range orphans {
		err := d.call(ctx, "snapshots.Remove", func(ctx context.Context) error { return sn.Remove(ctx, key) })
		if err != nil && !errdefs.IsNotFound(err) {
			log.WithError(err).WithField("snapshot", key).Warn("leak reaper: cannot remove snapshot")
		}
	}

	ls := d.client.LeasesService()
	var stale []leases.Lease
	err = d.call(ctx, "leases.List", func(ctx context.Context) error {
		var err error
		stale, err = ls.List(ctx, others)
		return err
	})
	if err != nil {
		log.WithError(err).Warn("leak reaper: cannot list leases")
	}
	for _, l := range stale {
		err := d.call(ctx, "leases.Delete", func(ctx context.Context) error { return ls.Delete(ctx, l) })
		if err != nil && !errdefs.IsNotFound(err) {
			log.WithError(err).WithField("lease", l.ID).Warn("leak reaper: cannot delete lease")
		}
	}
	// Network namespaces last: their containers are gone, so nothing
	// runs in them any more.
	nets := 0
	if d.cni != nil {
		nets = d.cni.Reap(ctx, log)
	}
	etcs := d.etc.Reap(log)
	if len(orphans)+len(stale)+nets+etcs > 0 {
		log.WithFields(map[string]interface{}{"snapshots": len(orphans), "leases": len(stale), "netns": nets, "etc": etcs}).Info("removed leftovers of earlier instances")
	}
}

// removeContainer kills and deletes a container's task, then the container
// and its snapshot; what is already gone is skipped.
func (d *daemon) removeContainer(ctx context.Context, c ctrd.Container) error {
	var task ctrd.Task
	err := d.call(ctx, "tasks.Get", func(ctx context.Context) error {
		var err error
		task, err = c.Task(ctx, nil)
		return err
	})
	switch {
	case err == nil:
		err = d.call(ctx, "tasks.Delete", func(ctx context.Context) error {
			_, err := task.Delete(ctx, ctrd.WithProcessKill)
			return err
		})
		if err != nil && !errdefs.IsNotFound(err) && !d.taskGone(ctx, c, err) {
			return daemonErr(err, "delete task of "+c.ID())
		}
	case !errdefs.IsNotFound(err):
		return daemonErr(err, "load task of "+c.ID())
	}
	err = d.call(ctx, "containers.Delete", func(ctx context.Context) error {
		return c.Delete(ctx, ctrd.WithSnapshotCleanup)
	})
	if err != nil && !errdefs.IsNotFound(err) {
		return daemonErr(err, "delete container "+c.ID())
	}
	return nil
}

// taskGone reports whether a task delete that failed with err left c
// without a task all the same. Two deletes of one task can race (a holder
// killed through the lister while its pool removes it on seeing it die):
// the loser may fail with the shim's connection closed under it ("ttrpc:
// closed") rather than "not found", and the record goes a moment after the
// shim. A daemon that did not answer or cannot be reached tells nothing of
// the task, so its error is returned at once; the look itself is bounded
// by a second.
func (d *daemon) taskGone(ctx context.Context, c ctrd.Container, err error) bool {
	if lifecycle.InDoubt(err) || isUnavailable(err) {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for {
		err := d.call(ctx, "tasks.Get", func(ctx context.Context) error {
			_, err := c.Task(ctx, nil)
			return err
		})
		switch {
		case errdefs.IsNotFound(err):
			return true
		case err != nil && !isUnavailable(err):
			return false
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}
