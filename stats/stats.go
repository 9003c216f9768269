// Package stats defines Stat, one timestamped sample of a container's
// resource use, and the OpenCensus measures and views that fnrun's drivers,
// pre-fork pool and image cleaner record into.
//
// Following the OpenCensus guidance for libraries, fnrun defines measures and
// views but never registers or exports them: an application calls
// RegisterViews (or registers a subset of Views) and picks an exporter.
// Recording never fails loudly.
package stats

import (
	"context"
	"time"

	"go.opencensus.io/stats"
	"go.opencensus.io/tag"
)

// Stat is one sample of a container's metrics, keyed by metric name
// (for example "cpu_user", "mem_usage", "net_rx", "disk_read").
type Stat struct {
	Timestamp time.Time         `json:"timestamp"`
	Metrics   map[string]uint64 `json:"metrics"`
}

// Metric names the drivers use in Stat.Metrics.
const (
	MetricCPUTotal    = "cpu_total"    // cumulative CPU time, nanoseconds
	MetricCPUUser     = "cpu_user"     // cumulative user CPU time, nanoseconds
	MetricCPUKernel   = "cpu_kernel"   // cumulative kernel CPU time, nanoseconds
	MetricMemUsage    = "mem_usage"    // current memory use, bytes
	MetricMemLimit    = "mem_limit"    // memory limit, bytes
	MetricNetRx       = "net_rx"       // received bytes, all interfaces
	MetricNetTx       = "net_tx"       // sent bytes, all interfaces
	MetricDiskRead    = "disk_read"    // bytes read from block devices
	MetricDiskWrite   = "disk_write"   // bytes written to block devices
	MetricPids        = "pids_current" // processes and threads in the container
	MetricOOMKillSeen = "oom_kills"    // kernel OOM kills in the container's cgroup
)

// Tag keys attached to the measures.
var (
	KeyDriver  = tag.MustNewKey("fnrun_driver")
	KeyAPI     = tag.MustNewKey("fnrun_api")
	KeyOutcome = tag.MustNewKey("fnrun_outcome")
	KeyStatus  = tag.MustNewKey("fnrun_status")
)

// Outcome tag values.
const (
	OutcomeOK      = "ok"
	OutcomeError   = "error"
	OutcomeTimeout = "timeout"
)

// Measures recorded by the drivers.
var (
	DaemonCallLatency = stats.Float64("fnrun/daemon_call_latency", "latency of one call to a container daemon", stats.UnitMilliseconds)
	PullLatency       = stats.Float64("fnrun/pull_latency", "latency of one image pull, including retries", stats.UnitMilliseconds)
	Pulls             = stats.Int64("fnrun/pulls", "image pulls that reached the daemon", stats.UnitDimensionless)
	ContainerExits    = stats.Int64("fnrun/container_exits", "containers that ended, by status", stats.UnitDimensionless)
)

// Measures recorded by the pre-fork pool.
var (
	PoolFree         = stats.Int64("fnrun/pool_free", "idle holders ready to lease", stats.UnitDimensionless)
	PoolLeased       = stats.Int64("fnrun/pool_leased", "holders leased to a container", stats.UnitDimensionless)
	PoolStarting     = stats.Int64("fnrun/pool_starting", "holders being started", stats.UnitDimensionless)
	PoolSize         = stats.Int64("fnrun/pool_size", "target number of holders", stats.UnitDimensionless)
	PoolMisses       = stats.Int64("fnrun/pool_misses", "leases asked for when no holder was free", stats.UnitDimensionless)
	PoolReplacements = stats.Int64("fnrun/pool_replacements", "holders replaced after use or death", stats.UnitDimensionless)
)

// Measures recorded by the image cleaner.
var (
	ImageBytesBusy        = stats.Int64("fnrun/image_bytes_busy", "bytes of images in use", stats.UnitBytes)
	ImageBytesIdle        = stats.Int64("fnrun/image_bytes_idle", "bytes of idle images", stats.UnitBytes)
	ImageBudget           = stats.Int64("fnrun/image_budget", "byte budget of the image store", stats.UnitBytes)
	ImageEvictions        = stats.Int64("fnrun/image_evictions", "images removed to stay under budget", stats.UnitDimensionless)
	ImageEvictionFailures = stats.Int64("fnrun/image_eviction_failures", "image removals that failed", stats.UnitDimensionless)
)

// RecordDaemonCall records the latency and outcome of one daemon call made
// on behalf of driver. Recording errors are dropped on purpose: metrics must
// never change what a call returns.
func RecordDaemonCall(ctx context.Context, driver, api string, start time.Time, err error) {
	ms := float64(time.Since(start)) / float64(time.Millisecond)
	_ = stats.RecordWithTags(ctx, []tag.Mutator{
		tag.Upsert(KeyDriver, driver),
		tag.Upsert(KeyAPI, api),
		tag.Upsert(KeyOutcome, Outcome(err)),
	}, DaemonCallLatency.M(ms))
}

// RecordPull records one pull attempt that reached the daemon.
func RecordPull(ctx context.Context, driver string, start time.Time, err error) {
	ms := float64(time.Since(start)) / float64(time.Millisecond)
	_ = stats.RecordWithTags(ctx, []tag.Mutator{
		tag.Upsert(KeyDriver, driver),
		tag.Upsert(KeyOutcome, Outcome(err)),
	}, Pulls.M(1), PullLatency.M(ms))
}

// RecordExit records a container that ended with status.
func RecordExit(ctx context.Context, driver, status string) {
	_ = stats.RecordWithTags(ctx, []tag.Mutator{
		tag.Upsert(KeyDriver, driver),
		tag.Upsert(KeyStatus, status),
	}, ContainerExits.M(1))
}

// Record records measurements tagged with the driver name.
func Record(ctx context.Context, driver string, ms ...stats.Measurement) {
	_ = stats.RecordWithTags(ctx, []tag.Mutator{tag.Upsert(KeyDriver, driver)}, ms...)
}

// Outcome maps an error to an outcome tag value.
func Outcome(err error) string {
	switch {
	case err == nil:
		return OutcomeOK
	case isTimeout(err):
		return OutcomeTimeout
	default:
		return OutcomeError
	}
}

func isTimeout(err error) bool {
	type timeout interface{ Timeout() bool }
	if err == context.DeadlineExceeded {
		return true
	}
	for e := err; e != nil; {
		if t, ok := e.(timeout); ok && t.Timeout() {
			return true
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		e = u.Unwrap()
	}
	return false
}
