package drivers

import (
	"context"
	"sync"
)

// RunEnd is how one container run ends, shared by the driver goroutine
// that watches the container (it calls Finish once with the result) and
// the callers of Wait or Close (they may ask for an early end with a
// cause). Drivers embed it in their run type; it implements WaitResult.
type RunEnd struct {
	done   chan struct{} // closed by Finish, once result is set
	endReq chan struct{} // closed by the first RequestEnd
	result RunResult

	endOnce    sync.Once
	finishOnce sync.Once
	mu         sync.Mutex
	cause      context.Context
}

var _ WaitResult = (*RunEnd)(nil)

// NewRunEnd returns the end of a run that has just started.
func NewRunEnd() *RunEnd {
	return &RunEnd{done: make(chan struct{}), endReq: make(chan struct{})}
}

// Wait implements WaitResult: when ctx ends first, it asks for the run to
// end with ctx as the cause and waits for the watcher's result.
func (e *RunEnd) Wait(ctx context.Context) RunResult {
	select {
	case <-e.done:
		return e.result
	default:
	}
	select {
	case <-e.done:
	case <-ctx.Done():
		e.RequestEnd(ctx)
		<-e.done
	}
	return e.result
}

// RequestEnd asks the watcher to end the container. The first cause wins;
// a nil cause means the cookie or driver is closing.
func (e *RunEnd) RequestEnd(cause context.Context) {
	e.endOnce.Do(func() {
		e.mu.Lock()
		e.cause = cause
		e.mu.Unlock()
		close(e.endReq)
	})
}

// EndRequested is closed once an end was requested.
func (e *RunEnd) EndRequested() <-chan struct{} { return e.endReq }

// Cause is the context whose end was the reason for the requested end:
// nil when none was requested or the cookie is closing.
func (e *RunEnd) Cause() context.Context {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cause
}

// Finish records the result and releases every Wait. Only the first call
// counts.
func (e *RunEnd) Finish(res RunResult) {
	e.finishOnce.Do(func() {
		e.result = res
		close(e.done)
	})
}

// Done is closed once the result is known.
func (e *RunEnd) Done() <-chan struct{} { return e.done }

// Finished reports whether the result is known.
func (e *RunEnd) Finished() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}
