// Package exec runs commands in containers with the semantics of os/exec,
// over any fnrun driver (docker, containerd, mock).
//
//	cmd := exec.Command(drv, "127.0.0.1:5000/fnrun/busybox", "sh", "-c", "echo hi")
//	out, err := cmd.Output()
//
// Unlike a naive attach, no output is lost: a command that exits at once, or
// writes without a trailing newline, still has all its output. Pipes behave
// like os/exec's: the read ends see EOF when the container's output ends, so
// reading to EOF and then calling Wait never hangs. Wait releases everything
// the command held (container, pool lease, busy image).
package exec

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/fnrun/fnrun/drivers"
)

// ExitError reports a command that ran and exited non-zero.
type ExitError struct {
	// ExitCode is the container's exit code.
	ExitCode int
	// Stderr holds the standard error output when Output collected it
	// (Cmd.Stderr was nil).
	Stderr []byte
}

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.ExitCode) }

// Unwrap exposes the driver's error, so errors.As with *drivers.ExitError
// matches too.
func (e *ExitError) Unwrap() error { return &drivers.ExitError{ExitCode: e.ExitCode} }

// Cmd is a command to run in a container. Set its fields before Start.
type Cmd struct {
	// Driver runs the container.
	Driver drivers.Driver
	// Image is the image to run the command in.
	Image string
	// Args holds the command and its arguments; Args[0] is the command.
	Args []string
	// Env holds "KEY=value" entries; nil means the image's environment.
	Env []string
	// Dir is the working directory; empty keeps the image's.
	Dir string

	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer

	// Limits, as on drivers.Task.
	MemoryBytes uint64
	MilliCPUs   uint64
	MaxPIDs     uint64
	TmpFsSizeMB uint64
	NoNetwork   bool

	// ID is the container id; Start picks one when empty.
	ID string
	// Task, when set, is applied to the task before it is started, for the
	// knobs Cmd has no field for.
	Task func(*drivers.Task)

	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	started bool
	waited  bool
	cookie  drivers.Cookie
	done    chan struct{} // closed when the result is known and outputs are closed
	result  drivers.RunResult
	runErr  error
	closers []io.Closer // pipe ends closed once the command has ended
}

// Command returns a Cmd running name with args in image through drv.
func Command(drv drivers.Driver, image, name string, args ...string) *Cmd {
	return CommandContext(context.Background(), drv, image, name, args...)
}

// CommandContext is Command with a context: when ctx ends before the
// command does, the container is ended and Wait reports it.
func CommandContext(ctx context.Context, drv drivers.Driver, image, name string, args ...string) *Cmd {
	return &Cmd{Driver: drv, Image: image, Args: append([]string{name}, args...), ctx: ctx}
}

// String returns the command line, quoted so it splits back into Args.
func (c *Cmd) String() string { return drivers.QuoteCommand(c.Args) }

// ContainerID returns the id of the command's container.
func (c *Cmd) ContainerID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ID
}

// StdinPipe returns a pipe connected to the command's standard input.
// Close it to send EOF; Wait closes it too.
func (c *Cmd) StdinPipe() (io.WriteCloser, error) {
	if c.Stdin != nil {
		return nil, errors.New("exec: Stdin already set")
	}
	if c.isStarted() {
		return nil, errors.New("exec: StdinPipe after process started")
	}
	pr, pw := io.Pipe()
	c.Stdin = pr
	c.closers = append(c.closers, pr)
	return pw, nil
}

// StdoutPipe returns a pipe connected to the command's standard output.
// Its read end reaches EOF when the command's output ends; read to EOF
// before calling Wait.
func (c *Cmd) StdoutPipe() (io.ReadCloser, error) {
	if c.Stdout != nil {
		return nil, errors.New("exec: Stdout already set")
	}
	if c.isStarted() {
		return nil, errors.New("exec: StdoutPipe after process started")
	}
	pr, pw := io.Pipe()
	c.Stdout = pw
	c.closers = append(c.closers, pw)
	return pr, nil
}

// StderrPipe is StdoutPipe for standard error.
func (c *Cmd) StderrPipe() (io.ReadCloser, error) {
	if c.Stderr != nil {
		return nil, errors.New("exec: Stderr already set")
	}
	if c.isStarted() {
		return nil, errors.New("exec: StderrPipe after process started")
	}
	pr, pw := io.Pipe()
	c.Stderr = pw
	c.closers = append(c.closers, pw)
	return pr, nil
}

func (c *Cmd) isStarted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.started
}

// Start creates and starts the container, pulling its image if needed, and
// returns without waiting for the command.
func (c *Cmd) Start() error {
	c.mu.Lock()
	if c.started {
		c.mu.Unlock()
		return errors.New("exec: already started")
	}
	c.started = true
	if c.ID == "" {
		c.ID = newID()
	}
	parent := c.ctx
	if parent == nil {
		parent = context.Background()
	}
	c.ctx, c.cancel = context.WithCancel(parent)
	c.mu.Unlock()
	if c.Driver == nil || len(c.Args) == 0 {
		c.fail()
		return errors.New("exec: no driver or no command")
	}

	task, err := c.task()
	if err != nil {
		c.fail()
		return err
	}
	cookie, err := c.Driver.CreateCookie(c.ctx, task)
	if err != nil {
		c.fail()
		return err
	}
	c.mu.Lock()
	c.cookie = cookie
	c.mu.Unlock()
	wait, err := c.prepareAndRun(cookie)
	if err != nil {
		_ = cookie.Close(context.Background())
		c.fail()
		return err
	}
	c.done = make(chan struct{})
	go c.await(wait)
	return nil
}

func (c *Cmd) prepareAndRun(cookie drivers.Cookie) (drivers.WaitResult, error) {
	needsPull, err := cookie.ValidateImage(c.ctx)
	if err != nil {
		return nil, err
	}
	if needsPull {
		if err := cookie.PullImage(c.ctx); err != nil {
			return nil, err
		}
	}
	if err := cookie.CreateContainer(c.ctx); err != nil {
		return nil, err
	}
	return cookie.Run(c.ctx)
}

// await collects the result and closes the pipe ends, so readers see EOF
// as soon as the command has ended, whether or not Wait was called yet.
func (c *Cmd) await(wait drivers.WaitResult) {
	res := wait.Wait(c.ctx)
	c.mu.Lock()
	c.result = res
	c.mu.Unlock()
	c.closePipes()
	close(c.done)
}

func (c *Cmd) fail() {
	c.closePipes()
	if c.cancel != nil {
		c.cancel()
	}
}

func (c *Cmd) closePipes() {
	for _, cl := range c.closers {
		_ = cl.Close()
	}
}

func (c *Cmd) task() (*drivers.Task, error) {
	env := make(map[string]string, len(c.Env))
	for _, kv := range c.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("exec: environment entry %q has no '=': %w", kv, drivers.ErrInvalidTask)
		}
		env[k] = v
	}
	t := &drivers.Task{
		ID:          c.ID,
		ImageRef:    c.Image,
		Cmd:         drivers.QuoteCommand(c.Args),
		Env:         env,
		Stdin:       c.Stdin,
		Stdout:      c.Stdout,
		Stderr:      c.Stderr,
		Dir:         c.Dir,
		MemoryBytes: c.MemoryBytes,
		MilliCPUs:   c.MilliCPUs,
		MaxPIDs:     c.MaxPIDs,
		TmpFsSizeMB: c.TmpFsSizeMB,
		NoNetwork:   c.NoNetwork,
	}
	if c.Task != nil {
		c.Task(t)
	}
	return t, nil
}

// Wait waits for the command to end, then releases the container and
// everything it held. A non-zero exit is an *ExitError; a timeout, cancel
// or OOM kill is the driver's error.
func (c *Cmd) Wait() error {
	c.mu.Lock()
	switch {
	case !c.started || c.done == nil:
		c.mu.Unlock()
		return errors.New("exec: not started")
	case c.waited:
		c.mu.Unlock()
		return errors.New("exec: Wait was already called")
	}
	c.waited = true
	c.mu.Unlock()

	<-c.done
	closeErr := c.cookie.Close(context.Background())
	c.cancel()
	res := c.result
	if res.Status() == drivers.StatusSuccess {
		return closeErr
	}
	var exit *drivers.ExitError
	if errors.As(res.Error(), &exit) {
		return &ExitError{ExitCode: exit.ExitCode}
	}
	if err := res.Error(); err != nil {
		return fmt.Errorf("exec: %s: %w", res.Status(), err)
	}
	return fmt.Errorf("exec: %s", res.Status())
}

// Run starts the command and waits for it.
func (c *Cmd) Run() error {
	if err := c.Start(); err != nil {
		return err
	}
	return c.Wait()
}

// Output runs the command and returns its standard output. When Stderr
// was nil, a resulting *ExitError carries the standard error output.
func (c *Cmd) Output() ([]byte, error) {
	if c.Stdout != nil {
		return nil, errors.New("exec: Stdout already set")
	}
	var stdout bytes.Buffer
	c.Stdout = &stdout
	var stderr *bytes.Buffer
	if c.Stderr == nil {
		stderr = &bytes.Buffer{}
		c.Stderr = stderr
	}
	err := c.Run()
	var exit *ExitError
	if stderr != nil && errors.As(err, &exit) {
		exit.Stderr = stderr.Bytes()
	}
	return stdout.Bytes(), err
}

// CombinedOutput runs the command and returns its standard output and
// standard error together. The order of lines written to the two streams
// close together is not guaranteed.
func (c *Cmd) CombinedOutput() ([]byte, error) {
	if c.Stdout != nil || c.Stderr != nil {
		return nil, errors.New("exec: Stdout or Stderr already set")
	}
	var b lockedBuffer
	c.Stdout, c.Stderr = &b, &b
	err := c.Run()
	return b.Bytes(), err
}

// Kill ends the running container. Wait then reports the command as
// cancelled.
func (c *Cmd) Kill() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started || c.cancel == nil {
		return errors.New("exec: not started")
	}
	c.cancel()
	return nil
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "fnrun-exec-" + hex.EncodeToString(b[:])
}

// lockedBuffer lets stdout and stderr be copied into one buffer at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Bytes()
}
