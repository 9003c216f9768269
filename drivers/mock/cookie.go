package mock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/stats"
)

// errTransientPull is the default error of a scripted pull failure.
var errTransientPull = errors.New("mock: scripted pull failure")

type cookie struct {
	drv     *Driver
	task    drivers.ContainerTask
	checked *drivers.CheckedTask
	script  script

	mu        sync.Mutex
	created   bool
	closed    bool
	run       *run
	createOpt map[string]string
}

var _ drivers.Cookie = (*cookie)(nil)

func (c *cookie) image() string { return c.checked.Image.Normalized }

// ValidateImage implements drivers.Cookie.
func (c *cookie) ValidateImage(ctx context.Context) (bool, error) {
	if err := c.usable(ctx); err != nil {
		return false, err
	}
	return !c.drv.HasImage(c.image()), nil
}

// PullImage implements drivers.Cookie, with the driver's retry policy.
func (c *cookie) PullImage(ctx context.Context) error {
	if err := c.usable(ctx); err != nil {
		return err
	}
	c.drv.mu.Lock()
	policy, checker := c.drv.policy, c.drv.checker
	c.drv.mu.Unlock()
	return drivers.Retry(ctx, policy, checker, c.pullOnce)
}

func (c *cookie) pullOnce(ctx context.Context) error {
	if c.script.pullDelay > 0 {
		t := time.NewTimer(c.script.pullDelay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return fmt.Errorf("pull %s: %w", c.image(), ctx.Err())
		case <-t.C:
		}
	}
	d := c.drv
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pulls++
	d.pullAttempts[c.image()]++
	switch {
	case c.script.imageMissing:
		return fmt.Errorf("pull %s: %w", c.image(), drivers.ErrImageNotFound)
	case c.script.pullError != "" && c.script.pullFailures == 0:
		return fmt.Errorf("pull %s: %s", c.image(), c.script.pullError)
	case d.pullAttempts[c.image()] <= c.script.pullFailures:
		if c.script.pullError != "" {
			return fmt.Errorf("pull %s: %s", c.image(), c.script.pullError)
		}
		return fmt.Errorf("pull %s: %w", c.image(), errTransientPull)
	}
	d.images[c.image()] = true
	return nil
}

// CreateContainer implements drivers.Cookie.
func (c *cookie) CreateContainer(ctx context.Context) error {
	if err := c.usable(ctx); err != nil {
		return err
	}
	if c.script.createError != "" {
		return fmt.Errorf("create container %s: %s", c.task.Id(), c.script.createError)
	}
	if !c.drv.HasImage(c.image()) {
		return fmt.Errorf("create container %s: image %s is not present: %w", c.task.Id(), c.image(), drivers.ErrImageNotFound)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.created {
		return fmt.Errorf("create container %s: already created", c.task.Id())
	}
	c.created = true
	return nil
}

// ContainerOptions returns the scripted behaviour, as the mock's "create
// options".
func (c *cookie) ContainerOptions() interface{} {
	return c.task.Extensions()
}

// Run implements drivers.Cookie.
func (c *cookie) Run(ctx context.Context) (drivers.WaitResult, error) {
	if err := c.usable(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !c.created:
		return nil, fmt.Errorf("run %s: container not created", c.task.Id())
	case c.run != nil:
		return nil, fmt.Errorf("run %s: already started", c.task.Id())
	}
	stdout, stderr := c.task.Logger()
	r := &run{
		RunEnd: drivers.NewRunEnd(),
		wake:   make(chan struct{}, 1),
		stdout: &gate{w: stdout},
		stderr: &gate{w: stderr},
	}
	c.run = r
	go r.simulate(ctx, c.task, c.script)
	return r, nil
}

// Freeze implements drivers.Cookie.
func (c *cookie) Freeze(ctx context.Context) error { return c.setFrozen(ctx, true) }

// Unfreeze implements drivers.Cookie.
func (c *cookie) Unfreeze(ctx context.Context) error { return c.setFrozen(ctx, false) }

func (c *cookie) setFrozen(ctx context.Context, frozen bool) error {
	if err := c.usable(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	r := c.run
	c.mu.Unlock()
	if r == nil || r.Finished() {
		return fmt.Errorf("container %s is not running", c.task.Id())
	}
	r.setFrozen(frozen)
	return nil
}

// Close implements drivers.Cookie; it ends a running container and waits
// for it.
func (c *cookie) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	r := c.run
	c.mu.Unlock()
	if r != nil {
		r.RequestEnd(nil)
		<-r.Done()
	}
	c.drv.forget(c)
	return nil
}

func (c *cookie) usable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("cookie %s: %w", c.task.Id(), drivers.ErrClosed)
	}
	return nil
}

// run is one simulated container run.
type run struct {
	*drivers.RunEnd
	wake   chan struct{} // signals a freeze or thaw
	stdout *gate
	stderr *gate

	mu     sync.Mutex
	frozen bool
}

func (r *run) setFrozen(frozen bool) {
	r.mu.Lock()
	r.frozen = frozen
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *run) isFrozen() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.frozen
}

// simulate plays the script: echo stdin, spend the delay (not counting
// time frozen) or hang, write the scripted output, exit. It watches the
// Run context like a real driver's monitor.
func (r *run) simulate(runCtx context.Context, task drivers.ContainerTask, s script) {
	var res drivers.RunResult
	defer func() { r.Finish(res) }()
	defer r.stdout.shut()
	defer r.stderr.shut()
	start := time.Now()

	var echoed chan struct{} // nil when there is nothing to echo
	if in := task.Input(); s.echoStdin && in != nil {
		done := make(chan struct{})
		echoed = done
		go func() {
			defer close(done)
			_, _ = io.Copy(r.stdout, in)
		}()
	}

	remaining := s.delay
	finished := false
loop:
	for {
		counting := !r.isFrozen() && !s.hang
		if counting && remaining <= 0 && echoed == nil {
			finished = true
			break
		}
		var tick <-chan time.Time // nil while frozen or hanging: never fires
		var timer *time.Timer
		if counting && remaining > 0 {
			timer = time.NewTimer(remaining)
			tick = timer.C
		}
		began := time.Now()
		select {
		case <-tick:
			remaining = 0
		case <-echoed:
			echoed = nil // closed channels always fire; stop watching it
		case <-r.wake:
		case <-r.EndRequested():
			stopTimer(timer)
			break loop
		case <-runCtx.Done():
			r.RequestEnd(runCtx)
			stopTimer(timer)
			break loop
		}
		if timer != nil && remaining > 0 {
			remaining -= time.Since(began)
		}
		stopTimer(timer)
	}

	task.WriteStat(runCtx, stats.Stat{Timestamp: time.Now(), Metrics: map[string]uint64{
		stats.MetricCPUTotal: uint64(time.Since(start)),
		stats.MetricMemUsage: 0,
	}})
	if !finished {
		ctx := r.Cause()
		if ctx == nil {
			ctx = closedContext()
		}
		res = drivers.ContextResult(ctx)
		return
	}
	_, _ = io.WriteString(r.stdout, s.stdout)
	_, _ = io.WriteString(r.stderr, s.stderr)
	if s.oom {
		res = drivers.OOMResult(137)
		return
	}
	res = drivers.ExitResult(s.exitCode)
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

func closedContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// gate forwards writes until it is shut, so nothing reaches the task's
// writers after Wait has returned.
type gate struct {
	mu     sync.Mutex
	w      io.Writer
	isShut bool
}

func (g *gate) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.isShut {
		return 0, io.ErrClosedPipe
	}
	return g.w.Write(p)
}

func (g *gate) shut() {
	g.mu.Lock()
	g.isShut = true
	g.mu.Unlock()
}
