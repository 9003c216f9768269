package statconv

import (
	"encoding/json"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/stats"
)

// statsV2JSON is one sample of GET /containers/{id}/stats from Docker 20.10
// on a cgroup v2 host, as the daemon builds it from the container's files:
// CPU from cpu.stat (usage_usec 1250000, user_usec 1000000, system_usec
// 250000, scaled to nanoseconds; no per-CPU usage), memory from
// memory.current and memory.stat (its keys as they are, no total_*),
// memory.max as the limit, io.stat as lower-case "read"/"write" entries per
// device, pids.current.
const statsV2JSON = `{
 "read": "2024-05-01T10:00:01.000000000Z",
 "preread": "2024-05-01T10:00:00.000000000Z",
 "pids_stats": {"current": 3, "limit": 50},
 "blkio_stats": {
  "io_service_bytes_recursive": [
   {"major": 8, "minor": 0, "op": "read", "value": 4096},
   {"major": 8, "minor": 0, "op": "write", "value": 8192},
   {"major": 253, "minor": 0, "op": "read", "value": 1024},
   {"major": 253, "minor": 0, "op": "write", "value": 0}
  ],
  "io_serviced_recursive": null, "io_queue_recursive": null, "io_service_time_recursive": null,
  "io_wait_time_recursive": null, "io_merged_recursive": null, "io_time_recursive": null, "sectors_recursive": null
 },
 "num_procs": 0,
 "storage_stats": {},
 "cpu_stats": {
  "cpu_usage": {"total_usage": 1250000000, "usage_in_kernelmode": 250000000, "usage_in_usermode": 1000000000},
  "system_cpu_usage": 9000000000000, "online_cpus": 2,
  "throttling_data": {"periods": 40, "throttled_periods": 3, "throttled_time": 81000000}
 },
 "precpu_stats": {"cpu_usage": {"total_usage": 1000000000, "usage_in_kernelmode": 200000000, "usage_in_usermode": 800000000},
  "system_cpu_usage": 8998000000000, "online_cpus": 2, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}},
 "memory_stats": {
  "usage": 20971520,
  "stats": {"active_anon": 12582912, "active_file": 2097152, "anon": 12582912, "anon_thp": 0, "file": 8388608,
   "file_dirty": 0, "file_mapped": 0, "file_writeback": 0, "inactive_anon": 0, "inactive_file": 6291456,
   "kernel_stack": 49152, "pgactivate": 0, "pgdeactivate": 0, "pgfault": 5000, "pglazyfree": 0, "pglazyfreed": 0,
   "pgmajfault": 2, "pgrefill": 0, "pgscan": 0, "pgsteal": 0, "shmem": 0, "slab": 0, "slab_reclaimable": 0,
   "slab_unreclaimable": 0, "sock": 0, "thp_collapse_alloc": 0, "thp_fault_alloc": 0, "unevictable": 0,
   "workingset_activate": 0, "workingset_nodereclaim": 0, "workingset_refault": 0},
  "limit": 67108864
 },
 "name": "/fnrun-stats",
 "id": "0123456789ab",
 "networks": {"eth0": {"rx_bytes": 1500, "rx_packets": 10, "tx_bytes": 700, "tx_packets": 5}}
}`

// statsV1JSON is the same sample from a cgroup v1 host: per-CPU usage,
// memory.stat with its total_* keys, capitalised blkio operations with
// their Sync/Async/Total repeats.
const statsV1JSON = `{
 "read": "2024-05-01T10:00:01.000000000Z",
 "pids_stats": {"current": 3, "limit": 50},
 "blkio_stats": {
  "io_service_bytes_recursive": [
   {"major": 8, "minor": 0, "op": "Read", "value": 5120},
   {"major": 8, "minor": 0, "op": "Write", "value": 8192},
   {"major": 8, "minor": 0, "op": "Sync", "value": 13312},
   {"major": 8, "minor": 0, "op": "Async", "value": 0},
   {"major": 8, "minor": 0, "op": "Discard", "value": 0},
   {"major": 8, "minor": 0, "op": "Total", "value": 13312}
  ]
 },
 "cpu_stats": {
  "cpu_usage": {"total_usage": 1250000000, "percpu_usage": [700000000, 550000000],
   "usage_in_kernelmode": 250000000, "usage_in_usermode": 1000000000},
  "system_cpu_usage": 9000000000000, "online_cpus": 2
 },
 "memory_stats": {
  "usage": 20971520, "max_usage": 25165824, "failcnt": 0,
  "stats": {"active_anon": 12582912, "active_file": 2097152, "cache": 8388608, "inactive_anon": 0,
   "inactive_file": 6291456, "rss": 12582912, "total_active_anon": 12582912, "total_active_file": 2097152,
   "total_cache": 8388608, "total_inactive_anon": 0, "total_inactive_file": 6291456, "total_rss": 12582912},
  "limit": 67108864
 },
 "networks": {"eth0": {"rx_bytes": 1500, "tx_bytes": 700}}
}`

// TestFromDockerDaemonJSON decodes a sample as the daemon sends it on each
// cgroup version and converts it: the same container gives the same Stat.
func TestFromDockerDaemonJSON(t *testing.T) {
	want := map[string]uint64{
		stats.MetricCPUTotal:  1250000000,
		stats.MetricCPUUser:   1000000000,
		stats.MetricCPUKernel: 250000000,
		stats.MetricMemUsage:  20971520 - 6291456, // without the inactive page cache
		stats.MetricMemLimit:  64 << 20,
		stats.MetricPids:      3,
		stats.MetricNetRx:     1500,
		stats.MetricNetTx:     700,
		stats.MetricDiskRead:  5120,
		stats.MetricDiskWrite: 8192,
	}
	for _, tc := range []struct {
		version string
		json    string
	}{{"1", statsV1JSON}, {"2", statsV2JSON}} {
		t.Run("cgroup v"+tc.version, func(t *testing.T) {
			var s docker.Stats
			if err := json.Unmarshal([]byte(tc.json), &s); err != nil {
				t.Fatal(err)
			}
			got := FromDocker(&s, tc.version == "2")
			if got.Timestamp.IsZero() {
				t.Error("no timestamp")
			}
			for k, v := range want {
				if g, ok := got.Metrics[k]; !ok || g != v {
					t.Errorf("%s = %d (present %v), want %d", k, g, ok, v)
				}
			}
		})
	}
}

// TestFromDockerV2MemoryKeys: on v2 the page cache to leave out is
// inactive_file; the v1 key total_inactive_file is absent, and taking it
// would count the whole cache as use.
func TestFromDockerV2MemoryKeys(t *testing.T) {
	var s docker.Stats
	if err := json.Unmarshal([]byte(statsV2JSON), &s); err != nil {
		t.Fatal(err)
	}
	if s.MemoryStats.Stats.TotalInactiveFile != 0 {
		t.Fatalf("the v2 sample has total_inactive_file %d", s.MemoryStats.Stats.TotalInactiveFile)
	}
	if got := FromDocker(&s, false).Metrics[stats.MetricMemUsage]; got != 20971520 {
		t.Errorf("read as v1: memory use %d, want the whole usage (no total_inactive_file)", got)
	}
	if got := FromDocker(&s, true).Metrics[stats.MetricMemUsage]; got != 20971520-6291456 {
		t.Errorf("read as v2: memory use %d, want usage less inactive_file", got)
	}
}

func TestFromDockerCgroupVersions(t *testing.T) {
	var s docker.Stats
	s.Read = time.Now()
	s.CPUStats.CPUUsage.TotalUsage = 100
	s.MemoryStats.Usage = 1000
	s.MemoryStats.Stats.TotalInactiveFile = 300 // cgroup v1 field
	s.MemoryStats.Stats.InactiveFile = 100      // cgroup v2 field
	s.Networks = map[string]docker.NetworkStats{"eth0": {RxBytes: 5, TxBytes: 7}, "eth1": {RxBytes: 1, TxBytes: 1}}
	s.BlkioStats.IOServiceBytesRecursive = []docker.BlkioStatsEntry{
		{Op: "Read", Value: 10}, {Op: "Write", Value: 20}, {Op: "read", Value: 1}, {Op: "Total", Value: 31},
	}
	v1, v2 := FromDocker(&s, false).Metrics, FromDocker(&s, true).Metrics
	if v1[stats.MetricMemUsage] != 700 || v2[stats.MetricMemUsage] != 900 {
		t.Errorf("memory usage v1 %d (want 700), v2 %d (want 900)", v1[stats.MetricMemUsage], v2[stats.MetricMemUsage])
	}
	if v1[stats.MetricNetRx] != 6 || v1[stats.MetricNetTx] != 8 || v1[stats.MetricDiskRead] != 11 || v1[stats.MetricDiskWrite] != 20 {
		t.Errorf("network or disk sums wrong: %v", v1)
	}
}
