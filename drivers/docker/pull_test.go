package docker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/test"
)

// registryProxy sits in front of the test registry on its own loopback
// port (the daemon trusts plain HTTP on 127.0.0.0/8). It counts manifest
// requests, one or two per daemon pull, and can fail or delay them.
type registryProxy struct {
	srv       *httptest.Server
	manifests atomic.Int64
	// failNext is the number of pull attempts still to fail with a 500. A
	// daemon pull asks for the manifest with HEAD and falls back to GET when
	// HEAD fails, so both fail and the GET ends the attempt.
	failNext atomic.Int64
	delay    atomic.Int64 // nanoseconds to hold each manifest request
	// stallNext is the number of manifest requests still to hold until
	// their client gives up (or the test ends): a registry that stalls.
	stallNext atomic.Int64
	quit      chan struct{} // closed when the test ends, releasing stalls
}

func newRegistryProxy(t *testing.T, e testEnv) *registryProxy {
	t.Helper()
	target, err := url.Parse("http://" + e.registry)
	if err != nil {
		t.Fatal(err)
	}
	p := &registryProxy{quit: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(target)
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/") {
			p.manifests.Add(1)
			if n := p.stallNext.Load(); n > 0 && p.stallNext.CompareAndSwap(n, n-1) {
				select {
				case <-r.Context().Done():
				case <-p.quit:
				}
				return
			}
			if d := time.Duration(p.delay.Load()); d > 0 {
				time.Sleep(d)
			}
			failing := p.failNext.Load() > 0
			if failing && r.Method == http.MethodGet {
				p.failNext.Add(-1)
			}
			if failing {
				http.Error(w, `{"errors":[{"code":"UNAVAILABLE","message":"scripted failure"}]}`, http.StatusInternalServerError)
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.srv.Listener = ln
	p.srv.Start()
	t.Cleanup(p.srv.Close)
	t.Cleanup(func() { close(p.quit) }) // first: Close waits for the handlers
	return p
}

// image is the test image as served through the proxy, removed from the
// daemon so that it must be pulled.
func (p *registryProxy) image(t *testing.T, e testEnv) string {
	t.Helper()
	_, repo, tag := drivers.ParseImage(e.image)
	ref := p.srv.Listener.Addr().String() + "/" + repo + ":" + tag
	bare := e.bare(t)
	if err := removeImage(bare, ref); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = removeImage(bare, ref) })
	return ref
}

func (p *registryProxy) reset() { p.manifests.Store(0) }

func pullWith(ctx context.Context, d *Driver, task *drivers.Task) error {
	c, err := d.CreateCookie(ctx, task)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	return c.PullImage(ctx)
}

// TestPullDedupe: N cookies pulling one image at once cause one daemon
// pull, counted at the registry.
func TestPullDedupe(t *testing.T) {
	e := needEnv(t)
	p := newRegistryProxy(t, e)
	ref := p.image(t, e)
	d := newDriver(t, drivers.Config{})
	ctx := testCtx(t, 2*time.Minute)
	bare := e.bare(t)

	// One pull alone: how many manifest requests a daemon pull makes.
	if err := pullWith(ctx, d, &drivers.Task{ID: "fnrun-dedupe-single", ImageRef: ref}); err != nil {
		t.Fatal(err)
	}
	perPull := p.manifests.Load()
	if perPull == 0 {
		t.Fatal("the pull did not go through the proxy")
	}
	if err := removeImage(bare, ref); err != nil {
		t.Fatal(err)
	}

	p.reset()
	p.delay.Store(int64(500 * time.Millisecond)) // keep the flight open while all join
	const n = 8
	var wg, validated sync.WaitGroup
	pull := make(chan struct{}) // closed once every cookie has validated
	errs := make(chan error, n)
	validated.Add(n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			task := &drivers.Task{ID: fmt.Sprintf("fnrun-dedupe-%d", i), ImageRef: ref}
			c, err := d.CreateCookie(ctx, task)
			if err != nil {
				validated.Done()
				errs <- err
				return
			}
			defer c.Close(context.Background())
			need, err := c.ValidateImage(ctx)
			validated.Done()
			if err != nil || !need {
				errs <- fmt.Errorf("cookie %d: ValidateImage = %v, %v before the pull", i, need, err)
				return
			}
			// All pull at once: a loaded host's inspects must not spread
			// the joins over more than the flight's delay.
			<-pull
			if err := c.PullImage(ctx); err != nil {
				errs <- fmt.Errorf("cookie %d: %w", i, err)
				return
			}
			if need, err := c.ValidateImage(ctx); err != nil || need {
				errs <- fmt.Errorf("cookie %d: ValidateImage = %v, %v after the pull", i, need, err)
			}
		}(i)
	}
	validated.Wait()
	close(pull)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := p.manifests.Load(); got != perPull {
		t.Fatalf("%d concurrent pulls made %d manifest requests, want %d (one daemon pull)", n, got, perPull)
	}
}

// TestPullCallerContext: a caller giving up returns at once with its
// context's error, without failing the pull the others wait for.
func TestPullCallerContext(t *testing.T) {
	e := needEnv(t)
	p := newRegistryProxy(t, e)
	ref := p.image(t, e)
	d := newDriver(t, drivers.Config{})
	p.delay.Store(int64(2 * time.Second))

	patient := make(chan error, 1)
	go func() {
		patient <- pullWith(testCtx(t, time.Minute), d, &drivers.Task{ID: "fnrun-patient", ImageRef: ref})
	}()
	time.Sleep(100 * time.Millisecond) // let the patient caller start the flight

	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := pullWith(short, d, &drivers.Task{ID: "fnrun-impatient", ImageRef: ref})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("impatient caller: %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("impatient caller waited %v past its 300ms deadline", took)
	}
	if err := <-patient; err != nil {
		t.Fatalf("patient caller: %v", err)
	}
}

// TestPullRetry: a registry failing twice then answering is retried with
// the backoff policy; without a policy, or when the checker says no, the
// first failure is final.
func TestPullRetry(t *testing.T) {
	e := needEnv(t)
	p := newRegistryProxy(t, e)
	ref := p.image(t, e)
	d := newDriver(t, drivers.Config{})
	ctx := testCtx(t, 2*time.Minute)

	p.failNext.Store(1)
	if err := pullWith(ctx, d, &drivers.Task{ID: "fnrun-noretry", ImageRef: ref}); err == nil {
		t.Fatal("a failing pull succeeded without a retry policy")
	} else if errors.Is(err, drivers.ErrImageNotFound) || errors.Is(err, drivers.ErrUnauthorized) {
		t.Fatalf("a registry 500 was classed as %v", err)
	}

	var checked atomic.Int64
	checker := func(err error) (bool, string) {
		checked.Add(1)
		if errors.Is(err, drivers.ErrImageNotFound) || errors.Is(err, drivers.ErrUnauthorized) {
			return false, "final"
		}
		return true, "registry error"
	}
	policy := drivers.BackOffConfig{MaxRetries: 4, Interval: 50, MinDelay: 20, MaxDelay: 400}
	if err := d.SetPullImageRetryPolicy(policy, checker); err != nil {
		t.Fatal(err)
	}
	p.reset()
	p.failNext.Store(2)
	start := time.Now()
	if err := pullWith(ctx, d, &drivers.Task{ID: "fnrun-retry", ImageRef: ref}); err != nil {
		t.Fatalf("pull with retries: %v", err)
	}
	if checked.Load() != 2 {
		t.Errorf("checker consulted %d times, want 2 (two failures)", checked.Load())
	}
	if took := time.Since(start); took < 2*20*time.Millisecond {
		t.Errorf("two retries took %v: no backoff between them", took)
	}
	if p.failNext.Load() != 0 {
		t.Errorf("%d scripted failures were not consumed", p.failNext.Load())
	}

	if err := removeImage(e.bare(t), ref); err != nil {
		t.Fatal(err)
	}
	if err := d.SetPullImageRetryPolicy(policy, func(error) (bool, string) { return false, "never" }); err != nil {
		t.Fatal(err)
	}
	p.failNext.Store(1)
	if err := pullWith(ctx, d, &drivers.Task{ID: "fnrun-checker-no", ImageRef: ref}); err == nil {
		t.Fatal("pull succeeded although the checker refused a retry")
	}

	if err := d.SetPullImageRetryPolicy(drivers.BackOffConfig{MaxRetries: 1}, nil); !errors.Is(err, drivers.ErrInvalidConfig) {
		t.Fatalf("an unusable policy was accepted: %v", err)
	}
}

// TestPullTimeoutPerAttempt: the pull timeout (the life cycle's, as
// drivers.WithPullTimeout sets it) bounds each attempt, not the shared
// pull: an attempt the registry stalls fails after the timeout with
// ErrDaemonUnavailable and no context error (the caller's context is
// live), so that a retry policy may try again; with one, the next attempt,
// which the registry serves, succeeds although the whole pull took longer
// than the timeout.
func TestPullTimeoutPerAttempt(t *testing.T) {
	e := needEnv(t)
	p := newRegistryProxy(t, e)
	ref := p.image(t, e)
	const timeout = time.Second
	d := newDriver(t, drivers.Config{}, drivers.WithPullTimeout(timeout))
	ctx := testCtx(t, 2*time.Minute)

	// Without retries: the stalled attempt is the pull.
	p.stallNext.Store(1)
	start := time.Now()
	err := pullWith(ctx, d, &drivers.Task{ID: "fnrun-stalled-" + randomID(), ImageRef: ref})
	took := time.Since(start)
	if !errors.Is(err, drivers.ErrDaemonUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("stalled pull: %v, want ErrDaemonUnavailable and no context error", err)
	}
	if took < timeout || took > timeout+10*time.Second {
		t.Errorf("stalled pull failed after %v, want about the %v pull timeout", took, timeout)
	}
	if p.stallNext.Load() != 0 {
		t.Fatal("the registry was not asked: the check proves nothing")
	}

	// With retries: one stalled attempt, then one served.
	checker := func(err error) (bool, string) { return !errors.Is(err, drivers.ErrImageNotFound), "transient" }
	if err := d.SetPullImageRetryPolicy(drivers.BackOffConfig{MaxRetries: 2, Interval: 10, MinDelay: 5, MaxDelay: 50}, checker); err != nil {
		t.Fatal(err)
	}
	p.reset()
	p.stallNext.Store(1)
	start = time.Now()
	if err := pullWith(ctx, d, &drivers.Task{ID: "fnrun-stalled-retry-" + randomID(), ImageRef: ref}); err != nil {
		t.Fatalf("pull with a retry after a stalled attempt: %v", err)
	}
	if took := time.Since(start); took < timeout {
		t.Errorf("pull took %v: the first attempt was not stalled, the check proves nothing", took)
	}
	if p.stallNext.Load() != 0 || p.manifests.Load() < 2 {
		t.Errorf("%d manifest requests (%d stalls left), want the stalled one and a served one", p.manifests.Load(), p.stallNext.Load())
	}
}

// TestPullAuth runs pulls against the htpasswd registry.
func TestPullAuth(t *testing.T) {
	e := needEnv(t)
	if e.authImage == "" || e.authPassword == "" {
		t.Skip("FNRUN_AUTH_TEST_IMAGE or FNRUN_AUTH_PASSWORD unset")
	}
	var logs test.LogCapture
	d := newDriver(t, drivers.Config{}, drivers.WithLogger(logs.Entry()))
	ctx := testCtx(t, 2*time.Minute)
	bare := e.bare(t)
	wrong := "wrong-" + randomID()
	t.Cleanup(func() { _ = removeImage(bare, e.authImage) })
	secretFree := func(what string, err error) {
		t.Helper()
		if err == nil {
			return
		}
		for _, secret := range []string{e.authPassword, wrong} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: the error %q holds a password", what, err)
			}
		}
	}
	pull := func(id string, creds *drivers.AuthConfig) error {
		if err := removeImage(bare, e.authImage); err != nil {
			t.Fatal(err)
		}
		return pullWith(ctx, d, &drivers.Task{ID: id, ImageRef: e.authImage, Credentials: creds})
	}

	err := pull("fnrun-auth-anon", nil)
	if !errors.Is(err, drivers.ErrUnauthorized) || errors.Is(err, drivers.ErrImageNotFound) {
		t.Errorf("anonymous pull: %v, want ErrUnauthorized only", err)
	}

	err = pull("fnrun-auth-wrong", &drivers.AuthConfig{Username: e.authUser, Password: wrong})
	if !errors.Is(err, drivers.ErrUnauthorized) || errors.Is(err, drivers.ErrImageNotFound) {
		t.Errorf("wrong password: %v, want ErrUnauthorized only", err)
	}
	secretFree("wrong password", err)

	// Credentials for another host are not sent, even to pull.
	err = pull("fnrun-auth-elsewhere", &drivers.AuthConfig{Username: e.authUser, Password: e.authPassword, ServerAddress: e.registry})
	if !errors.Is(err, drivers.ErrUnauthorized) {
		t.Errorf("credentials of %s used for %s: %v, want them withheld", e.registry, e.authRegistry, err)
	}
	secretFree("other host", err)

	if err := pull("fnrun-auth-right", &drivers.AuthConfig{Username: e.authUser, Password: e.authPassword}); err != nil {
		t.Errorf("right password: %v", err)
	}
	if err := pull("fnrun-auth-right-addr", &drivers.AuthConfig{Username: e.authUser, Password: e.authPassword, ServerAddress: "http://" + e.authRegistry + "/v2/"}); err != nil {
		t.Errorf("right password with a server address: %v", err)
	}

	// Wrong and right credentials at once are two pulls, not one shared.
	if err := removeImage(bare, e.authImage); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var errWrong, errRight error
	wg.Add(2)
	go func() {
		defer wg.Done()
		errWrong = pullWith(ctx, d, &drivers.Task{ID: "fnrun-auth-c1", ImageRef: e.authImage, Credentials: &drivers.AuthConfig{Username: e.authUser, Password: wrong}})
	}()
	go func() {
		defer wg.Done()
		errRight = pullWith(ctx, d, &drivers.Task{ID: "fnrun-auth-c2", ImageRef: e.authImage, Credentials: &drivers.AuthConfig{Username: e.authUser, Password: e.authPassword}})
	}()
	wg.Wait()
	if !errors.Is(errWrong, drivers.ErrUnauthorized) || errRight != nil {
		t.Errorf("concurrent wrong/right credentials: %v / %v", errWrong, errRight)
	}

	if e.dockerConfig != "" {
		fromFile := newDriver(t, drivers.Config{}, drivers.WithLogger(logs.Entry()), drivers.WithDockerConfig(e.dockerConfig))
		if err := removeImage(bare, e.authImage); err != nil {
			t.Fatal(err)
		}
		if err := pullWith(ctx, fromFile, &drivers.Task{ID: "fnrun-auth-file", ImageRef: e.authImage}); err != nil {
			t.Errorf("credentials from %s: %v", e.dockerConfig, err)
		}
	}

	for _, secret := range []string{e.authPassword, wrong} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("a password appears in the logs:\n%s", logs.String())
		}
	}
	if !strings.Contains(logs.String(), "another registry") {
		t.Errorf("withholding credentials for another host was not logged:\n%s", logs.String())
	}
}
