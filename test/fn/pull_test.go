package fn

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
)

// concurrentPulls validates n cookies of ref on drv, which must each ask
// for a pull, then pulls with all of them at once and returns their
// errors. The cookies are closed when the test ends.
func concurrentPulls(t *testing.T, ctx context.Context, r *rig, drv drivers.Driver, n int, refs ...string) []error {
	t.Helper()
	var cookies []drivers.Cookie
	for i := range n {
		for _, ref := range refs {
			cookie := newCookie(t, ctx, drv, r.imageTask(fmt.Sprint("pull", i), ref))
			t.Cleanup(func() { _ = cookie.Close(context.Background()) })
			if pull, err := cookie.ValidateImage(ctx); err != nil || !pull {
				t.Fatalf("ValidateImage of %s: pull %v, %v; want a pull asked for", ref, pull, err)
			}
			cookies = append(cookies, cookie)
		}
	}
	errs := make([]error, len(cookies))
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i, c := range cookies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			errs[i] = c.PullImage(ctx)
		}()
	}
	close(gate)
	wg.Wait()
	return errs
}

// Fn's TestImagePullConcurrent1: concurrent pulls of one image share one
// pull, and pulls of another tag of it one of their own. The registry is
// behind a proxy that counts the requests for each tag's manifest, one per
// pull, and answers slowly so that every caller joins the pull under way.
func TestPullsShared(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, r *rig) {
		p := newProxyRegistry(t, r.env["FNRUN_REGISTRY"])
		p.set(time.Second, 0)
		one, two := p.ref("one"), p.ref("two")
		t.Cleanup(func() { r.removeImage(one); r.removeImage(two) })
		drv := r.open(t, drivers.Config{})
		ctx := testContext(t, 2*time.Minute)
		for i, err := range concurrentPulls(t, ctx, r, drv, 10, one, two) {
			if err != nil {
				t.Errorf("pull %d: %v", i, err)
			}
		}
		if a, b := p.count("one"), p.count("two"); a != 1 || b != 1 {
			t.Errorf("manifest requests: %d for one tag, %d for the other; want one pull each", a, b)
		}
		for _, ref := range []string{one, two} {
			wantSuccess(t, run(t, ctx, drv, r.imageTask("pulled", ref)))
		}
	})
}

// soloPull makes one pull attempt of a tag of p's that fails, with no
// retry policy, and returns how many requests for its manifest the
// runtime sent: the measure of one attempt (Docker's daemon sends more
// than one when the registry fails).
func soloPull(t *testing.T, ctx context.Context, r *rig, drv drivers.Driver, p *proxyRegistry) int {
	t.Helper()
	var policy drivers.BackOffConfig
	if err := drv.SetPullImageRetryPolicy(policy, nil); err != nil {
		t.Fatal(err)
	}
	for _, err := range concurrentPulls(t, ctx, r, drv, 1, p.ref("solo")) {
		if !errors.Is(err, drivers.ErrRegistryUnavailable) {
			t.Fatalf("lone pull: %v, want ErrRegistryUnavailable", err)
		}
	}
	n := p.count("solo")
	if n < 1 {
		t.Fatal("a pull sent no request for its manifest")
	}
	return n
}

// Fn's TestImagePullConcurrent2: concurrent pulls that fail fail
// together, after one attempt without a retry policy.
func TestPullsFailTogether(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, r *rig) {
		p := newProxyRegistry(t, r.env["FNRUN_REGISTRY"])
		// Long enough for all ten callers to join the one pull in flight.
		p.set(2*time.Second, http.StatusServiceUnavailable)
		drv := r.open(t, drivers.Config{})
		ctx := testContext(t, 2*time.Minute)
		perPull := soloPull(t, ctx, r, drv, p)
		errs := concurrentPulls(t, ctx, r, drv, 10, p.ref("down"))
		for i, err := range errs {
			if !errors.Is(err, drivers.ErrRegistryUnavailable) {
				t.Errorf("pull %d: %v, want ErrRegistryUnavailable", i, err)
			}
		}
		if n := p.count("down"); n != perPull {
			t.Errorf("%d manifest requests, want the %d of the one pull every caller waited for", n, perPull)
		}
	})
}

// Fn's TestImagePullConcurrent3: with a retry policy and a checker that
// says the error is worth a retry (SetPullImageRetryPolicy), the shared
// pull is tried again, MaxRetries times, and its callers all get its last
// error: more than one attempt, far fewer than one per caller.
func TestPullsRetried(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, r *rig) {
		p := newProxyRegistry(t, r.env["FNRUN_REGISTRY"])
		p.set(100*time.Millisecond, http.StatusServiceUnavailable)
		ref := p.ref("flaky")
		drv := r.open(t, drivers.Config{})
		ctx := testContext(t, 2*time.Minute)
		perPull := soloPull(t, ctx, r, drv, p)
		var checks atomic.Int32
		policy := drivers.BackOffConfig{MaxRetries: 2, Interval: 100, MinDelay: 100, MaxDelay: 500}
		if err := drv.SetPullImageRetryPolicy(policy, func(err error) (bool, string) {
			checks.Add(1)
			return errors.Is(err, drivers.ErrRegistryUnavailable), "registry unavailable"
		}); err != nil {
			t.Fatal(err)
		}
		for i, err := range concurrentPulls(t, ctx, r, drv, 10, ref) {
			if !errors.Is(err, drivers.ErrRegistryUnavailable) {
				t.Errorf("pull %d: %v, want ErrRegistryUnavailable", i, err)
			}
		}
		if n := checks.Load(); n != 3 {
			t.Errorf("checker asked %d times, want once per attempt: 1 + MaxRetries = 3", n)
		}
		if n := p.count("flaky"); n != 3*perPull {
			t.Errorf("%d manifest requests, want %d: those of one attempt (%d) for each of the 3 attempts of the shared pull", n, 3*perPull, perPull)
		}
		// Once the registry is back, the next pull succeeds.
		p.set(0, 0)
		t.Cleanup(func() { r.removeImage(ref) })
		wantSuccess(t, run(t, ctx, drv, r.imageTask("back", ref)))
	})
}
