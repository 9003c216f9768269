package faults

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/test"
)

// registryWaiters is how many cookies pull the same image at once.
const registryWaiters = 4

// TestRegistryFaults pulls through a proxy in front of the shared registry
// that goes down, cuts the layer half-way or stalls in it, then recovers.
// The driver must retry as its policy says (the checker is called once per
// failed attempt), give every concurrent waiter of the shared pull the same
// result, report a failure without treating the half-pulled image as
// present, and pull normally once the registry is back.
func TestRegistryFaults(t *testing.T) {
	forEach(t, func(t *testing.T, tg *target) {
		upstream := tg.e.shared["FNRUN_REGISTRY"]
		policy := drivers.BackOffConfig{MaxRetries: 2, Interval: 200, MinDelay: 100, MaxDelay: 1000}
		// dockerd retries a failed layer download once, 5s later, whatever
		// --max-download-attempts says: one driver retry is enough there.
		short := drivers.BackOffConfig{MaxRetries: 1, Interval: 200, MinDelay: 100, MaxDelay: 1000}

		for _, sc := range []struct {
			name   string
			mode   int32
			policy drivers.BackOffConfig
			// pullTimeout is the driver's (docker: per attempt;
			// containerd: the whole shared pull, retries included).
			pullTimeout time.Duration
			// attempts is how many times the checker must be called;
			// -1 means "as the driver's timeout semantics allow" (logged).
			attempts int
			bound    time.Duration
		}{
			{name: "Down", mode: modeDown, policy: policy, attempts: int(policy.MaxRetries) + 1, bound: time.Minute},
			{name: "CutMidLayer", mode: modeCut, policy: short, attempts: int(short.MaxRetries) + 1, bound: time.Minute},
			{name: "StallMidLayer", mode: modeStall, policy: short, pullTimeout: 4 * time.Second, attempts: -1, bound: 2*4*time.Second + 10*time.Second},
		} {
			t.Run(sc.name, func(t *testing.T) {
				proxy := newRegProxy(t, upstream)
				ref := proxy.ref(pushUniqueImage(t, upstream, tg.e.shared["FNRUN_IMAGE_TAR"]))
				t.Cleanup(func() { _ = tg.removeImage(context.Background(), ref) })
				tag := "faults-reg-" + randomID()
				drv := tg.mustDriver(t, driverOpts{tag: tag, pullTimeout: sc.pullTimeout})
				var checks atomic.Int64
				var checked []string
				var mu sync.Mutex
				if err := drv.SetPullImageRetryPolicy(sc.policy, func(err error) (bool, string) {
					checks.Add(1)
					mu.Lock()
					checked = append(checked, classOf(err))
					mu.Unlock()
					return true, "fault test"
				}); err != nil {
					t.Fatal(err)
				}
				proxy.setMode(sc.mode)
				// All waiters join the first attempt: it is held a moment.
				proxy.holdFirst.Store(int64(500 * time.Millisecond))

				errs, took := pullTogether(t, drv, tg, ref, registryWaiters, sc.bound)
				t.Logf("%d waiters, pull through a registry %s: %v; checker called %d times with %v; proxy saw %d requests, %d broken",
					registryWaiters, sc.name, took.Round(time.Millisecond), checks.Load(), checked, proxy.requests.Load(), proxy.faults.Load())
				for i, err := range errs {
					if err == nil {
						t.Errorf("waiter %d: pull through a broken registry succeeded", i)
						continue
					}
					if err.Error() != errs[0].Error() {
						t.Errorf("waiter %d got %v, waiter 0 %v: the waiters of one pull must share its result", i, err, errs[0])
					}
				}
				if errs[0] != nil {
					t.Logf("the error (%s): %v", classOf(errs[0]), errs[0])
				}
				if sc.mode == modeStall {
					if !errors.Is(errs[0], context.DeadlineExceeded) && !errors.Is(errs[0], drivers.ErrDaemonUnavailable) {
						t.Errorf("a stalled pull ended with %v; want DeadlineExceeded or ErrDaemonUnavailable", errs[0])
					}
				} else if !errors.Is(errs[0], drivers.ErrRegistryUnavailable) {
					t.Errorf("a registry that is down or cuts connections gave %v (%s); want ErrRegistryUnavailable", errs[0], classOf(errs[0]))
				}
				if sc.attempts >= 0 && int(checks.Load()) != sc.attempts {
					t.Errorf("retry checker called %d times, want %d (one per failed attempt: 1 + MaxRetries %d, shared by the %d waiters)",
						checks.Load(), sc.attempts, sc.policy.MaxRetries, registryWaiters)
				}
				if proxy.faults.Load() == 0 {
					t.Errorf("the proxy broke no request: the fault was not exercised")
				}

				// Nothing half-pulled is treated as present.
				ctx := testCtx(t, 2*time.Minute)
				assertNeedsPull(t, ctx, drv, tg, ref)
				// Partial content of the failed pull (containerd ingests) goes
				// with its lease, once the garbage collector has run.
				if in := tg.pollIngests(t, 15*time.Second); len(in) > 0 {
					t.Errorf("content ingests left by the failed pull 15s later (partial data, no image record): %v", in)
				}
				if left := tg.pollLeftovers(t, tag, 10*time.Second); len(left) > 0 {
					t.Errorf("after the failed pull, left behind: %v", left)
				}

				// The registry recovers: the next pull works and runs.
				proxy.setMode(modePass)
				runPulled(t, ctx, drv, tg, ref)
				tg.waitNoLeftovers(t, tag, 10*time.Second)
			})
		}

		// The registry cuts one layer half-way and then behaves: the pull
		// completes (containerd resumes with a range request, dockerd
		// downloads again), possibly after a retry of the driver, and the
		// image is whole.
		t.Run("CutOnceThenRecovers", func(t *testing.T) {
			proxy := newRegProxy(t, upstream)
			ref := proxy.ref(pushUniqueImage(t, upstream, tg.e.shared["FNRUN_IMAGE_TAR"]))
			t.Cleanup(func() { _ = tg.removeImage(context.Background(), ref) })
			tag := "faults-reg-" + randomID()
			drv := tg.mustDriver(t, driverOpts{tag: tag})
			var checks atomic.Int64
			if err := drv.SetPullImageRetryPolicy(policy, func(error) (bool, string) { checks.Add(1); return true, "fault test" }); err != nil {
				t.Fatal(err)
			}
			proxy.setMode(modeCutOnce)
			proxy.holdFirst.Store(int64(500 * time.Millisecond))
			errs, took := pullTogether(t, drv, tg, ref, registryWaiters, time.Minute)
			t.Logf("one layer cut half-way: %d waiters done in %v, checker called %d times, proxy saw %d requests, %d broken",
				registryWaiters, took.Round(time.Millisecond), checks.Load(), proxy.requests.Load(), proxy.faults.Load())
			for i, err := range errs {
				if err != nil {
					t.Errorf("waiter %d: %v", i, err)
				}
			}
			if proxy.faults.Load() != 1 {
				t.Errorf("the proxy cut %d responses, want 1", proxy.faults.Load())
			}
			ctx := testCtx(t, 2*time.Minute)
			runPulled(t, ctx, drv, tg, ref)
			tg.waitNoLeftovers(t, tag, 10*time.Second)
		})

		t.Run("RecoversWithinPolicy", func(t *testing.T) {
			proxy := newRegProxy(t, upstream)
			ref := proxy.ref(pushUniqueImage(t, upstream, tg.e.shared["FNRUN_IMAGE_TAR"]))
			t.Cleanup(func() { _ = tg.removeImage(context.Background(), ref) })
			tag := "faults-reg-" + randomID()
			drv := tg.mustDriver(t, driverOpts{tag: tag})
			var checks atomic.Int64
			if err := drv.SetPullImageRetryPolicy(policy, func(error) (bool, string) {
				if checks.Add(1) == 1 {
					proxy.setMode(modePass) // the registry is back for the retry
				}
				return true, "fault test"
			}); err != nil {
				t.Fatal(err)
			}
			proxy.setMode(modeDown)
			proxy.holdFirst.Store(int64(500 * time.Millisecond))
			errs, took := pullTogether(t, drv, tg, ref, registryWaiters, time.Minute)
			t.Logf("registry down for the first attempt only: %d waiters done in %v, checker called %d times", registryWaiters, took.Round(time.Millisecond), checks.Load())
			for i, err := range errs {
				if err != nil {
					t.Errorf("waiter %d: %v; the retry should have succeeded", i, err)
				}
			}
			if checks.Load() != 1 {
				t.Errorf("checker called %d times, want 1", checks.Load())
			}
			ctx := testCtx(t, 2*time.Minute)
			runPulled(t, ctx, drv, tg, ref)
			tg.waitNoLeftovers(t, tag, 10*time.Second)
		})
	})
}

// pullTogether makes n cookies of ref pull at once and returns their
// errors, failing the test if they do not all return within bound.
func pullTogether(t *testing.T, drv drivers.Driver, tg *target, ref string, n int, bound time.Duration) ([]error, time.Duration) {
	t.Helper()
	ctx := testCtx(t, bound+time.Minute)
	errs := make([]error, n)
	cookies := make([]drivers.Cookie, n)
	for i := range cookies {
		task := tg.task("reg-waiter", "true")
		task.ImageRef = ref
		c, err := drv.CreateCookie(ctx, task)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		cookies[i] = c
	}
	var wg sync.WaitGroup
	took := within(t, fmt.Sprintf("%d concurrent pulls", n), bound, func() {
		for i, c := range cookies {
			wg.Add(1)
			go func(i int, c drivers.Cookie) {
				defer wg.Done()
				errs[i] = c.PullImage(ctx)
			}(i, c)
		}
		wg.Wait()
	})
	return errs, took
}

// assertNeedsPull checks that a fresh cookie of ref still asks for a pull.
func assertNeedsPull(t *testing.T, ctx context.Context, drv drivers.Driver, tg *target, ref string) {
	t.Helper()
	task := tg.task("reg-validate", "true")
	task.ImageRef = ref
	c, err := drv.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	need, err := c.ValidateImage(ctx)
	if err != nil || !need {
		t.Errorf("ValidateImage after a failed pull = %v, %v; want true, nil (a half-pulled image is not present)", need, err)
	}
	if has, err := tg.hasImage(ctx, ref); err != nil || has {
		t.Errorf("the daemon's store has %s after a failed pull (%v, %v)", ref, has, err)
	}
	if err := c.CreateContainer(ctx); !errors.Is(err, drivers.ErrImageNotFound) {
		t.Errorf("CreateContainer of a half-pulled image: %v; want ErrImageNotFound", err)
	}
}

// runPulled pulls ref with a new cookie and runs it.
func runPulled(t *testing.T, ctx context.Context, drv drivers.Driver, tg *target, ref string) {
	t.Helper()
	task := tg.task("reg-run", "echo pulled")
	task.ImageRef = ref
	var out test.Outcome
	var err error
	took := timed(func() { out, err = test.Lifecycle(ctx, drv, task) })
	if err != nil {
		t.Fatalf("pull and run after the registry recovered: %v", err)
	}
	wantSuccess(t, out)
	if out.Stdout != "pulled\n" {
		t.Errorf("stdout %q", out.Stdout)
	}
	t.Logf("after recovery: pulled and ran %s in %v", ref, took.Round(time.Millisecond))
}
