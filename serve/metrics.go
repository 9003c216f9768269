package serve

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	ocprom "contrib.go.opencensus.io/exporter/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	ocstats "go.opencensus.io/stats"
	"go.opencensus.io/stats/view"
	"go.opencensus.io/tag"

	fnstats "github.com/fnrun/fnrun/stats"
)

// Tag keys of the server's measures.
var (
	KeyApp     = tag.MustNewKey("fnrun_app")
	KeyFn      = tag.MustNewKey("fnrun_fn")
	KeyFnID    = tag.MustNewKey("fnrun_fn_id")
	KeyStart   = tag.MustNewKey("fnrun_start")   // cold, hot, or none when no container was had
	KeyResult  = tag.MustNewKey("fnrun_result")  // success, function_error, timeout, busy, cancelled, error
	KeyCode    = tag.MustNewKey("fnrun_code")    // the HTTP status answered
	KeyStarted = tag.MustNewKey("fnrun_started") // ok or failed, for container starts
	KeyState   = tag.MustNewKey("fnrun_state")   // idle, busy or starting, for containers
)

// Measures the server records.
var (
	CallLatency      = ocstats.Float64("fnrun/serve/call_latency", "latency of one invocation, as the client sees it", ocstats.UnitMilliseconds)
	ContainerStarts  = ocstats.Float64("fnrun/serve/container_start_latency", "time from the decision to start a hot container to its function listening", ocstats.UnitMilliseconds)
	Freezes          = ocstats.Int64("fnrun/serve/freezes", "idle hot containers frozen", ocstats.UnitDimensionless)
	QueueLength      = ocstats.Int64("fnrun/serve/queue_length", "calls waiting for a container of their function, when the last one queued", ocstats.UnitDimensionless)
	ContainersByKind = ocstats.Int64("fnrun/serve/containers", "hot containers that exist, at the last scrape", ocstats.UnitDimensionless)
)

var latencyBuckets = view.Distribution(1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000, 10000, 30000, 60000)

// Views returns the views over the server's measures. Register them with
// view.Register; New does, with fnrun's stats.Views.
func Views() []*view.View {
	return []*view.View{
		{Name: CallLatency.Name(), Description: CallLatency.Description(), Measure: CallLatency,
			TagKeys: []tag.Key{KeyApp, KeyFn, KeyFnID, KeyStart, KeyResult, KeyCode}, Aggregation: latencyBuckets},
		{Name: ContainerStarts.Name(), Description: ContainerStarts.Description(), Measure: ContainerStarts,
			TagKeys: []tag.Key{fnstats.KeyDriver, KeyStarted}, Aggregation: latencyBuckets},
		{Name: Freezes.Name(), Description: Freezes.Description(), Measure: Freezes, Aggregation: view.Count()},
		{Name: QueueLength.Name(), Description: QueueLength.Description(), Measure: QueueLength, Aggregation: view.LastValue()},
		{Name: ContainersByKind.Name(), Description: ContainersByKind.Description(), Measure: ContainersByKind,
			TagKeys: []tag.Key{KeyState}, Aggregation: view.LastValue()},
	}
}

var registerViews = sync.OnceValue(func() error {
	if err := view.Register(fnstats.Views()...); err != nil {
		return err
	}
	return view.Register(Views()...)
})

// metrics records the server's measures and serves them to Prometheus.
type metrics struct {
	handler http.Handler
}

func newMetrics(enabled bool) (*metrics, error) {
	m := &metrics{}
	if !enabled {
		return m, nil
	}
	if err := registerViews(); err != nil {
		return nil, fmt.Errorf("metrics views: %w", err)
	}
	exp, err := ocprom.NewExporter(ocprom.Options{Namespace: "", Registry: prometheus.NewRegistry()})
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	m.handler = exp
	return m, nil
}

// result names how a call ended, for the result tag.
func result(err error) string {
	switch {
	case err == nil:
		return "success"
	case errors.Is(err, ErrTooBusy), errors.Is(err, ErrClosed):
		return "busy"
	case errors.Is(err, ErrCallTimeout):
		return "timeout"
	case errors.Is(err, ErrFunction):
		return "function_error"
	case errors.Is(err, ErrClientGone):
		return "cancelled"
	}
	return "error"
}

func (m *metrics) call(app, fn, fnID, start string, code int, err error, d time.Duration) {
	if start == "" {
		start = "none"
	}
	_ = ocstats.RecordWithTags(context.Background(), []tag.Mutator{
		tag.Upsert(KeyApp, app), tag.Upsert(KeyFn, fn), tag.Upsert(KeyFnID, fnID),
		tag.Upsert(KeyStart, start), tag.Upsert(KeyResult, result(err)), tag.Upsert(KeyCode, fmt.Sprint(code)),
	}, CallLatency.M(float64(d)/float64(time.Millisecond)))
}

func (m *metrics) containerStart(driver string, d time.Duration, err error) {
	started := "ok"
	if err != nil {
		started = "failed"
	}
	_ = ocstats.RecordWithTags(context.Background(), []tag.Mutator{
		tag.Upsert(fnstats.KeyDriver, driver), tag.Upsert(KeyStarted, started),
	}, ContainerStarts.M(float64(d)/float64(time.Millisecond)))
}

func (m *metrics) freeze() { ocstats.Record(context.Background(), Freezes.M(1)) }

func (m *metrics) queued(n int) { ocstats.Record(context.Background(), QueueLength.M(int64(n))) }

func (m *metrics) containers(idle, busy, starting int) {
	for _, kv := range []struct {
		k string
		n int
	}{{"idle", idle}, {"busy", busy}, {"starting", starting}} {
		_ = ocstats.RecordWithTags(context.Background(), []tag.Mutator{tag.Upsert(KeyState, kv.k)}, ContainersByKind.M(int64(kv.n)))
	}
}
