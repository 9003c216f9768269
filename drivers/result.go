package drivers

import (
	"context"
	"errors"
	"fmt"
)

// Result is a plain RunResult that drivers return.
type Result struct {
	StatusValue string
	Err         error
}

// Status implements RunResult.
func (r *Result) Status() string { return r.StatusValue }

// Error implements RunResult.
func (r *Result) Error() error { return r.Err }

// Success is the result of a container that exited 0.
func Success() *Result { return &Result{StatusValue: StatusSuccess} }

// ExitResult is the result of a container whose main process exited with
// code: success for 0, otherwise StatusError wrapping *ExitError.
func ExitResult(code int) *Result {
	if code == 0 {
		return Success()
	}
	return &Result{StatusValue: StatusError, Err: &ExitError{ExitCode: code}}
}

// OOMResult is the result of a container the kernel's OOM killer ended.
func OOMResult(code int) *Result {
	return &Result{
		StatusValue: StatusKilled,
		Err:         fmt.Errorf("container killed by the kernel OOM killer (exit code %d): %w", code, ErrOutOfMemory),
	}
}

// ErrorResult is StatusError with err.
func ErrorResult(err error) *Result {
	return &Result{StatusValue: StatusError, Err: err}
}

// ContextResult is the result of a container ended because ctx is done:
// StatusTimeout for a deadline, StatusCancelled otherwise. The error
// wraps ctx.Err() so callers can match context.DeadlineExceeded or
// context.Canceled.
func ContextResult(ctx context.Context) *Result {
	err := ctx.Err()
	if err == nil {
		err = context.Canceled
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Result{StatusValue: StatusTimeout, Err: fmt.Errorf("container timed out: %w", err)}
	}
	return &Result{StatusValue: StatusCancelled, Err: fmt.Errorf("container cancelled: %w", err)}
}
