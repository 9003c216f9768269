package serve

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	_ "github.com/fnrun/fnrun/drivers/containerd" // registers "containerd"
	_ "github.com/fnrun/fnrun/drivers/docker"     // registers "docker"
	"github.com/fnrun/fnrun/test"
)

// The tests below run the server against the real daemons of the test
// environment (make up), with the test function test/fnfunc that up.sh
// builds and pushes: every path of the issue on both runtimes. Without the
// environment they skip; with CI=true they fail.

type realDriver struct {
	name string
	env  []string
	cfg  func(env map[string]string, tag string) drivers.Config
}

var realDrivers = []realDriver{
	{"docker", []string{"FNRUN_DOCKER_HOST", "FNRUN_FNFUNC_IMAGE", "FNRUN_TEST_IMAGE"},
		func(env map[string]string, tag string) drivers.Config {
			return drivers.Config{Docker: env["FNRUN_DOCKER_HOST"], ContainerLabelTag: tag}
		}},
	{"containerd", []string{"FNRUN_CONTAINERD_ADDRESS", "FNRUN_CNI_CONF", "FNRUN_CNI_BIN", "FNRUN_FNFUNC_IMAGE", "FNRUN_TEST_IMAGE"},
		func(env map[string]string, tag string) drivers.Config {
			return drivers.Config{Containerd: env["FNRUN_CONTAINERD_ADDRESS"], ContainerdNamespace: os.Getenv("FNRUN_CONTAINERD_NAMESPACE"),
				CNIConfDir: env["FNRUN_CNI_CONF"], CNIBinDir: env["FNRUN_CNI_BIN"], ContainerLabelTag: tag}
		}},
}

// realEnv is one driver under test: the driver (with a pre-fork pool and
// the image cleaner, as fnrun serve runs it) and the test function.
type realEnv struct {
	name   string
	drv    drivers.Driver
	image  string
	lister drivers.ContainerLister
}

func forEachRealDriver(t *testing.T, f func(t *testing.T, e *realEnv)) {
	for _, rd := range realDrivers {
		t.Run(rd.name, func(t *testing.T) {
			t.Parallel()
			env := test.Env(t, rd.env...)
			tag := fmt.Sprintf("fnrun-serve-test-%s-%s", rd.name, randomHex(3))
			cfg := rd.cfg(env, tag)
			cfg.PreForkPoolSize = 2
			cfg.PreForkImage = env["FNRUN_TEST_IMAGE"]
			// The cleaner runs, with a budget these tests never reach: it
			// must not remove what other tests use.
			cfg.ImageCleanMaxSize = 64 << 30
			cfg.ImageCleanStateDir = t.TempDir()
			drv, err := drivers.New(rd.name, cfg)
			if err != nil {
				t.Fatalf("%s driver: %v", rd.name, err)
			}
			t.Cleanup(func() {
				if err := drv.Close(); err != nil {
					t.Errorf("driver Close: %v", err)
				}
			})
			lister, ok := drv.(drivers.ContainerLister)
			if !ok {
				t.Fatalf("the %s driver lists no containers", rd.name)
			}
			f(t, &realEnv{name: rd.name, drv: drv, image: env["FNRUN_FNFUNC_IMAGE"], lister: lister})
		})
	}
}

// calls returns the call containers (not pool holders) of the driver's
// label tag, with their states.
func (e *realEnv) calls(t testing.TB) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all, err := e.lister.Containers(ctx)
	if err != nil {
		t.Fatalf("listing containers: %v", err)
	}
	out := map[string]string{}
	for _, c := range all {
		if c.Role == drivers.RoleCall {
			out[c.ID] = c.State
		}
	}
	return out
}

// server starts a server over the driver; at the end no call container may
// be left.
func (e *realEnv) server(t *testing.T, store Store, opts ...Option) *harness {
	// Registered first, so it runs after the server's own cleanup.
	t.Cleanup(func() {
		if left := e.calls(t); len(left) != 0 {
			t.Errorf("containers left after the server closed: %v", left)
		}
	})
	return newHarness(t, e.drv, store, append([]Option{WithDriverName(e.name)}, opts...)...)
}

func TestRealDrivers(t *testing.T) {
	forEachRealDriver(t, func(t *testing.T, e *realEnv) {
		t.Run("cold then hot, frozen between calls", func(t *testing.T) {
			h := e.server(t, nil, WithFreezeIdle(0))
			fn := h.deploy("real", Fn{Name: "hot", Image: e.image, Memory: 64})
			start := time.Now()
			cold := h.invoke(fn.ID, "cold", nil)
			coldTook := time.Since(start)
			if cold.code != 200 || cold.body != "hello cold" || cold.header.Get(HeaderStart) != startCold {
				t.Fatalf("cold call: %d %v %s", cold.code, cold.header, cold.body)
			}
			var hot []time.Duration
			for i := 0; i < 5; i++ {
				eventually(t, 10*time.Second, "the idle container is paused", func() bool {
					for _, state := range e.calls(t) {
						if state == drivers.StatePaused {
							return true
						}
					}
					return false
				})
				start := time.Now()
				r := h.invoke(fn.ID, "hot", nil)
				hot = append(hot, time.Since(start))
				if r.code != 200 || r.body != "hello hot" || r.header.Get(HeaderStart) != startHot ||
					r.header.Get("Fnfunc-Instance") != cold.header.Get("Fnfunc-Instance") {
					t.Fatalf("hot call %d: %d %v %s", i, r.code, r.header, r.body)
				}
			}
			sort.Slice(hot, func(i, j int) bool { return hot[i] < hot[j] })
			t.Logf("%s: cold call %v, thawed hot calls p50 %v (min %v, max %v)", e.name, coldTook.Round(time.Millisecond),
				hot[len(hot)/2].Round(time.Microsecond), hot[0].Round(time.Microsecond), hot[len(hot)-1].Round(time.Microsecond))
		})

		t.Run("concurrent calls within the limit", func(t *testing.T) {
			h := e.server(t, nil, WithLimits(0, 3, 100))
			fn := h.deploy("real", Fn{Name: "conc", Image: e.image})
			replies := parallel(9, func(int) reply {
				return h.invoke(fn.ID, "", map[string]string{"Fnfunc-Sleep": "300ms"})
			})
			instances := map[string]bool{}
			for i, r := range replies {
				if r.code != 200 {
					t.Fatalf("call %d: %d %s", i, r.code, r.body)
				}
				instances[r.header.Get("Fnfunc-Instance")] = true
			}
			if len(instances) > 3 || len(e.calls(t)) > 3 {
				t.Fatalf("%d containers served 9 calls: the limit is 3", len(instances))
			}
		})

		t.Run("full queue answers 503", func(t *testing.T) {
			h := e.server(t, nil, WithLimits(0, 1, 1))
			fn := h.deploy("real", Fn{Name: "busy", Image: e.image})
			replies := make(chan reply, 2)
			go func() { replies <- h.invoke(fn.ID, "", map[string]string{"Fnfunc-Sleep": "10s"}) }()
			eventually(t, 30*time.Second, "the first call runs", func() bool { return h.srv.Stats().Busy == 1 })
			go func() { replies <- h.invoke(fn.ID, "", nil) }()
			eventually(t, 5*time.Second, "the second call waits", func() bool { return h.srv.Stats().Waiting == 1 })
			r := h.invoke(fn.ID, "", nil)
			if r.code != 503 || r.header.Get("Retry-After") == "" || r.message() != "Timed out - server too busy" {
				t.Fatalf("third call: %d %v %s", r.code, r.header, r.body)
			}
			for i := 0; i < 2; i++ {
				if r := <-replies; r.code != 200 {
					t.Fatalf("call: %d %s", r.code, r.body)
				}
			}
		})

		t.Run("deadline", func(t *testing.T) {
			// Not frozen between calls: the timeout is the call's, and a thaw
			// on a slow daemon would take from it.
			h := e.server(t, nil, WithFreezeIdle(time.Hour))
			fn := h.deploy("real", Fn{Name: "slow", Image: e.image, Timeout: 3})
			first := h.invoke(fn.ID, "", nil)
			r := h.invoke(fn.ID, "", map[string]string{"Fnfunc-Sleep": "10s"})
			if r.code != 504 || r.message() != "Timed out" {
				t.Fatalf("call past its timeout: %d %s", r.code, r.body)
			}
			next := h.invoke(fn.ID, "", nil)
			if next.code != 200 || next.header.Get("Fnfunc-Instance") == first.header.Get("Fnfunc-Instance") {
				t.Fatalf("after the timeout: %d %s in %s", next.code, next.body, next.header.Get("Fnfunc-Instance"))
			}
		})

		t.Run("crashing function", func(t *testing.T) {
			h := e.server(t, nil)
			fn := h.deploy("real", Fn{Name: "crash", Image: e.image})
			first := h.invoke(fn.ID, "", nil)
			r := h.invoke(fn.ID, "", map[string]string{"Fnfunc-Crash": "3"})
			if r.code != 502 || r.message() != "error receiving function response" {
				t.Fatalf("crash: %d %s", r.code, r.body)
			}
			next := h.invoke(fn.ID, "", nil)
			if next.code != 200 || next.header.Get("Fnfunc-Instance") == first.header.Get("Fnfunc-Instance") {
				t.Fatalf("after the crash: %d %s", next.code, next.body)
			}
			dead := h.deploy("real", Fn{Name: "dead", Image: e.image, Config: map[string]string{"FNFUNC_EXIT_AT_START": "2"}})
			if r := h.invoke(dead.ID, "", nil); r.code != 502 || r.message() != errContainerInitFail.Message {
				t.Fatalf("function exiting at start: %d %s", r.code, r.body)
			}
		})

		t.Run("restart keeps apps and functions", func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "fn.db")
			store, err := OpenStore(path, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			h1 := e.server(t, store)
			fn := h1.deploy("kept", Fn{Name: "f", Image: e.image})
			if r := h1.invoke(fn.ID, "one", nil); r.code != 200 {
				t.Fatalf("%d %s", r.code, r.body)
			}
			h1.http.Close()
			if err := h1.srv.Close(); err != nil {
				t.Fatal(err)
			}
			if left := e.calls(t); len(left) != 0 {
				t.Fatalf("containers left after the first server: %v", left)
			}
			if store, err = OpenStore(path, time.Second); err != nil {
				t.Fatal(err)
			}
			h2 := e.server(t, store)
			if r := h2.invoke(fn.ID, "two", nil); r.code != 200 || r.body != "hello two" || r.header.Get(HeaderStart) != startCold {
				t.Fatalf("call after restart: %d %s", r.code, r.body)
			}
		})
	})
}

// TestRealShutdown: a shutdown lets the calls in flight finish within its
// grace, cuts them after it, and leaves no container either way.
func TestRealShutdown(t *testing.T) {
	forEachRealDriver(t, func(t *testing.T, e *realEnv) {
		for _, tc := range []struct {
			name  string
			sleep string
			grace time.Duration
			code  int
		}{
			// Each call sleeps long enough to be still running when the
			// last of the three has started: cold starts under load come
			// seconds apart.
			{"calls finish within the grace", "8s", 30 * time.Second, 200},
			{"calls cut at the end of the grace", "60s", time.Second, 503},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h := e.server(t, nil)
				fn := h.deploy("real", Fn{Name: "drain", Image: e.image, Timeout: 120})
				var wg sync.WaitGroup
				replies := make([]reply, 3)
				for i := range replies {
					wg.Add(1)
					go func() {
						defer wg.Done()
						replies[i] = h.invoke(fn.ID, "", map[string]string{"Fnfunc-Sleep": tc.sleep})
					}()
				}
				eventually(t, 60*time.Second, "three calls run", func() bool { return h.srv.Stats().Busy == 3 })
				ctx, cancel := context.WithTimeout(context.Background(), tc.grace)
				defer cancel()
				err := h.srv.Shutdown(ctx)
				wg.Wait()
				switch {
				case tc.code == 200 && err != nil:
					t.Fatalf("Shutdown: %v", err)
				case tc.code != 200 && !errors.Is(err, context.DeadlineExceeded):
					t.Fatalf("Shutdown: %v, want the deadline", err)
				}
				for i, r := range replies {
					if r.code != tc.code {
						t.Errorf("call %d: %d %s, want %d", i, r.code, r.body, tc.code)
					}
				}
				if left := e.calls(t); len(left) != 0 {
					t.Fatalf("containers left after Shutdown: %v", left)
				}
			})
		}
	})
}
