package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/stats"
)

// Caller bounds and records the daemon calls of one driver. Runtimes make
// every daemon call through it.
type Caller struct {
	// Driver names the driver in the metrics.
	Driver string
	// Timeout bounds a call made with Call.
	Timeout time.Duration
}

// Call runs one daemon call bounded by ctx and the call timeout.
func (c Caller) Call(ctx context.Context, api string, f func(context.Context) error) error {
	return c.CallWithin(ctx, api, c.Timeout, f)
}

// CallWithin is Call with its own bound; 0 leaves only ctx. When the bound
// ends the call while ctx is live, the daemon did not answer in time: the
// error wraps drivers.ErrDaemonUnavailable and no context error, so a
// retry policy may try again. When ctx ended, the error wraps ctx's error
// whatever the transport made of it.
func (c Caller) CallWithin(ctx context.Context, api string, limit time.Duration, f func(context.Context) error) error {
	cctx, cancel := ctx, context.CancelFunc(func() {})
	if limit > 0 {
		cctx, cancel = context.WithTimeout(ctx, limit)
	}
	defer cancel()
	start := time.Now()
	err := f(cctx)
	switch cerr := ctx.Err(); {
	case err == nil:
	case cerr != nil && !errors.Is(err, cerr):
		err = fmt.Errorf("%s %s: %w: %w", c.Driver, api, cerr, err)
	case cerr == nil && cctx.Err() != nil:
		err = fmt.Errorf("%s %s: no answer within %v: %w (%v)", c.Driver, api, limit, drivers.ErrDaemonUnavailable, err)
	}
	stats.RecordDaemonCall(ctx, c.Driver, api, start, err)
	return err
}

// InDoubt reports whether err leaves it open if the daemon did what was
// asked: its answer was lost (no answer in time, a broken connection) or
// the caller gave up.
func InDoubt(err error) bool {
	return errors.Is(err, drivers.ErrDaemonUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// Detached is the context of work that must finish whatever happened to
// ctx: its values, none of its cancellation and no deadline. Each daemon
// call under it is bounded by the call timeout on its own.
func Detached(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }
