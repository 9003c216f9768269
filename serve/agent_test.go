package serve

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/models"
)

// These tests run the server over the mock driver with an in-process
// function per container (fakeDriver): every path of the scheduler, fast.
// real_test.go runs the same paths against Docker and containerd.

func fakeHarness(t *testing.T, opts ...Option) (*harness, *fakeDriver) {
	t.Helper()
	drv, err := newFakeDriver()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		drv.Close()
		if n := drv.live(); n != 0 {
			t.Errorf("%d fake functions still running after the driver closed", n)
		}
	})
	opts = append([]Option{WithDriverName("mock")}, opts...)
	return newHarness(t, drv, nil, opts...), drv
}

const fakeImage = "example.com/fnfunc:latest"

func TestHotContainerServesManyCalls(t *testing.T) {
	t.Parallel()
	h, drv := fakeHarness(t, WithFreezeIdle(-1))
	var app App
	h.mustJSON("POST", "/v2/apps", App{Name: "hot", Config: map[string]string{"SHARED": "app", "APP_ONLY": "a"}}, &app)
	var fn Fn
	h.mustJSON("POST", "/v2/fns", Fn{AppID: app.ID, Name: "f", Image: fakeImage, Memory: 64,
		Config: map[string]string{"SHARED": "fn"}}, &fn)

	var instance string
	for i := 0; i < 4; i++ {
		r := h.invoke(fn.ID, "call", map[string]string{"Content-Type": "text/plain"})
		if r.code != 200 || r.body != "hello call" {
			t.Fatalf("call %d: %d %s", i, r.code, r.body)
		}
		wantStart := startHot
		if i == 0 {
			wantStart = startCold
			instance = r.header.Get("Fnfunc-Instance")
		}
		if got := r.header.Get(HeaderStart); got != wantStart {
			t.Errorf("call %d: start %q, want %q", i, got, wantStart)
		}
		if got := r.header.Get("Fnfunc-Instance"); got != instance {
			t.Errorf("call %d ran in %s, not in the hot container %s", i, got, instance)
		}
		if id := r.header.Get(HeaderCallID); id == "" || r.header.Get("Fnfunc-Call-Id") != id {
			t.Errorf("call id %q, function saw %q", id, r.header.Get("Fnfunc-Call-Id"))
		}
		dl, err := time.Parse(time.RFC3339, r.header.Get("Fnfunc-Deadline"))
		if err != nil || time.Until(dl) > 31*time.Second || time.Until(dl) < 25*time.Second {
			t.Errorf("Fn-Deadline %q: want about 30s ahead", r.header.Get("Fnfunc-Deadline"))
		}
	}
	if n := drv.started.Load(); n != 1 {
		t.Fatalf("%d containers started for sequential calls, want 1", n)
	}

	r := h.invoke(fn.ID, "", map[string]string{"Fnfunc-Env": "1"})
	var env map[string]string
	if err := json.Unmarshal([]byte(r.body), &env); err != nil {
		t.Fatalf("env: %v in %s", err, r.body)
	}
	for k, v := range map[string]string{
		"FN_FORMAT": "http-stream", "FN_LISTENER": "unix:/tmp/iofs/lsnr.sock", "FN_APP_ID": app.ID,
		"FN_APP_NAME": "hot", "FN_FN_ID": fn.ID, "FN_FN_NAME": "f", "FN_MEMORY": "64", "FN_TYPE": "sync",
		"SHARED": "fn", "APP_ONLY": "a",
	} {
		if env[k] != v {
			t.Errorf("env %s=%q, want %q", k, env[k], v)
		}
	}
}

func TestFrozenBetweenCalls(t *testing.T) {
	t.Parallel()
	h, drv := fakeHarness(t, WithFreezeIdle(0))
	fn := h.deploy("frozen", Fn{Name: "f", Image: fakeImage})
	for i := 0; i < 3; i++ {
		if r := h.invoke(fn.ID, "x", nil); r.code != 200 {
			t.Fatalf("call %d: %d %s", i, r.code, r.body)
		}
		want := int64(i + 1)
		eventually(t, 2*time.Second, "the container is frozen after its call", func() bool { return drv.frozen.Load() >= want })
	}
	if n := drv.callsWhileFrozen.Load(); n != 0 {
		t.Fatalf("%d calls reached a frozen container", n)
	}
}

func TestQueueFullAnswers503(t *testing.T) {
	t.Parallel()
	h, _ := fakeHarness(t, WithLimits(0, 1, 1), WithRetryAfter(2*time.Second))
	fn := h.deploy("busy", Fn{Name: "f", Image: fakeImage})
	if r := h.invoke(fn.ID, "", nil); r.code != 200 { // warm it
		t.Fatalf("warm-up: %d %s", r.code, r.body)
	}
	// One runs, one waits, the third finds the queue full.
	replies := make(chan reply, 3)
	go func() { replies <- h.invoke(fn.ID, "", map[string]string{"Fnfunc-Sleep": "5s"}) }()
	eventually(t, 2*time.Second, "the first call runs", func() bool { return h.srv.Stats().Busy == 1 })
	go func() { replies <- h.invoke(fn.ID, "", nil) }()
	eventually(t, 2*time.Second, "the second call waits", func() bool { return h.srv.Stats().Waiting == 1 })
	r := h.invoke(fn.ID, "", nil)
	if r.code != 503 || r.message() != "Timed out - server too busy" || r.header.Get("Retry-After") != "2" {
		t.Fatalf("third call: want 503 too busy with Retry-After 2, got %d %v %s", r.code, r.header, r.body)
	}
	for i := 0; i < 2; i++ {
		if r := <-replies; r.code != 200 {
			t.Fatalf("queued or running call: %d %s", r.code, r.body)
		}
	}
}

func TestDeadlines(t *testing.T) {
	t.Parallel()
	// One container in all: a call of another function has to wait, for
	// its timeout (1s) plus the start timeout (500ms).
	h, drv := fakeHarness(t, WithLimits(1, 1, 10), WithStartTimeout(500*time.Millisecond))
	long := h.deploy("deadline", Fn{Name: "long", Image: fakeImage, Timeout: 3})
	short := h.deploy("deadline", Fn{Name: "short", Image: fakeImage, Timeout: 1})
	// A call running past its function's timeout gets 504; a call that
	// gets no container before its own deadline gets 503.
	var running reply
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		running = h.invoke(long.ID, "", map[string]string{"Fnfunc-Sleep": "10s"})
	}()
	eventually(t, 2*time.Second, "the long call runs", func() bool { return h.srv.Stats().Busy == 1 })
	start := time.Now()
	waiting := h.invoke(short.ID, "", nil)
	waited := time.Since(start)
	wg.Wait()
	if running.code != 504 || running.message() != "Timed out" {
		t.Errorf("running call: want 504 Timed out, got %d %s", running.code, running.body)
	}
	if waiting.code != 503 || waiting.message() != "Timed out - server too busy" {
		t.Errorf("waiting call: want 503, got %d %s", waiting.code, waiting.body)
	}
	if waited < 1400*time.Millisecond || waited > 2900*time.Millisecond {
		t.Errorf("the waiting call took %v, want its 1.5s bound", waited)
	}
	// The container that timed out is replaced.
	next := h.invoke(long.ID, "", nil)
	if next.code != 200 || next.header.Get(HeaderStart) != startCold {
		t.Fatalf("after a timeout: %d %s %s", next.code, next.header.Get(HeaderStart), next.body)
	}
	if n := drv.started.Load(); n != 2 {
		t.Errorf("%d containers started, want 2", n)
	}
}

func TestFunctionFailures(t *testing.T) {
	t.Parallel()
	h, _ := fakeHarness(t)
	fn := h.deploy("failures", Fn{Name: "f", Image: fakeImage})
	for _, tc := range []struct {
		name     string
		header   map[string]string
		code     int
		msg      string
		replaced bool
	}{
		{"crash mid-call", map[string]string{"Fnfunc-Crash": "3"}, 502, "error receiving function response", true},
		{"function says it failed", map[string]string{"Fnfunc-Status": "502"}, 502, "function failed", false},
		{"function says it timed out", map[string]string{"Fnfunc-Status": "504"}, 504, "Timed out", false},
		{"status outside the contract", map[string]string{"Fnfunc-Status": "418"}, 502, "invalid function response", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.invoke(fn.ID, "", nil)
			r := h.invoke(fn.ID, "", tc.header)
			if r.code != tc.code || r.message() != tc.msg {
				t.Fatalf("want %d %q, got %d %s", tc.code, tc.msg, r.code, r.body)
			}
			after := h.invoke(fn.ID, "", nil)
			if after.code != 200 {
				t.Fatalf("next call: %d %s", after.code, after.body)
			}
			same := after.header.Get("Fnfunc-Instance") == before.header.Get("Fnfunc-Instance")
			if same == tc.replaced {
				t.Fatalf("container replaced: %v, want %v", !same, tc.replaced)
			}
		})
	}
}

func TestStartFailures(t *testing.T) {
	t.Parallel()
	h, _ := fakeHarness(t, WithStartTimeout(300*time.Millisecond))
	exits := h.deploy("start", Fn{Name: "exits", Image: fakeImage, Config: map[string]string{"FNFUNC_EXIT_AT_START": "2"}})
	slow := h.deploy("start", Fn{Name: "slow", Image: fakeImage, Config: map[string]string{"FNFUNC_START_DELAY": "5s"}})
	pull := h.deploy("start", Fn{Name: "pull", Image: "example.com/missing:1", Annotations: map[string]json.RawMessage{
		ExtensionsAnnotation: json.RawMessage(`{"mock.image_missing":"true"}`)}})
	for _, tc := range []struct {
		fn   *Fn
		code int
		msg  string
	}{
		{exits, 502, "Container failed to initialize, please ensure you are using the latest fdk and check the logs"},
		{slow, 504, "Container initialization timed out, please ensure you are using the latest fdk and check the logs"},
		{pull, 502, "Failed to pull image 'example.com/missing:1'"},
	} {
		if r := h.invoke(tc.fn.ID, "", nil); r.code != tc.code || r.message() != tc.msg {
			t.Errorf("%s: want %d %q, got %d %s", tc.fn.Name, tc.code, tc.msg, r.code, r.body)
		}
	}
}

func TestIdleTimeoutEndsContainers(t *testing.T) {
	t.Parallel()
	h, drv := fakeHarness(t)
	fn := h.deploy("idle", Fn{Name: "f", Image: fakeImage, IdleTimeout: 1})
	if r := h.invoke(fn.ID, "", nil); r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	if st := h.srv.Stats(); st.Idle != 1 {
		t.Fatalf("after a call: %+v", st)
	}
	eventually(t, 3*time.Second, "the idle container ends after idle_timeout", func() bool {
		return h.srv.Stats().Containers == 0 && drv.live() == 0
	})
	if r := h.invoke(fn.ID, "", nil); r.code != 200 || r.header.Get(HeaderStart) != startCold {
		t.Fatalf("after the idle timeout: %d %s %s", r.code, r.header.Get(HeaderStart), r.body)
	}
}

func TestConcurrentCallsWithinLimits(t *testing.T) {
	t.Parallel()
	h, drv := fakeHarness(t, WithLimits(0, 3, 100))
	fn := h.deploy("conc", Fn{Name: "f", Image: fakeImage})
	replies := parallel(12, func(i int) reply {
		return h.invoke(fn.ID, "", map[string]string{"Fnfunc-Sleep": "100ms"})
	})
	instances := map[string]bool{}
	for i, r := range replies {
		if r.code != 200 {
			t.Fatalf("call %d: %d %s", i, r.code, r.body)
		}
		instances[r.header.Get("Fnfunc-Instance")] = true
	}
	if n := drv.started.Load(); n > 3 || len(instances) > 3 {
		t.Fatalf("%d containers started, %d served: the limit is 3", n, len(instances))
	}
}

func TestEveryCallColdWithMaxCallsOne(t *testing.T) {
	t.Parallel()
	h, drv := fakeHarness(t, WithMaxCallsPerContainer(1))
	fn := h.deploy("cold", Fn{Name: "f", Image: fakeImage})
	for i := 0; i < 3; i++ {
		if r := h.invoke(fn.ID, "", nil); r.code != 200 || r.header.Get(HeaderStart) != startCold {
			t.Fatalf("call %d: %d %s %s", i, r.code, r.header.Get(HeaderStart), r.body)
		}
	}
	eventually(t, 2*time.Second, "single-use containers are removed", func() bool { return drv.live() == 0 })
	if n := drv.started.Load(); n != 3 {
		t.Fatalf("%d containers started, want 3", n)
	}
}

func TestUpdateOrDeleteRetiresContainers(t *testing.T) {
	t.Parallel()
	h, drv := fakeHarness(t)
	fn := h.deploy("upd", Fn{Name: "f", Image: fakeImage, Config: map[string]string{"V": "1"}})
	if r := h.invoke(fn.ID, "", nil); r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	h.mustJSON("PUT", "/v2/fns/"+fn.ID, Fn{Config: map[string]string{"V": "2"}}, nil)
	eventually(t, 2*time.Second, "the old container ends after an update", func() bool { return drv.live() == 0 })
	r := h.invoke(fn.ID, "", map[string]string{"Fnfunc-Env": "1"})
	if r.code != 200 || r.header.Get(HeaderStart) != startCold || !strings.Contains(r.body, `"V":"2"`) {
		t.Fatalf("after update: %d %s %s", r.code, r.header.Get(HeaderStart), r.body)
	}
	if r := h.do("DELETE", "/v2/fns/"+fn.ID, "", nil); r.code != 204 {
		t.Fatalf("delete: %d", r.code)
	}
	eventually(t, 2*time.Second, "the container ends after a delete", func() bool { return drv.live() == 0 })
}

func TestGlobalLimitEvictsIdleContainers(t *testing.T) {
	t.Parallel()
	h, drv := fakeHarness(t, WithLimits(1, 1, 10))
	a := h.deploy("evict", Fn{Name: "a", Image: fakeImage})
	b := h.deploy("evict", Fn{Name: "b", Image: fakeImage})
	for i, id := range []string{a.ID, b.ID, a.ID} {
		if r := h.invoke(id, "", nil); r.code != 200 || r.header.Get(HeaderStart) != startCold {
			t.Fatalf("call %d: %d %s %s", i, r.code, r.header.Get(HeaderStart), r.body)
		}
		if st := h.srv.Stats(); st.Containers > 1 {
			t.Fatalf("call %d: %+v above the limit of 1", i, st)
		}
	}
	if n := drv.started.Load(); n != 3 {
		t.Fatalf("%d started, want 3", n)
	}
}

func TestShutdownLetsCallsFinish(t *testing.T) {
	t.Parallel()
	h, drv := fakeHarness(t)
	fn := h.deploy("drain", Fn{Name: "f", Image: fakeImage})
	replies := make(chan reply, 3)
	for i := 0; i < 3; i++ {
		go func() { replies <- h.invoke(fn.ID, "", map[string]string{"Fnfunc-Sleep": "5s"}) }()
	}
	eventually(t, 3*time.Second, "three calls run", func() bool { return h.srv.Stats().Busy == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- h.srv.Shutdown(ctx) }()
	eventually(t, time.Second, "health says shutting down", func() bool { return h.do("GET", "/health", "", nil).code == 503 })
	if r := h.invoke(fn.ID, "", nil); r.code != 503 {
		t.Errorf("a call during the shutdown: %d %s", r.code, r.body)
	}
	for i := 0; i < 3; i++ {
		if r := <-replies; r.code != 200 {
			t.Errorf("call in flight: %d %s", r.code, r.body)
		}
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if st := h.srv.Stats(); st.Containers != 0 || drv.live() != 0 {
		t.Fatalf("after shutdown: %+v, %d fake functions", st, drv.live())
	}
}

func TestShutdownCutsCallsAtItsDeadline(t *testing.T) {
	t.Parallel()
	h, drv := fakeHarness(t)
	fn := h.deploy("cut", Fn{Name: "f", Image: fakeImage})
	replies := make(chan reply, 1)
	go func() { replies <- h.invoke(fn.ID, "", map[string]string{"Fnfunc-Sleep": "20s"}) }()
	eventually(t, 3*time.Second, "the call runs", func() bool { return h.srv.Stats().Busy == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := h.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want the deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Shutdown took %v", d)
	}
	if r := <-replies; r.code != 503 {
		t.Fatalf("cut call: %d %s", r.code, r.body)
	}
	if st := h.srv.Stats(); st.Containers != 0 || drv.live() != 0 {
		t.Fatalf("after shutdown: %+v, %d fake functions", st, drv.live())
	}
}

func TestCallHooksSeeTheCallAndExtensions(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var before, after []models.Call
	var exts []map[string]string
	hooks := WithCallHooks(
		func(ctx context.Context, c *models.Call, ext drivers.CallExtensions) error {
			mu.Lock()
			defer mu.Unlock()
			before = append(before, *c)
			exts = append(exts, ext.Extensions())
			return nil
		},
		func(ctx context.Context, c *models.Call, ext drivers.CallExtensions) error {
			mu.Lock()
			defer mu.Unlock()
			after = append(after, *c)
			return nil
		})
	h, _ := fakeHarness(t, hooks)
	fn := h.deploy("hooks", Fn{Name: "f", Image: fakeImage, Annotations: map[string]json.RawMessage{
		ExtensionsAnnotation: json.RawMessage(`{"custom":"y","mock.stderr":"from the mock\n"}`)}})
	ok := h.invoke(fn.ID, "", nil)
	failed := h.invoke(fn.ID, "", map[string]string{"Fnfunc-Status": "502"})
	if ok.code != 200 || failed.code != 502 {
		t.Fatalf("calls: %d, %d", ok.code, failed.code)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(before) != 2 || len(after) != 2 {
		t.Fatalf("hooks ran %d and %d times", len(before), len(after))
	}
	if before[0].ID != ok.header.Get(HeaderCallID) || before[0].FnID != fn.ID || before[0].AppID != fn.AppID || before[0].Memory != 128 {
		t.Errorf("BeforeCall saw %+v", before[0])
	}
	if after[0].Status != "success" || after[1].Status != "error" || after[1].Error == "" || after[0].CompletedAt.IsZero() {
		t.Errorf("AfterCall saw %+v and %+v", after[0], after[1])
	}
	if exts[0]["custom"] != "y" {
		t.Errorf("extensions %v", exts[0])
	}
}

func TestSlotKeyUsesDriverExtensions(t *testing.T) {
	t.Parallel()
	h, drv := fakeHarness(t)
	fn := h.deploy("slots", Fn{Name: "f", Image: fakeImage})
	app, _ := h.srv.store.GetApp(t.Context(), fn.AppID)
	f, _ := h.srv.store.GetFn(t.Context(), fn.ID)
	plain, err := h.srv.agent.newSpec(app, f)
	if err != nil {
		t.Fatal(err)
	}
	f.Annotations = map[string]json.RawMessage{ExtensionsAnnotation: json.RawMessage(`{"other":"1"}`)}
	ignored, _ := h.srv.agent.newSpec(app, f)
	f.Annotations = map[string]json.RawMessage{ExtensionsAnnotation: json.RawMessage(`{"mock.delay":"1ms"}`)}
	counted, _ := h.srv.agent.newSpec(app, f)
	// The mock's GetSlotKeyExtensions keeps its own "mock." keys only.
	if plain.key != ignored.key || plain.key == counted.key {
		t.Fatalf("slot keys: plain %s, other extension %s, mock extension %s", plain.key, ignored.key, counted.key)
	}
	_ = drv
}

func TestRestartKeepsAppsAndFunctions(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "fn.db")
	drv, err := newFakeDriver()
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	store, err := OpenStore(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h1 := newHarness(t, drv, store)
	fn := h1.deploy("kept", Fn{Name: "f", Image: fakeImage})
	if r := h1.invoke(fn.ID, "one", nil); r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	h1.http.Close()
	if err := h1.srv.Close(); err != nil {
		t.Fatal(err)
	}
	store, err = OpenStore(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h2 := newHarness(t, drv, store)
	var got Fn
	h2.mustJSON("GET", "/v2/fns/"+fn.ID, nil, &got)
	if got.Name != "f" || got.AppID != fn.AppID {
		t.Fatalf("fn after restart: %+v", got)
	}
	if r := h2.invoke(fn.ID, "two", nil); r.code != 200 || r.body != "hello two" {
		t.Fatalf("call after restart: %d %s", r.code, r.body)
	}
}

func TestLimitsOnSizes(t *testing.T) {
	t.Parallel()
	h, _ := fakeHarness(t, WithMaxSizes(16, 8))
	fn := h.deploy("sizes", Fn{Name: "f", Image: fakeImage})
	if r := h.invoke(fn.ID, strings.Repeat("x", 17), nil); r.code != http.StatusRequestEntityTooLarge {
		t.Fatalf("big request: %d %s", r.code, r.body)
	}
	if r := h.invoke(fn.ID, "0123456789", nil); r.code != 502 || r.message() != "function response body too large" {
		t.Fatalf("big response: %d %s", r.code, r.body)
	}
}

func TestMetricsAndHealth(t *testing.T) {
	t.Parallel()
	h, _ := fakeHarness(t)
	fn := h.deploy("metrics", Fn{Name: "mf", Image: fakeImage})
	if r := h.invoke(fn.ID, "", nil); r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	for _, want := range []string{
		`fnrun_serve_call_latency_bucket{fnrun_app="metrics",fnrun_code="200",fnrun_fn="mf",fnrun_fn_id="` + fn.ID + `",fnrun_result="success",fnrun_start="cold"`,
		`fnrun_serve_container_start_latency_count{fnrun_driver="mock",fnrun_started="ok"}`,
		`fnrun_serve_containers{fnrun_state="idle"}`,
	} {
		// OpenCensus aggregates in the background: a scrape may lag a
		// recording by a moment.
		eventually(t, 2*time.Second, "/metrics shows "+want, func() bool {
			return strings.Contains(h.do("GET", "/metrics", "", nil).body, want)
		})
	}
	var health healthBody
	if err := json.Unmarshal([]byte(h.do("GET", "/health", "", nil).body), &health); err != nil || health.Status != "ok" || health.Stats.Idle != 1 {
		t.Fatalf("health: %+v %v", health, err)
	}
}

func TestFailingBeforeCallEndsTheContainer(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	hooks := WithCallHooks(func(context.Context, *models.Call, drivers.CallExtensions) error {
		if fail.Load() {
			return errors.New("scripted BeforeCall failure")
		}
		return nil
	}, nil)
	h, _ := fakeHarness(t, hooks)
	fn := h.deploy("hookfail", Fn{Name: "f", Image: fakeImage})
	first := h.invoke(fn.ID, "", nil)
	fail.Store(true)
	if r := h.invoke(fn.ID, "", nil); r.code != 500 || r.message() != "internal server error" {
		t.Fatalf("failing BeforeCall: %d %s", r.code, r.body)
	}
	fail.Store(false)
	next := h.invoke(fn.ID, "", nil)
	if first.code != 200 || next.code != 200 || next.header.Get("Fnfunc-Instance") == first.header.Get("Fnfunc-Instance") {
		t.Fatalf("after a failing BeforeCall: %d %d, same container: %v", first.code, next.code,
			next.header.Get("Fnfunc-Instance") == first.header.Get("Fnfunc-Instance"))
	}
}
