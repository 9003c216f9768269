// Package ctrderr translates containerd's errors into the classes of
// package drivers. The containerd driver and the image cleaner's store over
// containerd (images/containerdstore) both call the daemon, and must class
// its failures alike.
package ctrderr

import (
	"errors"
	"fmt"

	"github.com/containerd/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fnrun/fnrun/drivers"
)

// Wrap translates a containerd error at the boundary: an unreachable or
// silent daemon becomes drivers.ErrDaemonUnavailable, and the context and
// errdefs classes stay matchable. msg names the operation and the object.
func Wrap(err error, msg string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, drivers.ErrDaemonUnavailable):
		return fmt.Errorf("%s: %w", msg, err)
	case Unavailable(err):
		return fmt.Errorf("%s: %w: %w", msg, drivers.ErrDaemonUnavailable, err)
	}
	return fmt.Errorf("%s: %w", msg, err)
}

// Unavailable reports an error that says the daemon cannot be reached.
func Unavailable(err error) bool {
	if errdefs.IsUnavailable(err) {
		return true
	}
	if s, ok := status.FromError(err); ok && s.Code() == codes.Unavailable {
		return true
	}
	return false
}
