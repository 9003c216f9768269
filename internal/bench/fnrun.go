package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/pool"
)

// HotCommand is the command of a warm container: it echoes every line of
// its stdin back on stdout, until stdin ends.
const HotCommand = `sh -c 'while read -r line; do echo "$line"; done'`

// TrivialCommand is the command of a cold or pooled call.
const TrivialCommand = "true"

func randomID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// callID names the container of one call.
func callID(kind string) string { return "fnrun-bench-" + kind + "-" + randomID() }

// FnrunCall is the cold or pooled target on the fnrun side: the driver's
// whole cookie life cycle for one call of `true`. For the pooled mode,
// give it a driver that runs a pre-fork pool: Prepare waits until the pool
// is ready, and the note counts the pool's misses.
type FnrunCall struct {
	drv     drivers.Driver
	variant Variant
	image   string

	missesBefore uint64
}

// NewFnrunCall returns the fnrun target of variant (Cold or Pooled) over
// drv.
func NewFnrunCall(drv drivers.Driver, variant Variant, image string) *FnrunCall {
	return &FnrunCall{drv: drv, variant: variant, image: image}
}

func (t *FnrunCall) Variant() Variant { return t.variant }

// Prepare pulls the image if needed (through one call) and, for a pooled
// driver, waits until its pool has every holder running.
func (t *FnrunCall) Prepare(ctx context.Context, workers int) error {
	if t.variant.Mode == Pooled {
		rep, ok := t.drv.(pool.Reporter)
		if !ok {
			return fmt.Errorf("the %s driver reports no pool (it does not implement pool.Reporter)", t.variant.Driver)
		}
		if err := WaitPool(ctx, rep, 2*time.Minute); err != nil {
			return err
		}
		st, _ := rep.PoolStats()
		t.missesBefore = st.Misses
	}
	return nil
}

// failingPool is the number of failures, with no holder running, after
// which WaitPool gives up.
const failingPool = 5

// WaitPool waits until the pool of rep has all the holders it aims for
// running and none starting, or timeout passes.
func WaitPool(ctx context.Context, rep pool.Reporter, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, ok := rep.PoolStats()
		if !ok {
			return errors.New("the driver runs without a pool")
		}
		if PoolReady(st) {
			return nil
		}
		if st.Failures >= failingPool && st.Free+st.Leased == 0 {
			// Holders die or fail to start again and again: waiting
			// longer only delays the same answer.
			return fmt.Errorf("pool failing: no holder running after %d failed starts (the driver's log, at warn level, says why)", st.Failures)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pool not ready after %v: %d of %d holders running, %d starting, %d failures", timeout, st.Free+st.Leased, st.Size, st.Starting, st.Failures)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PoolReady reports whether a pool has every holder it aims for running.
func PoolReady(st pool.Stats) bool {
	return st.Size > 0 && st.Free+st.Leased >= st.Size && st.Starting == 0
}

func (t *FnrunCall) Call(ctx context.Context, _ int) error {
	return Lifecycle(ctx, t.drv, &drivers.Task{ID: callID("f"), ImageRef: t.image, Cmd: TrivialCommand})
}

// Note counts the pool's misses during the run.
func (t *FnrunCall) Note() string {
	if t.variant.Mode != Pooled {
		return ""
	}
	rep, _ := t.drv.(pool.Reporter)
	st, ok := rep.PoolStats()
	if !ok {
		return ""
	}
	return fmt.Sprintf("pool misses %d", st.Misses-t.missesBefore)
}

func (t *FnrunCall) Close(context.Context) error { return nil }

// Lifecycle runs task through a cookie's whole life: validate (and pull
// when needed), create, run, wait, close. A call that does not succeed is
// an error.
func Lifecycle(ctx context.Context, drv drivers.Driver, task *drivers.Task) error {
	c, err := drv.CreateCookie(ctx, task)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	need, err := c.ValidateImage(ctx)
	if err != nil {
		return err
	}
	if need {
		if err := c.PullImage(ctx); err != nil {
			return err
		}
		if need, err = c.ValidateImage(ctx); err != nil || need {
			return fmt.Errorf("image %s after pull: missing %v: %v", task.ImageRef, need, err)
		}
	}
	if err := c.CreateContainer(ctx); err != nil {
		return err
	}
	w, err := c.Run(ctx)
	if err != nil {
		return err
	}
	if res := w.Wait(ctx); res.Status() != drivers.StatusSuccess {
		return fmt.Errorf("call %s: %s: %v", task.ID, res.Status(), res.Error())
	}
	markResult(ctx)
	return c.Close(ctx)
}

// FnrunWarm is the warm target on the fnrun side: one hot cookie per
// worker, frozen between calls.
type FnrunWarm struct {
	drv     drivers.Driver
	variant Variant
	image   string

	mu  sync.Mutex
	hot []*hotCookie
}

// NewFnrunWarm returns the warm fnrun target over drv.
func NewFnrunWarm(drv drivers.Driver, driverName, image string) *FnrunWarm {
	return &FnrunWarm{drv: drv, variant: Variant{driverName, Warm, Fnrun}, image: image}
}

func (t *FnrunWarm) Variant() Variant { return t.variant }

type hotCookie struct {
	cookie drivers.Cookie
	stdin  *io.PipeWriter
	out    *lineConn
	cancel context.CancelFunc
	seq    int
}

func (t *FnrunWarm) Prepare(ctx context.Context, workers int) error {
	for w := 0; w < workers; w++ {
		h, err := t.start(ctx)
		if h != nil {
			t.mu.Lock()
			t.hot = append(t.hot, h)
			t.mu.Unlock()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (t *FnrunWarm) start(ctx context.Context) (*hotCookie, error) {
	inR, inW := io.Pipe()
	out := newLineConn()
	task := &drivers.Task{ID: callID("fw"), ImageRef: t.image, Cmd: HotCommand, Stdin: inR, Stdout: out.w, Stderr: io.Discard}
	c, err := t.drv.CreateCookie(ctx, task)
	if err != nil {
		return nil, err
	}
	// The run outlives Prepare: its context ends in Close.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h := &hotCookie{cookie: c, stdin: inW, out: out, cancel: cancel}
	need, err := c.ValidateImage(ctx)
	if err == nil && need {
		if err = c.PullImage(ctx); err == nil {
			need, err = c.ValidateImage(ctx)
		}
	}
	if err == nil && need {
		err = fmt.Errorf("image %s missing after a pull", t.image)
	}
	if err == nil {
		err = c.CreateContainer(ctx)
	}
	if err == nil {
		_, err = c.Run(runCtx)
	}
	if err == nil {
		err = h.roundTrip(ctx)
	}
	if err == nil {
		err = c.Freeze(ctx)
	}
	return h, err
}

// roundTrip writes one line to the hot container and reads its echo.
func (h *hotCookie) roundTrip(ctx context.Context) error {
	h.seq++
	return echo(ctx, h.stdin, h.out, fmt.Sprintf("call %d", h.seq))
}

func (t *FnrunWarm) Call(ctx context.Context, worker int) error {
	t.mu.Lock()
	h := t.hot[worker]
	t.mu.Unlock()
	if err := h.cookie.Unfreeze(ctx); err != nil {
		return err
	}
	if err := h.roundTrip(ctx); err != nil {
		return err
	}
	return h.cookie.Freeze(ctx)
}

// repairDelay lets a daemon's view of a container settle after a failed
// freeze or thaw before the container is frozen again.
const repairDelay = 100 * time.Millisecond

// Repair freezes the worker's hot container again after a failed call; an
// error (it is frozen already) is ignored.
func (t *FnrunWarm) Repair(ctx context.Context, worker int) {
	t.mu.Lock()
	h := t.hot[worker]
	t.mu.Unlock()
	time.Sleep(repairDelay)
	_ = h.cookie.Freeze(ctx)
}

func (t *FnrunWarm) Close(ctx context.Context) error {
	t.mu.Lock()
	hot := t.hot
	t.hot = nil
	t.mu.Unlock()
	var errs []error
	for _, h := range hot {
		h.out.discard()
		_ = h.stdin.Close()
		if err := h.cookie.Close(ctx); err != nil {
			errs = append(errs, err)
		}
		h.cancel()
		h.out.close()
	}
	return errors.Join(errs...)
}

// lineConn carries a container's stdout to the reader of replies.
type lineConn struct {
	r  *io.PipeReader
	w  *io.PipeWriter
	mu sync.Mutex // one reader of br at a time
	br *bufio.Reader
}

func (l *lineConn) readLine() (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.br.ReadString('\n')
}

func newLineConn() *lineConn {
	r, w := io.Pipe()
	return &lineConn{r: r, w: w, br: bufio.NewReader(r)}
}

// discard reads whatever comes, so the writer never blocks during clean-up.
func (l *lineConn) discard() {
	go func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		_, _ = io.Copy(io.Discard, l.br)
	}()
}

func (l *lineConn) close() { _ = l.w.Close(); _ = l.r.Close() }

// echo sends msg on in and waits for the same line on out.
func echo(ctx context.Context, in io.Writer, out *lineConn, msg string) error {
	if _, err := io.WriteString(in, msg+"\n"); err != nil {
		return fmt.Errorf("write to the hot container: %w", err)
	}
	type reply struct {
		line string
		err  error
	}
	ch := make(chan reply, 1)
	go func() {
		line, err := out.readLine()
		ch <- reply{line, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return fmt.Errorf("read from the hot container: %w", r.err)
		}
		if got := strings.TrimRight(r.line, "\r\n"); got != msg {
			return fmt.Errorf("hot container replied %q to %q", got, msg)
		}
		return nil
	case <-ctx.Done():
		// The reader goroutine ends when the pipe is closed in Close.
		return ctx.Err()
	}
}
