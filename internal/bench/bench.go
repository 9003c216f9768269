// Package bench measures the latency of function calls through fnrun's
// drivers next to the bare runtime clients doing the same steps, for
// `fnrun bench`.
//
// Three modes are measured for each driver, each against a bare-client
// twin in the same run:
//
//   - cold: one new container per call, running `true`: validate the image,
//     create the container, start it, wait for its exit, remove it. The
//     container gets a network of its own: Docker's default bridge; under
//     containerd a new network namespace, pinned and set up with CNI when
//     the driver has a CNI configuration, and then so does the bare twin,
//     with the same configuration.
//   - pooled: the same, but the container joins the network namespace of a
//     running holder container, so no network is built per call: fnrun's
//     pre-fork pool on the fnrun side, holders that this package starts on
//     the bare side, one per concurrent worker.
//   - warm: a hot container serves the call. Each worker owns one
//     long-lived container running a shell loop that echoes every line of
//     its stdin back on stdout, kept frozen between calls. A call unfreezes
//     it, writes one line to its stdin, reads the reply from its stdout and
//     freezes it again. No container is created per call; the figure is
//     the cost of thawing, a round trip through the container's streams
//     and freezing.
//
// The bare twins use go-dockerclient and the containerd client directly,
// with the container options (Docker) or OCI spec (containerd) that the
// fnrun driver itself generated, so both sides ask the daemon for the same
// container and the difference is the driver's own cost.
//
// What is set up before the timed calls (pool holders, hot containers and
// their networks) is not timed, on either side.
//
// Compare runs the targets of one driver and mode side by side. The host's
// load drifts over seconds, so the calls are split in rounds and the order
// of the targets alternates from round to round: both sides see the same
// conditions. A few failed calls (dockerd 20.10 can report a container
// "already paused" right after unpausing it, under load) are counted and
// reported; more end the comparison.
package bench

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Modes and clients of a variant.
const (
	Cold   = "cold"
	Pooled = "pooled"
	Warm   = "warm"

	Fnrun = "fnrun"
	Bare  = "bare"
	// Minimal is a bare client asking for the least: containerd's default
	// spec, none of the driver's extras (see Containerd.MinimalSpec).
	Minimal = "minimal"
)

// Variant names what is measured.
type Variant struct {
	Driver string // docker, containerd, mock
	Mode   string // Cold, Pooled or Warm
	Client string // Fnrun, Bare, Minimal or Runc
}

func (v Variant) String() string { return v.Driver + " " + v.Mode + " " + v.Client }

// Target makes calls of one variant.
type Target interface {
	Variant() Variant
	// Prepare sets up, untimed, what calls from workers concurrent workers
	// need: holders, hot containers, a warm pool.
	Prepare(ctx context.Context, workers int) error
	// Call makes one call from worker (0 <= worker < workers). Calls of
	// one worker never overlap.
	Call(ctx context.Context, worker int) error
	// Close removes everything the target created. It is called once,
	// even when Prepare failed.
	Close(ctx context.Context) error
}

// Repairer is an optional interface of a Target whose worker may be left
// in a bad state by a failed call: Repair, untimed, brings the worker back
// to the state a call starts from (a warm container frozen again).
type Repairer interface {
	Repair(ctx context.Context, worker int)
}

// Noter is an optional interface of a Target with something to say about
// its run, such as the pool's misses.
type Noter interface {
	Note() string
}

// Result is the measure of one variant.
type Result struct {
	Variant
	// Latencies of the timed calls, in the order they ended.
	Latencies []time.Duration
	// ToResult are the times from the start of each call to its result
	// (Wait returned), before the clean-up that Latencies include; the
	// same as Latencies for a target that does not say.
	ToResult []time.Duration
	// Wall is the time the timed calls took from the first start to the
	// last end, summed over the rounds.
	Wall time.Duration
	// Concurrency is the number of workers.
	Concurrency int
	// Note is what the target had to say (Noter), or empty.
	Note string
	// Errors counts the timed calls that failed (they have no latency),
	// and FirstError is the first of them. A few failures (a daemon race)
	// are reported; more than Options.MaxErrors end the comparison.
	Errors     int
	FirstError error
}

// Percentile returns the p-th percentile (0 < p <= 100) of the latencies,
// by the nearest-rank method, or 0 when there are none.
func (r *Result) Percentile(p float64) time.Duration {
	return percentile(r.Latencies, p)
}

func percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), lat...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(float64(len(s))*p/100+0.999999) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(s) {
		rank = len(s) - 1
	}
	return s[rank]
}

// ResultPercentile is Percentile of the times to the result.
func (r *Result) ResultPercentile(p float64) time.Duration {
	return percentile(r.ToResult, p)
}

// Mean returns the mean latency.
func (r *Result) Mean() time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	var sum time.Duration
	for _, l := range r.Latencies {
		sum += l
	}
	return sum / time.Duration(len(r.Latencies))
}

// Throughput returns the calls per second at the run's concurrency.
func (r *Result) Throughput() float64 {
	if r.Wall <= 0 {
		return 0
	}
	return float64(len(r.Latencies)) / r.Wall.Seconds()
}

// Options says how much to measure.
type Options struct {
	// N is the number of timed calls of each target.
	N int
	// Concurrency is the number of workers calling at once.
	Concurrency int
	// Rounds splits the N calls; the order of the targets alternates from
	// one round to the next. Zero means 1.
	Rounds int
	// Warmup is the number of untimed calls of each target before the
	// timed ones (first connections, page cache, a pull).
	Warmup int
	// Progress, when set, is told of every call that ends.
	Progress func(v Variant, done, total int)
	// MaxErrors is how many failed calls a target may have before the
	// comparison ends with an error; failed calls are counted in
	// Result.Errors. Zero means N/10.
	MaxErrors int
}

// Compare prepares the targets, warms them up and measures them side by
// side, returning one result per target in the order given. Every target
// is closed before Compare returns, with a context of its own so that a
// cancelled ctx still cleans up. A failed call ends the comparison with
// its error.
func Compare(ctx context.Context, targets []Target, opt Options) (results []*Result, err error) {
	if opt.N <= 0 || opt.Concurrency <= 0 {
		return nil, errors.New("bench: N and Concurrency must be positive")
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		for _, t := range targets {
			if cerr := t.Close(cctx); cerr != nil && err == nil {
				err = fmt.Errorf("%s: clean-up: %w", t.Variant(), cerr)
			}
		}
	}()
	for _, t := range targets {
		if err := t.Prepare(ctx, opt.Concurrency); err != nil {
			return nil, fmt.Errorf("%s: prepare: %w", t.Variant(), err)
		}
	}
	for _, t := range targets {
		for i := 0; i < opt.Warmup; i++ {
			err := t.Call(ctx, i%opt.Concurrency)
			if err != nil && ctx.Err() == nil {
				err = t.Call(ctx, i%opt.Concurrency) // once more: a passing daemon hiccup
			}
			if err != nil {
				return nil, fmt.Errorf("%s: warm-up call: %w", t.Variant(), err)
			}
		}
	}
	maxErrors := opt.MaxErrors
	if maxErrors <= 0 {
		maxErrors = opt.N / 10
	}
	rounds := opt.Rounds
	if rounds <= 0 {
		rounds = 1
	}
	if rounds > opt.N {
		rounds = opt.N
	}
	results = make([]*Result, len(targets))
	for i, t := range targets {
		results[i] = &Result{Variant: t.Variant(), Concurrency: opt.Concurrency}
	}
	done := make([]int, len(targets))
	for r := 0; r < rounds; r++ {
		n := opt.N / rounds
		if r < opt.N%rounds {
			n++
		}
		for k := range targets {
			i := k
			if r%2 == 1 {
				i = len(targets) - 1 - k
			}
			t := targets[i]
			progress := func() {}
			if opt.Progress != nil {
				var mu sync.Mutex
				progress = func() {
					mu.Lock()
					done[i]++
					opt.Progress(t.Variant(), done[i], opt.N)
					mu.Unlock()
				}
			}
			res := results[i]
			lat, toRes, wall, err := measure(ctx, t, n, opt.Concurrency, progress, func(err error) bool {
				res.Errors++
				if res.FirstError == nil {
					res.FirstError = err
				}
				return res.Errors <= maxErrors
			})
			if err != nil {
				return nil, fmt.Errorf("%s: %w", t.Variant(), err)
			}
			res.Latencies = append(res.Latencies, lat...)
			res.ToResult = append(res.ToResult, toRes...)
			res.Wall += wall
		}
	}
	for i, t := range targets {
		if n, ok := t.(Noter); ok {
			results[i].Note = n.Note()
		}
	}
	return results, nil
}

// measure makes n calls of t from workers concurrent workers. A failed
// call is handed to failed, which says whether to go on (the call then
// counts as made, without a latency).
func measure(ctx context.Context, t Target, n, workers int, progress func(), failed func(error) bool) (lat, toRes []time.Duration, _ time.Duration, _ error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if workers > n {
		workers = n
	}
	var (
		next int64
		mu   sync.Mutex
		wg   sync.WaitGroup
	)
	lat, toRes = make([]time.Duration, 0, n), make([]time.Duration, 0, n)
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for ctx.Err() == nil {
				if atomic.AddInt64(&next, 1) > int64(n) {
					return
				}
				mark := &resultMark{}
				s := time.Now()
				err := t.Call(context.WithValue(ctx, resultMarkKey{}, mark), w)
				d := time.Since(s)
				r := d
				if !mark.at.IsZero() {
					r = mark.at.Sub(s)
				}
				mu.Lock()
				goOn := true
				switch {
				case err != nil && ctx.Err() != nil:
					goOn = false // cancelled: the cause says why
				case err != nil:
					goOn = failed(err)
					if !goOn {
						cancel(fmt.Errorf("too many failed calls, the last: %w", err))
					}
				default:
					lat, toRes = append(lat, d), append(toRes, r)
				}
				mu.Unlock()
				if !goOn {
					return
				}
				if r, ok := t.(Repairer); ok && err != nil {
					r.Repair(ctx, w)
				}
				progress()
			}
		}(w)
	}
	wg.Wait()
	wall := time.Since(start)
	if err := context.Cause(ctx); err != nil {
		return nil, nil, 0, err
	}
	return lat, toRes, wall, nil
}
