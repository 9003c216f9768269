package serve

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
)

// agent runs calls in hot containers. Containers are grouped in slots, one
// per slot key (the function, what its containers are made of, and the
// driver's GetSlotKeyExtensions of the call extensions); a container serves
// one call at a time, and between calls it sits idle (frozen after
// freezeIdle) until idle_timeout retires it.
//
// A call takes the most recently used idle container of its slot (hot).
// When there is none it queues, FIFO, and a container is started for it if
// the slot's and the server's limits allow (cold); whichever container
// becomes free first goes to the oldest waiter. A full queue, or a wait
// that reaches the call's deadline, is ErrTooBusy.
//
// One mutex guards all the scheduling state. Every goroutine the agent
// starts (container start-ups, monitors, freezes, retirements) is counted
// in wg, and Close waits for them.
type agent struct {
	drv      drivers.Driver
	drvName  string
	log      *logrus.Entry
	opts     *options
	iofsRoot string
	metrics  *metrics

	// ctx ends start-ups, freezes and thaws when the agent closes.
	ctx    context.Context
	cancel context.CancelFunc
	// callsCtx ends the calls in flight (Close, or a shutdown whose grace
	// ran out).
	callsCtx    context.Context
	callsCancel context.CancelFunc

	wg sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	slots    map[string]*slot
	live     int // containers that exist or are being started or removed
	retiring int // containers being removed
}

// slot holds the containers of one slot key.
type slot struct {
	key  string
	spec *callSpec

	idle     []*container // most recently used last
	waiters  []*waiter
	starting int
	busy     int
	// stale: the function changed or was deleted. The slot serves the
	// calls already waiting, then its containers retire instead of idling.
	stale bool
}

func (s *slot) size() int { return len(s.idle) + s.busy + s.starting }

// waiter is a call waiting for a container.
type waiter struct {
	ch chan grant // buffered: the agent never blocks handing a grant
}

// grant is what a waiting call gets: a container, or the error that
// starting one ended with.
type grant struct {
	c    *container
	cold bool
	err  error
}

// callSpec is what a call needs to find or start a container: the app and
// function as they were when the call arrived.
type callSpec struct {
	key   string
	app   *App
	fn    *Fn
	ext   map[string]string
	env   map[string]string
	image string
}

func newAgent(drv drivers.Driver, o *options, m *metrics) (*agent, error) {
	root, err := os.MkdirTemp(o.iofsDir, "srv-")
	if err != nil {
		return nil, fmt.Errorf("unix socket folder under %s: %w", o.iofsDir, err)
	}
	// Containers run as an unprivileged user: they must reach their folder.
	if err := os.Chmod(root, 0o755); err != nil {
		_ = os.RemoveAll(root)
		return nil, fmt.Errorf("unix socket folder %s: %w", root, err)
	}
	a := &agent{
		drv:      drv,
		drvName:  o.driverName,
		log:      o.log,
		opts:     o,
		iofsRoot: root,
		metrics:  m,
		slots:    make(map[string]*slot),
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.callsCtx, a.callsCancel = context.WithCancel(context.Background())
	return a, nil
}

// newSpec builds the call spec of fn in app, with its slot key.
func (a *agent) newSpec(app *App, fn *Fn) (*callSpec, error) {
	ext, err := extensionsOf(fn.Annotations)
	if err != nil {
		return nil, err
	}
	env := make(map[string]string, len(app.Config)+len(fn.Config)+10)
	for k, v := range app.Config {
		env[k] = v
	}
	for k, v := range fn.Config {
		env[k] = v
	}
	env["FN_APP_ID"] = app.ID
	env["FN_APP_NAME"] = app.Name
	env["FN_FN_ID"] = fn.ID
	env["FN_FN_NAME"] = fn.Name
	env["FN_NAME"] = fn.Name
	env["FN_FORMAT"] = "http-stream"
	env["FN_LISTENER"] = "unix:" + udsDest + "/" + udsFile
	env["FN_MEMORY"] = fmt.Sprint(fn.Memory)
	env["FN_TYPE"] = "sync"

	h := sha256.New()
	write := func(parts ...string) {
		for _, p := range parts {
			fmt.Fprintf(h, "%d:%s;", len(p), p)
		}
	}
	write(fn.ID, fn.Image, fmt.Sprint(fn.Memory), fmt.Sprint(fn.IdleTimeout))
	for _, k := range sortedKeys(env) {
		write(k, env[k])
	}
	if app.SyslogURL != nil {
		write("syslog", *app.SyslogURL)
	}
	write("ext", a.drv.GetSlotKeyExtensions(ext))
	return &callSpec{
		key:   hex.EncodeToString(h.Sum(nil)),
		app:   app,
		fn:    fn,
		ext:   ext,
		env:   env,
		image: fn.Image,
	}, nil
}

// acquire returns a container of spec's slot for one call, starting one if
// needed. ctx bounds the wait.
func (a *agent) acquire(ctx context.Context, spec *callSpec) (grant, error) {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return grant{}, errShuttingDown
	}
	s := a.slots[spec.key]
	if s == nil {
		s = &slot{key: spec.key, spec: spec}
		a.slots[spec.key] = s
	}
	if n := len(s.idle); n > 0 {
		c := s.idle[n-1]
		s.idle = s.idle[:n-1]
		a.takeLocked(s, c)
		a.mu.Unlock()
		return grant{c: c}, nil
	}
	if len(s.waiters) >= a.opts.maxQueue {
		a.mu.Unlock()
		return grant{}, errCallTimeoutServerBusy.WithCause(fmt.Errorf("queue of %s full (%d calls)", spec.fn.ID, len(s.waiters)))
	}
	w := &waiter{ch: make(chan grant, 1)}
	s.waiters = append(s.waiters, w)
	a.scheduleLocked(s)
	queued := len(s.waiters)
	a.mu.Unlock()
	a.metrics.queued(queued)

	select {
	case g := <-w.ch:
		return g, g.err
	case <-ctx.Done():
	case <-a.callsCtx.Done():
	}
	a.mu.Lock()
	removed := s.removeWaiter(w)
	a.dropSlotIfUnusedLocked(s)
	a.mu.Unlock()
	if !removed {
		// A grant raced with the end of the wait: give the container back.
		g := <-w.ch
		if g.c != nil {
			a.release(g.c, true)
		}
	}
	if a.callsCtx.Err() != nil {
		return grant{}, errShuttingDown
	}
	return grant{}, ctx.Err()
}

func (s *slot) removeWaiter(w *waiter) bool {
	for i, x := range s.waiters {
		if x == w {
			s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
			return true
		}
	}
	return false
}

// takeLocked marks c busy for a call.
func (a *agent) takeLocked(s *slot, c *container) {
	s.busy++
	c.state = stateBusy
	c.calls++
	c.gen++
}

// scheduleLocked starts containers for the waiters of s that no starting
// container will serve, within the limits.
func (a *agent) scheduleLocked(s *slot) {
	for len(s.waiters) > s.starting && s.size() < a.opts.maxPerFn && !a.closed {
		if a.live >= a.opts.maxContainers {
			// Full: free room by retiring an idle container of another
			// slot, unless room is being freed already.
			if a.retiring == 0 {
				a.evictLocked(s)
			}
			return
		}
		s.starting++
		a.live++
		a.wg.Add(1)
		go a.start(s)
	}
}

// scheduleAllLocked gives every slot with waiters a chance to start
// containers: room was freed.
func (a *agent) scheduleAllLocked() {
	for _, s := range a.slots {
		if len(s.waiters) > s.starting {
			a.scheduleLocked(s)
		}
	}
}

// evictLocked retires the idle container, of a slot other than except,
// that has been idle longest.
func (a *agent) evictLocked(except *slot) {
	var victim *container
	for _, s := range a.slots {
		if s == except || len(s.idle) == 0 {
			continue
		}
		if c := s.idle[0]; victim == nil || c.idleSince.Before(victim.idleSince) {
			victim = c
		}
	}
	if victim != nil {
		a.log.WithField("container", victim.id).Debug("evicting an idle container to make room")
		a.retireLocked(victim, "evicted")
	}
}

// start starts one container for s and hands it to the oldest waiter.
func (a *agent) start(s *slot) {
	defer a.wg.Done()
	begin := time.Now()
	c, err := a.launch(s)
	a.metrics.containerStart(a.drvName, time.Since(begin), err)
	a.mu.Lock()
	defer a.mu.Unlock()
	s.starting--
	if err != nil {
		a.live--
		a.log.WithError(err).WithField("fn_id", s.spec.fn.ID).Warn("container did not start")
		if len(s.waiters) > 0 {
			w := s.waiters[0]
			s.waiters = s.waiters[1:]
			w.ch <- grant{err: err}
		}
		a.scheduleAllLocked()
		a.dropSlotIfUnusedLocked(s)
		return
	}
	if a.closed {
		a.retireLocked(c, "server closing")
		return
	}
	a.handOffLocked(s, c, true)
}

// handOffLocked gives a free container to the oldest waiter, or makes it
// idle.
func (a *agent) handOffLocked(s *slot, c *container, cold bool) {
	if len(s.waiters) > 0 {
		w := s.waiters[0]
		s.waiters = s.waiters[1:]
		a.takeLocked(s, c)
		w.ch <- grant{c: c, cold: cold}
		return
	}
	if s.stale || a.closed {
		a.retireLocked(c, "function changed")
		a.dropSlotIfUnusedLocked(s)
		return
	}
	c.state = stateIdle
	c.idleSince = time.Now()
	c.gen++
	s.idle = append(s.idle, c)
	if d := a.opts.freezeIdle; d >= 0 {
		c.freezeTimer.Reset(d)
	}
	c.idleTimer.Reset(c.idleTimeout)
	// Room the server needs elsewhere goes before keeping this one idle.
	if a.live >= a.opts.maxContainers && a.retiring == 0 {
		for _, other := range a.slots {
			if other != s && len(other.waiters) > other.starting && other.size() < a.opts.maxPerFn {
				a.evictLocked(other)
				break
			}
		}
	}
}

// release gives c back after a call. A container that is not healthy, has
// served its share of calls, or belongs to a stale slot is retired.
func (a *agent) release(c *container, healthy bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := c.slot
	s.busy--
	switch {
	case !healthy:
		a.retireLocked(c, "unhealthy")
	case a.closed:
		a.retireLocked(c, "server closing")
	case a.opts.maxCalls > 0 && c.calls >= a.opts.maxCalls:
		a.retireLocked(c, "served its calls")
	case c.exitedNow():
		a.retireLocked(c, "exited")
	default:
		a.handOffLocked(s, c, false)
		return
	}
	a.scheduleLocked(s)
	a.dropSlotIfUnusedLocked(s)
}

// retireLocked removes c from its slot and closes it in the background.
func (a *agent) retireLocked(c *container, why string) {
	if c.state == stateRetiring {
		return
	}
	if c.state == stateIdle {
		s := c.slot
		for i, x := range s.idle {
			if x == c {
				s.idle = append(s.idle[:i], s.idle[i+1:]...)
				break
			}
		}
	}
	c.state = stateRetiring
	c.gen++
	c.stopTimers()
	a.retiring++
	a.wg.Add(1)
	go a.closeContainer(c, why)
}

// closeContainer ends and removes c, then frees its room.
func (a *agent) closeContainer(c *container, why string) {
	defer a.wg.Done()
	c.close(a, why)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.live--
	a.retiring--
	a.scheduleAllLocked()
	a.dropSlotIfUnusedLocked(c.slot)
}

// dropSlotIfUnusedLocked forgets a slot with no container and no waiter.
func (a *agent) dropSlotIfUnusedLocked(s *slot) {
	if s.size() == 0 && len(s.waiters) == 0 && a.slots[s.key] == s {
		delete(a.slots, s.key)
	}
}

// monitor waits for c's run to end and retires it if it was idle: a
// container that died between calls is replaced on demand.
func (a *agent) monitor(c *container) {
	defer a.wg.Done()
	res := c.wait.Wait(c.runCtx)
	c.result = res
	close(c.exited)
	a.mu.Lock()
	defer a.mu.Unlock()
	if c.state == stateIdle {
		l := a.log.WithField("container", c.id).WithField("fn_id", c.slot.spec.fn.ID)
		if res != nil {
			l = l.WithField("status", res.Status()).WithError(res.Error())
		}
		l.Info("idle container ended; it will be replaced on demand")
		a.retireLocked(c, "exited")
	}
}

// onFreezeTimer freezes c if it is still idle.
func (a *agent) onFreezeTimer(c *container) {
	a.mu.Lock()
	if a.closed || c.state != stateIdle {
		a.mu.Unlock()
		return
	}
	a.wg.Add(1)
	a.mu.Unlock()
	defer a.wg.Done()

	c.pauseMu.Lock()
	defer c.pauseMu.Unlock()
	a.mu.Lock()
	still := c.state == stateIdle
	a.mu.Unlock()
	if !still || c.frozen {
		return
	}
	ctx, cancel := context.WithTimeout(a.ctx, a.opts.pauseTimeout)
	defer cancel()
	if err := c.cookie.Freeze(ctx); err != nil {
		if a.ctx.Err() == nil {
			a.log.WithError(err).WithField("container", c.id).Warn("freeze failed; retiring the container")
		}
		a.mu.Lock()
		if c.state == stateIdle {
			a.retireLocked(c, "freeze failed")
		}
		a.mu.Unlock()
		return
	}
	c.frozen = true
	a.metrics.freeze()
}

// onIdleTimer retires c if it stayed idle for its idle timeout.
func (a *agent) onIdleTimer(c *container) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || c.state != stateIdle || time.Since(c.idleSince) < c.idleTimeout-10*time.Millisecond {
		return
	}
	a.log.WithField("container", c.id).Debug("idle timeout")
	a.retireLocked(c, "idle timeout")
}

// thaw unfreezes c before a call, waiting for a freeze in progress.
func (a *agent) thaw(ctx context.Context, c *container) error {
	c.pauseMu.Lock()
	defer c.pauseMu.Unlock()
	if !c.frozen {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.opts.pauseTimeout)
	defer cancel()
	if err := c.cookie.Unfreeze(ctx); err != nil {
		return err
	}
	c.frozen = false
	return nil
}

// forget marks the slots of function fnID stale: their idle containers
// retire now, their busy ones after the calls already waiting.
func (a *agent) forget(fnID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for key, s := range a.slots {
		if s.spec.fn.ID != fnID {
			continue
		}
		s.stale = true
		delete(a.slots, key)
		for len(s.idle) > 0 {
			a.retireLocked(s.idle[len(s.idle)-1], "function changed")
		}
	}
}

// counts returns the number of containers by state, for health and tests.
func (a *agent) counts() (live, idle, busy, starting, waiting int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.slots {
		idle += len(s.idle)
		busy += s.busy
		starting += s.starting
		waiting += len(s.waiters)
	}
	return a.live, idle, busy, starting, waiting
}

// cancelCalls ends the calls in flight.
func (a *agent) cancelCalls() { a.callsCancel() }

// close ends every call and container and waits for every goroutine.
func (a *agent) close() error {
	a.mu.Lock()
	if !a.closed {
		a.closed = true
		for _, s := range a.slots {
			for _, w := range s.waiters {
				w.ch <- grant{err: errShuttingDown}
			}
			s.waiters = nil
			for len(s.idle) > 0 {
				a.retireLocked(s.idle[len(s.idle)-1], "server closing")
			}
		}
	}
	a.mu.Unlock()
	a.callsCancel()
	a.cancel()
	a.wg.Wait()
	a.mu.Lock()
	left := a.live
	a.mu.Unlock()
	var errs []error
	if left != 0 {
		errs = append(errs, fmt.Errorf("%d containers still counted after close", left))
	}
	if err := os.RemoveAll(a.iofsRoot); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
