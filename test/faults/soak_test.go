package faults

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/test"
)

// Soak thresholds: what the process may grow by over a whole soak before
// it counts as a leak rather than noise. Pooled connections to the daemon
// (each one a descriptor and two goroutines) are warmed up before the
// first sample, so a leak of one goroutine or descriptor per call shows
// once the soak runs more calls than these.
const (
	soakGoroutineSlack = 20
	soakFDSlack        = 20
	soakHeapSlack      = 8 << 20
	soakConcurrency    = 8
	soakWarmup         = 40
)

// TestSoak runs many calls through each driver, first one at a time, then
// soakConcurrency at a time, and samples the test process's goroutines,
// open descriptors, threads and heap (after a GC) after a warm-up and after
// each phase; the daemon's descriptors are logged too. Growth beyond the
// slack above fails the test. FNRUN_SOAK_CALLS sets the calls per phase.
func TestSoak(t *testing.T) {
	calls := envInt("FNRUN_SOAK_CALLS", 100)
	forEach(t, func(t *testing.T, tg *target) {
		tag := "faults-soak-" + randomID()
		drv := tg.mustDriver(t, driverOpts{tag: tag})
		ctx := testCtx(t, time.Hour)

		var failures atomic.Int64
		var firstErr atomic.Value
		call := func(i int) {
			want := "call " + strconv.Itoa(i) + "\n"
			out, err := test.Lifecycle(ctx, drv, tg.task("soak", "echo call "+strconv.Itoa(i)))
			switch {
			case err == nil && out.Result.Status() == drivers.StatusSuccess && out.Stdout == want:
				return
			case err == nil:
				err = fmt.Errorf("call %d: status %s (%v), stdout %q", i, out.Result.Status(), out.Result.Error(), out.Stdout)
			}
			failures.Add(1)
			firstErr.CompareAndSwap(nil, err)
		}
		sequential := func(n int) {
			for i := 0; i < n; i++ {
				call(i)
			}
		}
		concurrent := func(n int) {
			var next atomic.Int64
			var wg sync.WaitGroup
			for w := 0; w < soakConcurrency; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := int(next.Add(1)) - 1
						if i >= n {
							return
						}
						call(i)
					}
				}()
			}
			wg.Wait()
		}

		type row struct {
			phase  string
			calls  int
			took   time.Duration
			p      procFigures
			daemon int
		}
		sample := func(phase string, n int, took time.Duration) row {
			return row{phase: phase, calls: n, took: took, p: sampleProc(), daemon: countFDs(tg.d.pid())}
		}
		// Warm-up: fill the connection pools and caches both phases use.
		warm := timed(func() {
			sequential(soakWarmup / 2)
			concurrent(soakWarmup / 2)
		})
		rows := []row{sample("warm-up (start)", soakWarmup, warm)}
		took := timed(func() { sequential(calls) })
		rows = append(rows, sample("sequential", calls, took))
		took = timed(func() { concurrent(calls) })
		rows = append(rows, sample(fmt.Sprintf("concurrent x%d (end)", soakConcurrency), calls, took))

		var b strings.Builder
		fmt.Fprintf(&b, "%s soak, %d calls per phase:\n", tg.name, calls)
		fmt.Fprintf(&b, "  %-22s %6s %9s %8s %11s %8s %8s %10s %12s\n", "phase", "calls", "took", "calls/s", "goroutines", "fds", "threads", "heap MiB", "daemon fds")
		for _, r := range rows {
			rate := float64(r.calls) / r.took.Seconds()
			fmt.Fprintf(&b, "  %-22s %6d %9v %8.1f %11d %8d %8d %10.2f %12d\n", r.phase, r.calls, r.took.Round(time.Millisecond), rate,
				r.p.goroutines, r.p.fds, r.p.threads, float64(r.p.heap)/(1<<20), r.daemon)
		}
		start, end := rows[0].p, rows[len(rows)-1].p
		fmt.Fprintf(&b, "  growth start->end: goroutines %+d (slack %d), fds %+d (slack %d), heap %+.2f MiB (slack %d MiB, %+.0f bytes per call), daemon fds %+d",
			end.goroutines-start.goroutines, soakGoroutineSlack, end.fds-start.fds, soakFDSlack,
			float64(int64(end.heap)-int64(start.heap))/(1<<20), soakHeapSlack>>20,
			float64(int64(end.heap)-int64(start.heap))/float64(2*calls), rows[len(rows)-1].daemon-rows[0].daemon)
		t.Log(b.String())

		if n := failures.Load(); n > 0 {
			t.Errorf("%d of %d calls failed; first: %v", n, soakWarmup+2*calls, firstErr.Load())
		}
		if d := end.goroutines - start.goroutines; d > soakGoroutineSlack {
			t.Errorf("goroutines grew by %d over the soak (slack %d)", d, soakGoroutineSlack)
		}
		if d := end.fds - start.fds; d > soakFDSlack {
			t.Errorf("open descriptors grew by %d over the soak (slack %d)", d, soakFDSlack)
		}
		if d := int64(end.heap) - int64(start.heap); d > soakHeapSlack {
			t.Errorf("heap grew by %.2f MiB over the soak (slack %d MiB)", float64(d)/(1<<20), soakHeapSlack>>20)
		}
		tg.waitNoLeftovers(t, tag, 20*time.Second)
	})
}
