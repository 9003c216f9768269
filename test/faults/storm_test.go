package faults

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/pool"
	"github.com/fnrun/fnrun/test"
)

// Steps of a cookie's life at which the storm cancels it, plus the ones
// that run to the end.
const (
	stepBeforeValidate = iota // cancelled before ValidateImage
	stepDuringPull            // cancelled while PullImage waits on the (slowed) registry
	stepDuringCreate          // cancelled while CreateContainer is under way
	stepAfterCreate           // cancelled between CreateContainer and Run
	stepDuringRun             // cancelled while the container runs
	stepWhileFrozen           // cancelled while the container is frozen
	stepTimeout               // a deadline ends the run
	stepSuccess               // not cancelled: must succeed
	numSteps
)

var stepNames = [numSteps]string{"before-validate", "during-pull", "during-create", "after-create", "during-run", "while-frozen", "timeout", "success"}

// stormConcurrency is how many cookies live at once.
const stormConcurrency = 8

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestCancellationStorm runs several hundred cookies per driver, each
// cancelled at a random step of its life (before validate, during a pull,
// during and after create, during a run, while frozen, by a deadline),
// mixed with cookies that succeed. Every step must give the contract's
// answer (a cancelled run is StatusCancelled wrapping context.Canceled...),
// every Close must succeed, and afterwards nothing of the driver's label
// tag may remain (containers, tasks, snapshots, leases), no image may stay
// marked busy, and no goroutine may outlive the closed driver.
func TestCancellationStorm(t *testing.T) {
	n := envInt("FNRUN_STORM_COOKIES", 300)
	nPool := envInt("FNRUN_STORM_POOL_COOKIES", 100)
	seed := int64(envInt("FNRUN_FAULTS_SEED", int(time.Now().UnixNano()%1e9)))
	t.Logf("storm: %d cookies per driver without a pool and %d with one, %d at once, seed %d (FNRUN_FAULTS_SEED)", n, nPool, stormConcurrency, seed)
	forEach(t, func(t *testing.T, tg *target) {
		t.Run("NoPool", func(t *testing.T) { storm(t, tg, n, 0, seed) })
		// With a pre-fork pool, the leases of holders must come back too.
		t.Run("Pool", func(t *testing.T) { storm(t, tg, nPool, 4, seed) })
	})
}

// storm runs n cookies through a new driver of tg (with a pre-fork pool
// of poolSize holders when positive), as TestCancellationStorm says.
func storm(t *testing.T, tg *target, n, poolSize int, seed int64) {
	proxy := newRegProxy(t, tg.e.shared["FNRUN_REGISTRY"])
	// Every pull reaches the registry and takes a while, so that a
	// cancel can land in the middle of one.
	proxy.latency.Store(int64(150 * time.Millisecond))
	ref := proxy.ref("fnrun/busybox:latest")
	t.Cleanup(func() { _ = tg.removeImage(context.Background(), ref) })

	ignore := goleak.IgnoreCurrent()
	tag := "faults-storm-" + randomID()
	drv, err := tg.build(driverOpts{tag: tag, stopGrace: 200 * time.Millisecond, pool: poolSize})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			_ = drv.Close()
		}
	}()

	rng := rand.New(rand.NewSource(seed))
	type plan struct {
		step  int
		delay time.Duration
	}
	plans := make([]plan, n)
	for i := range plans {
		plans[i] = plan{step: rng.Intn(numSteps), delay: time.Duration(rng.Intn(200)) * time.Millisecond}
	}

	var (
		mu       sync.Mutex
		counts   [numSteps]int
		outcomes = map[string]int{}
		bad      []string
		closeErr []string
	)
	note := func(i, step int, what string, ok bool, errs ...error) {
		mu.Lock()
		defer mu.Unlock()
		outcomes[stepNames[step]+": "+what]++
		if !ok {
			bad = append(bad, fmt.Sprintf("cookie %d (%s): %s %v", i, stepNames[step], what, errs))
		}
	}
	one := func(i int, p plan) {
		mu.Lock()
		counts[p.step]++
		mu.Unlock()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if p.step == stepTimeout {
			ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond+p.delay)
			defer cancel()
		}
		cmd := "sleep 10"
		if p.step == stepSuccess {
			cmd = "echo ok"
		}
		task := tg.task("storm-"+strconv.Itoa(i)+"-"+stepNames[p.step], cmd)
		task.ImageRef = ref
		var stdout test.SyncBuffer
		task.Stdout = &stdout
		c, err := drv.CreateCookie(ctx, task)
		if err != nil {
			note(i, p.step, "CreateCookie: "+classOf(err), false, err)
			return
		}
		defer func() {
			if err := c.Close(context.Background()); err != nil {
				mu.Lock()
				closeErr = append(closeErr, fmt.Sprintf("cookie %d (%s): %v", i, stepNames[p.step], err))
				mu.Unlock()
			}
		}()
		canceled := func(err error) bool { return errors.Is(err, context.Canceled) }
		later := func() { time.AfterFunc(p.delay, cancel) }

		if p.step == stepBeforeValidate {
			cancel()
			_, err := c.ValidateImage(ctx)
			note(i, p.step, "ValidateImage: "+classOf(err), canceled(err), err)
			return
		}
		need, err := c.ValidateImage(ctx)
		if err != nil {
			note(i, p.step, "ValidateImage: "+classOf(err), p.step == stepTimeout && errors.Is(err, context.DeadlineExceeded), err)
			return
		}
		if need || p.step == stepDuringPull {
			if p.step == stepDuringPull {
				later()
			}
			err := c.PullImage(ctx)
			switch {
			case p.step == stepDuringPull:
				note(i, p.step, "PullImage: "+classOf(err), err == nil || canceled(err), err)
				return
			case err != nil:
				note(i, p.step, "PullImage: "+classOf(err), p.step == stepTimeout && errors.Is(err, context.DeadlineExceeded), err)
				return
			}
		}
		if p.step == stepDuringCreate {
			time.AfterFunc(p.delay/8, cancel)
		}
		err = c.CreateContainer(ctx)
		switch {
		case p.step == stepDuringCreate:
			// Either the create won the race or it was cancelled; then
			// Run refuses the cancelled context, or, when the cancel came
			// while it started the container, the run ends cancelled.
			w, rerr := c.Run(ctx)
			outcome := "Run: " + classOf(rerr)
			ok := canceled(rerr)
			if rerr == nil {
				res := w.Wait(ctx)
				outcome = "Run: nil, Wait: " + res.Status()
				ok = res.Status() == drivers.StatusCancelled
			}
			note(i, p.step, "CreateContainer: "+classOf(err)+", then "+outcome, (err == nil || canceled(err)) && ok, err, rerr)
			return
		case err != nil:
			note(i, p.step, "CreateContainer: "+classOf(err), p.step == stepTimeout && errors.Is(err, context.DeadlineExceeded), err)
			return
		}
		if p.step == stepAfterCreate {
			cancel()
			_, err := c.Run(ctx)
			note(i, p.step, "Run: "+classOf(err), canceled(err), err)
			return
		}
		w, err := c.Run(ctx)
		if err != nil {
			note(i, p.step, "Run: "+classOf(err), p.step == stepTimeout && errors.Is(err, context.DeadlineExceeded), err)
			return
		}
		switch p.step {
		case stepDuringRun:
			later()
		case stepWhileFrozen:
			if err := c.Freeze(ctx); err != nil {
				note(i, p.step, "Freeze: "+classOf(err), false, err)
			}
			later()
		}
		res := w.Wait(ctx)
		what := "Wait: " + res.Status() + " " + classOf(res.Error())
		switch p.step {
		case stepSuccess:
			note(i, p.step, what, res.Status() == drivers.StatusSuccess && stdout.String() == "ok\n", res.Error())
		case stepTimeout:
			note(i, p.step, what, res.Status() == drivers.StatusTimeout && errors.Is(res.Error(), context.DeadlineExceeded), res.Error())
		default:
			note(i, p.step, what, res.Status() == drivers.StatusCancelled && canceled(res.Error()), res.Error())
		}
	}

	start := time.Now()
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < stormConcurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				one(i, plans[i])
			}
		}()
	}
	for i := range plans {
		work <- i
	}
	close(work)
	wg.Wait()
	took := time.Since(start)

	var lines []string
	for k, v := range outcomes {
		lines = append(lines, fmt.Sprintf("  %4d  %s", v, k))
	}
	sort.Strings(lines)
	var per []string
	for s, c := range counts {
		per = append(per, fmt.Sprintf("%s %d", stepNames[s], c))
	}
	t.Logf("%s: %d cookies in %v (%s); outcomes:\n%s", tg.name, n, took.Round(time.Millisecond), strings.Join(per, ", "), strings.Join(lines, "\n"))
	for i, b := range bad {
		if i == 10 {
			t.Errorf("... and %d more unexpected outcomes", len(bad)-10)
			break
		}
		t.Errorf("unexpected outcome: %s", b)
	}
	for i, e := range closeErr {
		if i == 10 {
			t.Errorf("... and %d more failed Close", len(closeErr)-10)
			break
		}
		t.Errorf("Close failed: %s", e)
	}

	// Every holder is back in the pool.
	if r, ok := drv.(pool.Reporter); ok {
		if st, ok := r.PoolStats(); ok {
			t.Logf("%s: pool after the storm: %+v", tg.name, st)
			if st.Leased != 0 {
				t.Errorf("%d holders still leased after every cookie closed", st.Leased)
			}
		}
	}

	// No image left marked busy, if the driver runs an image cleaner.
	if p, ok := drv.(images.Provider); ok {
		if cl, ok := p.ImageCleaner(); ok {
			snap := cl.Snapshot()
			for _, img := range snap.Images {
				if img.Uses != 0 {
					t.Errorf("image %v still marked busy (%d uses) after every cookie closed", img.References, img.Uses)
				}
			}
			if len(snap.Pending) > 0 {
				t.Errorf("references still held with no image: %v", snap.Pending)
			}
		}
	}

	closed = true
	if err := drv.Close(); err != nil {
		t.Errorf("driver Close: %v", err)
	}
	proxy.Close()
	left := tg.pollLeftovers(t, tag, 10*time.Second)
	t.Logf("%s: leftovers of the storm's label tag: %d %v", tg.name, len(left), left)
	if len(left) > 0 {
		t.Errorf("the storm left behind: %v", left)
	}
	if err := goleak.Find(leakOptions(ignore)...); err != nil {
		t.Errorf("goroutines outlived the closed driver: %v", err)
	}
}
