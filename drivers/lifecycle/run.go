package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/syslog"
	"github.com/fnrun/fnrun/pool"
	"github.com/fnrun/fnrun/stats"
)

// run is one started container, watched by its monitor goroutine.
type run struct {
	c     *cookie
	p     Process
	out   *output
	sink  *syslog.Sink // nil unless the run sends the output to syslog
	lease *pool.Lease  // the holder the container joined, or nil

	done   chan struct{} // closed once result is set
	endReq chan struct{} // closed by the first RequestEnd
	result drivers.RunResult

	endOnce    sync.Once
	finishOnce sync.Once
	mu         sync.Mutex
	cause      context.Context
}

var _ drivers.WaitResult = (*run)(nil)

func newRun(c *cookie, p Process, out *output, sink *syslog.Sink, lease *pool.Lease) *run {
	return &run{c: c, p: p, out: out, sink: sink, lease: lease, done: make(chan struct{}), endReq: make(chan struct{})}
}

// Wait implements drivers.WaitResult.
func (r *run) Wait(ctx context.Context) drivers.RunResult {
	select {
	case <-r.done:
		return r.result
	case <-ctx.Done():
		r.requestEnd(ctx)
		<-r.done
		return r.result
	}
}

// requestEnd asks the monitor to end the container. The first cause wins;
// nil means the cookie or the driver is closing.
func (r *run) requestEnd(cause context.Context) {
	r.endOnce.Do(func() {
		r.mu.Lock()
		r.cause = cause
		r.mu.Unlock()
		close(r.endReq)
	})
}

func (r *run) endCause() context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cause
}

func (r *run) finished() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

type exitStatus struct {
	Exit
	err error
}

// monitor follows the container to its end and sets the result.
func (r *run) monitor(runCtx context.Context) {
	d := r.c.d
	var res drivers.RunResult
	defer func() {
		r.result = res
		close(r.done)
	}()
	start := time.Now()

	waitCtx, stopWaiting := context.WithCancel(context.WithoutCancel(runCtx))
	exited := make(chan exitStatus, 1)
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		e, err := r.p.Wait(waitCtx)
		exited <- exitStatus{e, err}
	}()
	defer func() { <-waited }()
	defer stopWaiting()

	// Stats keep the run context's values but end with the run. This
	// goroutine is the only caller of the task's WriteStat.
	statsCtx, stopStats := context.WithCancel(context.WithoutCancel(runCtx))
	statsDone := make(chan struct{})
	go func() {
		defer close(statsDone)
		r.p.Stats(statsCtx, func(s stats.Stat) { r.c.task.WriteStat(runCtx, s) })
	}()

	var holderDead <-chan struct{} // nil, never ready, without a holder
	if r.lease != nil {
		holderDead = r.lease.Dead()
	}
	inputDone := r.p.InputDone()
	var (
		st        exitStatus
		seen      bool
		holderErr error
	)
watch:
	for {
		select {
		case st = <-exited:
			seen = true
			break watch
		case <-inputDone:
			inputDone = nil // closed: stop watching it
			if err := r.p.CloseInput(Detached(runCtx)); err != nil {
				d.log.WithError(err).WithField("container", r.c.name()).Warn("cannot close stdin")
			}
		case <-runCtx.Done():
			r.requestEnd(runCtx)
			break watch
		case <-r.endReq:
			break watch
		case <-d.ctx.Done():
			r.requestEnd(nil)
			break watch
		case <-holderDead:
			// The namespace lives on with the container in it, but nobody
			// keeps it for the pool: end the container rather than let it
			// run in a network the caller did not ask for.
			if holderErr = holderError(r.lease, nil); errors.Is(holderErr, drivers.ErrClosed) {
				holderErr = nil
				r.requestEnd(nil)
			}
			break watch
		}
	}
	ended := false
	if !seen {
		select {
		case st = <-exited: // a natural exit that raced with the end wins
			seen, holderErr = true, nil
		default:
			ended = holderErr == nil
			r.out.ending()
			st, seen = r.stop(exited)
		}
	}
	stopStats()
	<-statsDone

	bound := drainTimeout
	switch {
	case !seen:
		// The container may run on, holding its streams open: nothing
		// says more output is coming.
		bound = 0
	case ended || holderErr != nil:
		bound = endedDrainTimeout
	}
	drained := r.out.drain(r.p.OutputDone(), bound)
	outErr := r.out.shut()
	r.p.StopOutput()
	<-r.p.OutputDone()
	r.sink.Close()
	if !drained && outErr == nil {
		outErr = fmt.Errorf("output did not end within %v of the exit: %w", bound, drivers.ErrOutputLost)
	}

	res = r.outcome(ended, st, seen, holderErr, outErr)
	stats.RecordExit(runCtx, d.s.Name, res.Status())
	d.log.WithFields(logrus.Fields{"container": r.c.name(), "status": res.Status(), "took": time.Since(start)}).Debug("container ended")
}

// stop ends the container as the package doc says, and returns the exit if
// it was seen. A daemon that does not answer gets one SIGKILL after its
// first silence: each further call would only wait out the call timeout.
func (r *run) stop(exited <-chan exitStatus) (exitStatus, bool) {
	d, c := r.c.d, r.c
	ctx := context.Background()
	log := d.log.WithField("container", c.name())
	silent := false
	if c.mayBeFrozen() {
		err := c.ctr.Resume(ctx)
		switch {
		case err == nil:
			c.setFrozen(false)
		case !errors.Is(err, drivers.ErrContainerGone):
			log.WithError(err).Warn("cannot thaw container before ending it")
			silent = errors.Is(err, drivers.ErrDaemonUnavailable)
		}
	}
	if grace := d.s.StopGrace; grace > 0 && !silent {
		err := r.p.Signal(ctx, syscall.SIGTERM, false)
		if err == nil {
			t := time.NewTimer(grace)
			select {
			case st := <-exited:
				t.Stop()
				return st, true
			case <-t.C:
			}
		}
		silent = errors.Is(err, drivers.ErrDaemonUnavailable)
	}
	if err := r.p.Signal(ctx, syscall.SIGKILL, true); err != nil {
		log.WithError(err).Debug("SIGKILL failed")
		if silent && errors.Is(err, drivers.ErrDaemonUnavailable) {
			return exitStatus{}, false // twice unanswered: no exit is coming
		}
	}
	t := time.NewTimer(d.s.CallTimeout)
	defer t.Stop()
	select {
	case st := <-exited:
		return st, true
	case <-t.C:
		return exitStatus{}, false
	}
}

func (r *run) outcome(ended bool, st exitStatus, seen bool, holderErr, outErr error) drivers.RunResult {
	name := r.c.name()
	switch {
	case holderErr != nil:
		return errorResult(fmt.Errorf("container %s: %w", name, holderErr))
	case ended:
		cause := r.endCause()
		if cause == nil {
			cause = closedContext()
		}
		return contextResult(cause)
	case !seen:
		return errorResult(fmt.Errorf("container %s: exit not seen: %w", name, drivers.ErrDaemonUnavailable))
	case st.err != nil:
		return errorResult(fmt.Errorf("waiting for container %s: %w", name, st.err))
	case st.Code != 0 && st.OOM:
		return &result{status: drivers.StatusKilled, err: fmt.Errorf("container %s killed by the kernel OOM killer (exit code %d): %w", name, st.Code, drivers.ErrOutOfMemory)}
	case st.Code != 0:
		return errorResult(&drivers.ExitError{ExitCode: st.Code})
	case outErr != nil:
		if !errors.Is(outErr, drivers.ErrOutputLost) {
			outErr = fmt.Errorf("%w: %w", drivers.ErrOutputLost, outErr)
		}
		return errorResult(fmt.Errorf("output of container %s: %w", name, outErr))
	}
	return &result{status: drivers.StatusSuccess}
}

// holderError is the error of a container whose pool holder is gone: the
// pool's reason when it has noticed (wrapping pool.ErrHolderDied and so
// drivers.ErrContainerGone, or drivers.ErrClosed when the pool closed),
// else pool.ErrHolderDied with what the runtime said.
func holderError(lease *pool.Lease, runtimeErr error) error {
	if err := lease.Err(); err != nil {
		return err
	}
	if runtimeErr != nil {
		return fmt.Errorf("holder %s: %w: %w", lease.Holder().ID, pool.ErrHolderDied, runtimeErr)
	}
	return fmt.Errorf("holder %s: %w", lease.Holder().ID, pool.ErrHolderDied)
}

func leaseDead(lease *pool.Lease) bool {
	select {
	case <-lease.Dead():
		return true
	default:
		return false
	}
}

type result struct {
	status string
	err    error
}

func (r *result) Status() string { return r.status }
func (r *result) Error() error   { return r.err }

func errorResult(err error) *result { return &result{status: drivers.StatusError, err: err} }

// contextResult is the result of a run ended because ctx is done.
func contextResult(ctx context.Context) *result {
	err := ctx.Err()
	if err == nil {
		err = context.Canceled
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &result{status: drivers.StatusTimeout, err: fmt.Errorf("container timed out: %w", err)}
	}
	return &result{status: drivers.StatusCancelled, err: fmt.Errorf("container cancelled: %w", err)}
}

// closedContext is the cause of runs ended by Close.
func closedContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
