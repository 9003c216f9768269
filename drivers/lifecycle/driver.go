package lifecycle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang/groupcache/singleflight"
	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/internal/backoff"
	"github.com/fnrun/fnrun/pool"
	"github.com/fnrun/fnrun/stats"
)

// Driver is a drivers.Driver over a Runtime.
type Driver struct {
	s       *Settings
	rt      Runtime
	log     *logrus.Entry
	caller  Caller
	pool    *pool.Pool      // nil without
	noNet   *pool.Pool      // holders without a network; nil without
	store   images.Store    // nil when the runtime has none
	cleaner *images.Cleaner // nil without
	pulls   singleflight.Group

	// ctx ends the driver's background work (runs, shared pulls, the
	// reaper) when it closes; wg counts every goroutine it started.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	cookies   map[*cookie]struct{}
	names     map[string]*cookie // task ids of open cookies with a container
	policy    drivers.BackOffConfig
	checker   drivers.RetryErrorChecker
	closeOnce sync.Once
	closeErr  error
}

var (
	_ drivers.Driver  = (*Driver)(nil)
	_ drivers.Capable = (*Driver)(nil)
	_ pool.Reporter   = (*Driver)(nil)
	_ images.Provider = (*Driver)(nil)
)

// StoreProvider is a Runtime with an image store the cleaner can manage.
type StoreProvider interface{ ImageStore() images.Store }

// New builds a driver over rt with s (from Configure), starting what s asks
// for. On error nothing of it is left running; closing rt is the caller's.
func New(ctx context.Context, s *Settings, rt Runtime) (*Driver, error) {
	d := &Driver{
		s:       s,
		rt:      rt,
		log:     s.Logger,
		caller:  Caller{Driver: s.Name, Timeout: s.CallTimeout},
		cookies: make(map[*cookie]struct{}),
		names:   make(map[string]*cookie),
	}
	d.ctx, d.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if sp, ok := rt.(StoreProvider); ok {
		d.store = sp.ImageStore()
	}
	if s.Cleaner != nil {
		if d.store == nil {
			d.cancel()
			return nil, fmt.Errorf("%s driver: image cleaner: the runtime has no image store: %w", s.Name, drivers.ErrInvalidConfig)
		}
		cl, err := images.New(d.store, *s.Cleaner, images.WithLogger(d.log))
		if err == nil {
			if err = cl.Start(ctx); err != nil {
				_ = cl.Close()
			}
		}
		if err != nil {
			d.cancel()
			return nil, fmt.Errorf("%s driver: image cleaner: %w", s.Name, err)
		}
		d.cleaner = cl
	}
	for _, pc := range []struct {
		cfg *pool.Config
		p   **pool.Pool
	}{{s.Pool, &d.pool}, {s.NoNetPool, &d.noNet}} {
		if pc.cfg == nil {
			continue
		}
		p, err := pool.New(&holders{d: d}, *pc.cfg, pool.WithLogger(d.log))
		if err != nil {
			d.abort()
			return nil, fmt.Errorf("%s driver: pre-fork pool: %w", s.Name, err)
		}
		*pc.p = p
	}
	if s.Tag != "" && !s.NoLeakReaper {
		d.spawn(func() { d.reapLeaks(d.ctx) })
	}
	return d, nil
}

// abort undoes a New that failed half-way.
func (d *Driver) abort() {
	d.cancel()
	for _, p := range d.pools() {
		_ = p.Close()
	}
	if d.cleaner != nil {
		_ = d.cleaner.Close()
	}
}

// Settings are the driver's settings.
func (d *Driver) Settings() *Settings { return d.s }

// Caller bounds and records daemon calls as the driver's own.
func (d *Driver) Caller() Caller { return d.caller }

// Capabilities implements drivers.Capable with the runtime's.
func (d *Driver) Capabilities() drivers.Capability {
	if c, ok := d.rt.(drivers.Capable); ok {
		return c.Capabilities()
	}
	return 0
}

// CreateCookie implements drivers.Driver; it makes no daemon call.
func (d *Driver) CreateCookie(ctx context.Context, task drivers.ContainerTask) (drivers.Cookie, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t, err := CheckTask(task)
	if err != nil {
		return nil, err
	}
	opts, err := d.rt.Options(t)
	if err != nil {
		return nil, err
	}
	c := &cookie{d: d, task: t, opts: opts}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("%s driver: %w", d.s.Name, drivers.ErrClosed)
	}
	d.cookies[c] = struct{}{}
	return c, nil
}

// OpenCookies is how many cookies were created and not yet closed.
func (d *Driver) OpenCookies() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.cookies)
}

func (d *Driver) reserveName(c *cookie) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if other, ok := d.names[c.name()]; ok && other != c {
		return false
	}
	d.names[c.name()] = c
	return true
}

func (d *Driver) releaseName(c *cookie) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.names[c.name()] == c {
		delete(d.names, c.name())
	}
}

// forget drops a cookie whose Close is done.
func (d *Driver) forget(c *cookie) {
	d.releaseName(c)
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.cookies, c)
}

// SetPullImageRetryPolicy implements drivers.Driver.
func (d *Driver) SetPullImageRetryPolicy(policy drivers.BackOffConfig, checker drivers.RetryErrorChecker) error {
	if err := policy.Validate(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.policy, d.checker = policy, checker
	return nil
}

// GetSlotKeyExtensions implements drivers.Driver.
func (d *Driver) GetSlotKeyExtensions(extn map[string]string) string {
	if k, ok := d.rt.(SlotKeyer); ok {
		return k.GetSlotKeyExtensions(extn)
	}
	return ""
}

// PoolStats implements pool.Reporter.
func (d *Driver) PoolStats() (pool.Stats, bool) {
	if d.pool == nil {
		return pool.Stats{}, false
	}
	return d.pool.Stats(), true
}

// Pool is the pre-fork pool, or nil.
func (d *Driver) Pool() *pool.Pool { return d.pool }

// NoNetPool is the pool of holders without a network, or nil.
func (d *Driver) NoNetPool() *pool.Pool { return d.noNet }

// pools are the pre-fork pools the driver runs.
func (d *Driver) pools() []*pool.Pool {
	var out []*pool.Pool
	for _, p := range []*pool.Pool{d.pool, d.noNet} {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

// ImageStore implements images.Provider: the runtime's image store, for a
// one-shot cleanup job even when the driver runs no cleaner.
func (d *Driver) ImageStore() images.Store { return d.store }

// ImageCleaner implements images.Provider.
func (d *Driver) ImageCleaner() (*images.Cleaner, bool) { return d.cleaner, d.cleaner != nil }

// Close implements drivers.Driver, stopping things in the reverse order of New.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		open := make([]*cookie, 0, len(d.cookies))
		for c := range d.cookies {
			open = append(open, c)
		}
		d.mu.Unlock()
		var (
			errs  []error
			errMu sync.Mutex
			wg    sync.WaitGroup
		)
		for _, c := range open {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := c.Close(context.Background()); err != nil {
					errMu.Lock()
					errs = append(errs, err)
					errMu.Unlock()
				}
			}()
		}
		wg.Wait()
		d.cancel()
		d.wg.Wait()
		for _, p := range d.pools() {
			if err := p.Close(); err != nil {
				errs = append(errs, fmt.Errorf("pre-fork pool: %w", err))
			}
		}
		if d.cleaner != nil {
			if err := d.cleaner.Close(); err != nil {
				errs = append(errs, fmt.Errorf("image cleaner: %w", err))
			}
		}
		if c, ok := d.rt.(Closer); ok {
			if err := c.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			d.closeErr = fmt.Errorf("%s driver close: %w", d.s.Name, err)
		}
	})
	return d.closeErr
}

// spawn runs f in a goroutine the driver owns: Close waits for it. It
// refuses once Close has begun, so none starts while Close waits.
func (d *Driver) spawn(f func()) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		f()
	}()
	return true
}

// pull makes ref present through a shared pull under the driver's context:
// a caller that gives up (ctx) stops waiting but does not fail the others,
// and the image is likely wanted again soon.
func (d *Driver) pull(ctx context.Context, ref drivers.Reference, auth *drivers.AuthConfig) error {
	key := pullKey(ref.Normalized, auth)
	res := make(chan error, 1)
	if !d.spawn(func() {
		_, err := d.pulls.Do(key, func() (any, error) { return nil, d.pullWithRetries(ref, auth) })
		res <- err
	}) {
		return fmt.Errorf("pull %s: %s driver: %w", ref.Familiar, d.s.Name, drivers.ErrClosed)
	}
	select {
	case err := <-res:
		if err != nil && d.ctx.Err() != nil {
			return fmt.Errorf("pull %s: %s driver: %w (%w)", ref.Familiar, d.s.Name, drivers.ErrClosed, err)
		}
		if err == nil && d.cleaner != nil {
			d.cleaner.Kick() // the store grew
		}
		return err
	case <-ctx.Done():
		return fmt.Errorf("pull %s: %w", ref.Familiar, ctx.Err())
	}
}

func (d *Driver) pullWithRetries(ref drivers.Reference, auth *drivers.AuthConfig) error {
	d.mu.Lock()
	policy, checker := d.policy, d.checker
	d.mu.Unlock()
	attempt := 0
	return backoff.Retry(d.ctx, policy, checker, func(ctx context.Context) error {
		attempt++
		start := time.Now()
		err := d.caller.CallWithin(ctx, "pull", d.s.PullTimeout, func(ctx context.Context) error {
			return d.rt.Pull(ctx, ref, auth)
		})
		stats.RecordPull(ctx, d.s.Name, start, err)
		if err != nil {
			d.log.WithError(err).WithFields(logrus.Fields{"image": ref.Familiar, "attempt": attempt}).Info("pull failed")
		}
		return err
	})
}

// pullKey identifies a shared pull. Credentials are part of it, hashed: a
// caller must never ride on a pull made with another's login.
func pullKey(ref string, auth *drivers.AuthConfig) string {
	if auth == nil {
		return ref
	}
	h := sha256.New()
	for _, s := range []string{auth.ServerAddress, auth.Username, auth.Password, auth.IdentityToken} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return ref + "\x00" + hex.EncodeToString(h.Sum(nil))
}

// Closed reports whether Close has begun.
func (d *Driver) Closed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}
