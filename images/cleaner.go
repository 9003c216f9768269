package images

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/backoff"
	"github.com/fnrun/fnrun/internal/clock"
	"github.com/fnrun/fnrun/internal/logs"
)

// Cleaner keeps a Store under a byte budget. It tracks every image of the
// store with its references, size, last use and busy count, and removes
// least recently used idle images when the store grows past the budget.
// It is safe for concurrent use.
type Cleaner struct {
	store   Store
	lastUse LastUseStore // nil unless store implements it
	cfg     Config
	exempt  exemptSet
	log     *logrus.Entry
	clock   Clock
	backoff drivers.BackOffConfig

	statePath       string // "" when last uses are not kept in a file
	persistInterval time.Duration

	kick chan struct{}

	// passMu serialises passes (list, reconcile, evict) of the background
	// job and CleanOnce, so two never remove concurrently.
	passMu sync.Mutex
	// persistMu serialises writes of last uses.
	persistMu sync.Mutex

	mu       sync.Mutex
	byID     map[string]*entry // Image.ID -> entry
	byKey    map[string]*entry // reference key or id key -> the entry owning it
	users    map[string]int    // key -> holders through Use, image or not
	keyCache map[string]string // reference as given to Use -> key
	idle     idleHeap          // eviction candidates, least recently used first
	retrying map[*entry]struct{}
	total    uint64 // sum of the tracked images' Size
	shared   uint64 // shared bytes, counted once (see Image)
	seq      uint64
	gen      uint64
	synced   bool
	lastSync time.Time
	// loaded holds the state file's last uses until the first sync uses
	// them.
	loaded map[string]time.Time
	// dirty holds last uses not yet written to a LastUseStore; stateDirty
	// says the state file is behind.
	dirty       map[string]time.Time
	stateDirty  bool
	lastPersist time.Time
	overWarned  bool

	started bool
	closed  bool
	cancel  context.CancelFunc
	bgCtx   context.Context // values of Start's context, never cancelled
	wg      sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// New returns a cleaner of store. It checks cfg (an unparseable exempt
// entry, a zero budget, a low-water mark above the budget or an unusable
// StateDir give an error wrapping drivers.ErrInvalidConfig) and reads the
// state file, but does not touch the store: Start (or CleanOnce) does.
func New(store Store, cfg Config, opts ...Option) (*Cleaner, error) {
	if store == nil {
		return nil, configErrorf("nil store")
	}
	o := options{clock: clock.Wall, backoff: DefaultRemoveBackOff}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = logs.Discard()
	}
	if o.clock == nil {
		o.clock = clock.Wall
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if o.backoff.MaxRetries == 0 {
		return nil, configErrorf("remove backoff must allow retries: a failed removal is always retried")
	}
	if _, err := backoff.New(o.backoff); err != nil {
		return nil, fmt.Errorf("images: remove backoff: %w", err)
	}
	exempt, err := parseExempt(cfg.Exempt)
	if err != nil {
		return nil, err
	}
	c := &Cleaner{
		store:           store,
		cfg:             cfg,
		exempt:          exempt,
		log:             o.log.WithField("component", "image-cleaner"),
		clock:           o.clock,
		backoff:         o.backoff,
		persistInterval: defaultPersistInterval,
		kick:            make(chan struct{}, 1),
		byID:            map[string]*entry{},
		byKey:           map[string]*entry{},
		users:           map[string]int{},
		keyCache:        map[string]string{},
		retrying:        map[*entry]struct{}{},
		dirty:           map[string]time.Time{},
		bgCtx:           context.Background(),
	}
	if cfg.Driver != "" {
		c.log = c.log.WithField("driver", cfg.Driver)
	}
	if lu, ok := store.(LastUseStore); ok {
		c.lastUse = lu
	} else if cfg.StateDir != "" {
		c.statePath = filepath.Join(cfg.StateDir, stateFileName)
		c.loaded = c.readState()
	}
	return c, nil
}

// Use marks the image ref busy until release is called; a busy image is
// never removed. A cookie calls it when it validates its image, before
// looking the image up, and holds it across the pull, so an image being
// pulled is protected as soon as it appears in the store; it calls release
// when it closes. Uses are counted: the image stays busy until every
// holder has released. release is idempotent. Both record a use of the
// image for the LRU order.
//
// ref is matched the way users write references (busybox means
// docker.io/library/busybox:latest); an image id "sha256:<hex>" works too.
// A Use that races with a removal already under way cannot stop it: the
// cookie then finds the image gone and pulls it again, as after any
// external removal.
func (c *Cleaner) Use(ref string) (release func()) {
	c.mu.Lock()
	key, ok := c.keyCache[ref]
	if !ok {
		// Parsing a reference costs microseconds: do it without the lock,
		// once per distinct spelling.
		c.mu.Unlock()
		if key, ok = refKey(ref); !ok {
			key = ref // cannot match an image; counted so release balances
		}
		c.mu.Lock()
		if len(c.keyCache) >= 2*len(c.byID)+1024 {
			clear(c.keyCache) // bounded: spellings seen long ago are parsed again
		}
		c.keyCache[ref] = key
	}
	c.users[key]++
	if e := c.byKey[key]; e != nil {
		e.uses++
		c.touch(e, c.clock.Now())
		c.place(e)
	}
	c.mu.Unlock()
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			c.release(key)
		}
	}
}

func (c *Cleaner) release(key string) {
	c.mu.Lock()
	if n := c.users[key] - 1; n > 0 {
		c.users[key] = n
	} else {
		delete(c.users, key)
	}
	over := false
	// The key may now point to another image than at Use (a tag moved by a
	// pull): the sync that moved it recounted both images from users, so
	// decrementing the current owner keeps every count equal to its
	// holders.
	if e := c.byKey[key]; e != nil {
		if e.uses > 0 {
			e.uses--
		}
		c.touch(e, c.clock.Now())
		c.place(e)
		over = e.uses == 0 && c.tracked() > c.cfg.MaxSize
	}
	c.mu.Unlock()
	if over {
		c.Kick() // this image may be what eviction was waiting for
	}
}

// Kick asks the background job for a pass (list the store, evict if over
// budget) soon, within Config.MinInterval of the last one. A driver calls
// it after a pull. It never blocks; kicks coalesce.
func (c *Cleaner) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Start builds the cache from the store, checks that the exempt images fit
// in the budget (an error wrapping drivers.ErrInvalidConfig if not), and
// starts the background job, which evicts at once if needed, lists the
// store again every ResyncInterval and after each Kick, and retries failed
// removals with backoff. The job keeps the values of ctx (not its
// cancellation) for its store calls; Close stops it.
func (c *Cleaner) Start(ctx context.Context) error {
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return fmt.Errorf("images: start: %w", drivers.ErrClosed)
	case c.started:
		c.mu.Unlock()
		return errors.New("images: cleaner already started")
	}
	c.started = true
	c.mu.Unlock()

	c.passMu.Lock()
	err := c.sync(ctx)
	if err == nil {
		err = c.checkExempt()
	}
	c.passMu.Unlock()

	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil && c.closed {
		err = fmt.Errorf("images: start: %w", drivers.ErrClosed)
	}
	if err != nil {
		c.started = false
		return err
	}
	c.bgCtx = context.WithoutCancel(ctx)
	loopCtx, cancel := context.WithCancel(c.bgCtx)
	c.cancel = cancel
	c.wg.Add(1)
	go c.run(loopCtx)
	return nil
}

// Close stops the background job, waits for it, and writes the last uses
// not yet persisted. It is idempotent; Use and release keep working (they
// only count) but nothing is removed any more.
func (c *Cleaner) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		cancel := c.cancel
		bg := c.bgCtx
		c.mu.Unlock()
		if cancel != nil {
			cancel()
		}
		c.wg.Wait()
		ctx, cancelFlush := context.WithTimeout(bg, closeFlushTimeout)
		defer cancelFlush()
		c.closeErr = c.persist(ctx, true)
	})
	return c.closeErr
}

// checkExempt refuses a budget the exempt images alone exceed. Callers hold
// passMu.
func (c *Cleaner) checkExempt() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var size, shared uint64
	for _, e := range c.byID {
		if e.exempt {
			size += e.size
			shared = max(shared, e.sharedSize)
		}
	}
	if size+shared > c.cfg.MaxSize {
		return configErrorf("the exempt images take %d bytes, more than the budget of %d", size+shared, c.cfg.MaxSize)
	}
	if size+shared > c.cfg.LowWater {
		c.log.WithField("exempt_bytes", size+shared).Warn("exempt images take more than the low-water mark: eviction will remove every idle image")
	}
	return nil
}

// tracked is the tracked size of the store. Callers hold mu.
func (c *Cleaner) tracked() uint64 { return c.total + c.shared }

// run is the background job.
func (c *Cleaner) run(ctx context.Context) {
	defer c.wg.Done()
	listBackOff := c.newListBackOff()
	lastPass := c.clock.Now()
	nextSync := lastPass.Add(c.cfg.ResyncInterval)
	kicked := false
	// Start has just listed the store: the first pass only evicts.
	c.evictPass(ctx)
	for {
		now := c.clock.Now()
		wake := nextSync
		earliest := lastPass.Add(c.cfg.MinInterval)
		if kicked {
			wake = earliest
		}
		if r, ok := c.nextRetry(); ok && r.Before(wake) {
			wake = r
		}
		if wake.Before(earliest) {
			wake = earliest
		}
		if d := wake.Sub(now); d > 0 {
			t := c.clock.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-c.kick:
				t.Stop()
				kicked = true
				continue
			case <-t.C():
			}
		}
		if ctx.Err() != nil {
			return
		}
		select { // this pass serves a pending kick too
		case <-c.kick:
		default:
		}
		kicked = false
		lastPass = c.clock.Now()
		if _, err := c.pass(ctx, false, false); err != nil {
			if ctx.Err() != nil {
				return
			}
			d, ok := listBackOff.Next()
			if !ok {
				d = c.cfg.ResyncInterval
			}
			c.log.WithError(err).WithField("retry_in", d).Warn("image store sync failed")
			nextSync = lastPass.Add(d)
		} else {
			listBackOff = c.newListBackOff()
			nextSync = lastPass.Add(c.cfg.ResyncInterval)
		}
		if lastPass.Sub(c.lastPersistTime()) >= c.persistInterval {
			if err := c.persist(ctx, false); err != nil && ctx.Err() == nil {
				c.log.WithError(err).Warn("cannot persist image last uses")
			}
		}
	}
}

// newListBackOff spaces the passes after a failed List, from MinInterval up
// to ResyncInterval.
func (c *Cleaner) newListBackOff() *backoff.BackOff {
	minMs := uint64(c.cfg.MinInterval / time.Millisecond)
	maxMs := max(uint64(c.cfg.ResyncInterval/time.Millisecond), minMs, 1)
	b, err := backoff.New(drivers.BackOffConfig{
		MaxRetries: 1 << 40,
		Interval:   max(minMs, 1),
		MinDelay:   minMs,
		MaxDelay:   maxMs,
	})
	if err != nil { // cannot happen with the settings above
		b, _ = backoff.New(DefaultRemoveBackOff)
	}
	return b
}

// nextRetry is the earliest time a failed removal may be retried, when the
// store is over budget and something waits.
func (c *Cleaner) nextRetry() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.retrying) == 0 || c.tracked() <= c.cfg.MaxSize {
		return time.Time{}, false
	}
	var first time.Time
	for e := range c.retrying {
		if first.IsZero() || e.retryAt.Before(first) {
			first = e.retryAt
		}
	}
	return first, true
}

func (c *Cleaner) lastPersistTime() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastPersist
}
