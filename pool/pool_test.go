package pool

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"go.opencensus.io/stats/view"
	"go.opencensus.io/tag"
	"go.uber.org/goleak"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/clock"
	"github.com/fnrun/fnrun/stats"
)

func TestMain(m *testing.M) {
	// OpenCensus starts its one worker at init; it is not ours.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"))
}

// quick paces retries in whole seconds so tests can reason about them:
// delays in [1s, 2s], [1.5s, 3s], [2s, 4s], then 4s.
var quick = drivers.BackOffConfig{MaxRetries: 3, Interval: 1000, MinDelay: 1000, MaxDelay: 4000}

var errDaemon = errors.New("daemon unreachable")

func newPool(t *testing.T, a Adapter, cfg Config, opts ...Option) *Pool {
	t.Helper()
	p, err := New(a, cfg, opts...)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func ready(t *testing.T, p *Pool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v (stats %+v)", err, p.Stats())
	}
}

// wantStats checks the gauges, and the counters that want sets non-zero.
func wantStats(t *testing.T, p *Pool, want Stats) {
	t.Helper()
	got := p.Stats()
	if got.Free != want.Free || got.Leased != want.Leased || got.Starting != want.Starting || got.Size != want.Size ||
		(want.Misses != 0 && got.Misses != want.Misses) ||
		(want.Replacements != 0 && got.Replacements != want.Replacements) ||
		(want.Deaths != 0 && got.Deaths != want.Deaths) {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
}

func lease(t *testing.T, p *Pool) *Lease {
	t.Helper()
	l, ok := p.Lease(context.Background())
	if !ok {
		t.Fatalf("Lease missed; stats %+v", p.Stats())
	}
	return l
}

func miss(t *testing.T, p *Pool) {
	t.Helper()
	if l, ok := p.Lease(context.Background()); ok || l != nil {
		t.Fatalf("Lease = %v, %v; want a miss", l, ok)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"zero size", Config{}},
		{"negative size", Config{Size: -1}},
		{"huge size", Config{Size: MaxSize + 1}},
		{"max below size", Config{Size: 3, Max: 2}},
		{"huge max", Config{Size: 3, Max: MaxSize + 1}},
		{"empty network", Config{Size: 1, Networks: []string{"a", ""}}},
		{"spaced network", Config{Size: 1, Networks: []string{"a b"}}},
		{"negative idle", Config{Size: 1, IdleShrinkAfter: -time.Second}},
		{"spinning backoff", Config{Size: 1, ReplaceBackoff: drivers.BackOffConfig{MaxRetries: 3, MaxDelay: 10}}},
		{"no delay at all", Config{Size: 1, ReplaceBackoff: drivers.BackOffConfig{Interval: 10}}},
		{"negative concurrency", Config{Size: 1, StartConcurrency: -1}},
		{"negative stop timeout", Config{Size: 1, StopTimeout: -1}},
		{"overflowing size", Config{Size: math.MaxInt32}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(newFake(), tc.cfg)
			if !errors.Is(err, drivers.ErrInvalidConfig) {
				if p != nil {
					_ = p.Close()
				}
				t.Fatalf("New(%+v) = %v, want ErrInvalidConfig", tc.cfg, err)
			}
		})
	}
	if _, err := New(nil, Config{Size: 1}); !errors.Is(err, drivers.ErrInvalidConfig) {
		t.Fatalf("nil adapter: %v", err)
	}
}

func TestDefaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool(t, newFake(), Config{Size: 2})
		got := p.Config()
		if got.Max != 2 || got.IdleShrinkAfter != DefaultIdleShrinkAfter || got.ReplaceBackoff != DefaultReplaceBackoff ||
			got.StartConcurrency != DefaultStartConcurrency || got.StopTimeout != DefaultStopTimeout || got.NamePrefix != DefaultNamePrefix {
			t.Fatalf("defaults not applied: %+v", got)
		}
	})
}

func TestFillsToSize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		p := newPool(t, f, Config{Size: 3, NamePrefix: "test-holder"})
		ready(t, p)
		synctest.Wait()
		wantStats(t, p, Stats{Free: 3, Size: 3})
		starts, stops, ensures := f.counts()
		if starts != 3 || stops != 0 || ensures != 1 {
			t.Fatalf("starts %d stops %d ensures %d, want 3 0 1", starts, stops, ensures)
		}
		names := map[string]bool{}
		for _, s := range f.specs {
			if !strings.HasPrefix(s.Name, "test-holder-") || names[s.Name] {
				t.Fatalf("holder name %q not unique or not prefixed", s.Name)
			}
			names[s.Name] = true
		}
		// Nothing more happens while nothing changes: no polling loop.
		time.Sleep(time.Hour)
		if starts, _, ensures := f.counts(); starts != 3 || ensures != 1 {
			t.Fatalf("an idle full pool made calls: starts %d ensures %d", starts, ensures)
		}
	})
}

func TestLeaseRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		p := newPool(t, f, Config{Size: 2})
		ready(t, p)
		l1, l2 := lease(t, p), lease(t, p)
		if l1.Holder().ID == l2.Holder().ID {
			t.Fatalf("two leases of holder %s at once", l1.Holder().ID)
		}
		h := l1.Holder()
		if h.Name == "" || h.NetNSPath != "/proc/"+h.ID+"/ns/net" {
			t.Fatalf("holder %+v lost what the adapter filled in", h)
		}
		miss(t, p)
		synctest.Wait()
		wantStats(t, p, Stats{Leased: 2, Size: 2, Misses: 1})
		if isClosed(l1.Dead()) || l1.Err() != nil {
			t.Fatal("a live holder's lease reports it dead")
		}

		l1.Release()
		l1.Release()
		wantStats(t, p, Stats{Free: 1, Leased: 1, Size: 2})
		l3 := lease(t, p) // the holder l1 had: the top of the free stack
		if l3.Holder().ID != h.ID {
			t.Fatalf("leased %s, want the just-released %s", l3.Holder().ID, h.ID)
		}
		l1.Release() // a stale lease must not free the holder l3 now has
		wantStats(t, p, Stats{Leased: 2, Size: 2})
		l2.Release()
		l3.Release()
		wantStats(t, p, Stats{Free: 2, Size: 2})
		if starts, stops, _ := f.counts(); starts != 2 || stops != 0 {
			t.Fatalf("plain leases started %d and stopped %d holders", starts, stops)
		}
	})
}

func TestUseOnceReplacesInBackground(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		p := newPool(t, f, Config{Size: 1, UseOnce: true})
		ready(t, p)
		gate := make(chan struct{})
		f.set(func(f *fakeAdapter) { f.gate = gate }) // replacements now hang until we say
		l := lease(t, p)
		old := l.Holder().ID
		l.Release() // would deadlock the bubble if it waited for the replacement
		synctest.Wait()
		wantStats(t, p, Stats{Starting: 1, Size: 1, Replacements: 1})
		if !slices.Contains(f.stopped, old) {
			t.Fatalf("used holder %s not stopped (stopped %v)", old, f.stopped)
		}
		miss(t, p)
		close(gate)
		synctest.Wait()
		wantStats(t, p, Stats{Free: 1, Size: 1})
		l = lease(t, p)
		if l.Holder().ID == old {
			t.Fatalf("use-once leased holder %s twice", old)
		}
		l.Release()
		synctest.Wait()
		wantStats(t, p, Stats{Free: 1, Size: 1, Replacements: 2})
	})
}

func TestMissGrowsToMaxAndShrinks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		p := newPool(t, f, Config{Size: 1, Max: 3, IdleShrinkAfter: time.Minute})
		ready(t, p)
		var leases []*Lease
		for i := 2; i <= 4; i++ {
			leases = append(leases, lease(t, p))
			miss(t, p)
			synctest.Wait()
			if want := min(i, 3); p.Stats().Size != want {
				t.Fatalf("after %d misses size %d, want %d", i-1, p.Stats().Size, want)
			}
		}
		wantStats(t, p, Stats{Leased: 3, Size: 3, Misses: 3})
		for _, l := range leases {
			l.Release()
		}
		time.Sleep(59 * time.Second)
		synctest.Wait()
		wantStats(t, p, Stats{Free: 3, Size: 3})
		time.Sleep(2 * time.Second)
		synctest.Wait()
		wantStats(t, p, Stats{Free: 1, Size: 1})
		if n := len(f.liveIDs()); n != 1 {
			t.Fatalf("%d holders running after shrinking, want 1", n)
		}
		// A busy holder is not idle: shrinking never takes a leased one.
		leases = leases[:0]
		leases = append(leases, lease(t, p))
		miss(t, p)
		synctest.Wait()
		leases = append(leases, lease(t, p))
		time.Sleep(time.Hour)
		synctest.Wait()
		wantStats(t, p, Stats{Leased: 2, Size: 2})
		for _, l := range leases {
			l.Release()
		}
	})
}

func TestNoGrowthWhileFilling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		gate := make(chan struct{})
		f.gate = gate
		p := newPool(t, f, Config{Size: 2, Max: 4})
		synctest.Wait()
		miss(t, p)
		miss(t, p)
		wantStats(t, p, Stats{Starting: 2, Size: 2, Misses: 2})
		close(gate)
		synctest.Wait()
		wantStats(t, p, Stats{Free: 2, Size: 2})
	})
}

func TestDeathWhileFreeIsReplaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		p := newPool(t, f, Config{Size: 2})
		ready(t, p)
		time.Sleep(time.Minute) // an old holder's death is bad luck, not a failure
		victim := f.liveIDs()[0]
		f.kill(victim)
		synctest.Wait()
		wantStats(t, p, Stats{Free: 2, Size: 2, Replacements: 1, Deaths: 1})
		if s := p.Stats(); s.Failures != 0 {
			t.Fatalf("an old holder's death counted as a failure: %+v", s)
		}
		for _, l := range []*Lease{lease(t, p), lease(t, p)} {
			if l.Holder().ID == victim {
				t.Fatalf("leased dead holder %s", victim)
			}
		}
		if starts, _, _ := f.counts(); starts != 3 {
			t.Fatalf("%d starts, want 2 + 1 replacement", starts)
		}
		if !slices.Contains(f.stopped, victim) {
			t.Fatal("the dead holder's remains were not removed")
		}
	})
}

func TestDeathWhileLeasedClosesDead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		p := newPool(t, f, Config{Size: 1})
		ready(t, p)
		time.Sleep(time.Minute)
		l := lease(t, p)
		f.kill(l.Holder().ID)
		select {
		case <-l.Dead():
		case <-time.After(time.Second):
			t.Fatal("Dead not closed after the holder died")
		}
		err := l.Err()
		if !errors.Is(err, ErrHolderDied) || !errors.Is(err, drivers.ErrContainerGone) || !strings.Contains(err.Error(), l.Holder().ID) {
			t.Fatalf("Err() = %v, want ErrHolderDied naming the holder", err)
		}
		synctest.Wait()
		wantStats(t, p, Stats{Free: 1, Size: 1, Replacements: 1, Deaths: 1})
		l.Release() // after the death: nothing to give back
		l.Release()
		wantStats(t, p, Stats{Free: 1, Size: 1})
		if l2 := lease(t, p); l2.Holder().ID == l.Holder().ID {
			t.Fatal("the dead holder was leased again")
		}
	})
}

func TestStartFailuresAreRateLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.startErr = errDaemon
		p := newPool(t, f, Config{Size: 3, ReplaceBackoff: quick})
		synctest.Wait()
		first, _, _ := f.counts()
		if first > DefaultStartConcurrency {
			t.Fatalf("%d starts before any delay, want at most the start concurrency", first)
		}
		synctest.Wait() // no time passes: a busy loop would keep calling
		if again, _, _ := f.counts(); again != first {
			t.Fatalf("starts went from %d to %d with no time passing", first, again)
		}
		time.Sleep(time.Minute)
		starts, _, _ := f.counts()
		t.Logf("%d starts in the first minute of failures, %d at once", starts, first)
		// About one attempt per 1-4s, one at a time.
		if starts < first+10 || starts > first+60 {
			t.Fatalf("%d starts in a minute of failures, want a paced trickle", starts)
		}
		times := f.startTimes[first:]
		for i := 1; i < len(times); i++ {
			if gap := times[i].Sub(times[i-1]); gap < time.Second {
				t.Fatalf("retries %d and %d only %v apart", i-1, i, gap)
			}
		}
		if s := p.Stats(); s.Failures != uint64(starts) || s.Free != 0 {
			t.Fatalf("stats %+v after %d failed starts", s, starts)
		}
		f.set(func(f *fakeAdapter) { f.startErr = nil })
		time.Sleep(5 * time.Second)
		synctest.Wait()
		wantStats(t, p, Stats{Free: 3, Size: 3})
	})
}

func TestKeepsServingWhileReplacementsFail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		p := newPool(t, f, Config{Size: 2, ReplaceBackoff: quick})
		ready(t, p)
		time.Sleep(time.Minute)
		f.set(func(f *fakeAdapter) { f.startErr = errDaemon })
		f.kill(f.liveIDs()[0])
		time.Sleep(10 * time.Second)
		synctest.Wait()
		wantStats(t, p, Stats{Free: 1, Size: 2, Deaths: 1})
		l := lease(t, p)
		miss(t, p)
		l.Release()
		if s := p.Stats(); s.Failures < 2 || s.Size != 2 {
			t.Fatalf("stats %+v: failing replacements not counted, or the pool grew while failing", s)
		}
		f.set(func(f *fakeAdapter) { f.startErr = nil })
		time.Sleep(5 * time.Second)
		synctest.Wait()
		wantStats(t, p, Stats{Free: 2, Size: 2})
	})
}

func TestBrokenWatchIsNotABusyLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.waitErr = errors.New("event stream broken")
		p := newPool(t, f, Config{Size: 2, ReplaceBackoff: quick})
		synctest.Wait()
		if starts, _, _ := f.counts(); starts != 2 {
			t.Fatalf("%d starts before any time passed, want the first 2", starts)
		}
		time.Sleep(time.Minute)
		starts, _, _ := f.counts()
		t.Logf("%d starts in a minute of holders dying at once", starts)
		if starts > 40 {
			t.Fatalf("%d starts in a minute of holders dying at once", starts)
		}
		if s := p.Stats(); s.Deaths != uint64(starts) || s.Failures < uint64(starts) {
			t.Fatalf("stats %+v after %d starts that all died young", s, starts)
		}
	})
}

func TestEnsureImageFailureIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.ensureErr = fmt.Errorf("pull: %w", errDaemon)
		p := newPool(t, f, Config{Size: 2, ReplaceBackoff: quick})
		synctest.Wait()
		if starts, _, ensures := f.counts(); starts != 0 || ensures != 1 {
			t.Fatalf("starts %d ensures %d: holders started without the image", starts, ensures)
		}
		if s := p.Stats(); s.Failures != 1 {
			t.Fatalf("image failure not counted: %+v", s)
		}
		time.Sleep(20 * time.Second)
		_, _, ensures := f.counts()
		t.Logf("%d EnsureImage calls in 20s of failures", ensures)
		if ensures < 4 || ensures > 21 {
			t.Fatalf("%d EnsureImage calls in 20s, want a paced retry", ensures)
		}
		f.set(func(f *fakeAdapter) { f.ensureErr = nil })
		time.Sleep(5 * time.Second)
		synctest.Wait()
		wantStats(t, p, Stats{Free: 2, Size: 2})

		// The image disappears from under the pool: the next start reports
		// it, and the pool pulls again before starting more.
		time.Sleep(time.Minute)
		_, _, before := f.counts()
		f.set(func(f *fakeAdapter) { f.startErr = fmt.Errorf("image busybox: %w", drivers.ErrImageNotFound) })
		f.kill(f.liveIDs()[0])
		synctest.Wait()
		f.set(func(f *fakeAdapter) { f.startErr = nil })
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if _, _, after := f.counts(); after != before+1 {
			t.Fatalf("EnsureImage called %d times after the image went missing, want once", after-before)
		}
		wantStats(t, p, Stats{Free: 2, Size: 2})
	})
}

func TestNetworksRoundRobin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		p := newPool(t, f, Config{Size: 6, Networks: []string{"a", "b", "c"}})
		ready(t, p)
		perNet := func() map[string]int {
			n := map[string]int{}
			for _, id := range f.liveIDs() {
				f.mu.Lock()
				n[f.live[id].spec.Network]++
				f.mu.Unlock()
			}
			return n
		}
		if got := perNet(); got["a"] != 2 || got["b"] != 2 || got["c"] != 2 {
			t.Fatalf("holders per network %v, want 2 each", got)
		}
		var leases []*Lease
		for range 6 {
			l := lease(t, p)
			if l.Holder().Network == "" {
				t.Fatal("the pool did not fill in the holder's network")
			}
			leases = append(leases, l)
		}
		time.Sleep(time.Minute)
		for _, l := range leases {
			if l.Holder().Network == "a" {
				f.kill(l.Holder().ID)
			}
			l.Release()
		}
		synctest.Wait()
		if got := perNet(); got["a"] != 2 || got["b"] != 2 || got["c"] != 2 {
			t.Fatalf("after replacing network a's holders: %v, want 2 each", got)
		}
	})
}

func TestCloseStopsEverything(t *testing.T) {
	for _, ignoreCtx := range []bool{false, true} {
		t.Run(fmt.Sprintf("start ignores cancel=%v", ignoreCtx), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFake()
				p, err := New(f, Config{Size: 2, Max: 3})
				if err != nil {
					t.Fatal(err)
				}
				ready(t, p)
				gate := make(chan struct{})
				f.set(func(f *fakeAdapter) { f.gate, f.ignoreCtx = gate, ignoreCtx })
				l1, l2 := lease(t, p), lease(t, p)
				miss(t, p) // grows: a third start hangs on the gate
				synctest.Wait()
				wantStats(t, p, Stats{Leased: 2, Starting: 1, Size: 3})

				done := make(chan error)
				go func() { done <- p.Close() }()
				synctest.Wait()
				if ignoreCtx {
					select {
					case <-done:
						t.Fatal("Close returned while a holder was still being started")
					default:
					}
					close(gate) // the daemon finishes the create anyway
				}
				if err := <-done; err != nil {
					t.Fatalf("Close: %v", err)
				}
				if live := f.liveIDs(); len(live) != 0 {
					t.Fatalf("holders %v left running after Close", live)
				}
				if !isClosed(l1.Dead()) || !errors.Is(l1.Err(), drivers.ErrClosed) {
					t.Fatalf("a lease of a closed pool: dead=%v err=%v", isClosed(l1.Dead()), l1.Err())
				}
				l1.Release()
				l2.Release()
				l2.Release()
				if l, ok := p.Lease(context.Background()); ok || l != nil {
					t.Fatal("Lease after Close handed out a holder")
				}
				if err := p.Ready(context.Background()); !errors.Is(err, drivers.ErrClosed) {
					t.Fatalf("Ready after Close = %v", err)
				}
				if err := p.Close(); err != nil {
					t.Fatalf("second Close: %v", err)
				}
				wantStats(t, p, Stats{Size: 3})
			})
		})
	}
}

func TestCloseReportsStopFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		p, err := New(f, Config{Size: 2})
		if err != nil {
			t.Fatal(err)
		}
		ready(t, p)
		f.set(func(f *fakeAdapter) { f.stopErr = errDaemon })
		err = p.Close()
		if !errors.Is(err, errDaemon) || strings.Count(err.Error(), "stop holder") != 2 {
			t.Fatalf("Close = %v, want both stop failures", err)
		}
		if again := p.Close(); !errors.Is(again, errDaemon) {
			t.Fatalf("second Close = %v, want the same errors", again)
		}
	})
}

func TestReadyHonoursContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.startErr = errDaemon
		p := newPool(t, f, Config{Size: 1, ReplaceBackoff: quick})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Ready(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Ready on a failing pool = %v", err)
		}
	})
}

func TestDebugLogPerReplacement(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logger, hook := logtest.NewNullLogger()
		logger.SetLevel(logrus.DebugLevel)
		f := newFake()
		p := newPool(t, f, Config{Size: 1, UseOnce: true}, WithLogger(logrus.NewEntry(logger)))
		ready(t, p)
		lease(t, p).Release()
		synctest.Wait()
		time.Sleep(time.Minute)
		f.kill(f.liveIDs()[0])
		synctest.Wait()
		var reasons []string
		for _, e := range hook.AllEntries() {
			if e.Message == "pool: replacing holder" && e.Level == logrus.DebugLevel {
				reasons = append(reasons, fmt.Sprint(e.Data["reason"]))
			}
		}
		if !slices.Equal(reasons, []string{"used once", "died"}) {
			t.Fatalf("replacement log lines with reasons %q, want used once then died", reasons)
		}
	})
}

func TestWithClockDrivesShrinking(t *testing.T) {
	clk := clock.NewFake(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC))
	f := newFake()
	p := newPool(t, f, Config{Size: 1, Max: 2, IdleShrinkAfter: time.Minute}, WithClock(clk))
	ready(t, p)
	a := lease(t, p)
	miss(t, p)
	ready(t, p)
	eventually(t, func() bool { return p.Stats().Free == 1 })
	b := lease(t, p)
	a.Release()
	b.Release()
	clk.Advance(30 * time.Second)
	time.Sleep(20 * time.Millisecond)
	if s := p.Stats(); s.Free != 2 || s.Size != 2 {
		t.Fatalf("shrunk after 30s of a 1m idle delay: %+v", s)
	}
	clk.Advance(31 * time.Second)
	eventually(t, func() bool { s := p.Stats(); return s.Free == 1 && s.Size == 1 })
	eventually(t, func() bool { return len(f.liveIDs()) == 1 })
}

func TestMetricsRecorded(t *testing.T) {
	var views []*view.View
	for _, v := range stats.Views() {
		if strings.HasPrefix(v.Name, "fnrun/pool_") {
			views = append(views, v)
		}
	}
	if err := view.Register(views...); err != nil {
		t.Fatal(err)
	}
	defer view.Unregister(views...)
	p := newPool(t, newFake(), Config{Size: 1, Driver: "metrics-test"})
	ready(t, p)
	lease(t, p)
	miss(t, p)
	value := func(name string) (float64, bool) {
		rows, err := view.RetrieveData(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if slices.Contains(r.Tags, tag.Tag{Key: stats.KeyDriver, Value: "metrics-test"}) {
				switch d := r.Data.(type) {
				case *view.SumData:
					return d.Value, true
				case *view.LastValueData:
					return d.Value, true
				}
			}
		}
		return 0, false
	}
	eventually(t, func() bool {
		misses, ok1 := value("fnrun/pool_misses")
		leased, ok2 := value("fnrun/pool_leased")
		free, ok3 := value("fnrun/pool_free")
		size, ok4 := value("fnrun/pool_size")
		return ok1 && ok2 && ok3 && ok4 && misses == 1 && leased == 1 && free == 0 && size == 1
	})
}

// TestConcurrentLeaseRelease runs on the real clock under -race: many
// callers lease and release while holders die and get replaced, and no
// holder is ever leased twice at once.
func TestConcurrentLeaseRelease(t *testing.T) {
	for _, useOnce := range []bool{false, true} {
		t.Run(fmt.Sprintf("use once=%v", useOnce), func(t *testing.T) {
			f := newFake()
			p := newPool(t, f, Config{Size: 4, Max: 8, UseOnce: useOnce, ReplaceBackoff: drivers.BackOffConfig{MaxRetries: 3, Interval: 1, MaxDelay: 5}})
			ready(t, p)
			var (
				mu    sync.Mutex
				inUse = map[string]bool{}
				wg    sync.WaitGroup
				hits  int
			)
			ctx, cancel := context.WithCancel(context.Background())
			wg.Go(func() { // an outside killer
				for i := 0; ctx.Err() == nil; i++ {
					if ids := f.liveIDs(); len(ids) > 0 && i%50 == 0 {
						f.kill(ids[0])
					}
					runtime.Gosched()
				}
			})
			var callers sync.WaitGroup
			for g := range 16 {
				callers.Go(func() {
					for i := range 500 {
						l, ok := p.Lease(context.Background())
						if !ok {
							continue
						}
						id := l.Holder().ID
						mu.Lock()
						if inUse[id] {
							mu.Unlock()
							t.Errorf("holder %s leased twice at once", id)
							return
						}
						inUse[id] = true
						hits++
						mu.Unlock()
						select {
						case <-l.Dead():
						default:
							runtime.Gosched()
						}
						mu.Lock()
						delete(inUse, id)
						mu.Unlock()
						l.Release()
						if (g+i)%7 == 0 {
							l.Release()
						}
						_ = p.Stats()
					}
				})
			}
			callers.Wait()
			cancel()
			wg.Wait()
			if hits == 0 {
				t.Fatal("no lease succeeded")
			}
			eventually(t, func() bool {
				s := p.Stats()
				return s.Leased == 0 && s.Starting == 0 && s.Free == s.Size && s.Size >= 4 && s.Size <= 8
			})
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			if live := f.liveIDs(); len(live) != 0 {
				t.Fatalf("holders %v left after Close", live)
			}
		})
	}
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

func BenchmarkLeaseRelease(b *testing.B) {
	for _, par := range []bool{false, true} {
		b.Run(map[bool]string{false: "serial", true: "parallel"}[par], func(b *testing.B) {
			f := newFake()
			p, err := New(f, Config{Size: 64})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			if err := p.Ready(context.Background()); err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			if !par {
				for b.Loop() {
					if l, ok := p.Lease(ctx); ok {
						l.Release()
					}
				}
				return
			}
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if l, ok := p.Lease(ctx); ok {
						l.Release()
					}
				}
			})
			b.StopTimer()
			if s := p.Stats(); s.Misses != 0 {
				b.Logf("%d misses of %d", s.Misses, b.N)
			}
		})
	}
}
