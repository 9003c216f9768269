package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/stats"
)

// fakeRuntime is a Runtime whose containers run until signalled, with
// faults a test switches on.
type fakeRuntime struct {
	mu sync.Mutex
	// createInDoubt: a call's create makes the container but its answer
	// is lost.
	createInDoubt bool
	// pauseLost: a pause freezes the container but its answer is lost.
	pauseLost bool
	live      map[string]*fakeContainer
	resumes   int
	// joined records, for each create of a call's container, whether it
	// joined a holder.
	joined []bool
}

func newFake() *fakeRuntime { return &fakeRuntime{live: map[string]*fakeContainer{}} }

func (f *fakeRuntime) Options(*Task) (any, error) { return struct{}{}, nil }
func (f *fakeRuntime) Joinable(*Task, any) bool   { return true }
func (f *fakeRuntime) FindImage(context.Context, drivers.Reference) (bool, error) {
	return true, nil
}
func (f *fakeRuntime) Pull(context.Context, drivers.Reference, *drivers.AuthConfig) error {
	return nil
}

func (f *fakeRuntime) Create(_ context.Context, spec CreateSpec) (Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := &fakeContainer{f: f, name: spec.Name, exited: make(chan struct{})}
	f.live[spec.Name] = c
	if spec.Task != nil {
		f.joined = append(f.joined, spec.Join != nil)
	}
	if spec.Task != nil && f.createInDoubt {
		return c, fmt.Errorf("create %s: %w", spec.Name, drivers.ErrDaemonUnavailable)
	}
	return c, nil
}

func (f *fakeRuntime) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.live)
}

type fakeContainer struct {
	f      *fakeRuntime
	name   string
	once   sync.Once
	exited chan struct{}
	paused bool
}

func (c *fakeContainer) ID() string { return c.name }
func (c *fakeContainer) Start(context.Context, IO) (Process, error) {
	return &fakeProcess{c: c}, nil
}

func (c *fakeContainer) Pause(context.Context) error {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	c.paused = true
	if c.f.pauseLost {
		return fmt.Errorf("pause: %w", drivers.ErrDaemonUnavailable)
	}
	return nil
}

func (c *fakeContainer) Resume(context.Context) error {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	c.paused = false
	c.f.resumes++
	return nil
}

func (c *fakeContainer) Remove(context.Context) error {
	c.once.Do(func() { close(c.exited) })
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	delete(c.f.live, c.name)
	return nil
}

type fakeProcess struct{ c *fakeContainer }

func (p *fakeProcess) Wait(ctx context.Context) (Exit, error) {
	select {
	case <-p.c.exited:
		return Exit{Code: 137}, nil
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
}

// Signal ends the process, unless it is paused: a frozen process acts on
// no signal, as with the cgroup freezer.
func (p *fakeProcess) Signal(context.Context, syscall.Signal, bool) error {
	p.c.f.mu.Lock()
	paused := p.c.paused
	p.c.f.mu.Unlock()
	if !paused {
		p.c.once.Do(func() { close(p.c.exited) })
	}
	return nil
}

func (p *fakeProcess) InputDone() <-chan struct{}              { return nil }
func (p *fakeProcess) CloseInput(context.Context) error        { return nil }
func (p *fakeProcess) OutputDone() <-chan struct{}             { return p.c.exited }
func (p *fakeProcess) StopOutput()                             {}
func (p *fakeProcess) Stats(context.Context, func(stats.Stat)) {}

func newFakeDriver(t *testing.T, f *fakeRuntime, cfg drivers.Config, opts ...drivers.Option) *Driver {
	t.Helper()
	s, err := Configure("fake", cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(context.Background(), s, f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func startFake(t *testing.T, d *Driver, ctx context.Context) (drivers.Cookie, drivers.WaitResult) {
	t.Helper()
	c, err := d.CreateCookie(context.Background(), &drivers.Task{ID: "fake-1", ImageRef: "busybox"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CreateContainer(context.Background()); err != nil {
		t.Fatal(err)
	}
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, w
}

// A pause whose answer was lost may have frozen the container: ending the
// run thaws it, whatever the answer said, so it can end at all.
func TestLostPauseAnswerIsThawed(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	f := newFake()
	f.pauseLost = true
	d := newFakeDriver(t, f, drivers.Config{}, drivers.WithStopGrace(0), drivers.WithCallTimeout(time.Second))
	// The run must still be on when the Freeze is sent (its answer takes
	// the call timeout, 1s), and end at its deadline while frozen.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, w := startFake(t, d, ctx)
	if err := c.Freeze(context.Background()); !errors.Is(err, drivers.ErrDaemonUnavailable) {
		t.Fatalf("Freeze = %v", err)
	}
	res := w.Wait(context.Background())
	if res.Status() != drivers.StatusTimeout {
		t.Fatalf("status %s (%v), want timeout: the frozen container was never thawed", res.Status(), res.Error())
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.resumes == 0 {
		t.Fatal("the container was never resumed")
	}
	_ = d.Close()
}

// A container made by a create whose answer was lost keeps its pool lease
// until Close has removed it: no other call is handed its namespace.
func TestInDoubtCreateKeepsLease(t *testing.T) {
	f := newFake()
	d := newFakeDriver(t, f, drivers.Config{PreForkPoolSize: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Pool().Ready(ctx); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.createInDoubt = true
	f.mu.Unlock()
	c, err := d.CreateCookie(ctx, &drivers.Task{ID: "doubt", ImageRef: "busybox"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CreateContainer(ctx); !errors.Is(err, drivers.ErrDaemonUnavailable) {
		t.Fatalf("CreateContainer = %v", err)
	}
	if st, _ := d.PoolStats(); st.Leased != 1 {
		t.Fatalf("%d leased after a create in doubt, want the lease kept", st.Leased)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := d.PoolStats(); st.Leased != 0 {
		t.Fatalf("%d leased after Close", st.Leased)
	}
	if n := f.count(); n != 1 { // the holder
		t.Fatalf("%d containers left, want the holder only", n)
	}
}

func TestConfigure(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  drivers.Config
		opts []drivers.Option
	}{
		{"zero call timeout", drivers.Config{}, []drivers.Option{drivers.WithCallTimeout(0)}},
		{"negative pull timeout", drivers.Config{}, []drivers.Option{drivers.WithPullTimeout(-time.Second)}},
		{"negative stop grace", drivers.Config{}, []drivers.Option{drivers.WithStopGrace(-1)}},
		{"nil logger", drivers.Config{}, []drivers.Option{drivers.WithLogger(nil)}},
		{"bad pre-fork image", drivers.Config{PreForkPoolSize: 1, PreForkImage: "Bad::Image"}, nil},
		{"bad pre-fork command", drivers.Config{PreForkPoolSize: 1, PreForkCmd: `sleep "1`}, nil},
		{"missing docker config", drivers.Config{}, []drivers.Option{drivers.WithDockerConfig("/nonexistent/fnrun")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Configure("fake", tc.cfg, tc.opts); !errors.Is(err, drivers.ErrInvalidConfig) {
				t.Fatalf("Configure = %v, want ErrInvalidConfig", err)
			}
		})
	}
	s, err := Configure("fake", drivers.Config{PreForkPoolSize: 2, ImageCleanMaxSize: 1 << 30, ContainerLabelTag: "t"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case s.PreFork.Image.Familiar != "busybox:latest" || len(s.PreFork.Args) != 2:
		t.Errorf("pre-fork defaults %+v", s.PreFork)
	case s.Pool.Size != 2 || s.Cleaner.Exempt[len(s.Cleaner.Exempt)-1] != "busybox:latest":
		t.Errorf("pool %+v, cleaner %+v", s.Pool, s.Cleaner)
	case s.Labels(drivers.RoleCall)[drivers.LabelDriver] != "fake" || s.Instance == "":
		t.Errorf("labels %v", s.Labels(drivers.RoleCall))
	}
}

// blockedWriter blocks every write until release is closed.
type blockedWriter struct{ release chan struct{} }

func (w blockedWriter) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}

func TestOutput(t *testing.T) {
	t.Run("delivers in order and reports nothing lost", func(t *testing.T) {
		var b syncBuffer
		o, out, errW := newOutput(&b, &b)
		_, _ = io.WriteString(out, "a")
		_, _ = io.WriteString(errW, "b")
		if err := o.shut(); err != nil || b.String() != "ab" {
			t.Fatalf("shut = %v, got %q", err, b.String())
		}
	})
	t.Run("a failing writer is an error and the rest is dropped", func(t *testing.T) {
		o, out, _ := newOutput(failing{}, nil)
		for i := 0; i < 3; i++ {
			if n, err := out.Write([]byte("x")); n != 1 || err != nil {
				t.Fatalf("Write = %d, %v: the runtime's copy must go on", n, err)
			}
		}
		if err := o.shut(); !errors.Is(err, io.ErrClosedPipe) {
			t.Fatalf("shut = %v", err)
		}
	})
	t.Run("a blocked writer holds up nothing once the run ends", func(t *testing.T) {
		w := blockedWriter{release: make(chan struct{})}
		defer close(w.release)
		o, out, _ := newOutput(w, nil)
		wrote := make(chan struct{})
		go func() {
			_, _ = out.Write([]byte("stuck"))
			close(wrote)
		}()
		o.ending()
		select {
		case <-wrote:
		case <-time.After(5 * stallTimeout):
			t.Fatal("a write to a stuck writer outlived the stall timeout of an ending run")
		}
		if err := o.shut(); !errors.Is(err, drivers.ErrOutputLost) {
			t.Fatalf("shut = %v, want ErrOutputLost", err)
		}
	})
	t.Run("drain waits while output moves", func(t *testing.T) {
		var b syncBuffer
		o, out, _ := newOutput(&b, nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < 60; i++ { // 1.2 s in all, well past the bound
				time.Sleep(20 * time.Millisecond)
				_, _ = out.Write([]byte("x"))
			}
		}()
		if !o.drain(done, 500*time.Millisecond) {
			t.Fatal("drain gave up on output that kept moving")
		}
		_ = o.shut()
	})
}

type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.b)
}

// A holder that dies between the create of a container joining it and its
// start costs the call nothing: the container is made again with a network
// of its own, as on a pool miss, and the lease goes back.
func TestHolderDeadBeforeStartRecreates(t *testing.T) {
	f := newFake()
	d := newFakeDriver(t, f, drivers.Config{PreForkPoolSize: 1}, drivers.WithStopGrace(0))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Pool().Ready(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := d.CreateCookie(ctx, &drivers.Task{ID: "orphan", ImageRef: "busybox"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	for name, h := range f.live {
		if name != "orphan" {
			h.once.Do(func() { close(h.exited) })
		}
	}
	f.mu.Unlock()
	for st, _ := d.PoolStats(); st.Deaths == 0; st, _ = d.PoolStats() {
		if ctx.Err() != nil {
			t.Fatal("the pool never saw its holder die")
		}
		time.Sleep(10 * time.Millisecond)
	}
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatalf("Run = %v, want the container made again", err)
	}
	if st, _ := d.PoolStats(); st.Leased != 0 {
		t.Errorf("%d leased after the holder died, want the lease returned", st.Leased)
	}
	f.mu.Lock()
	joined := f.joined
	f.mu.Unlock()
	if len(joined) != 2 || !joined[0] || joined[1] {
		t.Errorf("creates joined a holder %v, want [true false]", joined)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	_ = w.Wait(ctx)
	f.mu.Lock()
	_, left := f.live["orphan"]
	f.mu.Unlock()
	if left {
		t.Error("the container made again is left after Close")
	}
}
