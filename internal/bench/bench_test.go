package bench

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeTarget records what Compare asks of it.
type fakeTarget struct {
	v       Variant
	delay   time.Duration
	failAt  int  // the call (1-based) that fails; 0 never
	failOn  bool // every call from failAt on fails
	mu      sync.Mutex
	calls   int
	workers map[int]bool
	log     *[]string
	logMu   *sync.Mutex
	closed  bool
}

func (f *fakeTarget) Variant() Variant { return f.v }

func (f *fakeTarget) Prepare(_ context.Context, workers int) error {
	f.workers = map[int]bool{}
	return nil
}

func (f *fakeTarget) Call(ctx context.Context, worker int) error {
	f.mu.Lock()
	f.calls++
	n := f.calls
	f.workers[worker] = true
	f.mu.Unlock()
	f.logMu.Lock()
	*f.log = append(*f.log, f.v.Client)
	f.logMu.Unlock()
	if f.failAt != 0 && (n == f.failAt || f.failOn && n > f.failAt) {
		return errors.New("boom")
	}
	time.Sleep(f.delay)
	return nil
}

func (f *fakeTarget) Close(context.Context) error { f.closed = true; return nil }

func TestCompareAlternatesAndCounts(t *testing.T) {
	var log []string
	var mu sync.Mutex
	a := &fakeTarget{v: Variant{"d", Cold, Fnrun}, delay: time.Millisecond, log: &log, logMu: &mu}
	b := &fakeTarget{v: Variant{"d", Cold, Bare}, delay: time.Millisecond, log: &log, logMu: &mu}
	var progress int
	res, err := Compare(context.Background(), []Target{a, b}, Options{N: 10, Concurrency: 2, Rounds: 2, Warmup: 1,
		Progress: func(Variant, int, int) { progress++ }})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Variant != a.v || res[1].Variant != b.v {
		t.Fatalf("results out of order: %+v", res)
	}
	for i, r := range res {
		if len(r.Latencies) != 10 || r.Concurrency != 2 || r.Wall <= 0 || r.Throughput() <= 0 {
			t.Errorf("result %d: %d latencies, concurrency %d, wall %v", i, len(r.Latencies), r.Concurrency, r.Wall)
		}
	}
	if a.calls != 11 || b.calls != 11 { // one warm-up each
		t.Errorf("calls %d and %d, want 11 each", a.calls, b.calls)
	}
	if !a.workers[0] || !a.workers[1] {
		t.Errorf("both workers should have called: %v", a.workers)
	}
	if progress != 20 {
		t.Errorf("progress told of %d calls, want 20", progress)
	}
	// Warm-ups (fnrun, bare), round 1 fnrun then bare, round 2 bare then fnrun.
	want := strings.Repeat("fnrun ", 1) + "bare " + strings.Repeat("fnrun ", 5) + strings.Repeat("bare ", 10) + strings.Repeat("fnrun ", 5)
	if got := strings.Join(log, " ") + " "; got != want {
		t.Errorf("call order\n got %s\nwant %s", got, want)
	}
	if !a.closed || !b.closed {
		t.Error("targets not closed")
	}
}

func TestCompareCountsAFewFailedCalls(t *testing.T) {
	var log []string
	var mu sync.Mutex
	a := &fakeTarget{v: Variant{"d", Warm, Fnrun}, failAt: 3, log: &log, logMu: &mu}
	res, err := Compare(context.Background(), []Target{a}, Options{N: 10, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	r := res[0]
	if r.Errors != 1 || len(r.Latencies) != 9 || r.FirstError == nil || r.FirstError.Error() != "boom" {
		t.Errorf("errors %d, latencies %d, first error %v; want 1, 9, boom", r.Errors, len(r.Latencies), r.FirstError)
	}
	var buf bytes.Buffer
	_ = WriteTable(&buf, res)
	if !strings.Contains(buf.String(), "1 failed call(s)") {
		t.Errorf("the table does not report the failure:\n%s", buf.String())
	}
	if notes := FailureNotes(res); len(notes) != 1 || notes[0] != "d warm fnrun: 1 failed call(s) of 10, not timed; the first: boom" {
		t.Errorf("failure notes: %q", notes)
	}
}

func TestCompareStopsWhenCallsKeepFailing(t *testing.T) {
	var log []string
	var mu sync.Mutex
	a := &fakeTarget{v: Variant{"d", Warm, Fnrun}, failAt: 3, failOn: true, log: &log, logMu: &mu}
	_, err := Compare(context.Background(), []Target{a}, Options{N: 10, Concurrency: 2})
	if err == nil || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "d warm fnrun") || !strings.Contains(err.Error(), "too many failed calls") {
		t.Fatalf("err = %v, want the calls' error named by its variant", err)
	}
	if !a.closed {
		t.Error("a failed comparison must still close its targets")
	}
}

func TestPercentileNearestRank(t *testing.T) {
	var lat []time.Duration
	for i := 100; i >= 1; i-- {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	r := &Result{Latencies: lat}
	for p, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 90: 90 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond} {
		if got := r.Percentile(p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	one := &Result{Latencies: []time.Duration{7}}
	if one.Percentile(50) != 7 || one.Percentile(99) != 7 {
		t.Error("one sample is every percentile")
	}
	if (&Result{}).Percentile(50) != 0 || (&Result{}).Mean() != 0 || (&Result{}).Throughput() != 0 {
		t.Error("no samples gives zeros")
	}
}

func TestTableAndChart(t *testing.T) {
	mk := func(v Variant, ms ...int) *Result {
		r := &Result{Variant: v, Concurrency: 2, Wall: time.Second}
		for _, m := range ms {
			r.Latencies = append(r.Latencies, time.Duration(m)*time.Millisecond)
		}
		return r
	}
	results := []*Result{
		mk(Variant{"docker", Cold, Fnrun}, 220, 230, 240),
		mk(Variant{"docker", Cold, Bare}, 200, 210, 220),
		mk(Variant{"docker", Cold, Minimal}, 180, 200, 220),
		mk(Variant{"docker", Warm, Fnrun}, 2, 3, 4),
	}
	results[0].Note = "pool misses 0"
	var buf bytes.Buffer
	if err := WriteTable(&buf, results); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("want a header and 4 rows:\n%s", buf.String())
	}
	// Columns line up: P50 ends at the same place on every line.
	end := strings.Index(lines[0], "P50") + len("P50")
	for _, l := range lines[1:] {
		if l[end-1] != 's' { // "...ms"
			t.Errorf("P50 column misaligned in %q", l)
		}
	}
	if !strings.Contains(lines[1], "1.10x    1.15x") || !strings.Contains(lines[1], "pool misses 0") {
		t.Errorf("want the ratios to bare (230/210) and minimal (230/200) and the note:\n%s", buf.String())
	}
	if strings.HasSuffix(lines[0], " ") {
		t.Error("trailing blanks")
	}
	png := filepath.Join(t.TempDir(), "chart.png")
	if err := WriteChart(png, "test", results); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(png)
	if err != nil || !bytes.HasPrefix(data, []byte("\x89PNG")) {
		t.Fatalf("not a PNG: %v", err)
	}
}
