package serve

import (
	"context"
	"errors"
	"time"

	"github.com/fnrun/fnrun/models"
)

// Start kinds of a call, as metrics and the response header tell them.
const (
	startCold = "cold" // the call waited for a container started for it
	startHot  = "hot"  // the call got a container that already ran
)

// callExtensions hands the function's extensions to BeforeCall and
// AfterCall.
type callExtensions map[string]string

func (e callExtensions) Extensions() map[string]string { return e }

// call runs one invocation of spec's function: it gets a container (waiting
// at most the function's timeout plus the start timeout for one), thaws it, runs the task's
// BeforeCall, sends the call over the socket with the function's timeout,
// runs AfterCall and gives the container back. It returns how the call
// started (cold or hot) when it got a container.
func (a *agent) call(ctx context.Context, spec *callSpec, inv *invocation) (*response, string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(a.callsCtx, cancel)
	defer stop()
	clientCtx := ctx

	timeout := time.Duration(spec.fn.Timeout) * time.Second
	created := time.Now()
	// The wait for a container is bounded by the function's timeout plus
	// the time a container may take to start: a cold start does not eat
	// into the function's own time, and a call that gets no container
	// within that bound is answered "too busy".
	waitCtx, waitCancel := context.WithTimeout(ctx, timeout+a.opts.startTimeout)
	g, err := a.acquire(waitCtx, spec)
	waitCancel()
	if err != nil {
		var api *APIError
		switch {
		case errors.As(err, &api):
			return nil, "", err
		case a.callsCtx.Err() != nil:
			return nil, "", errShuttingDown
		case clientCtx.Err() != nil:
			return nil, "", errClientCancel
		case errors.Is(err, context.DeadlineExceeded):
			return nil, "", errCallTimeoutServerBusy.WithCause(errors.New("no container became free before the call's deadline"))
		}
		return nil, "", asAPIError(err)
	}
	c := g.c
	start := startHot
	if g.cold {
		start = startCold
	}

	execCtx, execCancel := context.WithTimeout(ctx, timeout)
	defer execCancel()
	if err := a.thaw(execCtx, c); err != nil {
		a.release(c, false)
		return nil, start, errFunctionResponse.WithCause(err)
	}
	model := &models.Call{
		ID:        inv.callID,
		AppID:     spec.app.ID,
		FnID:      spec.fn.ID,
		Image:     spec.image,
		Memory:    spec.fn.Memory,
		Timeout:   timeout,
		CreatedAt: created,
		StartedAt: time.Now(),
	}
	ext := callExtensions(spec.ext)
	if err := c.task.BeforeCall(execCtx, model, ext); err != nil {
		// The container cannot go on when its BeforeCall failed.
		a.release(c, false)
		return nil, start, errInternal.WithCause(err)
	}
	res, healthy, err := c.do(execCtx, inv, a.opts.maxResponse)
	if err != nil && execCtx.Err() != nil {
		// The call was cut mid-way: the container's connection is in an
		// unknown state.
		healthy = false
		switch {
		case a.callsCtx.Err() != nil:
			err = errShuttingDown.WithCause(err)
		case clientCtx.Err() != nil:
			err = errClientCancel.WithCause(err)
		default:
			err = errCallTimeout.WithCause(err)
		}
	}
	model.CompletedAt = time.Now()
	model.Status, model.Error = callStatus(err)
	// AfterCall gets a live context even when the call's has ended.
	actx, acancel := context.WithTimeout(context.WithoutCancel(ctx), a.opts.pauseTimeout)
	if aerr := c.task.AfterCall(actx, model, ext); aerr != nil {
		healthy = false
		if err == nil {
			err = errInternal.WithCause(aerr)
		}
	}
	acancel()
	a.release(c, healthy)
	return res, start, err
}

// callStatus maps a call's error to a task status for models.Call.
func callStatus(err error) (string, string) {
	switch {
	case err == nil:
		return "success", ""
	case errors.Is(err, ErrCallTimeout):
		return "timeout", err.Error()
	case errors.Is(err, ErrClientGone), errors.Is(err, ErrClosed):
		return "cancelled", err.Error()
	}
	return "error", err.Error()
}
