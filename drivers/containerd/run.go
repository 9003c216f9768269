package containerd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"syscall"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/stats"
)

// ioDrainTimeout bounds the wait for the output still in the pipes once the
// container has exited. Every process of the container is dead by then, so
// only a stuck output writer (or a shim holding the pipes) can make it run
// out.
const ioDrainTimeout = 10 * time.Second

// Run implements drivers.Cookie. The task's streams are wired through FIFOs
// before the process starts, and its exit is awaited from before Start, so
// neither output nor a quick exit can be missed. Cancelling ctx ends the
// container.
func (c *cookie) Run(ctx context.Context) (drivers.WaitResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return nil, fmt.Errorf("cookie %s: %w", c.id(), drivers.ErrClosed)
	case c.container == nil:
		return nil, fmt.Errorf("run %s: container not created", c.id())
	case c.run != nil:
		return nil, fmt.Errorf("run %s: already started", c.id())
	}
	d := c.d
	ctx = d.nsCtx(ctx)
	var netDead <-chan struct{}
	dn, _ := c.netLease.(deadNotifier)
	if dn != nil {
		if err := holderGone(dn); err != nil {
			return nil, fmt.Errorf("run %s: %w", c.id(), err)
		}
		netDead = dn.Dead()
	}

	stdout, stderr := c.task.Logger()
	out := &gate{}
	var stdin io.Reader
	var stdinDone chan struct{}
	if in := c.task.Input(); in != nil {
		stdinDone = make(chan struct{})
		stdin = &eofReader{r: in, done: stdinDone}
	}
	outW, errW := out.writer(stdout), out.writer(stderr)
	var syslog *syslogSink
	if target := c.checked.Syslog; target != nil {
		// Dialled before the task exists, so an unreachable endpoint
		// leaves nothing to clean up, and Run fails as Docker's start
		// does.
		var err error
		if syslog, err = dialSyslog(ctx, target, c.id(), d.log.WithField("container", c.id())); err != nil {
			return nil, fmt.Errorf("run %s: %w", c.id(), err)
		}
		outW, errW = syslog.lines(severityInfo, outW), syslog.lines(severityErr, errW)
	}
	streams := []cio.Opt{cio.WithStreams(stdin, outW, errW)}
	if d.opts.fifoDir != "" {
		streams = append(streams, cio.WithFIFODir(d.opts.fifoDir))
	}
	var task ctrd.Task
	err := d.call(ctx, "tasks.Create", func(ctx context.Context) error {
		var err error
		task, err = c.container.NewTask(ctx, cio.NewCreator(streams...))
		return err
	})
	if err != nil {
		c.taskLeft = true // the daemon may have made it before failing
		syslog.close()
		if dn != nil {
			// The holder's namespace may have gone with the holder.
			if gone := holderGone(dn); gone != nil {
				return nil, fmt.Errorf("run %s: create task: %w (%v)", c.id(), gone, err)
			}
		}
		return nil, notFoundErr(err, drivers.ErrContainerGone, "run "+c.id()+": create task")
	}

	// The exit stream outlives Run, so it is not bound to ctx: the monitor
	// watches ctx and ends the container itself.
	waitCtx, stopWait := context.WithCancel(d.nsCtx(context.Background()))
	statusC, err := task.Wait(waitCtx)
	if err == nil {
		oomSeen, unwatch := d.oom.watch(c.id())
		r := &run{
			c: c, d: d, task: task, statusC: statusC, out: out, syslog: syslog,
			oomSeen: oomSeen, unwatch: unwatch, stopWait: stopWait, netDead: netDead, net: dn,
			RunEnd:    drivers.NewRunEnd(),
			waitStart: time.Now(),
		}
		err = d.call(ctx, "tasks.Start", task.Start)
		if err == nil && d.spawn(func() { r.monitor(ctx, stdinDone) }) {
			c.run = r
			return r, nil
		}
		unwatch()
		if err == nil {
			err = fmt.Errorf("containerd driver: %w", drivers.ErrClosed)
		}
	}
	stopWait()
	// Remove the task made above, so the cookie is left as it was.
	cctx, cancel := d.cleanupCtx(ctx)
	defer cancel()
	derr := d.call(cctx, "tasks.Delete", func(ctx context.Context) error {
		_, err := task.Delete(ctx, ctrd.WithProcessKill)
		return err
	})
	if derr != nil && !errdefs.IsNotFound(derr) {
		c.taskLeft = true
	}
	syslog.close()
	return nil, notFoundErr(err, drivers.ErrContainerGone, "run "+c.id()+": start task")
}

// run is one started task; it implements drivers.WaitResult.
type run struct {
	c         *cookie
	d         *Driver
	task      ctrd.Task
	statusC   <-chan ctrd.ExitStatus
	out       *gate
	syslog    *syslogSink // nil without a log URL
	oomSeen   <-chan struct{}
	unwatch   func()
	stopWait  context.CancelFunc
	waitStart time.Time
	// netDead is closed when the pool holder whose namespace the
	// container joined dies; net says why. Both nil without a holder.
	netDead <-chan struct{}
	net     deadNotifier

	// exited: the exit of the task was seen, so none of its processes is
	// left. Set before the result.
	exited atomic.Bool

	// The result is set once the output is in.
	*drivers.RunEnd
}

var _ drivers.WaitResult = (*run)(nil)

// monitor is the one goroutine of a run: it closes stdin once the input is
// consumed, samples stats, watches runCtx and stop requests, and after the
// exit collects the output and decides the result. Being the only caller
// of task.WriteStat, it needs no lock around it.
func (r *run) monitor(runCtx context.Context, stdinDone <-chan struct{}) {
	var res drivers.RunResult
	defer func() { r.Finish(res) }()
	defer r.unwatch()
	defer r.stopWait()

	ticker := time.NewTicker(r.d.opts.statsInterval)
	defer ticker.Stop()
	// A sample must not hold up the end of the run: it ends with runCtx
	// and with a request to end.
	sampleCtx, stopSampling := context.WithCancel(context.WithoutCancel(runCtx))
	defer stopSampling()
	defer context.AfterFunc(runCtx, stopSampling)()
	go func() {
		select {
		case <-r.EndRequested():
			stopSampling()
		case <-sampleCtx.Done():
		}
	}()
	var (
		status  ctrd.ExitStatus
		stopCtx context.Context
		stopped bool
		netErr  error
	)
loop:
	for {
		select {
		case status = <-r.statusC:
			break loop
		case <-stdinDone:
			stdinDone = nil // a closed channel fires forever: stop watching
			r.closeStdin(runCtx)
		case <-ticker.C:
			if s, _, ok := r.sample(sampleCtx, true); ok {
				r.c.task.WriteStat(runCtx, s)
			}
		case <-runCtx.Done():
			stopCtx, stopped = runCtx, true
			r.RequestEnd(runCtx) // later stop requests are no-ops
			break loop
		case <-r.EndRequested():
			stopCtx, stopped = r.Cause(), true
			break loop
		case <-r.netDead:
			// The namespace the container runs in is being torn down:
			// end it with a clear error rather than let it run on
			// without a network.
			netErr = holderGone(r.net)
			stopped = true
			r.RequestEnd(nil)
			break loop
		}
	}
	if stopped {
		status = r.end()
	}
	r.exited.Store(status.ExitCode() != ctrd.UnknownExitStatus && status.Error() == nil)
	stats.RecordDaemonCall(runCtx, DriverName, "tasks.Wait", r.waitStart, status.Error())
	// With the exit unknown, a process may still hold the pipes open:
	// nothing says more output is coming or the pipes will ever close.
	drainWait := ioDrainTimeout
	if status.ExitCode() == ctrd.UnknownExitStatus {
		drainWait = 0
	}
	outErr := r.drainOutput(drainWait)
	r.syslog.close()

	switch {
	case netErr != nil:
		res = drivers.ErrorResult(fmt.Errorf("container %s: %w", r.c.id(), netErr))
	case stopped:
		if stopCtx == nil {
			stopCtx = closedContext()
		}
		res = drivers.ContextResult(stopCtx)
	case status.Error() != nil:
		res = drivers.ErrorResult(daemonErr(status.Error(), "wait for "+r.c.id()))
	default:
		code := int(status.ExitCode())
		var oomKills uint64
		if code != 0 {
			// The OOM event may still be on its way: the cgroup's counter
			// is the sure answer, and the last sample is worth writing.
			// A clean exit skips the call; the killer ends processes
			// with a signal, so it cannot have struck the main one.
			var s stats.Stat
			var ok bool
			if s, oomKills, ok = r.sample(context.WithoutCancel(runCtx), false); ok {
				r.c.task.WriteStat(runCtx, s)
			}
		}
		switch {
		case r.oomReported() || oomKills > 0:
			res = drivers.OOMResult(code)
		case code == 0 && outErr != nil:
			res = drivers.ErrorResult(fmt.Errorf("container %s output: %w", r.c.id(), outErr))
		default:
			res = drivers.ExitResult(code)
		}
	}
	stats.RecordExit(runCtx, DriverName, res.Status())
}

// end stops the container gracefully: SIGTERM, the grace period, then
// SIGKILL to every process. A frozen container is thawed first, since it
// cannot act on any signal. It returns the exit status. A daemon that does
// not answer gets no more calls than it takes to know that plus one
// SIGKILL: each would only wait out the per-call timeout again.
func (r *run) end() ctrd.ExitStatus {
	d := r.d
	ctx, cancel := d.cleanupCtx(d.bg)
	defer cancel()
	var st ctrd.Status
	err := d.call(ctx, "tasks.Status", func(ctx context.Context) error {
		var err error
		st, err = r.task.Status(ctx)
		return err
	})
	if err == nil && (st.Status == ctrd.Paused || st.Status == ctrd.Pausing) {
		err = d.call(ctx, "tasks.Resume", r.task.Resume)
		if err != nil {
			d.log.WithError(err).WithField("container", r.c.id()).Warn("cannot thaw container before ending it")
		}
	}
	silent := errors.Is(err, drivers.ErrDaemonUnavailable)
	if d.opts.stopGrace > 0 && !silent {
		delivered, err := r.kill(ctx, syscall.SIGTERM, false)
		if delivered {
			t := time.NewTimer(d.opts.stopGrace)
			select {
			case status := <-r.statusC:
				t.Stop()
				return status
			case <-t.C:
			}
		}
		silent = errors.Is(err, drivers.ErrDaemonUnavailable)
	}
	if _, err := r.kill(ctx, syscall.SIGKILL, true); errors.Is(err, drivers.ErrDaemonUnavailable) && silent {
		// Twice unanswered: no exit is coming that this kill caused.
		err = fmt.Errorf("container %s: cannot end it: %w", r.c.id(), err)
		return *ctrd.NewExitStatus(ctrd.UnknownExitStatus, time.Now(), err)
	}
	t := time.NewTimer(d.opts.callTimeout)
	defer t.Stop()
	select {
	case status := <-r.statusC:
		return status
	case <-t.C:
		err := fmt.Errorf("container %s did not exit within %v of SIGKILL: %w", r.c.id(), d.opts.callTimeout, drivers.ErrDaemonUnavailable)
		return *ctrd.NewExitStatus(ctrd.UnknownExitStatus, time.Now(), err)
	}
}

// kill signals the task and reports whether the signal was delivered. A
// task that has exited already is no error.
func (r *run) kill(ctx context.Context, sig syscall.Signal, all bool) (delivered bool, _ error) {
	var opts []ctrd.KillOpts
	if all {
		opts = append(opts, ctrd.WithKillAll)
	}
	err := r.d.call(ctx, "tasks.Kill", func(ctx context.Context) error { return r.task.Kill(ctx, sig, opts...) })
	switch {
	case err == nil:
		return true, nil
	case errdefs.IsNotFound(err), errdefs.IsFailedPrecondition(err):
		return false, nil
	}
	r.d.log.WithError(err).WithFields(map[string]interface{}{"container": r.c.id(), "signal": sig}).Warn("cannot signal container")
	return false, daemonErr(err, "signal "+r.c.id())
}

// closeStdin tells the shim the input is over once the task's reader is
// exhausted, so a process reading stdin sees EOF. Data still in the FIFO
// is delivered first.
func (r *run) closeStdin(ctx context.Context) {
	cctx, cancel := r.d.cleanupCtx(ctx)
	defer cancel()
	err := r.d.call(cctx, "tasks.CloseIO", func(ctx context.Context) error {
		return r.task.CloseIO(ctx, ctrd.WithStdinCloser)
	})
	if err != nil && !errdefs.IsNotFound(err) {
		r.d.log.WithError(err).WithField("container", r.c.id()).Warn("cannot close stdin")
	}
}

// drainOutput waits, at most wait, until the output still in the pipes has
// reached the task's writers, then shuts them so nothing is written after
// Wait returns. It returns the first error of a writer, if any.
func (r *run) drainOutput(wait time.Duration) error {
	taskIO := r.task.IO()
	if taskIO == nil {
		return r.out.shut()
	}
	drained := make(chan struct{})
	go func() {
		taskIO.Wait()
		close(drained)
	}()
	t := time.NewTimer(wait)
	select {
	case <-drained:
		t.Stop()
	case <-t.C:
		r.d.log.WithField("container", r.c.id()).Warn("output not drained, dropping the rest")
		taskIO.Cancel()
		<-drained // the copies end once their pipes are closed
	}
	_ = taskIO.Close()
	return r.out.shut()
}

func (r *run) oomReported() bool {
	select {
	case <-r.oomSeen:
		return true
	default:
		return false
	}
}

func closedContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// holderGone returns the error of a dead pool holder, wrapping
// drivers.ErrContainerGone, or nil while it runs.
func holderGone(dn deadNotifier) error {
	select {
	case <-dn.Dead():
	default:
		return nil
	}
	err := dn.Err()
	if errors.Is(err, drivers.ErrContainerGone) {
		return fmt.Errorf("network namespace: %w", err)
	}
	return fmt.Errorf("network namespace holder gone (%v): %w", err, drivers.ErrContainerGone)
}
