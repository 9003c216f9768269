package containerd

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	"google.golang.org/grpc"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/stats"
	"github.com/fnrun/fnrun/test"
)

func TestNewUnreachable(t *testing.T) {
	start := time.Now()
	_, err := New(context.Background(), drivers.Config{Containerd: filepath.Join(t.TempDir(), "nobody.sock")}, WithDialTimeout(2*time.Second))
	if !errors.Is(err, drivers.ErrDaemonUnavailable) {
		t.Fatalf("got %v, want ErrDaemonUnavailable", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %v", took)
	}
}

// TestNewSilentSocket: a socket that accepts and never speaks is a hung
// daemon; New gives up after the dial timeout.
func TestNewSilentSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "silent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	start := time.Now()
	_, err = New(context.Background(), drivers.Config{Containerd: sock}, WithDialTimeout(500*time.Millisecond))
	if !errors.Is(err, drivers.ErrDaemonUnavailable) {
		t.Fatalf("got %v, want ErrDaemonUnavailable", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v for a 500ms dial timeout", took)
	}
}

// TestHungDaemonCall: a daemon that completes the connection but never
// answers a call; the per-operation timeout ends the call with
// ErrDaemonUnavailable even though the caller's context has no deadline.
func TestHungDaemonCall(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "hung.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ interface{}, stream grpc.ServerStream) error {
		select {
		case <-stream.Context().Done():
		case <-stop:
		}
		return stream.Context().Err()
	}))
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		close(stop)
		srv.Stop()
	})
	start := time.Now()
	_, err = New(context.Background(), drivers.Config{Containerd: sock}, drivers.WithCallTimeout(300*time.Millisecond))
	if !errors.Is(err, drivers.ErrDaemonUnavailable) {
		t.Fatalf("got %v, want ErrDaemonUnavailable", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %v for a 300ms call timeout", took)
	}
}

func TestRegistered(t *testing.T) {
	if !slices.Contains(drivers.Drivers(), DriverName) {
		t.Fatalf("drivers %v lack %q", drivers.Drivers(), DriverName)
	}
	d, err := drivers.New(DriverName, drivers.Config{Containerd: filepath.Join(t.TempDir(), "nobody.sock")})
	if !errors.Is(err, drivers.ErrDaemonUnavailable) || d != nil {
		t.Fatalf("New on a missing socket = %v, %v; want a nil driver and ErrDaemonUnavailable", d, err)
	}
	env := requireEnv(t)
	d, err = drivers.New(DriverName, drivers.Config{Containerd: env.address, ContainerdNamespace: env.namespace})
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := d.(drivers.Capable); !ok || c.Capabilities() != drivers.CapRunsCommands|drivers.CapResourceLimits|drivers.CapOOMDetection|
		drivers.CapFreeze|drivers.CapReadOnlyRoot|drivers.CapUnprivileged|drivers.CapImagePull {
		t.Error("the driver does not claim every capability")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDriverCloseEndsCookies: closing the driver ends running containers,
// removes what open cookies made and refuses new work; twice is fine.
func TestDriverCloseEndsCookies(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	d := newTestDriver(t, env, drivers.Config{})
	ctx := context.Background()
	c, err := d.CreateCookie(ctx, &drivers.Task{ID: "fnrun-dclose-" + randomID(), ImageRef: env.localImage, Cmd: "sleep 60"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	idle, err := d.CreateCookie(ctx, &drivers.Task{ID: "fnrun-dclose-" + randomID(), ImageRef: env.localImage, Cmd: "true"})
	if err != nil {
		t.Fatal(err)
	}
	if err := idle.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("Close took %v", took)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if res := w.Wait(ctx); res.Status() != drivers.StatusCancelled {
		t.Errorf("run ended by the driver's Close: %q (%v), want cancelled", res.Status(), res.Error())
	}
	if left, err := in.leftovers(ctx, d.Settings().Tag); err != nil || len(left) != 0 {
		t.Errorf("leftovers after the driver's Close: %v, %v", left, err)
	}
	if err := c.Close(ctx); err != nil {
		t.Errorf("cookie Close after the driver's: %v", err)
	}
	if _, err := d.CreateCookie(ctx, &drivers.Task{ID: "fnrun-dclose-late", ImageRef: env.localImage}); !errors.Is(err, drivers.ErrClosed) {
		t.Errorf("CreateCookie after Close: %v, want ErrClosed", err)
	}
}

// TestTimeoutWhileFrozen: a frozen container whose call times out is
// thawed and ended, and the result says timeout.
func TestTimeoutWhileFrozen(t *testing.T) {
	env := requireEnv(t)
	d := newTestDriver(t, env, drivers.Config{})
	ctx := context.Background()
	c, err := d.CreateCookie(ctx, &drivers.Task{ID: "fnrun-frozen-" + randomID(), ImageRef: env.localImage, Cmd: "sleep 60"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	res := w.Wait(wctx)
	if res.Status() != drivers.StatusTimeout || !errors.Is(res.Error(), context.DeadlineExceeded) {
		t.Fatalf("status %q (%v), want timeout", res.Status(), res.Error())
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("ending a frozen container took %v", took)
	}
	if err := c.Freeze(ctx); err == nil {
		t.Error("Freeze of an ended container succeeded")
	}
}

// TestStatsInterval: WithStatsInterval sets how often a running container
// is sampled (what the samples carry is the suite's Stats case). Two samples
// closer than the default second apart show the option at work, however
// late a loaded daemon answers some of them.
func TestStatsInterval(t *testing.T) {
	env := requireEnv(t)
	d := newTestDriver(t, env, drivers.Config{}, WithStatsInterval(200*time.Millisecond))
	var mu sync.Mutex
	var at []time.Time
	task := &drivers.Task{ID: "fnrun-stats-" + randomID(), ImageRef: env.localImage, Cmd: "sleep 4",
		Stats: func(context.Context, stats.Stat) {
			mu.Lock()
			at = append(at, time.Now())
			mu.Unlock()
		}}
	runTask(t, d, task, drivers.StatusSuccess)
	mu.Lock()
	defer mu.Unlock()
	closest := time.Duration(math.MaxInt64)
	for i := 1; i < len(at); i++ {
		closest = min(closest, at[i].Sub(at[i-1]))
	}
	if len(at) < 2 || closest > 700*time.Millisecond {
		t.Fatalf("%d samples, the closest %v apart, at an interval of 200ms", len(at), closest)
	}
}

// TestOutputWriterFailure: a writer that fails does not block the
// container, and a clean exit with lost output is an error, not a success.
func TestOutputWriterFailure(t *testing.T) {
	env := requireEnv(t)
	d := newTestDriver(t, env, drivers.Config{})
	task := &drivers.Task{ID: "fnrun-wfail-" + randomID(), ImageRef: env.localImage,
		Cmd: `sh -c 'head -c 1000000 /dev/zero'`, Stdout: failingWriter{}}
	res := runTask(t, d, task, drivers.StatusError)
	if res.Error() == nil || !strings.Contains(res.Error().Error(), "output") {
		t.Errorf("error %v, want one about the output", res.Error())
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// TestGateAndEOFReader: the output gate (now the life cycle's) as the
// containerd driver uses it. A task that discards both streams and has no
// input gets no FIFO at all (cio.NullIO), and once Wait has returned,
// nothing more reaches the task's writers though the container kept
// writing until it was killed. The eofReader signals the end of the input
// once, however often it is read past it (checked without a daemon too).
func TestGateAndEOFReader(t *testing.T) {
	// The reader first: it needs no daemon.
	done := make(chan struct{})
	r := &eofReader{r: strings.NewReader("xy"), done: done}
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "xy" {
		t.Fatal(b, err)
	}
	select {
	case <-done:
	default:
		t.Fatal("EOF not signalled")
	}
	_, _ = r.Read(make([]byte, 1)) // a second EOF must not close twice

	env := requireEnv(t)
	d := newTestDriver(t, env, drivers.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Discarded streams and no input: no FIFO for the shim to open.
	quiet := &drivers.Task{ID: "fnrun-gate-" + randomID(), ImageRef: env.localImage, Cmd: "sleep 60", NoNetwork: true, Stdout: io.Discard}
	c, err := d.CreateCookie(ctx, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Run(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := d.Client().TaskService().Get(d.d.nsCtx(ctx), &tasks.GetRequest{ContainerID: quiet.ID})
	if err != nil {
		t.Fatal(err)
	}
	if p := got.Process; p.Stdin != "" || p.Stdout != "" || p.Stderr != "" {
		t.Errorf("task without streams has FIFOs %q %q %q, want none", p.Stdin, p.Stdout, p.Stderr)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// A writer that ran until the end: shut once Wait returns. The
	// container ignores SIGTERM, so it writes until the SIGKILL that
	// follows the stop grace.
	var out syncBuf
	loud := &drivers.Task{ID: "fnrun-gate-" + randomID(), ImageRef: env.localImage, NoNetwork: true, Stdout: &out,
		Cmd: `sh -c 'trap "" TERM; while true; do echo x; done'`}
	c, err = d.CreateCookie(ctx, loud)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer wcancel()
	if res := w.Wait(wctx); res.Status() != drivers.StatusTimeout {
		t.Fatalf("status %q (%v), want timeout", res.Status(), res.Error())
	}
	n := len(out.String())
	if n == 0 {
		t.Fatal("no output before the end: the check below proves nothing")
	}
	time.Sleep(300 * time.Millisecond)
	if late := len(out.String()) - n; late != 0 {
		t.Errorf("%d bytes reached the writer after Wait returned", late)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}

}

// TestCloseWithEndedContext: the context at hand after a timed-out call has
// ended; Close still removes everything.
func TestCloseWithEndedContext(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	d := newTestDriver(t, env, drivers.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	c, err := d.CreateCookie(ctx, &drivers.Task{ID: "fnrun-endedctx-" + randomID(), ImageRef: env.localImage, Cmd: "sleep 60"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close with an ended context: %v", err)
	}
	if left, err := in.leftovers(context.Background(), d.Settings().Tag); err != nil || len(left) != 0 {
		t.Fatalf("leftovers: %v, %v", left, err)
	}
}

// TestStopGrace: a container ended early (its call timed out) gets
// SIGTERM, then SIGKILL once the stop grace is over: one that ignores
// SIGTERM ends no sooner than the default grace of 1s, and at once with a
// grace of 0; one that honours SIGTERM ends well within the grace.
func TestStopGrace(t *testing.T) {
	env := requireEnv(t)
	// end runs cmd, times its call out and returns how long Wait took
	// past the deadline.
	end := func(t *testing.T, d *Driver, cmd string) time.Duration {
		t.Helper()
		ctx := context.Background()
		var stdout test.SyncBuffer
		c, err := d.CreateCookie(ctx, &drivers.Task{ID: "fnrun-grace-" + randomID(), ImageRef: env.localImage, Cmd: cmd, NoNetwork: true, Stdout: &stdout})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		if err := c.CreateContainer(ctx); err != nil {
			t.Fatal(err)
		}
		w, err := c.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The command says when its trap is set (and the init runs it).
		for ready := time.Now().Add(30 * time.Second); !strings.Contains(stdout.String(), "ready"); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(ready) {
				t.Fatalf("%q never said ready", cmd)
			}
		}
		wctx, cancel := context.WithTimeout(ctx, time.Millisecond)
		defer cancel()
		<-wctx.Done()
		start := time.Now()
		if res := w.Wait(wctx); res.Status() != drivers.StatusTimeout {
			t.Fatalf("status %q (%v), want timeout", res.Status(), res.Error())
		}
		return time.Since(start)
	}
	const stubborn = `sh -c 'trap "" TERM; echo ready; while true; do sleep 0.1; done'`

	d := newTestDriver(t, env, drivers.Config{})
	if g := d.Settings().StopGrace; g != time.Second {
		t.Errorf("default stop grace %v, want 1s", g)
	}
	graced := end(t, d, stubborn)
	if graced < time.Second || graced > 10*time.Second {
		t.Errorf("a container ignoring SIGTERM ended %v after its deadline, want the 1s grace (and not much more)", graced)
	}
	if d.d.opts.init != "" { // without an init, process 1 ignores SIGTERM
		// A grace of 10s, so that a slow kill answer is not taken for a
		// SIGTERM ignored.
		patient := newTestDriver(t, env, drivers.Config{}, drivers.WithStopGrace(10*time.Second))
		if polite := end(t, patient, `sh -c 'echo ready; exec sleep 60'`); polite >= 5*time.Second {
			t.Errorf("a container honouring SIGTERM ended %v after its deadline, want within the grace of 10s", polite)
		}
	}
	now := newTestDriver(t, env, drivers.Config{}, drivers.WithStopGrace(0))
	if killed := end(t, now, stubborn); killed >= graced-500*time.Millisecond {
		t.Errorf("with no stop grace a container ignoring SIGTERM ended %v after its deadline, with 1s %v: want about 1s sooner", killed, graced)
	}
}
