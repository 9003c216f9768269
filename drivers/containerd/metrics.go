package containerd

import (
	"context"

	"github.com/containerd/containerd/api/types"

	"github.com/fnrun/fnrun/internal/statconv"
	"github.com/fnrun/fnrun/stats"
)

// sample reads the task's cgroup metrics into a Stat, with the cgroup's
// OOM-kill counter. With withNet it adds the traffic of the container's
// network namespace, read from the host's /proc (absent when the driver
// does not share the daemon's host, which is not an error). ok is false
// when nothing could be read, or ctx ended first.
func (p *process) sample(ctx context.Context, withNet bool) (s stats.Stat, oomKills uint64, ok bool) {
	d := p.c.d
	var m *types.Metric
	err := d.call(d.nsCtx(ctx), "tasks.Metrics", func(ctx context.Context) error {
		var err error
		m, err = p.task.Metrics(ctx)
		return err
	})
	if err != nil {
		d.log.WithError(err).WithField("container", p.c.name).Debug("no metrics")
		return s, 0, false
	}
	s, oomKills, err = statconv.FromContainerd(m)
	if err != nil {
		d.log.WithError(err).WithField("container", p.c.name).Debug("undecodable metrics")
		return s, 0, false
	}
	if withNet {
		if rx, tx, err := statconv.NetDev(p.task.Pid()); err == nil {
			s.Metrics[stats.MetricNetRx], s.Metrics[stats.MetricNetTx] = rx, tx
		}
	}
	return s, oomKills, true
}
