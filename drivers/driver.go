package drivers

import (
	"context"
	"io"

	"github.com/fnrun/fnrun/models"
	"github.com/fnrun/fnrun/stats"
)

// Task statuses, as reported by RunResult.Status.
const (
	StatusRunning   = "running"
	StatusSuccess   = "success"
	StatusError     = "error"
	StatusTimeout   = "timeout"
	StatusKilled    = "killed"
	StatusCancelled = "cancelled"
)

// Driver creates cookies, one per task. A Driver is safe for concurrent use.
type Driver interface {
	// CreateCookie creates a new cookie with defaults and settings from the
	// container task. Callers must Close the cookie whether or not they
	// prepare or run it.
	CreateCookie(ctx context.Context, task ContainerTask) (Cookie, error)

	// SetPullImageRetryPolicy sets the image pull retry policy and the
	// checker that says which pull errors are worth a retry.
	SetPullImageRetryPolicy(policy BackOffConfig, checker RetryErrorChecker) error

	// GetSlotKeyExtensions returns a serialised string of the call
	// extensions that decide whether an existing hot container can serve a
	// call or a new image pull and container are needed.
	GetSlotKeyExtensions(extn map[string]string) string

	// Close shuts the driver down: it closes every cookie still open
	// (ending and removing their containers), stops the driver's background
	// work and waits for it. It is idempotent.
	Close() error
}

// Cookie identifies one request to run a task. Callers always Close it.
type Cookie interface {
	// Close cleans up every resource the cookie used or was going to use:
	// it ends a running container and removes it. It is safe to call more
	// than once, and finishes its cleanup even when ctx has already ended
	// (each daemon call is still bounded by the driver's own timeout).
	Close(ctx context.Context) error

	// Run starts the task. A failure of the task itself (a non-zero exit,
	// out of memory...) is reported through the WaitResult's RunResult,
	// with a nil error; a failure of the runtime is an error. Run honours
	// ctx: cancelling it ends the container.
	Run(ctx context.Context) (WaitResult, error)

	// Freeze pauses every process of the container.
	Freeze(ctx context.Context) error

	// Unfreeze resumes a frozen container.
	Unfreeze(ctx context.Context) error

	// ValidateImage inspects the image. It returns true when the image
	// must be pulled first, and an error when validation fails.
	ValidateImage(ctx context.Context) (bool, error)

	// PullImage pulls the image. Validate again after a pull.
	PullImage(ctx context.Context) error

	// CreateContainer creates the container that Run will start.
	CreateContainer(ctx context.Context) error

	// ContainerOptions returns the driver-specific create options. Before
	// CreateContainer is called they can be modified.
	ContainerOptions() interface{}
}

// WaitResult awaits the end of a running container.
type WaitResult interface {
	// Wait returns the result of the container's execution. If ctx is
	// cancelled before the container ends, the container is ended and the
	// status is StatusCancelled; if ctx times out, StatusTimeout.
	Wait(context.Context) RunResult
}

// RunResult is the final state of a task.
type RunResult interface {
	// Error is an actionable error from the container: nil when Status is
	// StatusSuccess, non-nil otherwise.
	Error() error
	// Status is one of StatusError, StatusSuccess, StatusTimeout,
	// StatusKilled or StatusCancelled.
	Status() string
}

// DriverFunc creates a driver from a configuration. Drivers register one
// with Register.
type DriverFunc func(config Config) (Driver, error)

// RetryErrorChecker reports whether a pull error is worth a retry, and a
// short reason to tag the retry with.
type RetryErrorChecker func(error) (bool, string)

// CallExtensions carries the per-invocation extensions handed to BeforeCall
// and AfterCall.
type CallExtensions interface {
	// Extensions are extra driver-specific options.
	Extensions() map[string]string
}

// BeforeCall runs just before an invocation.
type BeforeCall = func(context.Context, *models.Call, CallExtensions) error

// AfterCall runs just after an invocation whose BeforeCall succeeded.
type AfterCall = func(context.Context, *models.Call, CallExtensions) error

// LoggerTag is one name/value tag attached to container log lines.
type LoggerTag struct {
	Name  string
	Value string
}

// LoggerConfig configures where a container's log goes. An empty URL means
// no logging; a syslog URL (syslog://host:port, tcp://, udp://, unix://)
// sends the container's output there with Tags.
type LoggerConfig struct {
	URL  string
	Tags []LoggerTag
}

// ContainerTask describes one container execution across runtimes.
type ContainerTask interface {
	// Command returns the command to run within the container, split with
	// shell quoting rules (see SplitCommand). Empty runs the image's
	// default command.
	Command() string
	// EnvVars returns environment variable key-value pairs.
	EnvVars() map[string]string
	// Input feeds the container's standard input; nil means none.
	Input() io.Reader
	// Id is the id to give the container.
	Id() string
	// Image returns the image to run.
	Image() string
	// Logger returns the writers for the container's output. They must be
	// non-nil; use io.Discard when the output does not matter.
	Logger() (stdout, stderr io.Writer)
	// WriteStat writes one Stat. Implementations need not be thread safe.
	WriteStat(context.Context, stats.Stat)
	// Volumes returns {host path, container path} pairs to mount.
	Volumes() [][2]string
	// Memory is the memory limit in bytes; 0 is unlimited.
	Memory() uint64
	// CPUs is the CPU limit in milli-CPUs; 0 is unlimited.
	CPUs() uint64
	// FsSize is the root filesystem size limit in megabytes; 0 is unlimited.
	FsSize() uint64
	// PIDs is the limit on processes and threads; 0 is unlimited.
	PIDs() uint64
	// OpenFiles limits open files (RLIMIT_NOFILE); nil keeps the default.
	OpenFiles() *uint64
	// LockedMemory limits locked memory in bytes (RLIMIT_MEMLOCK); nil
	// keeps the default.
	LockedMemory() *uint64
	// PendingSignals limits queued signals (RLIMIT_SIGPENDING); nil keeps
	// the default.
	PendingSignals() *uint64
	// MessageQueue limits bytes of POSIX message queues (RLIMIT_MSGQUEUE);
	// nil keeps the default.
	MessageQueue() *uint64
	// TmpFsSize is the size of the tmpfs mounted on /tmp, in megabytes;
	// 0 mounts no tmpfs unless the root filesystem is read-only.
	TmpFsSize() uint64
	// WorkDir is the working directory; empty keeps the image's.
	WorkDir() string
	// LoggerConfig configures the container's log.
	LoggerConfig() LoggerConfig
	// Close cleans up after the task; safe to call more than once.
	Close()
	// WrapClose adds cleanup: the factory receives the current close and
	// returns the new one. Implementations need not be thread safe.
	WrapClose(func(closer func()) func())
	// Extensions are extra driver-specific options.
	Extensions() map[string]string
	// UDSAgentPath is the unix socket folder as the agent sees it.
	UDSAgentPath() string
	// UDSDockerPath is the unix socket folder as the container host sees
	// it: the source of the bind mount.
	UDSDockerPath() string
	// UDSDockerDest is where that folder is mounted inside the container.
	UDSDockerDest() string
	// DisableNet reports whether the container has no network.
	DisableNet() bool
	// BeforeCall runs just before an invocation that will use this task.
	BeforeCall(context.Context, *models.Call, CallExtensions) error
	// WrapBeforeCall wraps the BeforeCall behaviour, once per task.
	WrapBeforeCall(func(BeforeCall) BeforeCall)
	// AfterCall runs just after an invocation whose BeforeCall succeeded.
	AfterCall(context.Context, *models.Call, CallExtensions) error
	// WrapAfterCall wraps the AfterCall behaviour, once per task.
	WrapAfterCall(func(AfterCall) AfterCall)
}

// AuthConfig holds registry credentials in a runtime-neutral form. Drivers
// send them only to ServerAddress and never log them.
type AuthConfig struct {
	Username      string
	Password      string
	ServerAddress string
	IdentityToken string
}

// String hides the secrets, so credentials printed by accident leak nothing.
func (a *AuthConfig) String() string {
	if a == nil {
		return "<nil>"
	}
	return "AuthConfig{Username: " + a.Username + ", ServerAddress: " + a.ServerAddress + ", secrets redacted}"
}

// GoString hides the secrets from %#v as well.
func (a *AuthConfig) GoString() string { return a.String() }

// Auther is an optional interface a ContainerTask implements to supply
// registry credentials for its image. A nil AuthConfig means anonymous.
type Auther interface {
	Auth(ctx context.Context) (*AuthConfig, error)
}

// Capability is a behaviour a driver offers. The conformance suite checks
// every capability a driver claims.
type Capability uint32

// Capabilities a driver may have.
const (
	// CapRunsCommands: the task's command really runs in the image.
	CapRunsCommands Capability = 1 << iota
	// CapResourceLimits: memory, CPU, pids, rlimit and tmpfs limits hold
	// inside the container.
	CapResourceLimits
	// CapOOMDetection: a kernel OOM kill gives StatusKilled.
	CapOOMDetection
	// CapFreeze: Freeze stops every process until Unfreeze.
	CapFreeze
	// CapReadOnlyRoot: EnableReadOnlyRootFs holds with a writable /tmp.
	CapReadOnlyRoot
	// CapUnprivileged: containers run as a non-root user with no
	// capabilities by default.
	CapUnprivileged
	// CapImagePull: images are pulled from a registry.
	CapImagePull
)

// Has reports whether c includes every capability in want.
func (c Capability) Has(want Capability) bool { return c&want == want }

// Capable is an optional interface of a Driver that says what it can do.
type Capable interface {
	Capabilities() Capability
}
