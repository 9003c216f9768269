package drivers

import (
	"context"
	"io"
	"sync"

	"github.com/fnrun/fnrun/models"
	"github.com/fnrun/fnrun/stats"
)

// Task is a ContainerTask backed by plain fields, so callers and tests set
// what they need instead of writing thirty methods. The zero value of every
// field means "the default". Create it as a pointer: Close, WrapClose and the
// call hooks use its internal state.
//
//	task := &drivers.Task{ID: "call-1", ImageRef: "busybox", Cmd: "echo hello", Stdout: &buf}
type Task struct {
	ID       string
	ImageRef string
	// Cmd is split with SplitCommand; empty runs the image's command.
	Cmd    string
	Env    map[string]string
	Stdin  io.Reader
	Stdout io.Writer // nil discards
	Stderr io.Writer // nil discards
	// Stats receives samples of the container's resource use.
	Stats func(context.Context, stats.Stat)
	// Mounts are {host path, container path} pairs.
	Mounts [][2]string

	MemoryBytes       uint64
	MilliCPUs         uint64
	FsSizeMB          uint64
	MaxPIDs           uint64
	MaxOpenFiles      *uint64
	MaxLockedMemory   *uint64
	MaxPendingSignals *uint64
	MaxMessageQueue   *uint64
	TmpFsSizeMB       uint64

	Dir     string
	Logging LoggerConfig
	Ext     map[string]string

	UDSAgent string
	UDSHost  string
	UDSDest  string

	NoNetwork bool

	// Credentials, when set, are used to pull the image (see Auther).
	Credentials *AuthConfig

	// OnClose, Before and After are the base behaviours that WrapClose,
	// WrapBeforeCall and WrapAfterCall wrap.
	OnClose func()
	Before  BeforeCall
	After   AfterCall

	mu        sync.Mutex
	closeOnce sync.Once
	closer    func()
	before    BeforeCall
	after     AfterCall
}

var (
	_ ContainerTask = (*Task)(nil)
	_ Auther        = (*Task)(nil)
)

func (t *Task) Command() string               { return t.Cmd }
func (t *Task) EnvVars() map[string]string    { return t.Env }
func (t *Task) Input() io.Reader              { return t.Stdin }
func (t *Task) Id() string                    { return t.ID }
func (t *Task) Image() string                 { return t.ImageRef }
func (t *Task) Volumes() [][2]string          { return t.Mounts }
func (t *Task) Memory() uint64                { return t.MemoryBytes }
func (t *Task) CPUs() uint64                  { return t.MilliCPUs }
func (t *Task) FsSize() uint64                { return t.FsSizeMB }
func (t *Task) PIDs() uint64                  { return t.MaxPIDs }
func (t *Task) OpenFiles() *uint64            { return t.MaxOpenFiles }
func (t *Task) LockedMemory() *uint64         { return t.MaxLockedMemory }
func (t *Task) PendingSignals() *uint64       { return t.MaxPendingSignals }
func (t *Task) MessageQueue() *uint64         { return t.MaxMessageQueue }
func (t *Task) TmpFsSize() uint64             { return t.TmpFsSizeMB }
func (t *Task) WorkDir() string               { return t.Dir }
func (t *Task) LoggerConfig() LoggerConfig    { return t.Logging }
func (t *Task) Extensions() map[string]string { return t.Ext }
func (t *Task) UDSAgentPath() string          { return t.UDSAgent }
func (t *Task) UDSDockerPath() string         { return t.UDSHost }
func (t *Task) UDSDockerDest() string         { return t.UDSDest }
func (t *Task) DisableNet() bool              { return t.NoNetwork }

// Auth implements Auther.
func (t *Task) Auth(context.Context) (*AuthConfig, error) { return t.Credentials, nil }

// Logger returns Stdout and Stderr, with io.Discard for nil writers.
func (t *Task) Logger() (stdout, stderr io.Writer) {
	stdout, stderr = t.Stdout, t.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	return stdout, stderr
}

// WriteStat hands s to Stats, if set.
func (t *Task) WriteStat(ctx context.Context, s stats.Stat) {
	if t.Stats != nil {
		t.Stats(ctx, s)
	}
}

// Close runs the close chain once; later calls do nothing.
func (t *Task) Close() {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		closer := t.closerLocked()
		t.mu.Unlock()
		closer()
	})
}

// WrapClose wraps the close chain: wrap receives the current closer.
func (t *Task) WrapClose(wrap func(closer func()) func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closer = wrap(t.closerLocked())
}

func (t *Task) closerLocked() func() {
	if t.closer != nil {
		return t.closer
	}
	if t.OnClose != nil {
		return t.OnClose
	}
	return func() {}
}

// BeforeCall runs the wrapped BeforeCall chain.
func (t *Task) BeforeCall(ctx context.Context, call *models.Call, ext CallExtensions) error {
	t.mu.Lock()
	f := t.beforeLocked()
	t.mu.Unlock()
	return f(ctx, call, ext)
}

// WrapBeforeCall wraps the BeforeCall chain.
func (t *Task) WrapBeforeCall(wrap func(BeforeCall) BeforeCall) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.before = wrap(t.beforeLocked())
}

func (t *Task) beforeLocked() BeforeCall {
	switch {
	case t.before != nil:
		return t.before
	case t.Before != nil:
		return t.Before
	}
	return noopCall
}

// AfterCall runs the wrapped AfterCall chain.
func (t *Task) AfterCall(ctx context.Context, call *models.Call, ext CallExtensions) error {
	t.mu.Lock()
	f := t.afterLocked()
	t.mu.Unlock()
	return f(ctx, call, ext)
}

// WrapAfterCall wraps the AfterCall chain.
func (t *Task) WrapAfterCall(wrap func(AfterCall) AfterCall) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.after = wrap(t.afterLocked())
}

func (t *Task) afterLocked() AfterCall {
	switch {
	case t.after != nil:
		return t.after
	case t.After != nil:
		return t.After
	}
	return noopCall
}

func noopCall(context.Context, *models.Call, CallExtensions) error { return nil }
