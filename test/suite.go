package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/stats"
)

// Run runs the conformance suite against the drivers that newHarness
// builds. It must not run in parallel with other tests of the same
// process: it checks that no goroutine outlives the driver.
func Run(t *testing.T, newHarness Factory) {
	ignore := goleak.IgnoreCurrent()
	s := &suite{newHarness: newHarness}
	s.h = newHarness(t, drivers.Config{})
	s.caps = s.h.Capabilities
	if s.caps == 0 {
		if c, ok := s.h.Driver.(drivers.Capable); ok {
			s.caps = c.Capabilities()
		}
	}
	closed := false
	defer func() {
		if !closed {
			_ = s.h.Driver.Close()
		}
	}()

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !s.caps.Has(c.needs) {
				t.Skipf("driver lacks capability %s", capNames(c.needs&^s.caps))
			}
			c.run(t, s)
		})
	}

	t.Run("NoLeftovers", func(t *testing.T) {
		s.checkNoLeftovers(t, s.h)
	})
	t.Run("CloseDriver", func(t *testing.T) {
		closed = true
		if err := s.h.Driver.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := s.h.Driver.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if err := goleak.Find(ignore); err != nil {
			t.Errorf("goroutines outlived the driver: %v", err)
		}
	})
}

type suite struct {
	newHarness Factory
	h          *Harness
	caps       drivers.Capability
}

type testCase struct {
	name  string
	needs drivers.Capability
	run   func(t *testing.T, s *suite)
}

var capabilityNames = []struct {
	c    drivers.Capability
	name string
}{
	{drivers.CapRunsCommands, "runs-commands"},
	{drivers.CapResourceLimits, "resource-limits"},
	{drivers.CapOOMDetection, "oom-detection"},
	{drivers.CapFreeze, "freeze"},
	{drivers.CapReadOnlyRoot, "read-only-root"},
	{drivers.CapUnprivileged, "unprivileged"},
	{drivers.CapImagePull, "image-pull"},
}

func capNames(c drivers.Capability) string {
	var names []string
	for _, n := range capabilityNames {
		if c.Has(n.c) {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ", ")
}

// newID returns a container id unique to this run.
func newID(name string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name = strings.ToLower(strings.NewReplacer("/", "-", " ", "-", "_", "-").Replace(name))
	if len(name) > 40 {
		name = name[:40]
	}
	return "fnrun-" + name + "-" + hex.EncodeToString(b[:])
}

// task returns a task of the harness image named after the test. cmd runs
// on real drivers; sc scripts a driver that runs no command to behave the
// same way.
func (s *suite) task(t *testing.T, cmd string, sc Script) *drivers.Task {
	task := &drivers.Task{
		ID:       newID(t.Name()),
		ImageRef: s.h.Image,
		Cmd:      cmd,
	}
	if s.h.Script != nil {
		s.h.Script(task, sc)
	}
	return task
}

// Outcome is what one full cookie life cycle produced.
type Outcome struct {
	Result drivers.RunResult
	Stdout string
	Stderr string
}

// Lifecycle runs task through every step of the contract with drv and
// closes the cookie. A failure of a step before Wait is returned as err.
func Lifecycle(ctx context.Context, drv drivers.Driver, task *drivers.Task) (Outcome, error) {
	var stdout, stderr SyncBuffer
	task.Stdout, task.Stderr = &stdout, &stderr
	cookie, err := drv.CreateCookie(ctx, task)
	if err != nil {
		return Outcome{}, fmt.Errorf("CreateCookie: %w", err)
	}
	defer cookie.Close(context.Background())
	if err := Prepare(ctx, cookie); err != nil {
		return Outcome{}, err
	}
	wait, err := cookie.Run(ctx)
	if err != nil {
		return Outcome{}, fmt.Errorf("Run: %w", err)
	}
	res := wait.Wait(ctx)
	if err := cookie.Close(context.Background()); err != nil {
		return Outcome{}, fmt.Errorf("Close: %w", err)
	}
	return Outcome{Result: res, Stdout: stdout.String(), Stderr: stderr.String()}, nil
}

// Prepare validates, pulls when needed, revalidates and creates.
func Prepare(ctx context.Context, cookie drivers.Cookie) error {
	needsPull, err := cookie.ValidateImage(ctx)
	if err != nil {
		return fmt.Errorf("ValidateImage: %w", err)
	}
	if needsPull {
		if err := cookie.PullImage(ctx); err != nil {
			return fmt.Errorf("PullImage: %w", err)
		}
		if needsPull, err = cookie.ValidateImage(ctx); err != nil {
			return fmt.Errorf("ValidateImage after pull: %w", err)
		}
		if needsPull {
			return errors.New("ValidateImage still asks for a pull after PullImage")
		}
	}
	if err := cookie.CreateContainer(ctx); err != nil {
		return fmt.Errorf("CreateContainer: %w", err)
	}
	return nil
}

func (s *suite) mustRun(t *testing.T, ctx context.Context, task *drivers.Task) Outcome {
	t.Helper()
	out, err := Lifecycle(ctx, s.h.Driver, task)
	if err != nil {
		t.Fatalf("life cycle of %s: %v", task.ID, err)
	}
	return out
}

func wantSuccess(t *testing.T, out Outcome) {
	t.Helper()
	if out.Result.Status() != drivers.StatusSuccess || out.Result.Error() != nil {
		t.Fatalf("status %q, error %v, want success (stdout %q, stderr %q)",
			out.Result.Status(), out.Result.Error(), out.Stdout, out.Stderr)
	}
}

func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func (s *suite) checkNoLeftovers(t *testing.T, h *Harness) {
	t.Helper()
	if h.Leftovers == nil {
		t.Fatal("harness has no Leftovers function")
	}
	// Removal may finish just after Close returns on some runtimes (a
	// shim exiting); allow a short settle time, never a silent pass.
	deadline := time.Now().Add(10 * time.Second)
	for {
		left, err := h.Leftovers(context.Background())
		if err != nil {
			t.Fatalf("Leftovers: %v", err)
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("objects left behind: %v", left)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// SyncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// statRecorder collects the stats a driver writes.
type statRecorder struct {
	mu    sync.Mutex
	stats []stats.Stat
}

func (r *statRecorder) write(_ context.Context, s stats.Stat) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats = append(r.stats, s)
}

func (r *statRecorder) all() []stats.Stat {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]stats.Stat(nil), r.stats...)
}
