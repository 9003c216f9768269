// Package drivers is the contract between a serverless invocation agent and
// the container runtimes that run its function calls.
//
// A Driver, created by name through New from a registered DriverFunc,
// creates one Cookie per ContainerTask. The cookie validates and pulls the
// task's image, creates the container with the task's limits, runs it,
// freezes and unfreezes it, and hands back a WaitResult whose RunResult says
// how the call ended: StatusSuccess, StatusError, StatusTimeout,
// StatusKilled or StatusCancelled.
//
// The package holds no runtime code. The drivers live in drivers/docker,
// drivers/containerd and drivers/mock; each registers itself from an init
// function, so importing one for its side effect makes it available:
//
//	import _ "github.com/fnrun/fnrun/drivers/docker"
//
//	drv, err := drivers.New("docker", drivers.Config{Docker: "unix:///run/docker.sock"})
//
// Every driver reports failures with the typed errors of this package
// (ErrImageNotFound, ErrInvalidTask, ErrDaemonUnavailable, ErrOutOfMemory,
// *ExitError...), so a caller matches them with errors.Is and errors.As
// whatever the runtime.
package drivers
