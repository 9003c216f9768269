// Package lifecycle is the cookie life cycle every fnrun driver shares, for
// driver authors; an agent needs only package drivers.
//
// A runtime supplies a Runtime: its daemon calls (find and pull an image,
// create a container; start, pause, resume and remove it; wait for the
// main process, with the runtime's OOM report; signal it; copy its
// streams; sample its stats) and the building of its create options. New
// turns it into a drivers.Driver, and everything else is written once,
// here:
//
//   - the cookie's state machine: validate, pull, create, run, wait,
//     freeze, unfreeze, close, each step checked against the others and
//     safe for concurrent use;
//   - contexts: every step honours its caller's; a create is sent detached
//     and bounded by the call timeout, so a container the daemon makes
//     after its caller gave up is still known; Close finishes with a
//     context that has ended, each daemon call bounded on its own;
//   - ending a run: a frozen container is thawed first (a pause whose
//     answer was lost counts as a pause), then SIGTERM, the stop grace,
//     SIGKILL, with one SIGKILL only for a daemon that stopped answering;
//   - leases: a pre-fork pool holder is leased at create and returned once
//     the container is removed, even after a create whose answer was lost;
//     a task id is reserved among open cookies, so a second cookie of the
//     same id fails with drivers.ErrAlreadyExists and touches nothing of
//     the first;
//   - images: busy in the cleaner from ValidateImage to Close; pulled
//     again when it vanished between ValidateImage and CreateContainer;
//     concurrent pulls of one image with the same credentials shared,
//     retried with the driver's policy, each attempt bounded by the pull
//     timeout;
//   - output: delivered to the task's writers by a goroutine of the run,
//     so a writer that blocks or fails holds up neither the container's
//     end, nor Wait, nor Close; what could not be delivered makes the
//     result an error wrapping drivers.ErrOutputLost;
//   - syslog: for a runtime without a log driver of its own (see
//     SyslogSender), each output line goes to the task's endpoint
//     (SyslogTarget) as Docker's syslog log driver sends it for Fn (RFC
//     5424, facility user), dialled before the start so an endpoint that
//     cannot be reached fails Run with drivers.ErrSyslogUnavailable;
//   - the result: success for exit 0, drivers.ExitError otherwise,
//     StatusKilled with drivers.ErrOutOfMemory only for a non-zero exit the
//     runtime saw the OOM killer cause, StatusTimeout or StatusCancelled
//     for a run ended by its context or by Close;
//   - ownership: the driver tracks its open cookies, and its Close ends and
//     removes their containers, then stops the pool, the cleaner and the
//     runtime, waiting for every goroutine it started.
//
// Configure turns drivers.Config and drivers.Option values into Settings
// once, at the driver's boundary: the pool, the cleaner and the runtimes
// read typed settings, never the configuration.
package lifecycle
