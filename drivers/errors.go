package drivers

import (
	"errors"
	"fmt"
)

// Error classes every driver returns, wrapped with a message that names the
// object. Match them with errors.Is.
var (
	// ErrOutOfMemory: the kernel's OOM killer ended the container. It is
	// never inferred from exit code 137 alone.
	ErrOutOfMemory = errors.New("out of memory")
	// ErrImageNotFound: the registry or store has no such image.
	ErrImageNotFound = errors.New("image not found")
	// ErrUnauthorized: the registry refused the credentials.
	ErrUnauthorized = errors.New("registry refused credentials")
	// ErrRegistryUnavailable: the registry could not be reached or failed
	// (connection refused or cut, a 5xx answer). Worth a retry.
	ErrRegistryUnavailable = errors.New("registry unavailable")
	// ErrInvalidTask: the task cannot run as given (malformed image
	// reference, impossible limits, bad env names...). Returned before any
	// daemon call.
	ErrInvalidTask = errors.New("invalid task")
	// ErrInvalidConfig: a driver or policy setting is unusable.
	ErrInvalidConfig = errors.New("invalid configuration")
	// ErrDaemonUnavailable: the container runtime cannot be reached or did
	// not answer in time.
	ErrDaemonUnavailable = errors.New("container daemon unavailable")
	// ErrDriverNotFound: no driver is registered under the name.
	ErrDriverNotFound = errors.New("driver not found")
	// ErrContainerGone: the container or a resource it depended on
	// disappeared from outside.
	ErrContainerGone = errors.New("container gone")
	// ErrClosed: the cookie or driver is closed.
	ErrClosed = errors.New("closed")
	// ErrAlreadyExists: a container with the task's id exists already (an
	// open cookie of the same driver, or a container of the runtime's).
	// Nothing was created, and closing the cookie leaves the other alone.
	ErrAlreadyExists = errors.New("container already exists")
	// ErrOutputLost: some of the container's output could not be delivered
	// to the task's writers (a writer returned an error, or blocked past
	// the end of the run). The result is never StatusSuccess then.
	ErrOutputLost = errors.New("container output lost")
	// ErrSyslogUnavailable: the syslog endpoint of the task's LoggerConfig
	// cannot be reached. Run fails before the container starts.
	ErrSyslogUnavailable = errors.New("syslog unavailable")
	// ErrNotRunning: Freeze or Unfreeze of a container that is not running.
	ErrNotRunning = errors.New("container is not running")
	// ErrFsSizeUnsupported: the task asks for FsSize and the runtime's
	// storage cannot limit a root filesystem. It is an invalid task.
	ErrFsSizeUnsupported = fmt.Errorf("root filesystem size limit unsupported by this storage: %w", ErrInvalidTask)
)

// ExitError reports a container whose main process exited non-zero.
type ExitError struct {
	ExitCode int
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("container exited with code %d", e.ExitCode)
}

// InvalidTaskf returns an error wrapping ErrInvalidTask.
func InvalidTaskf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidTask, fmt.Sprintf(format, args...))
}
