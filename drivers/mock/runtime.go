package mock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"syscall"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/lifecycle"
	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/stats"
)

// errTransientPull is the default error of a scripted pull failure.
var errTransientPull = errors.New("mock: scripted pull failure")

// runtime is the mock's lifecycle.Runtime: images and containers in memory.
type runtime struct {
	mu           sync.Mutex
	allPresent   bool
	images       map[string]bool   // normalised reference -> present
	pullAttempts map[string]int    // normalised reference -> attempts so far
	pullScripts  map[string]script // normalised reference -> the last task's script
	pulls        int
	created      int
	containers   map[string]*container
}

var (
	_ lifecycle.Runtime   = (*runtime)(nil)
	_ lifecycle.Joiner    = (*runtime)(nil)
	_ lifecycle.SlotKeyer = (*runtime)(nil)
	_ drivers.Capable     = (*runtime)(nil)
)

// Capabilities implements drivers.Capable: the mock emulates freezing, OOM
// kills and pulls, but runs no command and enforces no limit.
func (rt *runtime) Capabilities() drivers.Capability {
	return drivers.CapFreeze | drivers.CapOOMDetection | drivers.CapImagePull
}

// Options implements lifecycle.Runtime: the task's extensions are the
// mock's create options. The task's pull script applies to its image.
func (rt *runtime) Options(t *lifecycle.Task) (any, error) {
	ext := make(map[string]string, len(t.Extensions()))
	for k, v := range t.Extensions() {
		ext[k] = v
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.created++
	rt.pullScripts[t.Ref.Normalized] = parseScript(ext)
	return ext, nil
}

func (rt *runtime) hasImage(ref string) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.allPresent || rt.images[ref]
}

// Joinable implements lifecycle.Joiner: every call leases a pool holder
// when one is free, as on the real drivers (the mock has no network to
// share, but the leases, misses and deaths are the same).
func (rt *runtime) Joinable(*lifecycle.Task, any) bool { return true }

// FindImage implements lifecycle.Runtime.
func (rt *runtime) FindImage(_ context.Context, ref drivers.Reference) (bool, error) {
	return rt.hasImage(ref.Normalized), nil
}

// Pull implements lifecycle.Runtime, as the image's script says.
func (rt *runtime) Pull(ctx context.Context, ref drivers.Reference, _ *drivers.AuthConfig) error {
	rt.mu.Lock()
	s := rt.pullScripts[ref.Normalized]
	rt.mu.Unlock()
	if s.pullDelay > 0 {
		t := time.NewTimer(s.pullDelay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return fmt.Errorf("pull %s: %w", ref.Familiar, ctx.Err())
		case <-t.C:
		}
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.pulls++
	rt.pullAttempts[ref.Normalized]++
	switch {
	case s.imageMissing:
		return fmt.Errorf("pull %s: %w", ref.Familiar, drivers.ErrImageNotFound)
	case s.pullError != "" && s.pullFailures == 0:
		return fmt.Errorf("pull %s: %s", ref.Familiar, s.pullError)
	case rt.pullAttempts[ref.Normalized] <= s.pullFailures:
		if s.pullError != "" {
			return fmt.Errorf("pull %s: %s", ref.Familiar, s.pullError)
		}
		return fmt.Errorf("pull %s: %w", ref.Familiar, errTransientPull)
	}
	rt.images[ref.Normalized] = true
	return nil
}

// Create implements lifecycle.Runtime.
func (rt *runtime) Create(_ context.Context, spec lifecycle.CreateSpec) (lifecycle.Container, error) {
	var (
		s   script
		ref string
	)
	if spec.Holder != nil {
		s.hang, ref = true, spec.Holder.Image.Normalized
	} else {
		ext, _ := spec.Options.(map[string]string)
		s, ref = parseScript(ext), spec.Task.Ref.Normalized
	}
	if s.createError != "" {
		return nil, fmt.Errorf("mock: %s", s.createError)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if !rt.allPresent && !rt.images[ref] {
		return nil, fmt.Errorf("image %s is not present: %w", ref, drivers.ErrImageNotFound)
	}
	c := &container{rt: rt, name: spec.Name, image: ref, script: s, labels: spec.Labels, created: time.Now(), memory: math.MaxUint64}
	if spec.Task != nil && spec.Task.Memory() != 0 {
		c.memory = spec.Task.Memory()
	}
	if !daemon.claim(c) {
		return nil, fmt.Errorf("container %s: %w", spec.Name, drivers.ErrAlreadyExists)
	}
	rt.containers[spec.Name] = c
	return c, nil
}

// daemon holds the container names of every mock driver of the process,
// which are unique as on one real daemon.
var daemon = &names{names: make(map[string]*container)}

type names struct {
	mu    sync.Mutex
	names map[string]*container
}

func (dm *names) claim(c *container) bool {
	dm.mu.Lock()
	defer dm.mu.Unlock()
	if dm.names[c.name] != nil {
		return false
	}
	dm.names[c.name] = c
	return true
}

type container struct {
	rt      *runtime
	name    string
	image   string
	script  script
	labels  map[string]string
	created time.Time
	memory  uint64 // the limit its stats report

	mu sync.Mutex
	p  *process
}

func (c *container) ID() string { return c.name }

// Start implements lifecycle.Container; the script plays in a goroutine.
func (c *container) Start(_ context.Context, io lifecycle.IO) (lifecycle.Process, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.p != nil {
		return nil, fmt.Errorf("container %s: already started", c.name)
	}
	p := &process{
		io:     io,
		script: c.script,
		wake:   make(chan struct{}, 1),
		signal: make(chan syscall.Signal, 1),
		exited: make(chan struct{}),
		output: make(chan struct{}),
		memory: c.memory,
	}
	c.p = p
	go p.simulate()
	return p, nil
}

func (c *container) process() (*process, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.p == nil {
		return nil, fmt.Errorf("container %s: %w", c.name, drivers.ErrNotRunning)
	}
	return c.p, nil
}

// Pause implements lifecycle.Container.
func (c *container) Pause(context.Context) error {
	p, err := c.process()
	if err == nil {
		p.setFrozen(true)
	}
	return err
}

// Resume implements lifecycle.Container.
func (c *container) Resume(context.Context) error {
	p, err := c.process()
	if err == nil {
		p.setFrozen(false)
	}
	return err
}

// Remove implements lifecycle.Container.
func (c *container) Remove(context.Context) error {
	c.mu.Lock()
	p := c.p
	c.mu.Unlock()
	if p != nil {
		_ = p.Signal(context.Background(), syscall.SIGKILL, true)
		<-p.exited
	}
	c.rt.mu.Lock()
	if c.rt.containers[c.name] == c {
		delete(c.rt.containers, c.name)
	}
	c.rt.mu.Unlock()
	daemon.mu.Lock()
	if daemon.names[c.name] == c {
		delete(daemon.names, c.name)
	}
	daemon.mu.Unlock()
	return nil
}

// process is one simulated run.
type process struct {
	io     lifecycle.IO
	script script
	wake   chan struct{}       // a freeze or thaw
	signal chan syscall.Signal // the first signal ends the run
	exited chan struct{}       // closed once exit is set
	exit   lifecycle.Exit
	output chan struct{} // closed once the output is written
	memory uint64

	mu      sync.Mutex
	frozen  bool
	stopped bool // StopOutput: write nothing more
}

func (p *process) setFrozen(frozen bool) {
	p.mu.Lock()
	p.frozen = frozen
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *process) isFrozen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frozen
}

// write writes s to w unless the output was stopped. A signal ends a
// write that blocks, as it ends a process stuck on a full pipe: the write
// itself is left to its reader. It reports the signal, if any.
func (p *process) write(w io.Writer, s string) (syscall.Signal, bool) {
	p.mu.Lock()
	stopped := p.stopped
	p.mu.Unlock()
	if w == nil || s == "" || stopped {
		return 0, false
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.WriteString(w, s)
	}()
	select {
	case <-done:
		return 0, false
	case sig := <-p.signal:
		return sig, true
	}
}

// simulate plays the script: echo stdin, spend the delay (not counting
// time frozen) or hang, write the scripted output, exit. A signal ends it
// at once, as SIGKILL would (a frozen process acts on no signal but
// SIGKILL).
func (p *process) simulate() {
	s := p.script
	defer close(p.output)
	var echoed chan struct{} // nil when there is nothing to echo
	if s.echoStdin && p.io.Stdin != nil && p.io.Stdout != nil {
		echoed = make(chan struct{})
		go func() {
			defer close(echoed)
			_, _ = io.Copy(p.io.Stdout, p.io.Stdin)
		}()
	}
	remaining := s.delay
	for {
		counting := !p.isFrozen() && !s.hang
		if counting && remaining <= 0 && echoed == nil {
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
			echoed = nil // closed: stop watching it
		case <-p.wake:
		case sig := <-p.signal:
			if timer != nil {
				timer.Stop()
			}
			p.finish(lifecycle.Exit{Code: 128 + int(sig)})
			return
		}
		if timer != nil {
			timer.Stop()
			if remaining > 0 {
				remaining -= time.Since(began)
			}
		}
	}
	for _, out := range []struct {
		w io.Writer
		s string
	}{{p.io.Stdout, s.stdout}, {p.io.Stderr, s.stderr}} {
		if sig, ok := p.write(out.w, out.s); ok {
			p.finish(lifecycle.Exit{Code: 128 + int(sig)})
			return
		}
	}
	switch {
	case s.oom:
		p.finish(lifecycle.Exit{Code: 137, OOM: true})
	default:
		p.finish(lifecycle.Exit{Code: s.exitCode, OOM: s.childOOM})
	}
}

func (p *process) finish(e lifecycle.Exit) {
	p.exit = e
	close(p.exited)
}

// Wait implements lifecycle.Process.
func (p *process) Wait(ctx context.Context) (lifecycle.Exit, error) {
	select {
	case <-p.exited:
		return p.exit, nil
	case <-ctx.Done():
		return lifecycle.Exit{}, ctx.Err()
	}
}

// Signal implements lifecycle.Process: the first signal ends the run, a
// SIGTERM only when not frozen.
func (p *process) Signal(_ context.Context, sig syscall.Signal, _ bool) error {
	if sig != syscall.SIGKILL && p.isFrozen() {
		return nil
	}
	select {
	case p.signal <- sig:
	default: // a signal is pending already
	}
	return nil
}

func (p *process) InputDone() <-chan struct{}       { return nil }
func (p *process) CloseInput(context.Context) error { return nil }
func (p *process) OutputDone() <-chan struct{}      { return p.output }

// StopOutput implements lifecycle.Process.
func (p *process) StopOutput() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
}

// Stats implements lifecycle.Process: a sample at once, then every 500ms,
// shaped like a real one (a process using 1 MiB under the task's limit).
func (p *process) Stats(ctx context.Context, write func(stats.Stat)) {
	start := time.Now()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		write(stats.Stat{Timestamp: time.Now(), Metrics: map[string]uint64{
			stats.MetricCPUTotal: uint64(time.Since(start)) + 1,
			stats.MetricMemUsage: 1 << 20,
			stats.MetricMemLimit: p.memory,
			stats.MetricPids:     1,
			stats.MetricNetRx:    0,
			stats.MetricNetTx:    0,
		}})
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ImageStore implements lifecycle.StoreProvider: a megabyte an image.
func (rt *runtime) ImageStore() images.Store { return imageStore{rt} }

type imageStore struct{ rt *runtime }

func (s imageStore) List(context.Context) ([]images.Image, error) {
	rt := s.rt
	rt.mu.Lock()
	defer rt.mu.Unlock()
	used := map[string]bool{}
	for _, c := range rt.containers {
		used[c.image] = true
	}
	out := make([]images.Image, 0, len(rt.images))
	for ref := range rt.images {
		out = append(out, images.Image{ID: ref, References: []string{ref}, Size: 1 << 20, InUse: used[ref]})
	}
	return out, nil
}

func (s imageStore) Remove(_ context.Context, id string) error {
	rt := s.rt
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, c := range rt.containers {
		if c.image == id {
			return fmt.Errorf("image %s: %w", id, images.ErrImageInUse)
		}
	}
	if !rt.images[id] {
		return fmt.Errorf("image %s: %w", id, drivers.ErrImageNotFound)
	}
	delete(rt.images, id)
	return nil
}

// List implements lifecycle.Lister.
func (rt *runtime) List(context.Context) ([]drivers.ContainerInfo, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	out := make([]drivers.ContainerInfo, 0, len(rt.containers))
	for _, c := range rt.containers {
		state := drivers.StateStarting
		if p, err := c.process(); err == nil {
			state = drivers.StateRunning
			select {
			case <-p.exited:
				state = drivers.StateExited
			default:
			}
		}
		out = append(out, drivers.ContainerInfo{ID: c.name, Name: c.name, Image: c.image, State: state, Created: c.created, Labels: c.labels})
	}
	return out, nil
}

// Kill implements lifecycle.Lister.
func (rt *runtime) Kill(ctx context.Context, info drivers.ContainerInfo) error {
	rt.mu.Lock()
	c := rt.containers[info.ID]
	rt.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.Remove(ctx)
}
