package images

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	ocstats "go.opencensus.io/stats"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/backoff"
	"github.com/fnrun/fnrun/stats"
)

// Report says what one pass removed, or would remove in a dry run.
type Report struct {
	// DryRun is true when nothing was removed: Removed lists what a real
	// pass would have removed.
	DryRun bool
	// Removed are the images removed (or to remove), in eviction order.
	Removed []ImageInfo
	// Failed are the removals that failed; each is retried later with
	// backoff.
	Failed []RemoveFailure
	// Vanished are the ids of images that disappeared from the store
	// while being removed; they are forgotten.
	Vanished []string
	// BytesBefore and BytesAfter are the tracked size of the store before
	// and after the pass (estimated after, in a dry run).
	BytesBefore, BytesAfter uint64
	// Budget and LowWater are Config.MaxSize and the low-water mark.
	Budget, LowWater uint64
}

// RemoveFailure is one failed removal.
type RemoveFailure struct {
	Image ImageInfo
	Err   error
}

// CleanOption changes one CleanOnce.
type CleanOption func(*cleanOptions)

type cleanOptions struct{ dryRun bool }

// DryRun makes CleanOnce report what it would remove without removing
// anything or changing the cache's state beyond the sync.
func DryRun() CleanOption { return func(o *cleanOptions) { o.dryRun = true } }

// CleanOnce lists the store and, if it is over budget, removes least
// recently used idle images until it is at most at the low-water mark: one
// pass of the background job, for a separate cleanup job or the command
// line. It refuses (with an error wrapping drivers.ErrInvalidConfig) when
// the exempt images alone exceed the budget. It can run beside Start's job;
// passes never overlap. Images whose removal failed earlier are skipped
// until their backoff has passed.
func (c *Cleaner) CleanOnce(ctx context.Context, opts ...CleanOption) (Report, error) {
	var o cleanOptions
	for _, opt := range opts {
		opt(&o)
	}
	return c.pass(ctx, o.dryRun, true)
}

// pass lists the store, then evicts (or plans to, when dryRun). strict
// refuses exempt images larger than the budget instead of logging it.
func (c *Cleaner) pass(ctx context.Context, dryRun, strict bool) (Report, error) {
	c.passMu.Lock()
	defer c.passMu.Unlock()
	if err := c.sync(ctx); err != nil {
		return Report{}, err
	}
	if strict {
		if err := c.checkExempt(); err != nil {
			return Report{}, err
		}
	}
	if dryRun {
		return c.plan(), nil
	}
	rep := c.evict(ctx)
	return rep, nil
}

// evictPass evicts without listing the store first.
func (c *Cleaner) evictPass(ctx context.Context) Report {
	c.passMu.Lock()
	defer c.passMu.Unlock()
	return c.evict(ctx)
}

// requeueDue makes the failed removals whose backoff has passed candidates
// again. Callers hold mu.
func (c *Cleaner) requeueDue(now time.Time) {
	for e := range c.retrying {
		if !now.Before(e.retryAt) {
			delete(c.retrying, e)
			e.state = stateTracked
			c.place(e)
		}
	}
}

// evict removes least recently used candidates while the store is over
// budget, down to the low-water mark, and records the metrics. Callers
// hold passMu.
func (c *Cleaner) evict(ctx context.Context) Report {
	c.mu.Lock()
	c.requeueDue(c.clock.Now())
	rep := Report{Budget: c.cfg.MaxSize, LowWater: c.cfg.LowWater, BytesBefore: c.tracked()}
	var evictions, failures int64
	if c.tracked() > c.cfg.MaxSize {
		failed := 0
		for c.tracked() > c.cfg.LowWater && ctx.Err() == nil {
			if c.idle.Len() == 0 {
				if !c.overWarned {
					c.overWarned = true
					c.log.WithField("tracked_bytes", c.tracked()).WithField("budget", c.cfg.MaxSize).
						Warn("image store over budget and every image is busy, in use, exempt or waiting to retry")
				}
				break
			}
			e := heap.Pop(&c.idle).(*entry)
			e.state = stateRemoving
			info := c.info(e)
			c.mu.Unlock()
			err := c.store.Remove(ctx, info.ID)
			log := c.log.WithField("image", info.ID).WithField("refs", info.References).WithField("size", info.Size)
			switch {
			case err == nil:
				log.Info("removed image to stay under budget")
			case errors.Is(err, drivers.ErrImageNotFound):
				log.Debug("image to remove had vanished")
			case ctx.Err() != nil:
			case errors.Is(err, ErrImageInUse):
				log.WithError(err).Debug("image to remove is in use; will retry")
			default:
				log.WithError(err).Warn("cannot remove image; will retry")
			}
			c.mu.Lock()
			switch {
			case err == nil:
				c.forget(e)
				rep.Removed = append(rep.Removed, info)
				evictions++
			case errors.Is(err, drivers.ErrImageNotFound):
				c.forget(e)
				rep.Vanished = append(rep.Vanished, info.ID)
			case ctx.Err() != nil:
				// Stopped by Close or the caller: not the image's fault.
				e.state = stateTracked
				c.place(e)
			default:
				failed++
				if !errors.Is(err, ErrImageInUse) {
					failures++
				}
				c.retryLater(e)
				rep.Failed = append(rep.Failed, RemoveFailure{Image: info, Err: err})
			}
			if failed >= maxFailuresPerPass {
				break
			}
		}
	} else {
		c.overWarned = false
	}
	rep.BytesAfter = c.tracked()
	busy, idle := c.busyIdle()
	c.mu.Unlock()

	ms := []ocstats.Measurement{
		stats.ImageBytesBusy.M(int64(min(busy, 1<<63-1))),
		stats.ImageBytesIdle.M(int64(min(idle, 1<<63-1))),
		stats.ImageBudget.M(int64(min(c.cfg.MaxSize, 1<<63-1))),
	}
	if evictions > 0 {
		ms = append(ms, stats.ImageEvictions.M(evictions))
	}
	if failures > 0 {
		ms = append(ms, stats.ImageEvictionFailures.M(failures))
	}
	stats.Record(context.WithoutCancel(ctx), c.cfg.Driver, ms...)
	return rep
}

// retryLater takes e out of the candidates until its backoff has passed.
// Callers hold mu.
func (c *Cleaner) retryLater(e *entry) {
	if e.backoff == nil {
		e.backoff, _ = backoff.New(c.backoff) // validated in New
	}
	d, ok := e.backoff.Next()
	if !ok {
		d = time.Duration(c.backoff.MaxDelay) * time.Millisecond
	}
	e.retryAt = c.clock.Now().Add(d)
	e.state = stateWaiting
	c.retrying[e] = struct{}{}
	c.place(e)
}

// plan is a dry run of evict. Callers hold passMu.
func (c *Cleaner) plan() Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock.Now()
	rep := Report{DryRun: true, Budget: c.cfg.MaxSize, LowWater: c.cfg.LowWater, BytesBefore: c.tracked()}
	total := c.tracked()
	if total > c.cfg.MaxSize {
		// Sorting a copy leaves the heap, and the entries' indexes, alone.
		cands := slices.Clone(c.idle)
		for e := range c.retrying {
			if !now.Before(e.retryAt) && e.uses == 0 && !e.inUse && !e.exempt {
				cands = append(cands, e)
			}
		}
		slices.SortFunc(cands, func(a, b *entry) int {
			if a.before(b) {
				return -1
			}
			if b.before(a) {
				return 1
			}
			return 0
		})
		for _, e := range cands {
			if total <= c.cfg.LowWater {
				break
			}
			rep.Removed = append(rep.Removed, c.info(e))
			total -= e.size
		}
	}
	rep.BytesAfter = total
	return rep
}

// busyIdle splits the tracked bytes: busy are the images in use (by a
// holder or a container) or being removed, idle the rest, shared bytes
// included. Callers hold mu.
func (c *Cleaner) busyIdle() (busy, idle uint64) {
	for _, e := range c.byID {
		if e.busy() {
			busy += e.size
		}
	}
	return busy, c.tracked() - busy
}

// String makes a Report readable in logs.
func (r Report) String() string {
	verb := "removed"
	if r.DryRun {
		verb = "would remove"
	}
	return fmt.Sprintf("%s %d images, %d failed, %d vanished; %d -> %d bytes (budget %d, low water %d)",
		verb, len(r.Removed), len(r.Failed), len(r.Vanished), r.BytesBefore, r.BytesAfter, r.Budget, r.LowWater)
}
