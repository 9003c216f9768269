package containerd

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/stats"
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
	_, err = New(context.Background(), drivers.Config{Containerd: sock}, WithCallTimeout(300*time.Millisecond))
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
	if left, err := in.leftovers(ctx, d.cfg.ContainerLabelTag); err != nil || len(left) != 0 {
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

// TestStatsSamples: a running container yields several samples with CPU
// and memory figures and its memory limit.
func TestStatsSamples(t *testing.T) {
	env := requireEnv(t)
	d := newTestDriver(t, env, drivers.Config{}, WithStatsInterval(200*time.Millisecond))
	var mu sync.Mutex
	var got []stats.Stat
	task := &drivers.Task{ID: "fnrun-stats-" + randomID(), ImageRef: env.localImage, MemoryBytes: 64 << 20,
		Cmd: `sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 1'`,
		Stats: func(_ context.Context, s stats.Stat) {
			mu.Lock()
			got = append(got, s)
			mu.Unlock()
		}}
	runTask(t, d, task, drivers.StatusSuccess)
	mu.Lock()
	defer mu.Unlock()
	if len(got) < 3 {
		t.Fatalf("%d samples in more than a second at 200ms", len(got))
	}
	last := got[len(got)-1]
	if last.Metrics[stats.MetricCPUTotal] == 0 || last.Metrics[stats.MetricMemLimit] != 64<<20 {
		t.Errorf("last sample %v: want CPU time and the 64MiB limit", last.Metrics)
	}
	// Network figures come from the task's namespace, which is gone once
	// the process has exited: the sample taken at the very end may lack
	// them, the ones taken while it ran may not.
	withNet := 0
	for _, s := range got {
		if _, ok := s.Metrics[stats.MetricNetRx]; ok {
			withNet++
		}
	}
	if withNet == 0 {
		t.Errorf("none of %d samples has network figures", len(got))
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

func TestGateAndEOFReader(t *testing.T) {
	var g gate
	var sb strings.Builder
	w := g.writer(&sb)
	if g.writer(nil) != nil {
		t.Error("a nil writer must stay nil (no FIFO for that stream)")
	}
	if n, err := w.Write([]byte("abc")); n != 3 || err != nil {
		t.Fatal(n, err)
	}
	if err := g.shut(); err != nil {
		t.Fatal(err)
	}
	if n, err := w.Write([]byte("late")); n != 4 || err != nil || sb.String() != "abc" {
		t.Fatalf("write after shut: %d, %v, %q", n, err, sb.String())
	}

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
	if left, err := in.leftovers(context.Background(), d.cfg.ContainerLabelTag); err != nil || len(left) != 0 {
		t.Fatalf("leftovers: %v, %v", left, err)
	}
}
