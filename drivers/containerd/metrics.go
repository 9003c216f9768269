package containerd

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/api/types"
	v1 "github.com/containerd/containerd/metrics/types/v1"
	v2 "github.com/containerd/containerd/metrics/types/v2"
	"github.com/containerd/typeurl/v2"

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
	s, oomKills, err = statFromMetric(m)
	if err != nil {
		d.log.WithError(err).WithField("container", p.c.name).Debug("undecodable metrics")
		return s, 0, false
	}
	if withNet {
		if rx, tx, err := netDev(p.task.Pid()); err == nil {
			s.Metrics[stats.MetricNetRx], s.Metrics[stats.MetricNetTx] = rx, tx
		}
	}
	return s, oomKills, true
}

// statFromMetric converts cgroup v1 or v2 metrics. Memory use leaves out
// the inactive page cache, as docker stats does.
func statFromMetric(m *types.Metric) (stats.Stat, uint64, error) {
	s := stats.Stat{Timestamp: time.Now(), Metrics: map[string]uint64{}}
	if m == nil || m.Data == nil {
		return s, 0, fmt.Errorf("empty metrics")
	}
	if m.Timestamp != nil {
		s.Timestamp = m.Timestamp.AsTime()
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return s, 0, err
	}
	var oomKills uint64
	put := func(k string, v uint64) { s.Metrics[k] = v }
	switch v := v.(type) {
	case *v1.Metrics:
		if c := v.CPU; c != nil && c.Usage != nil {
			put(stats.MetricCPUTotal, c.Usage.Total)
			put(stats.MetricCPUUser, c.Usage.User)
			put(stats.MetricCPUKernel, c.Usage.Kernel)
		}
		if mem := v.Memory; mem != nil && mem.Usage != nil {
			put(stats.MetricMemUsage, sub(mem.Usage.Usage, mem.TotalInactiveFile))
			put(stats.MetricMemLimit, mem.Usage.Limit)
		}
		if p := v.Pids; p != nil {
			put(stats.MetricPids, p.Current)
		}
		if b := v.Blkio; b != nil {
			var rd, wr uint64
			for _, e := range b.IoServiceBytesRecursive {
				switch strings.ToLower(e.Op) {
				case "read":
					rd += e.Value
				case "write":
					wr += e.Value
				}
			}
			put(stats.MetricDiskRead, rd)
			put(stats.MetricDiskWrite, wr)
		}
		if o := v.MemoryOomControl; o != nil {
			oomKills = o.OomKill
		}
	case *v2.Metrics:
		if c := v.CPU; c != nil {
			put(stats.MetricCPUTotal, c.UsageUsec*1000)
			put(stats.MetricCPUUser, c.UserUsec*1000)
			put(stats.MetricCPUKernel, c.SystemUsec*1000)
		}
		if mem := v.Memory; mem != nil {
			put(stats.MetricMemUsage, sub(mem.Usage, mem.InactiveFile))
			put(stats.MetricMemLimit, mem.UsageLimit)
		}
		if p := v.Pids; p != nil {
			put(stats.MetricPids, p.Current)
		}
		if io := v.Io; io != nil {
			var rd, wr uint64
			for _, e := range io.Usage {
				rd += e.Rbytes
				wr += e.Wbytes
			}
			put(stats.MetricDiskRead, rd)
			put(stats.MetricDiskWrite, wr)
		}
		if e := v.MemoryEvents; e != nil {
			oomKills = e.OomKill
		}
	default:
		return s, 0, fmt.Errorf("unknown metrics type %T", v)
	}
	put(stats.MetricOOMKillSeen, oomKills)
	return s, oomKills, nil
}

func sub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

// netDev sums the received and sent bytes of every interface but loopback
// in the network namespace of pid.
func netDev(pid uint32) (rx, tx uint64, err error) {
	if pid == 0 {
		return 0, 0, fmt.Errorf("no pid")
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/dev", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(name) == "lo" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 9 {
			continue
		}
		r, _ := strconv.ParseUint(f[0], 10, 64)
		t, _ := strconv.ParseUint(f[8], 10, 64)
		rx += r
		tx += t
	}
	return rx, tx, sc.Err()
}
