// Package statconv turns what each runtime reports about a container's
// resource use into a stats.Stat with the same keys and meaning: the
// cgroup v1 and v2 metrics containerd's shim returns, the samples of
// Docker's stats API, and a network namespace's traffic from /proc. Memory
// use leaves out the inactive page cache everywhere, as docker stats does,
// so one container reads the same whatever runs it.
package statconv

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/api/types"
	v1 "github.com/containerd/containerd/metrics/types/v1"
	v2 "github.com/containerd/containerd/metrics/types/v2"
	"github.com/containerd/typeurl/v2"
	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/stats"
)

// FromContainerd converts the cgroup metrics the shim reports: v1 metrics
// on a v1 or hybrid host, v2 metrics on a unified one. The second result is
// the cgroup's OOM-kill count, which a driver's wait reads to tell an OOM kill. Memory use leaves
// out the inactive page cache, as docker stats does.
func FromContainerd(m *types.Metric) (stats.Stat, uint64, error) {
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
	switch v := v.(type) {
	case *v1.Metrics:
		oomKills = putV1(s.Metrics, v)
	case *v2.Metrics:
		oomKills = putV2(s.Metrics, v)
	default:
		return s, 0, fmt.Errorf("unknown metrics type %T", v)
	}
	s.Metrics[stats.MetricOOMKillSeen] = oomKills
	return s, oomKills, nil
}

// putV1 fills out from cgroup v1 metrics and returns the OOM-kill count:
// oom_kill of memory.oom_control (Linux 4.13+).
func putV1(out map[string]uint64, v *v1.Metrics) (oomKills uint64) {
	if c := v.CPU; c != nil && c.Usage != nil {
		out[stats.MetricCPUTotal] = c.Usage.Total
		out[stats.MetricCPUUser] = c.Usage.User
		out[stats.MetricCPUKernel] = c.Usage.Kernel
	}
	if mem := v.Memory; mem != nil && mem.Usage != nil {
		out[stats.MetricMemUsage] = sub(mem.Usage.Usage, mem.TotalInactiveFile)
		out[stats.MetricMemLimit] = mem.Usage.Limit
	}
	if p := v.Pids; p != nil {
		out[stats.MetricPids] = p.Current
	}
	if b := v.Blkio; b != nil {
		var rd, wr uint64
		for _, e := range b.IoServiceBytesRecursive {
			addIO(e.Op, e.Value, &rd, &wr)
		}
		out[stats.MetricDiskRead], out[stats.MetricDiskWrite] = rd, wr
	}
	if o := v.MemoryOomControl; o != nil {
		oomKills = o.OomKill
	}
	return oomKills
}

// putV2 fills out from cgroup v2 metrics (cpu.stat's microseconds scaled to
// v1's nanoseconds) and returns the OOM-kill count: oom_kill of
// memory.events, whose "max" and "oom" lines count allocations that hit the
// limit and kill nothing by themselves.
func putV2(out map[string]uint64, v *v2.Metrics) (oomKills uint64) {
	if c := v.CPU; c != nil {
		out[stats.MetricCPUTotal] = c.UsageUsec * 1000
		out[stats.MetricCPUUser] = c.UserUsec * 1000
		out[stats.MetricCPUKernel] = c.SystemUsec * 1000
	}
	if mem := v.Memory; mem != nil {
		out[stats.MetricMemUsage] = sub(mem.Usage, mem.InactiveFile)
		out[stats.MetricMemLimit] = mem.UsageLimit
	}
	if p := v.Pids; p != nil {
		out[stats.MetricPids] = p.Current
	}
	if io := v.Io; io != nil {
		var rd, wr uint64
		for _, e := range io.Usage {
			rd += e.Rbytes
			wr += e.Wbytes
		}
		out[stats.MetricDiskRead], out[stats.MetricDiskWrite] = rd, wr
	}
	if e := v.MemoryEvents; e != nil {
		oomKills = e.OomKill
	}
	return oomKills
}

func sub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

// NetDev sums the received and sent bytes of every interface but loopback
// in the network namespace of pid.
func NetDev(pid uint32) (rx, tx uint64, err error) {
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

// FromDocker converts a Docker daemon sample. cgroupV2 is the daemon's version, learnt
// from /info at start: memory and block I/O keys differ between versions.
func FromDocker(s *docker.Stats, cgroupV2 bool) stats.Stat {
	m := map[string]uint64{
		stats.MetricCPUTotal:  s.CPUStats.CPUUsage.TotalUsage,
		stats.MetricCPUUser:   s.CPUStats.CPUUsage.UsageInUsermode,
		stats.MetricCPUKernel: s.CPUStats.CPUUsage.UsageInKernelmode,
		stats.MetricMemUsage:  memoryUsage(s, cgroupV2),
		stats.MetricMemLimit:  s.MemoryStats.Limit,
		stats.MetricPids:      s.PidsStats.Current,
	}
	var rx, tx uint64
	if len(s.Networks) > 0 {
		for _, n := range s.Networks {
			rx += n.RxBytes
			tx += n.TxBytes
		}
	} else {
		rx, tx = s.Network.RxBytes, s.Network.TxBytes
	}
	m[stats.MetricNetRx], m[stats.MetricNetTx] = rx, tx
	var read, write uint64
	for _, e := range s.BlkioStats.IOServiceBytesRecursive {
		addIO(e.Op, e.Value, &read, &write)
	}
	m[stats.MetricDiskRead], m[stats.MetricDiskWrite] = read, write
	return stats.Stat{Timestamp: s.Read, Metrics: m}
}

// memoryUsage is the working set the way `docker stats` shows it: usage
// without the inactive page cache, which the kernel drops first
// (total_inactive_file on v1, where inactive_file leaves out the
// container's child cgroups; inactive_file on v2, which is hierarchical).
func memoryUsage(s *docker.Stats, cgroupV2 bool) uint64 {
	usage := s.MemoryStats.Usage
	inactive := s.MemoryStats.Stats.TotalInactiveFile
	if cgroupV2 {
		inactive = s.MemoryStats.Stats.InactiveFile
	}
	if inactive < usage {
		return usage - inactive
	}
	return usage
}

// addIO counts one blkio entry of a cgroup v1 io_service_bytes listing
// (Docker's on v2 too): "Read"/"Write" ("read"/"write" from Docker on v2)
// into read and write; "Sync", "Async" and "Total" count the same bytes
// again.
func addIO(op string, v uint64, read, write *uint64) {
	switch strings.ToLower(op) {
	case "read":
		*read += v
	case "write":
		*write += v
	}
}
