package pool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	ocstats "go.opencensus.io/stats"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/backoff"
	"github.com/fnrun/fnrun/internal/clock"
	"github.com/fnrun/fnrun/internal/logs"
	"github.com/fnrun/fnrun/stats"
)

// ErrHolderDied is the error of a lease whose holder stopped running
// under it. It wraps drivers.ErrContainerGone, so a driver can hand it to
// the caller of the container that had joined the holder.
var ErrHolderDied = fmt.Errorf("pool holder died: %w", drivers.ErrContainerGone)

// errPoolClosed is the error of a lease whose pool closed under it.
var errPoolClosed = fmt.Errorf("pool: %w", drivers.ErrClosed)

// minHealthyLife is how long a holder must have run for its death to be
// just bad luck. A holder dying sooner counts as a failure of the adapter,
// so a holder that dies as soon as it starts (a bad command, a watch that
// returns at once) is replaced at the backoff's pace, not in a tight loop.
const minHealthyLife = 5 * time.Second

type holderState uint8

const (
	stateFree holderState = iota
	stateLeased
	stateGone // died, retired by the pool, or the pool closed
)

// holder is the pool's record of one running holder. Its fields other
// than h, net, dead and stopWatch are guarded by Pool.mu.
type holder struct {
	h       Holder
	net     string // the network it was counted under in Pool.perNet
	state   holderState
	started time.Time
	idle    time.Time     // when it last became free
	dead    chan struct{} // closed when it stops being usable
	err     error         // why, set before dead is closed
	// stopWatch ends the WaitHolder call watching it, so that stopping a
	// holder on purpose is not mistaken for its death.
	stopWatch context.CancelFunc
}

// Stats is a snapshot of a pool.
type Stats struct {
	Free     int // holders ready to lease
	Leased   int // holders leased to a container
	Starting int // StartHolder calls in flight
	Size     int // the number of holders the pool aims for: Config.Size plus growth on misses
	// Misses counts leases asked for when no holder was free.
	Misses uint64
	// Replacements counts holders replaced after a use-once lease or a death.
	Replacements uint64
	// Deaths counts holders that stopped running without the pool asking.
	Deaths uint64
	// Failures counts adapter calls that failed (EnsureImage, StartHolder,
	// StopHolder) and holders that died soon after they started.
	Failures uint64
}

// Pool keeps holders running and leases them out. It is safe for
// concurrent use. Every goroutine it starts ends in Close.
type Pool struct {
	adapter Adapter
	cfg     Config
	log     *logrus.Entry
	clock   Clock
	token   string // makes holder names unique across pools

	ctx    context.Context // parent of every adapter call but StopHolder; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the pool started
	kick   chan struct{}  // wakes the manager; capacity 1, sends never block
	once   sync.Once
	closed chan struct{} // closed when Close is done

	mu        sync.Mutex
	isClosed  bool
	free      []*holder // a stack: the top was used last, the bottom has been idle longest
	live      map[*holder]struct{}
	leased    int
	starting  int
	target    int
	perNet    map[string]int // live and starting holders per network
	rr        int            // where the next tie between networks is broken
	seq       uint64
	imageOK   bool
	imageBusy bool
	filled    chan struct{} // closed and replaced when a holder starts, for Ready
	warm      bool          // Size holders have run at once: misses now mean demand
	stats     Stats
	closeErrs []error

	// The failure streak. After a failure nothing is started until retryAt,
	// and then one holder at a time (probing) until a start succeeds.
	backoff  *backoff.BackOff
	lastFail time.Time
	retryAt  time.Time
	probing  bool
}

// New validates cfg and starts a pool over adapter: it makes sure the image
// is present, then starts Size holders in the background and keeps them
// running until Close. It does not wait for them; see Ready. Errors wrap
// drivers.ErrInvalidConfig.
func New(adapter Adapter, cfg Config, opts ...Option) (*Pool, error) {
	if adapter == nil {
		return nil, fmt.Errorf("pool: nil adapter: %w", drivers.ErrInvalidConfig)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	o := options{clock: clock.Wall}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = logs.Discard()
	}
	var tok [4]byte
	_, _ = rand.Read(tok[:]) // never fails on supported platforms; zeros would still work within one pool
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool{
		adapter: adapter,
		cfg:     cfg,
		log:     o.log.WithField("component", "pool"),
		clock:   o.clock,
		token:   hex.EncodeToString(tok[:]),
		ctx:     ctx,
		cancel:  cancel,
		kick:    make(chan struct{}, 1),
		closed:  make(chan struct{}),
		live:    make(map[*holder]struct{}),
		perNet:  make(map[string]int),
		target:  cfg.Size,
		filled:  make(chan struct{}),
	}
	p.mu.Lock()
	p.recordLocked(ctx)
	p.mu.Unlock()
	p.wg.Add(1)
	go p.manage()
	return p, nil
}

// Config returns the configuration in force, defaults filled in.
func (p *Pool) Config() Config {
	c := p.cfg
	c.Networks = append([]string(nil), c.Networks...)
	return c
}

// Lease is one container's use of a holder. Release it when the container
// is gone.
type Lease struct {
	p        *Pool
	hs       *holder
	released bool // guarded by p.mu
}

// Lease hands out a free holder, or returns (nil, false) at once when none
// is free; it never waits for a holder to start, because a caller can
// always fall back to a plain network and that is faster than waiting.
// A miss is counted, and a miss while the pool has all the holders it aims
// for makes it aim for one more, up to Config.Max. ctx only carries metric
// tags.
func (p *Pool) Lease(ctx context.Context) (*Lease, bool) {
	if ctx == nil {
		ctx = context.Background()
	}
	p.mu.Lock()
	if p.isClosed {
		p.mu.Unlock()
		return nil, false
	}
	if n := len(p.free); n > 0 {
		hs := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		hs.state = stateLeased
		p.leased++
		p.recordLocked(ctx)
		p.mu.Unlock()
		return &Lease{p: p, hs: hs}, true
	}
	p.stats.Misses++
	// Grow only when the pool has filled once and has or is starting every
	// holder it aims for: a miss while it is first filling, or waiting out
	// a failing daemon, says nothing about demand.
	grow := p.warm && p.target < p.cfg.Max && p.liveLocked()+p.starting >= p.target
	if grow {
		p.target++
	}
	p.recordLocked(ctx, stats.PoolMisses.M(1))
	p.mu.Unlock()
	if grow {
		p.poke()
	}
	return nil, false
}

// Holder is the leased holder.
func (l *Lease) Holder() Holder { return l.hs.h }

// Dead is closed when the leased holder stops being usable: it died, or the
// pool closed. A container that joined it should then fail with Err rather
// than wait on a namespace nobody keeps.
func (l *Lease) Dead() <-chan struct{} { return l.hs.dead }

// Err is nil while the holder runs; after Dead is closed it says why, with
// an error wrapping ErrHolderDied (and so drivers.ErrContainerGone), or
// drivers.ErrClosed if the pool closed.
func (l *Lease) Err() error {
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	return l.hs.err
}

// Release gives the holder back. With Config.UseOnce the holder is stopped
// and a fresh one started in the background; Release never waits for
// either. Releasing twice, releasing after the holder died and releasing
// after Close are harmless.
func (l *Lease) Release() {
	p := l.p
	p.mu.Lock()
	if l.released {
		p.mu.Unlock()
		return
	}
	l.released = true
	hs := l.hs
	if p.isClosed || hs.state != stateLeased {
		p.mu.Unlock() // Close or the death already dealt with it
		return
	}
	now := p.clock.Now()
	if p.cfg.UseOnce {
		p.retireLocked(hs, errUsed)
		p.stats.Replacements++
		p.recordLocked(context.Background(), stats.PoolReplacements.M(1))
		p.stopLocked(hs)
		p.mu.Unlock()
		p.logReplacement(hs, "used once", now, nil)
		p.poke()
		return
	}
	p.leased--
	hs.state = stateFree
	hs.idle = now
	p.free = append(p.free, hs)
	p.recordLocked(context.Background())
	shrinkable := p.target > p.cfg.Size
	p.mu.Unlock()
	if shrinkable {
		p.poke() // the manager times idle shrinking from the free holders
	}
}

// errUsed and errShrunk are never seen by a lease holder (the holder is
// retired only once released) but keep Err meaningful for debugging.
var (
	errUsed   = errors.New("pool: holder retired after one use")
	errShrunk = errors.New("pool: idle holder retired")
)

// Stats returns a snapshot of the pool's counts.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Free, s.Leased, s.Starting, s.Size = len(p.free), p.leased, p.starting, p.target
	return s
}

// Ready blocks until Size holders are running, ctx ends, or the pool
// closes. Leasing does not need it (a lease never waits); it is for
// callers that want a warm pool before they measure or serve.
func (p *Pool) Ready(ctx context.Context) error {
	for {
		p.mu.Lock()
		if p.isClosed {
			p.mu.Unlock()
			return errPoolClosed
		}
		if p.liveLocked() >= p.cfg.Size {
			p.mu.Unlock()
			return nil
		}
		ch := p.filled
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// Close stops and removes every holder, leased ones included (their Dead
// channels close), cancels holders still being started, and waits for
// every goroutine of the pool. It returns the errors of the StopHolder
// calls it made, since a holder that could not be stopped is left behind
// until the driver's start-up cleanup. Calling it again returns the same.
func (p *Pool) Close() error {
	p.once.Do(func() {
		p.mu.Lock()
		p.isClosed = true
		for hs := range p.live {
			p.retireLocked(hs, errPoolClosed)
			p.stopLocked(hs)
		}
		close(p.filled)
		p.recordLocked(context.Background())
		p.mu.Unlock()
		// Cancelling ends the manager, the watchers, EnsureImage and any
		// StartHolder in flight; a start that returns a holder anyway
		// stops it itself (see start), and Wait covers that too.
		p.cancel()
		p.wg.Wait()
		close(p.closed)
	})
	<-p.closed
	p.mu.Lock()
	defer p.mu.Unlock()
	return errors.Join(p.closeErrs...)
}

func (p *Pool) liveLocked() int { return len(p.free) + p.leased }

// poke wakes the manager without blocking: one pending wake is enough,
// since the manager looks at the whole state each time.
func (p *Pool) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// manage is the pool's one decision loop: it starts holders up to the
// target, pulls the image first, shrinks idle growth, and sleeps until
// the next thing is due or something changes.
func (p *Pool) manage() {
	defer p.wg.Done()
	for {
		var timeout <-chan time.Time
		var t Timer
		if d := p.step(); d > 0 {
			t = p.clock.NewTimer(d)
			timeout = t.C()
		}
		select {
		case <-p.ctx.Done():
		case <-p.kick:
		case <-timeout:
		}
		if t != nil {
			t.Stop()
		}
		if p.ctx.Err() != nil {
			return
		}
	}
}

// step does what is due now and returns how long until something else is
// due, 0 meaning nothing is (a poke will come).
func (p *Pool) step() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isClosed {
		return 0
	}
	now := p.clock.Now()
	next := p.shrinkLocked(now)
	soonest := func(d time.Duration) time.Duration {
		if next == 0 || d < next {
			return d
		}
		return next
	}
	if p.liveLocked()+p.starting >= p.target {
		return next
	}
	if now.Before(p.retryAt) {
		return soonest(p.retryAt.Sub(now))
	}
	if !p.imageOK {
		if !p.imageBusy {
			p.imageBusy = true
			p.wg.Add(1)
			go p.ensureImage()
		}
		return next
	}
	limit := p.cfg.StartConcurrency
	if p.probing {
		limit = 1
	}
	for p.liveLocked()+p.starting < p.target && p.starting < limit {
		p.startLocked()
	}
	return next
}

// shrinkLocked retires holders beyond Size that have been free for
// IdleShrinkAfter, oldest first, and returns when the next one will be due.
func (p *Pool) shrinkLocked(now time.Time) time.Duration {
	for p.target > p.cfg.Size && len(p.free) > 0 {
		oldest := p.free[0]
		if wait := oldest.idle.Add(p.cfg.IdleShrinkAfter).Sub(now); wait > 0 {
			return wait
		}
		p.retireLocked(oldest, errShrunk)
		p.target--
		p.recordLocked(context.Background())
		p.stopLocked(oldest)
		p.log.WithField("holder", oldest.h.ID).WithField("size", p.target).Debug("pool: shrinking, idle holder stopped")
	}
	return 0
}

func (p *Pool) ensureImage() {
	defer p.wg.Done()
	err := p.adapter.EnsureImage(p.ctx)
	p.mu.Lock()
	p.imageBusy = false
	if err == nil {
		p.imageOK = true
	} else if !p.isClosed {
		p.failLocked("ensure image", err, nil)
	}
	p.mu.Unlock()
	p.poke()
}

// startLocked launches one StartHolder call.
func (p *Pool) startLocked() {
	p.seq++
	spec := HolderSpec{
		Name:    fmt.Sprintf("%s-%s-%d", p.cfg.NamePrefix, p.token, p.seq),
		Network: p.pickNetworkLocked(),
	}
	p.starting++
	p.perNet[spec.Network]++
	p.recordLocked(context.Background())
	p.wg.Add(1)
	go p.start(spec)
}

// pickNetworkLocked picks the network with the fewest holders, breaking
// ties round-robin, so holders stay spread even after deaths and shrinking
// thinned one network.
func (p *Pool) pickNetworkLocked() string {
	n := len(p.cfg.Networks)
	if n == 0 {
		return ""
	}
	best := -1
	for i := 0; i < n; i++ {
		idx := (p.rr + i) % n
		if best < 0 || p.perNet[p.cfg.Networks[idx]] < p.perNet[p.cfg.Networks[best]] {
			best = idx
		}
	}
	p.rr = best + 1
	return p.cfg.Networks[best]
}

func (p *Pool) start(spec HolderSpec) {
	defer p.wg.Done()
	h, err := p.adapter.StartHolder(p.ctx, spec)
	p.mu.Lock()
	p.starting--
	if err != nil {
		p.perNet[spec.Network]--
		if !p.isClosed {
			if errors.Is(err, drivers.ErrImageNotFound) {
				p.imageOK = false // someone removed it: pull again before the next start
			}
			p.failLocked("start holder", err, map[string]any{"holder": spec.Name, "network": spec.Network})
		}
		p.recordLocked(context.Background())
		p.mu.Unlock()
		p.poke()
		return
	}
	if h.Network == "" {
		h.Network = spec.Network
	}
	if h.Name == "" {
		h.Name = spec.Name
	}
	if p.isClosed {
		// Close has already taken the list of holders to stop; this one
		// came too late for it, so stop it here. Close waits for us.
		p.perNet[spec.Network]--
		p.recordLocked(context.Background())
		p.mu.Unlock()
		p.stop(&holder{h: h}, nil)
		return
	}
	now := p.clock.Now()
	watchCtx, stopWatch := context.WithCancel(p.ctx)
	hs := &holder{h: h, net: spec.Network, state: stateFree, started: now, idle: now, dead: make(chan struct{}), stopWatch: stopWatch}
	p.live[hs] = struct{}{}
	p.free = append(p.free, hs)
	p.probing = false
	if p.liveLocked() >= p.cfg.Size {
		p.warm = true
	}
	close(p.filled)
	p.filled = make(chan struct{})
	p.recordLocked(context.Background())
	p.wg.Add(1) // we are counted ourselves, so this cannot race with Close's Wait
	go p.watch(watchCtx, hs)
	p.mu.Unlock()
	p.log.WithField("holder", h.ID).WithField("network", h.Network).Debug("pool: holder started")
	p.poke() // a success ends probing: the rest can start at full concurrency
}

// watch waits for the holder to die. When the pool stops the holder on
// purpose it cancels ctx first, so a return with ctx still live is a death.
func (p *Pool) watch(ctx context.Context, hs *holder) {
	defer p.wg.Done()
	err := p.adapter.WaitHolder(ctx, hs.h)
	if ctx.Err() != nil {
		return
	}
	p.died(hs, err)
}

func (p *Pool) died(hs *holder, waitErr error) {
	p.mu.Lock()
	if p.isClosed || hs.state == stateGone {
		p.mu.Unlock()
		return
	}
	now := p.clock.Now()
	cause := fmt.Errorf("holder %s: %w", hs.h.ID, ErrHolderDied)
	if waitErr != nil {
		cause = fmt.Errorf("holder %s: %w: %w", hs.h.ID, ErrHolderDied, waitErr)
	}
	p.retireLocked(hs, cause)
	p.stats.Deaths++
	p.stats.Replacements++
	p.recordLocked(context.Background(), stats.PoolReplacements.M(1))
	if lived := now.Sub(hs.started); lived < minHealthyLife {
		p.failLocked("holder died young", cause, map[string]any{"holder": hs.h.ID, "lived": lived.String()})
	}
	p.stopLocked(hs) // remove what is left of it
	p.mu.Unlock()
	p.logReplacement(hs, "died", now, waitErr)
	p.poke()
}

// retireLocked takes hs out of service: off the free list or the leased
// count, its watcher cancelled, its Dead channel closed with err.
func (p *Pool) retireLocked(hs *holder, err error) {
	switch hs.state {
	case stateGone:
		return
	case stateFree:
		for i, f := range p.free {
			if f == hs {
				copy(p.free[i:], p.free[i+1:])
				p.free[len(p.free)-1] = nil
				p.free = p.free[:len(p.free)-1]
				break
			}
		}
	case stateLeased:
		p.leased--
	}
	hs.state = stateGone
	hs.err = err
	close(hs.dead)
	hs.stopWatch()
	delete(p.live, hs)
	p.perNet[hs.net]--
}

// stopLocked stops a retired holder in the background. Callers hold p.mu
// and have checked the pool is not closed, or are Close itself before it
// waits, so the Add cannot race with Close's Wait.
func (p *Pool) stopLocked(hs *holder) {
	p.wg.Add(1)
	go p.stop(hs, p.wg.Done)
}

func (p *Pool) stop(hs *holder, done func()) {
	if done != nil {
		defer done()
	}
	// Not p.ctx: Close cancels it, and Close is when stopping matters most.
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.StopTimeout)
	defer cancel()
	err := p.adapter.StopHolder(ctx, hs.h)
	if err == nil {
		return
	}
	p.mu.Lock()
	p.stats.Failures++
	if p.isClosed {
		p.closeErrs = append(p.closeErrs, fmt.Errorf("pool: stop holder %s: %w", hs.h.ID, err))
	}
	p.mu.Unlock()
	p.log.WithError(err).WithField("holder", hs.h.ID).Warn("pool: stopping a holder failed; it is left behind until the driver's start-up cleanup")
}

// failLocked counts a failure and holds off new starts for the next
// backoff delay. Failures close together form a streak with growing
// delays; one that comes long after the last starts a new streak, so a
// stray failure on a healthy host is retried quickly.
func (p *Pool) failLocked(what string, err error, fields map[string]any) {
	now := p.clock.Now()
	p.stats.Failures++
	quiet := 2 * time.Duration(p.cfg.ReplaceBackoff.MaxDelay) * time.Millisecond
	if p.backoff == nil || now.Sub(p.lastFail) > quiet {
		p.backoff, _ = backoff.New(p.cfg.ReplaceBackoff) // validated in New
	}
	p.lastFail = now
	d, ok := p.backoff.Next()
	if !ok {
		d = time.Duration(p.cfg.ReplaceBackoff.MaxDelay) * time.Millisecond
	}
	if at := now.Add(d); at.After(p.retryAt) {
		p.retryAt = at
	}
	p.probing = true
	p.log.WithError(err).WithFields(fields).WithField("retry_in", d.String()).Warnf("pool: %s failed", what)
}

func (p *Pool) logReplacement(hs *holder, why string, now time.Time, err error) {
	e := p.log.WithField("holder", hs.h.ID).WithField("network", hs.h.Network).
		WithField("reason", why).WithField("lived", now.Sub(hs.started).String())
	if err != nil {
		e = e.WithError(err)
	}
	e.Debug("pool: replacing holder")
}

// recordLocked records the pool's gauges, and extra measurements such as
// counter increments, under the lock so that gauges are recorded in the
// order the changes happened.
func (p *Pool) recordLocked(ctx context.Context, extra ...ocstats.Measurement) {
	ms := make([]ocstats.Measurement, 0, 4+len(extra))
	ms = append(ms,
		stats.PoolFree.M(int64(len(p.free))),
		stats.PoolLeased.M(int64(p.leased)),
		stats.PoolStarting.M(int64(p.starting)),
		stats.PoolSize.M(int64(p.target)),
	)
	stats.Record(ctx, p.cfg.Driver, append(ms, extra...)...)
}
