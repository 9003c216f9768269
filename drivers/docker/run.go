package docker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	docker "github.com/fsouza/go-dockerclient"
	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/pool"
	"github.com/fnrun/fnrun/stats"
)

// Run implements drivers.Cookie. The streams are attached before the
// container starts, so output written at once is not lost. ctx bounds the
// whole run: when it ends, the container is ended and the result is
// StatusTimeout or StatusCancelled. A container that joined a pool holder
// which has since died fails here with an error wrapping
// drivers.ErrContainerGone, and one whose holder dies while it runs is
// ended with StatusError and that error.
func (c *cookie) Run(ctx context.Context) (drivers.WaitResult, error) {
	if err := c.usable(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	switch {
	case c.id == "":
		c.mu.Unlock()
		return nil, fmt.Errorf("run %s: container not created", c.name())
	case c.run != nil || c.starting:
		c.mu.Unlock()
		return nil, fmt.Errorf("run %s: already started", c.name())
	}
	c.starting = true
	id, lease := c.id, c.lease
	c.mu.Unlock()

	var (
		r   *run
		err error
	)
	if lease != nil && leaseDead(lease) {
		err = fmt.Errorf("run %s: %w", c.name(), holderError(lease, nil))
	} else {
		r, err = c.start(ctx, id, lease)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	c.starting = false
	if err != nil {
		return nil, err
	}
	c.run = r
	if c.closed {
		// Close ran while the container was starting and did not see it.
		r.RequestEnd(closedContext())
	}
	return r, nil
}

func (c *cookie) start(ctx context.Context, id string, lease *pool.Lease) (*run, error) {
	d := c.d
	stdout, stderr := c.task.Logger()
	att, err := d.attach(ctx, id, c.task.Input(), stdout, stderr)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", c.name(), err)
	}
	err = d.startContainer(ctx, id, fmt.Sprintf("container %q", c.name()))
	if err != nil {
		att.close()
		<-att.done
		if lease != nil && (leaseDead(lease) || holderGoneMessage(err)) {
			return nil, fmt.Errorf("run %s: %w", c.name(), holderError(lease, err))
		}
		return nil, fmt.Errorf("run %s: %w", c.name(), err)
	}
	r := &run{
		c:      c,
		id:     id,
		lease:  lease,
		att:    att,
		RunEnd: drivers.NewRunEnd(),
	}
	if !d.goOwned(func() { r.monitor(ctx) }) {
		// The driver is closing: end what was just started.
		att.close()
		<-att.done
		_ = d.kill(context.Background(), id, docker.SIGKILL)
		return nil, fmt.Errorf("run %s: docker driver: %w", c.name(), drivers.ErrClosed)
	}
	return r, nil
}

// run is one started container, watched by its monitor goroutine.
type run struct {
	c     *cookie
	id    string
	lease *pool.Lease // the pool holder the container joined, or nil
	att   *attachment

	// The result is set once nothing writes to the task any more.
	*drivers.RunEnd
}

var _ drivers.WaitResult = (*run)(nil)

type exitStatus struct {
	code int
	err  error
}

// monitor follows the container to its end: it waits for the exit, ends
// the container early when asked, samples stats meanwhile, lets the output
// drain and sets the result.
func (r *run) monitor(runCtx context.Context) {
	d := r.c.d
	var res drivers.RunResult
	defer func() { r.Finish(res) }()
	start := time.Now()

	var wg sync.WaitGroup
	defer wg.Wait()

	waitCtx, stopWaiting := context.WithCancel(context.Background())
	defer stopWaiting()
	exited := make(chan exitStatus, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		code, err := d.waitContainer(waitCtx, r.id)
		exited <- exitStatus{code, err}
	}()

	// Stats keep the values of the run's context but stop with the run,
	// not with a context the caller may never cancel.
	statsCtx, stopStats := context.WithCancel(context.WithoutCancel(runCtx))
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.sampleStats(statsCtx, runCtx)
	}()

	var holderDead <-chan struct{} // nil (never ready) without a lease
	if r.lease != nil {
		holderDead = r.lease.Dead()
	}
	var (
		st        exitStatus
		seen      bool
		holderErr error // the holder died under the container
	)
	select {
	case st = <-exited:
		seen = true
	case <-runCtx.Done():
		r.RequestEnd(runCtx)
	case <-r.EndRequested():
	case <-d.ctx.Done():
		r.RequestEnd(closedContext())
	case <-holderDead:
		// The namespace lives on with the container in it, but nobody
		// keeps it for the pool: end the container rather than let it run
		// in a network the caller did not ask for.
		holderErr = holderError(r.lease, nil)
		if errors.Is(holderErr, drivers.ErrClosed) {
			r.RequestEnd(closedContext())
			holderErr = nil
		}
	}
	var cause context.Context
	if holderErr != nil {
		select {
		case st = <-exited: // a natural exit that raced wins
			seen = true
			holderErr = nil
		default:
			st, seen = r.stop(exited)
		}
	} else if !seen {
		// Prefer a natural exit that raced with the request to end.
		select {
		case st = <-exited:
			seen = true
		default:
			cause = r.Cause()
			st, seen = r.stop(exited)
		}
	}
	stopStats()
	// With the exit unseen the container may run on, holding the stream
	// open: nothing says more output is coming.
	drainWait := d.opts.callTimeout
	if !seen {
		drainWait = 0
	}
	streamErr := r.att.drain(drainWait)
	stopWaiting()

	if holderErr != nil {
		res = drivers.ErrorResult(fmt.Errorf("container %s: %w", r.c.name(), holderErr))
	} else {
		res = r.outcome(cause, st, seen, streamErr)
	}
	stats.RecordExit(runCtx, driverName, res.Status())
	d.log.WithFields(logrus.Fields{"container": r.c.name(), "status": res.Status(), "took": time.Since(start)}).Debug("container ended")
}

// stop ends the container gracefully: SIGTERM, a grace period, SIGKILL. The
// caller's context is done by now, so the calls get fresh ones bounded by
// the call timeout. It returns the exit status if the exit was seen. A
// daemon that does not answer gets one SIGKILL after that: every further
// call would only wait out the call timeout again.
func (r *run) stop(exited <-chan exitStatus) (exitStatus, bool) {
	d := r.c.d
	ctx := context.Background()
	silent := false
	if r.c.isFrozen() {
		// A frozen process cannot act on SIGTERM.
		if err := d.unpause(ctx, r.id); err != nil && !isGone(err) {
			d.log.WithError(err).WithField("container", r.c.name()).Warn("unpause before stop failed")
			silent = errors.Is(err, drivers.ErrDaemonUnavailable)
		}
	}
	if grace := d.opts.stopGrace; grace > 0 && !silent {
		err := d.kill(ctx, r.id, docker.SIGTERM)
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
	if err := d.kill(ctx, r.id, docker.SIGKILL); err != nil && !isGone(err) {
		d.log.WithError(err).WithField("container", r.c.name()).Debug("SIGKILL failed")
		if silent && errors.Is(err, drivers.ErrDaemonUnavailable) {
			// Twice unanswered: no exit is coming that this kill caused.
			return exitStatus{}, false
		}
	}
	t := time.NewTimer(d.opts.callTimeout)
	defer t.Stop()
	select {
	case st := <-exited:
		return st, true
	case <-t.C:
		return exitStatus{}, false
	}
}

// outcome turns how the container ended into the run's result.
func (r *run) outcome(cause context.Context, st exitStatus, seen bool, streamErr error) drivers.RunResult {
	name := r.c.name()
	switch {
	case cause != nil:
		return drivers.ContextResult(cause)
	case !seen:
		return drivers.ErrorResult(fmt.Errorf("container %s: exit not seen: %w", name, drivers.ErrDaemonUnavailable))
	case st.err != nil:
		return drivers.ErrorResult(fmt.Errorf("waiting for container %s: %w", name, st.err))
	case st.code != 0:
		// Only the daemon's record of an OOM kill says "killed"; exit
		// code 137 is as likely a plain SIGKILL.
		ctr, err := r.c.d.inspectContainer(context.Background(), r.id)
		if err == nil && ctr.State.OOMKilled {
			return drivers.OOMResult(st.code)
		}
		if err != nil {
			r.c.d.log.WithError(err).WithField("container", name).Warn("cannot tell an OOM kill from the exit code alone")
		}
		return drivers.ExitResult(st.code)
	case streamErr != nil:
		return drivers.ErrorResult(fmt.Errorf("output of container %s: %w", name, streamErr))
	}
	return drivers.Success()
}

// waitContainer blocks until the container stops and returns its exit code.
// Only ctx bounds it: a container may run for long.
func (d *Driver) waitContainer(ctx context.Context, id string) (int, error) {
	var code int
	err := d.doWithin(ctx, "wait", fmt.Sprintf("container %q", id), kindContainer, 0, func(ctx context.Context) error {
		var err error
		code, err = d.client.WaitContainerWithContext(id, ctx)
		return err
	})
	return code, err
}
