package statconv

import (
	"math"
	"testing"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/fnrun/fnrun/stats"
)

// v2Sample is what the runc shim returns for tasks.Metrics on a unified
// host, for a container whose cgroup files read as below after a child was
// OOM-killed. The shim's cgroup2 manager fills every section, whether the
// file exists or not (pids, cpu, memory, io, rdma, hugetlb), and
// MemoryEvents only when memory.events has lines. (The manager itself is
// not run here: its package needs eBPF libraries this module does not
// carry.)
//
//	cpu.stat       usage_usec 1250000, user_usec 1000000, system_usec 250000,
//	               nr_periods 40, nr_throttled 3, throttled_usec 81000
//	memory.current 20971520           memory.max 67108864
//	memory.stat    anon 12582912, file 8388608, inactive_file 6291456,
//	               active_file 2097152, active_anon 12582912, kernel_stack 49152
//	memory.swap.*  current 0, max 0
//	memory.events  low 0, high 0, max 57, oom 2, oom_kill 1
//	pids.current 3                    pids.max 50
//	io.stat        8:0 rbytes=4096 wbytes=8192 rios=1 wios=2
//	               253:0 rbytes=1024 wbytes=0 rios=1 wios=0
func v2Sample() *v2.Metrics {
	return &v2.Metrics{
		Pids: &v2.PidsStat{Current: 3, Limit: 50},
		CPU: &v2.CPUStat{UsageUsec: 1250000, UserUsec: 1000000, SystemUsec: 250000,
			NrPeriods: 40, NrThrottled: 3, ThrottledUsec: 81000},
		Memory: &v2.MemoryStat{Anon: 12582912, File: 8388608, KernelStack: 49152,
			ActiveAnon: 12582912, InactiveFile: 6291456, ActiveFile: 2097152,
			Usage: 20971520, UsageLimit: 67108864, SwapUsage: 0, SwapLimit: 0},
		MemoryEvents: &v2.MemoryEvents{Max: 57, Oom: 2, OomKill: 1},
		Io: &v2.IOStat{Usage: []*v2.IOEntry{
			{Major: 8, Minor: 0, Rbytes: 4096, Wbytes: 8192, Rios: 1, Wios: 2},
			{Major: 253, Minor: 0, Rbytes: 1024, Rios: 1},
		}},
		Rdma:    &v2.RdmaStat{},
		Hugetlb: []*v2.HugeTlbStat{{Max: math.MaxUint64, Pagesize: "2MB"}},
	}
}

// TestStatFromCgroupV2Files: the stats of a container on a v2 host, from
// the shim's reading of its cgroup files (v2Sample) to a Stat: CPU from cpu.stat
// in nanoseconds, memory.current less the inactive page cache, the
// memory.max limit, pids.current, io.stat summed over the devices, and the
// OOM-kill count from oom_kill of memory.events (not its max or oom lines).
func TestStatFromCgroupV2Files(t *testing.T) {
	s, kills, err := FromContainerd(metricOf(t, v2Sample()))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{
		stats.MetricCPUTotal:    1250000 * 1000,
		stats.MetricCPUUser:     1000000 * 1000,
		stats.MetricCPUKernel:   250000 * 1000,
		stats.MetricMemUsage:    20971520 - 6291456,
		stats.MetricMemLimit:    64 << 20,
		stats.MetricPids:        3,
		stats.MetricDiskRead:    4096 + 1024,
		stats.MetricDiskWrite:   8192,
		stats.MetricOOMKillSeen: 1,
	}
	for k, v := range want {
		if got, ok := s.Metrics[k]; !ok || got != v {
			t.Errorf("%s = %d (present %v), want %d", k, got, ok, v)
		}
	}
	if kills != 1 {
		t.Errorf("OOM kills %d, want 1", kills)
	}
}

// TestOOMKillsCgroupV2: only oom_kill of memory.events is an OOM kill. A
// cgroup that hit memory.max, even one whose OOM killer ran (oom) without
// killing, reports none, and so does a kernel without memory.events.
func TestOOMKillsCgroupV2(t *testing.T) {
	for _, tc := range []struct {
		name   string
		events *v2.MemoryEvents
		want   uint64
	}{
		{"killed twice", &v2.MemoryEvents{Max: 9, Oom: 2, OomKill: 2}, 2},
		{"limit hit, nothing killed", &v2.MemoryEvents{Max: 57, Oom: 1}, 0},
		{"no memory.events", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := v2Sample()
			m.MemoryEvents = tc.events
			s, kills, err := FromContainerd(metricOf(t, m))
			if err != nil {
				t.Fatal(err)
			}
			if kills != tc.want || s.Metrics[stats.MetricOOMKillSeen] != tc.want {
				t.Errorf("OOM kills %d (stat %d), want %d", kills, s.Metrics[stats.MetricOOMKillSeen], tc.want)
			}
		})
	}
}

// TestStatCgroupV2NoLimits: a container without limits has "max" in
// memory.max, which the shim reads as the largest uint64, and no io.stat
// line before its first I/O.
func TestStatCgroupV2NoLimits(t *testing.T) {
	m := v2Sample()
	m.Memory.UsageLimit, m.Pids.Limit = math.MaxUint64, math.MaxUint64
	m.Io = &v2.IOStat{}
	s, _, err := FromContainerd(metricOf(t, m))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Metrics[stats.MetricMemLimit]; got != math.MaxUint64 {
		t.Errorf("memory limit %d, want the largest uint64 for max", got)
	}
	if rd, wr := s.Metrics[stats.MetricDiskRead], s.Metrics[stats.MetricDiskWrite]; rd != 0 || wr != 0 {
		t.Errorf("disk %d/%d without io.stat lines, want 0/0", rd, wr)
	}
}

func metricOf(t *testing.T, v interface{}) *types.Metric {
	t.Helper()
	a, err := typeurl.MarshalAny(v)
	if err != nil {
		t.Fatal(err)
	}
	return &types.Metric{Data: &anypb.Any{TypeUrl: a.GetTypeUrl(), Value: a.GetValue()}}
}

func TestFromContainerd(t *testing.T) {
	m1 := &v1.Metrics{
		CPU:              &v1.CPUStat{Usage: &v1.CPUUsage{Total: 3000, User: 2000, Kernel: 1000}},
		Memory:           &v1.MemoryStat{TotalInactiveFile: 100, Usage: &v1.MemoryEntry{Usage: 1100, Limit: 4096}},
		Pids:             &v1.PidsStat{Current: 3},
		Blkio:            &v1.BlkIOStat{IoServiceBytesRecursive: []*v1.BlkIOEntry{{Op: "Read", Value: 10}, {Op: "Write", Value: 20}, {Op: "Total", Value: 30}}},
		MemoryOomControl: &v1.MemoryOomControl{OomKill: 2},
	}
	s, kills, err := FromContainerd(metricOf(t, m1))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"cpu_total": 3000, "cpu_user": 2000, "cpu_kernel": 1000, "mem_usage": 1000, "mem_limit": 4096,
		"pids_current": 3, "disk_read": 10, "disk_write": 20, "oom_kills": 2}
	for k, v := range want {
		if s.Metrics[k] != v {
			t.Errorf("v1 %s = %d, want %d", k, s.Metrics[k], v)
		}
	}
	if kills != 2 {
		t.Errorf("v1 oom kills %d", kills)
	}

	m2 := &v2.Metrics{
		CPU:          &v2.CPUStat{UsageUsec: 3, UserUsec: 2, SystemUsec: 1},
		Memory:       &v2.MemoryStat{Usage: 500, InactiveFile: 600, UsageLimit: 4096},
		Pids:         &v2.PidsStat{Current: 1},
		Io:           &v2.IOStat{Usage: []*v2.IOEntry{{Rbytes: 5, Wbytes: 6}, {Rbytes: 1}}},
		MemoryEvents: &v2.MemoryEvents{OomKill: 1},
	}
	s, kills, err = FromContainerd(metricOf(t, m2))
	if err != nil {
		t.Fatal(err)
	}
	want = map[string]uint64{"cpu_total": 3000, "cpu_user": 2000, "cpu_kernel": 1000, "mem_usage": 0, "mem_limit": 4096,
		"pids_current": 1, "disk_read": 6, "disk_write": 6, "oom_kills": 1}
	for k, v := range want {
		if s.Metrics[k] != v {
			t.Errorf("v2 %s = %d, want %d", k, s.Metrics[k], v)
		}
	}
	if kills != 1 {
		t.Errorf("v2 oom kills %d", kills)
	}
	if _, _, err := FromContainerd(&types.Metric{}); err == nil {
		t.Error("empty metric decoded")
	}
}
