// Package backoff paces retries with bounded, jittered exponential delays,
// as a drivers.BackOffConfig says: pulls, pool holder replacements and
// image removals all retry through it.
package backoff

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/fnrun/fnrun/drivers"
)

// BackOff yields the delays of one retry sequence. It is not safe for
// concurrent use; create one per sequence with New.
type BackOff struct {
	cfg     drivers.BackOffConfig
	retries uint64
	jitter  func(n int64) int64
}

// New validates cfg and returns a fresh sequence.
func New(cfg drivers.BackOffConfig) (*BackOff, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &BackOff{cfg: cfg, jitter: rand.Int64N}, nil
}

// Next returns the delay before the next retry, or false when the retries
// are used up. Each delay is drawn from [d/2, d] where d is the capped
// exponential delay, so concurrent retriers spread out.
func (b *BackOff) Next() (time.Duration, bool) {
	if b.retries >= b.cfg.MaxRetries {
		return 0, false
	}
	b.retries++
	d := b.cfg.MinDelay
	if b.cfg.Interval > 0 {
		shift := b.retries - 1
		if shift > 40 {
			shift = 40
		}
		step := b.cfg.Interval
		if step > b.cfg.MaxDelay {
			step = b.cfg.MaxDelay
		}
		grown := step << shift
		if grown/(uint64(1)<<shift) != step || grown > b.cfg.MaxDelay {
			grown = b.cfg.MaxDelay
		}
		d += grown
	}
	if d > b.cfg.MaxDelay {
		d = b.cfg.MaxDelay
	}
	ms := int64(d)
	if half := ms / 2; half > 0 {
		ms = ms - half + b.jitter(half+1)
	}
	if ms < int64(b.cfg.MinDelay) {
		ms = int64(b.cfg.MinDelay)
	}
	return time.Duration(ms) * time.Millisecond, true
}

// Retries is the number of delays handed out so far.
func (b *BackOff) Retries() uint64 { return b.retries }

// Retry calls op until it succeeds, the retries of cfg are used up, retry
// says an error is final, or ctx ends. Errors that no retry can fix
// (ErrImageNotFound, ErrUnauthorized, ErrInvalidTask, context errors) are
// final whatever retry says. It returns op's last error, or the
// context's error if ctx ended while waiting.
func Retry(ctx context.Context, cfg drivers.BackOffConfig, retry drivers.RetryErrorChecker, op func(context.Context) error) error {
	b, err := New(cfg)
	if err != nil {
		return err
	}
	for {
		err := op(ctx)
		if err == nil {
			return nil
		}
		if retry == nil || isPermanent(err) {
			return err
		}
		if ok, _ := retry(err); !ok {
			return err
		}
		d, ok := b.Next()
		if !ok {
			return err
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (while waiting to retry after: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

func isPermanent(err error) bool {
	for _, final := range []error{drivers.ErrImageNotFound, drivers.ErrUnauthorized, drivers.ErrInvalidTask, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, final) {
			return true
		}
	}
	return false
}
