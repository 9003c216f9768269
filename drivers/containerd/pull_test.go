package containerd

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
)

// registryProxy is a reverse proxy on a loopback port in front of a test
// registry. It counts requests, can slow them down, fail the first ones,
// or demand basic auth itself and record what credentials arrive.
type registryProxy struct {
	host string // 127.0.0.1:port, plain HTTP like the registry

	delay        time.Duration
	failFirst    int32  // answer 503 to this many manifest requests
	requireBasic string // "user:password" the proxy demands, if set
	// stallFirst manifest requests are held for stall (or until the
	// client gives up) before they are served.
	stallFirst int32
	stall      time.Duration

	mu       sync.Mutex
	requests map[string]int // "METHOD path" -> count
	authSeen []string       // Authorization headers received
	failed   atomic.Int32
	stalled  atomic.Int32
}

func newRegistryProxy(t *testing.T, upstream string, configure func(*registryProxy)) *registryProxy {
	t.Helper()
	p := &registryProxy{requests: map[string]int{}}
	if configure != nil {
		configure(p)
	}
	target, err := url.Parse("http://" + upstream)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.host = l.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.requests[r.Method+" "+r.URL.Path]++
		if a := r.Header.Get("Authorization"); a != "" {
			p.authSeen = append(p.authSeen, a)
		}
		p.mu.Unlock()
		if p.delay > 0 {
			time.Sleep(p.delay)
		}
		if p.requireBasic != "" {
			user, pass, ok := r.BasicAuth()
			if !ok || user+":"+pass != p.requireBasic {
				w.Header().Set("WWW-Authenticate", `Basic realm="fnrun-test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			r.Header.Del("Authorization") // the registry behind needs none
		}
		if strings.Contains(r.URL.Path, "/manifests/") && p.stalled.Add(1) <= p.stallFirst {
			select {
			case <-time.After(p.stall):
			case <-r.Context().Done():
				return
			}
		}
		if strings.Contains(r.URL.Path, "/manifests/") && p.failed.Load() < p.failFirst {
			p.failed.Add(1)
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return p
}

func (p *registryProxy) count(substr string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for k, v := range p.requests {
		if strings.Contains(k, substr) {
			n += v
		}
	}
	return n
}

func (p *registryProxy) auths() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.authSeen...)
}

// removeImageAfter removes ref now and when the test ends.
func removeImageAfter(t *testing.T, d *Driver, ref string) {
	t.Helper()
	ctx := context.Background()
	if err := d.RemoveImage(ctx, ref); err != nil {
		t.Fatalf("RemoveImage: %v", err)
	}
	t.Cleanup(func() { _ = d.RemoveImage(context.Background(), ref) })
}

func pullTask(ref string, auth *drivers.AuthConfig) *drivers.Task {
	return &drivers.Task{ID: "fnrun-pull-" + randomID(), ImageRef: ref, Cmd: "true", Credentials: auth}
}

// TestPullDedupe starts concurrent pulls of one image through a slow
// counting proxy: one pull reaches the registry, every caller succeeds,
// and a caller whose context ends early gives up alone.
func TestPullDedupe(t *testing.T) {
	env := requireEnv(t)
	proxy := newRegistryProxy(t, env.registry, func(p *registryProxy) { p.delay = 150 * time.Millisecond })
	d := newTestDriver(t, env, drivers.Config{})
	ref := proxy.host + "/fnrun/busybox:latest"
	removeImageAfter(t, d, ref)

	const n = 8
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg, created sync.WaitGroup
	pull := make(chan struct{}) // closed once every cookie exists, so all pulls overlap
	errs := make([]error, n+1)
	created.Add(n + 1)
	for i := 0; i <= n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := d.CreateCookie(ctx, pullTask(ref, nil))
			created.Done()
			if err != nil {
				errs[i] = err
				return
			}
			defer c.Close(ctx)
			<-pull
			pctx := ctx
			if i == n { // an impatient caller
				var cancel context.CancelFunc
				pctx, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
				defer cancel()
			}
			errs[i] = c.PullImage(pctx)
		}(i)
	}
	created.Wait()
	close(pull)
	wg.Wait()
	for i, err := range errs[:n] {
		if err != nil {
			t.Errorf("pull %d: %v", i, err)
		}
	}
	if !errors.Is(errs[n], context.DeadlineExceeded) {
		t.Errorf("impatient pull: %v, want its own deadline", errs[n])
	}
	if got := proxy.count("/manifests/latest"); got != 1 {
		t.Errorf("%d manifest requests by tag reached the registry, want 1 (one shared pull)", got)
	}
	// Blobs the store already holds (another tag of the same image) are
	// not fetched at all; the others once.
	if got := proxy.count("GET /v2/fnrun/busybox/blobs/"); got > 2 {
		t.Errorf("%d blob downloads, want at most 2 (config and the one layer, once)", got)
	}
	if got := proxy.count("/manifests/sha256:"); got > 1 {
		t.Errorf("%d manifest requests by digest, want at most 1", got)
	}
	c, err := d.CreateCookie(ctx, pullTask(ref, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if need, err := c.ValidateImage(ctx); err != nil || need {
		t.Fatalf("ValidateImage after the shared pull = %v, %v", need, err)
	}
}

// TestPullPlainHTTP pulls anonymously from the loopback registry, which
// speaks plain HTTP, and runs the image.
func TestPullPlainHTTP(t *testing.T) {
	env := requireEnv(t)
	d := newTestDriver(t, env, drivers.Config{})
	proxy := newRegistryProxy(t, env.registry, nil)
	ref := proxy.host + "/fnrun/busybox:latest"
	removeImageAfter(t, d, ref)
	task := pullTask(ref, nil)
	c, err := d.CreateCookie(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := c.PullImage(context.Background()); err != nil {
		t.Fatalf("PullImage: %v", err)
	}
	if proxy.count("/manifests/") == 0 {
		t.Fatal("the pull did not go through the plain-HTTP proxy")
	}
	var out syncBuf
	runTask(t, d, &drivers.Task{ID: "fnrun-pull-run-" + randomID(), ImageRef: ref, Cmd: "echo ok", Stdout: &out}, drivers.StatusSuccess)
	if out.String() != "ok\n" {
		t.Fatalf("stdout %q", out.String())
	}
}

// TestPullAuth pulls from the htpasswd registry: the right login works; a
// wrong one, none, or one for another host is ErrUnauthorized; the
// password shows up in no error and no log line.
func TestPullAuth(t *testing.T) {
	env := requireEnv(t)
	var logs bytes.Buffer
	var logMu sync.Mutex
	l := logrus.New()
	l.SetLevel(logrus.TraceLevel)
	l.Out = lockedWriter{&logMu, &logs}
	d := newTestDriver(t, env, drivers.Config{}, drivers.WithLogger(logrus.NewEntry(l)))
	removeImageAfter(t, d, env.authImage)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const wrong = "not-the-password-f00"
	for _, tc := range []struct {
		name string
		auth *drivers.AuthConfig
		want error
	}{
		{"no credentials", nil, drivers.ErrUnauthorized},
		{"wrong password", &drivers.AuthConfig{Username: env.authUser, Password: wrong, ServerAddress: env.authRegistry}, drivers.ErrUnauthorized},
		{"credentials for another host", &drivers.AuthConfig{Username: env.authUser, Password: env.authPassword, ServerAddress: env.registry}, drivers.ErrUnauthorized},
		{"right credentials", &drivers.AuthConfig{Username: env.authUser, Password: env.authPassword, ServerAddress: "http://" + env.authRegistry + "/v2/"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := d.CreateCookie(ctx, pullTask(env.authImage, tc.auth))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(ctx)
			err = c.PullImage(ctx)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("PullImage: %v", err)
				}
				if need, err := c.ValidateImage(ctx); err != nil || need {
					t.Fatalf("ValidateImage after pull = %v, %v", need, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("PullImage: %v, want %v", err, tc.want)
			}
			if errors.Is(err, drivers.ErrImageNotFound) {
				t.Errorf("a refused login reads as a missing image: %v", err)
			}
			for _, secret := range []string{env.authPassword, wrong} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error shows the password: %v", err)
				}
			}
		})
	}
	logMu.Lock()
	defer logMu.Unlock()
	if logs.Len() == 0 {
		t.Error("no log line at trace level: the check below proves nothing")
	}
	for _, secret := range []string{env.authPassword, wrong} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("logs show a password:\n%s", logs.String())
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// TestCredentialsOnlyForTheirHost pulls through a proxy that demands basic
// auth: credentials naming another host are never sent to it, credentials
// naming it are.
func TestCredentialsOnlyForTheirHost(t *testing.T) {
	env := requireEnv(t)
	proxy := newRegistryProxy(t, env.registry, func(p *registryProxy) { p.requireBasic = "alice:s3cret" })
	d := newTestDriver(t, env, drivers.Config{})
	ref := proxy.host + "/fnrun/busybox:latest"
	removeImageAfter(t, d, ref)
	ctx := context.Background()

	pull := func(auth *drivers.AuthConfig) error {
		c, err := d.CreateCookie(ctx, pullTask(ref, auth))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		return c.PullImage(ctx)
	}
	// Same user and password, but for another registry.
	err := pull(&drivers.AuthConfig{Username: "alice", Password: "s3cret", ServerAddress: "registry.example.com"})
	if !errors.Is(err, drivers.ErrUnauthorized) {
		t.Fatalf("pull with another host's credentials: %v, want ErrUnauthorized", err)
	}
	if a := proxy.auths(); len(a) != 0 {
		t.Fatalf("credentials for another host reached this one: %q", a)
	}
	// No server address: the image's registry.
	if err := pull(&drivers.AuthConfig{Username: "alice", Password: "s3cret"}); err != nil {
		t.Fatalf("pull with this host's credentials: %v", err)
	}
	if len(proxy.auths()) == 0 {
		t.Fatal("no credentials reached the registry they name")
	}
}

// TestPullRetry fails the first manifest requests: the retry policy carries
// the pull through; without one the first failure is final.
func TestPullRetry(t *testing.T) {
	env := requireEnv(t)
	proxy := newRegistryProxy(t, env.registry, func(p *registryProxy) { p.failFirst = 2 })
	d := newTestDriver(t, env, drivers.Config{})
	ref := proxy.host + "/fnrun/busybox:latest"
	removeImageAfter(t, d, ref)
	ctx := context.Background()
	pull := func() error {
		c, err := d.CreateCookie(ctx, pullTask(ref, nil))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		return c.PullImage(ctx)
	}
	if err := pull(); err == nil {
		t.Fatal("pull without a retry policy succeeded through a failing registry")
	}
	var checked atomic.Int32
	err := d.SetPullImageRetryPolicy(drivers.BackOffConfig{MaxRetries: 3, Interval: 10, MaxDelay: 50, MinDelay: 5},
		func(err error) (bool, string) {
			checked.Add(1)
			return !errors.Is(err, drivers.ErrImageNotFound), "transient"
		})
	if err != nil {
		t.Fatal(err)
	}
	if err := pull(); err != nil {
		t.Fatalf("pull with retries: %v", err)
	}
	if checked.Load() == 0 {
		t.Error("the retry checker was never asked")
	}
}

// TestPullMissingImage: a repository the registry lacks is
// ErrImageNotFound, not retried as transient.
func TestPullMissingImage(t *testing.T) {
	env := requireEnv(t)
	d := newTestDriver(t, env, drivers.Config{})
	c, err := d.CreateCookie(context.Background(), pullTask(env.registry+"/fnrun/nothing-here:1.0", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := c.PullImage(context.Background()); !errors.Is(err, drivers.ErrImageNotFound) {
		t.Fatalf("got %v, want ErrImageNotFound", err)
	}
}

// TestPullKey: concurrent pulls of one image share one pull only when
// their credentials are equal. Through a slow proxy that demands a login,
// pulls with the right, a wrong and no password at once each get their own
// answer; two pulls with equal credentials (distinct values) at once cost
// the registry what one pull costs. (That the shared pull's key holds no
// password was checked on the key itself, which is the life cycle's and
// leaves it nowhere; TestPullAuth checks that no error or log line shows
// one.)
func TestPullKey(t *testing.T) {
	env := requireEnv(t)
	proxy := newRegistryProxy(t, env.registry, func(p *registryProxy) {
		p.delay = 100 * time.Millisecond
		p.requireBasic = "u:p1"
	})
	d := newTestDriver(t, env, drivers.Config{})
	ref := proxy.host + "/fnrun/busybox:latest"
	removeImageAfter(t, d, ref)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pullAll := func(auths ...*drivers.AuthConfig) []error {
		var wg sync.WaitGroup
		errs := make([]error, len(auths))
		for i, auth := range auths {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := d.CreateCookie(ctx, pullTask(ref, auth))
				if err != nil {
					errs[i] = err
					return
				}
				defer c.Close(ctx)
				errs[i] = c.PullImage(ctx)
			}()
		}
		wg.Wait()
		return errs
	}
	right := func() *drivers.AuthConfig { return &drivers.AuthConfig{Username: "u", Password: "p1"} }

	errs := pullAll(right(), &drivers.AuthConfig{Username: "u", Password: "p2"}, nil)
	if errs[0] != nil {
		t.Errorf("pull with the right password: %v", errs[0])
	}
	for i, what := range []string{"", "a wrong password", "no credentials"} {
		if i > 0 && !errors.Is(errs[i], drivers.ErrUnauthorized) {
			t.Errorf("pull with %s, at once with the right one: %v, want ErrUnauthorized", what, errs[i])
		}
	}
	wrongSeen := false
	for _, a := range proxy.auths() {
		wrongSeen = wrongSeen || a == "Basic "+base64.StdEncoding.EncodeToString([]byte("u:p2"))
	}
	if !wrongSeen {
		t.Error("the pull with a wrong password never reached the registry with it: it rode on another pull")
	}

	// What one pull costs, then two at once with equal credentials.
	if err := d.RemoveImage(ctx, ref); err != nil {
		t.Fatal(err)
	}
	before := proxy.count("/manifests/latest")
	if errs := pullAll(right()); errs[0] != nil {
		t.Fatal(errs[0])
	}
	one := proxy.count("/manifests/latest") - before
	if err := d.RemoveImage(ctx, ref); err != nil {
		t.Fatal(err)
	}
	before = proxy.count("/manifests/latest")
	for i, err := range pullAll(right(), right()) {
		if err != nil {
			t.Errorf("pull %d with equal credentials: %v", i, err)
		}
	}
	two := proxy.count("/manifests/latest") - before
	t.Logf("manifest requests by tag: %d for one pull, %d for two at once with equal credentials", one, two)
	if one == 0 || two != one {
		t.Errorf("two pulls with equal credentials at once made %d manifest requests by tag, one pull %d: want one shared pull", two, one)
	}
}

// TestPullTimeoutPerAttempt: the pull timeout bounds each attempt, not the
// shared pull: an attempt the registry stalls fails after the timeout
// (ErrDaemonUnavailable, the caller's context live), and with a retry
// policy the next attempt, which the registry serves, succeeds although
// the whole pull took longer than the timeout. No lease is left either
// way.
func TestPullTimeoutPerAttempt(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	const timeout = time.Second
	proxy := newRegistryProxy(t, env.registry, func(p *registryProxy) {
		p.stallFirst = 1
		p.stall = time.Minute
	})
	d := newTestDriver(t, env, drivers.Config{}, drivers.WithPullTimeout(timeout))
	ref := proxy.host + "/fnrun/busybox:latest"
	removeImageAfter(t, d, ref)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pull := func() error {
		c, err := d.CreateCookie(ctx, pullTask(ref, nil))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		return c.PullImage(ctx)
	}

	// Without retries: the stalled attempt is the pull.
	start := time.Now()
	err := pull()
	took := time.Since(start)
	if !errors.Is(err, drivers.ErrDaemonUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("stalled pull: %v, want ErrDaemonUnavailable and no context error", err)
	}
	if took < timeout || took > timeout+10*time.Second {
		t.Errorf("stalled pull failed after %v, want about the %v pull timeout", took, timeout)
	}
	if ls, err := in.fnrunLeases(ctx, d.Settings().Tag); err != nil || len(ls) != 0 {
		t.Errorf("leases after the timed-out attempt: %+v, %v", ls, err)
	}

	// With retries: one more stalled attempt, then one served.
	proxy.stalled.Store(0)
	if err := d.SetPullImageRetryPolicy(drivers.BackOffConfig{MaxRetries: 2, Interval: 10, MaxDelay: 50, MinDelay: 5},
		func(err error) (bool, string) { return !errors.Is(err, drivers.ErrImageNotFound), "transient" }); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := pull(); err != nil {
		t.Fatalf("pull with a retry after a stalled attempt: %v", err)
	}
	if took := time.Since(start); took < timeout {
		t.Errorf("pull took %v: the first attempt was not stalled, the check proves nothing", took)
	}
	if got := proxy.stalled.Load(); got < 2 {
		t.Errorf("%d manifest requests, want the stalled one and a served one", got)
	}
	if ls, err := in.fnrunLeases(ctx, d.Settings().Tag); err != nil || len(ls) != 0 {
		t.Errorf("leases after the pull: %+v, %v", ls, err)
	}
}
