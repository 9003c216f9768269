package lifecycle

import (
	"context"
	"io"
	"syscall"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/pool"
	"github.com/fnrun/fnrun/stats"
)

// Runtime is one container runtime as the life cycle drives it: its daemon
// calls and the building of its create options, nothing else (see the
// package doc).
//
// Each method bounds its own daemon calls (see Caller) and translates the
// runtime's errors into the classes of package drivers; the life cycle
// passes a context without deadline when the work must finish whatever
// happened to the caller (Close, ending a run).
type Runtime interface {
	// Options builds the create options of a checked task without a daemon
	// call (see Cookie.ContainerOptions); a task the runtime cannot honour
	// gives an error wrapping drivers.ErrInvalidTask.
	Options(t *Task) (any, error)

	// FindImage reports whether ref is present and usable. An image the
	// policy refuses (it declares volumes) gives an error wrapping
	// drivers.ErrInvalidTask.
	FindImage(ctx context.Context, ref drivers.Reference) (bool, error)

	// Pull makes one attempt to pull ref with auth (nil is anonymous).
	Pull(ctx context.Context, ref drivers.Reference, auth *drivers.AuthConfig) error

	// Create creates the container spec describes. When the daemon answered
	// that it made nothing (a refusal), it returns a nil Container and
	// leaves nothing behind. When the answer was lost (an error wrapping
	// drivers.ErrDaemonUnavailable or a context error) it returns the error
	// with a Container whose Remove finds and removes whatever the create
	// may have made. A name another container has gives an error wrapping
	// drivers.ErrAlreadyExists; a holder to join that is gone, one wrapping
	// drivers.ErrContainerGone.
	Create(ctx context.Context, spec CreateSpec) (Container, error)
}

// CreateSpec says what container to create: a call's, for a Task, or a
// pre-fork pool holder's, for a Holder.
type CreateSpec struct {
	// Name is the container's name: the task's id, or the holder's name.
	Name string
	// Labels are the ownership labels, role included.
	Labels map[string]string

	// Task and Options describe a call's container. Options is what
	// Runtime.Options returned, maybe changed by the caller.
	Task    *Task
	Options any
	// Join is the holder whose network namespace the call's container
	// joins; nil when it gets a network of its own (or none, DisableNet).
	Join *pool.Holder

	// Holder describes a holder's container; nil for a call's.
	Holder *HolderSpec
}

// HolderSpec is a pre-fork pool holder to create.
type HolderSpec struct {
	Image drivers.Reference
	Args  []string
	// Network is the network to put the holder on; empty is the runtime's
	// default.
	Network string
}

// Container is one container of a Runtime.
type Container interface {
	// ID is the runtime's id of the container.
	ID() string
	// Start connects io and starts the main process; its exit is awaited
	// from before the start, so neither output nor a quick exit is missed.
	// On error nothing of the attempt runs (what the runtime may still
	// hold is removed by Remove).
	Start(ctx context.Context, io IO) (Process, error)
	// Pause freezes every process; Resume thaws them. Resume of a
	// container that is not paused is no error.
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	// Remove ends every process, removes the container and whatever it
	// used on the host (its network, files). A container already gone is
	// no error. After an error a later Remove tries again.
	Remove(ctx context.Context) error
}

// Process is a started container's main process.
type Process interface {
	// Wait blocks until the process has exited, the runtime cannot tell
	// (an error), or ctx ends. It may be called again after an error.
	Wait(ctx context.Context) (Exit, error)
	// Signal sends sig to the main process, or to every process of the
	// container with all. A process that has exited is no error.
	Signal(ctx context.Context, sig syscall.Signal, all bool) error
	// InputDone is closed once the task's input is consumed; nil when the
	// runtime needs no CloseInput.
	InputDone() <-chan struct{}
	// CloseInput tells the process its input is over (EOF).
	CloseInput(ctx context.Context) error
	// OutputDone is closed once the output streams have ended: every byte
	// reached IO's writers, or StopOutput cut them.
	OutputDone() <-chan struct{}
	// StopOutput ends the output streams at once; OutputDone closes soon
	// after. The life cycle always calls it once the run is over.
	StopOutput()
	// Stats writes samples of the container's resource use until ctx ends.
	Stats(ctx context.Context, write func(stats.Stat))
}

// Exit is how a main process ended.
type Exit struct {
	Code int
	// OOM reports that the runtime saw the kernel's OOM killer strike in
	// the container; with a non-zero Code it makes the run StatusKilled.
	OOM bool
}

// IO is what a process reads and writes. A nil writer discards that stream
// (the runtime need not copy it at all); a nil Stdin gives no input.
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Optional abilities of a Runtime.
type (
	// Joiner is a Runtime whose call containers can join pool holders.
	Joiner interface {
		// Joinable reports whether t's container made with opts may join a
		// holder (one without a network for a DisableNet task) instead of
		// getting a namespace of its own.
		Joinable(t *Task, opts any) bool
	}
	// SyslogSender is a Runtime whose daemon sends a task's output to
	// its syslog endpoint (Task.Syslog) itself, as Docker's syslog log
	// driver does. For any other the run sends the output it is handed.
	SyslogSender interface{ SendsSyslog() }
	// Closer is a Runtime with resources of its own (a client, watchers),
	// released when the driver closes, after everything else.
	Closer interface{ Close() error }
	// Reaper is a Runtime that keeps more than containers (leases,
	// namespaces, files): ReapLeaks removes what other instances with the
	// driver's label tag left of them, once their containers are gone. It
	// runs once, in a goroutine the driver owns, and stops when ctx ends.
	Reaper interface{ ReapLeaks(ctx context.Context) }
	// SlotKeyer is a Runtime for which call extensions change what a
	// container is (see drivers.Driver.GetSlotKeyExtensions).
	SlotKeyer interface {
		GetSlotKeyExtensions(extn map[string]string) string
	}
	// NetNSHolder is a Container whose network namespace others join by
	// path; the pool hands the path to the containers that join it.
	NetNSHolder interface{ NetNSPath() string }
)
