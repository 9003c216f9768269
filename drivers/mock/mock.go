// Package mock is a driver that runs nothing but behaves like a real one,
// for the tests of an agent built on fnrun. It registers as "mock".
//
// By default a run succeeds at once and writes nothing. Task extensions
// script everything else (see the Ext constants): exit code, run time,
// output, an echo of stdin, an OOM kill, pull failures, a missing image, a
// create failure, or a run that hangs until its context ends. Contexts are
// honoured like a real driver's: a deadline gives StatusTimeout and a
// cancel StatusCancelled. Freeze stops the run's clock until Unfreeze.
//
// The mock keeps a small image store (an image must be pulled once before
// a container of it can be created) and tracks cookies, so a test can
// assert that every cookie was closed. Nothing is random.
package mock

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/logs"
)

// Task extensions that script the mock. Real drivers ignore them, so one
// task can carry both a real command and the mock's script.
const (
	// ExtExitCode is the exit code of the run ("0" by default).
	ExtExitCode = "mock.exit_code"
	// ExtDelay is how long the run takes, as a Go duration ("150ms").
	// Time spent frozen does not count.
	ExtDelay = "mock.delay"
	// ExtStdout and ExtStderr are written to the task's output writers.
	ExtStdout = "mock.stdout"
	ExtStderr = "mock.stderr"
	// ExtEchoStdin, when "true", copies the task's input to its stdout.
	ExtEchoStdin = "mock.echo_stdin"
	// ExtOOM, when "true", ends the run as killed by the OOM killer.
	ExtOOM = "mock.oom"
	// ExtHang, when "true", keeps the run going until its context ends.
	ExtHang = "mock.hang"
	// ExtImageMissing, when "true", makes pulls fail with ErrImageNotFound.
	ExtImageMissing = "mock.image_missing"
	// ExtPullError makes every pull attempt fail with this message.
	ExtPullError = "mock.pull_error"
	// ExtPullFailures makes the first N pull attempts of the image fail
	// (with ExtPullError's message, or a default one), then succeed.
	ExtPullFailures = "mock.pull_failures"
	// ExtPullDelay is how long one pull attempt takes.
	ExtPullDelay = "mock.pull_delay"
	// ExtCreateError makes CreateContainer fail with this message.
	ExtCreateError = "mock.create_error"
)

// Option configures a Driver.
type Option func(*Driver)

// WithLogger sets the logger; the default discards.
func WithLogger(log *logrus.Entry) Option { return func(d *Driver) { d.log = log } }

// WithImages marks images as already present in the mock's store.
func WithImages(refs ...string) Option {
	return func(d *Driver) {
		for _, r := range refs {
			if ref, err := drivers.NormalizeImage(r); err == nil {
				d.images[ref.Normalized] = true
			}
		}
	}
}

// Driver is the mock driver. It is safe for concurrent use.
type Driver struct {
	log *logrus.Entry

	mu           sync.Mutex
	closed       bool
	images       map[string]bool // normalised reference -> present
	pullAttempts map[string]int  // normalised reference -> attempts so far
	pulls        int             // pull attempts that "reached the registry"
	open         map[*cookie]struct{}
	created      int
	policy       drivers.BackOffConfig
	checker      drivers.RetryErrorChecker
}

var (
	_ drivers.Driver  = (*Driver)(nil)
	_ drivers.Capable = (*Driver)(nil)
)

// New creates a mock driver. cfg is accepted for symmetry with the real
// drivers; the mock uses none of it.
func New(cfg drivers.Config, opts ...Option) (*Driver, error) {
	d := &Driver{
		log:          logs.Discard(),
		images:       make(map[string]bool),
		pullAttempts: make(map[string]int),
		open:         make(map[*cookie]struct{}),
	}
	for _, o := range opts {
		o(d)
	}
	return d, nil
}

// Capabilities implements drivers.Capable: the mock emulates freezing, OOM
// kills and pulls, but runs no command and enforces no limit.
func (d *Driver) Capabilities() drivers.Capability {
	return drivers.CapFreeze | drivers.CapOOMDetection | drivers.CapImagePull
}

// CreateCookie implements drivers.Driver.
func (d *Driver) CreateCookie(ctx context.Context, task drivers.ContainerTask) (drivers.Cookie, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	checked, err := drivers.CheckTask(task)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("mock driver: %w", drivers.ErrClosed)
	}
	c := &cookie{drv: d, task: task, checked: checked, script: parseScript(task.Extensions())}
	d.open[c] = struct{}{}
	d.created++
	return c, nil
}

// SetPullImageRetryPolicy implements drivers.Driver.
func (d *Driver) SetPullImageRetryPolicy(policy drivers.BackOffConfig, checker drivers.RetryErrorChecker) error {
	if err := policy.Validate(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.policy, d.checker = policy, checker
	return nil
}

// GetSlotKeyExtensions returns the scripting extensions, sorted, since they
// change what a container does.
func (d *Driver) GetSlotKeyExtensions(extn map[string]string) string {
	var parts []string
	for k, v := range extn {
		if strings.HasPrefix(k, "mock.") {
			parts = append(parts, k+"="+v)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ";")
}

// Close implements drivers.Driver: like the real drivers, it closes every
// cookie still open, ending its run.
func (d *Driver) Close() error {
	d.mu.Lock()
	d.closed = true
	open := make([]*cookie, 0, len(d.open))
	for c := range d.open {
		open = append(open, c)
	}
	d.mu.Unlock()
	for _, c := range open {
		_ = c.Close(context.Background())
	}
	return nil
}

// OpenCookies returns how many cookies were created and not yet closed.
func (d *Driver) OpenCookies() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.open)
}

// CreatedCookies returns how many cookies were ever created.
func (d *Driver) CreatedCookies() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.created
}

// Pulls returns how many pull attempts reached the mock's "registry".
func (d *Driver) Pulls() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pulls
}

// HasImage reports whether the image is in the mock's store.
func (d *Driver) HasImage(image string) bool {
	ref, err := drivers.NormalizeImage(image)
	if err != nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.images[ref.Normalized]
}

// RemoveImage drops an image from the mock's store.
func (d *Driver) RemoveImage(image string) {
	ref, err := drivers.NormalizeImage(image)
	if err != nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.images, ref.Normalized)
	delete(d.pullAttempts, ref.Normalized)
}

func (d *Driver) forget(c *cookie) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.open, c)
}

// script is a task's parsed extensions.
type script struct {
	exitCode     int
	delay        time.Duration
	stdout       string
	stderr       string
	echoStdin    bool
	oom          bool
	hang         bool
	imageMissing bool
	pullError    string
	pullFailures int
	pullDelay    time.Duration
	createError  string
}

func parseScript(ext map[string]string) script {
	s := script{
		stdout:      ext[ExtStdout],
		stderr:      ext[ExtStderr],
		echoStdin:   ext[ExtEchoStdin] == "true",
		oom:         ext[ExtOOM] == "true",
		hang:        ext[ExtHang] == "true",
		pullError:   ext[ExtPullError],
		createError: ext[ExtCreateError],
	}
	s.imageMissing = ext[ExtImageMissing] == "true"
	s.exitCode, _ = strconv.Atoi(ext[ExtExitCode])
	s.pullFailures, _ = strconv.Atoi(ext[ExtPullFailures])
	s.delay, _ = time.ParseDuration(ext[ExtDelay])
	s.pullDelay, _ = time.ParseDuration(ext[ExtPullDelay])
	return s
}
