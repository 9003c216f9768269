// Package mock is a driver that runs nothing but behaves like a real one,
// for the tests of an agent built on fnrun. It registers as "mock".
//
// It is a runtime of the shared life cycle (package lifecycle), like the
// docker and containerd drivers: only the container is simulated.
//
// By default a run succeeds at once and writes nothing; task extensions
// script the rest (see the Ext constants). Freeze stops the run's clock
// until Unfreeze.
//
// The mock keeps a small image store: an image must be pulled once before
// a container of it can be created, and pulls are counted (Pulls). Fn's
// mock driver never asks for a pull; WithImagesPresent behaves like it.
// Nothing is random, and Fn's mock's every-hundredth failing Run is not
// copied. What the life cycle does, the mock does too: a task's syslog
// endpoint gets its output, calls lease pre-fork holders, the cleaner sees
// the image store.
package mock

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/lifecycle"
)

// Name is the name the mock registers under.
const Name = "mock"

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
	// ExtOOM, when "true", ends the run as killed by the OOM killer (exit
	// code 137 with the runtime's OOM report).
	ExtOOM = "mock.oom"
	// ExtChildOOM, when "true", reports an OOM kill in the container while
	// the run still exits with ExtExitCode, as when the killer struck a
	// child process.
	ExtChildOOM = "mock.child_oom"
	// ExtHang, when "true", keeps the run going until it is ended.
	ExtHang = "mock.hang"
	// ExtImageMissing, when "true", makes pulls of the image fail with
	// ErrImageNotFound.
	ExtImageMissing = "mock.image_missing"
	// ExtPullError makes every pull attempt of the image fail with this
	// message.
	ExtPullError = "mock.pull_error"
	// ExtPullFailures makes the first N pull attempts of the image fail
	// (with ExtPullError's message, or a default one), then succeed.
	ExtPullFailures = "mock.pull_failures"
	// ExtPullDelay is how long one pull attempt of the image takes.
	ExtPullDelay = "mock.pull_delay"
	// ExtCreateError makes CreateContainer fail with this message.
	ExtCreateError = "mock.create_error"
)

// Option configures a Driver: any drivers.Option, or one of this package.
type Option = drivers.Option

type presentImages []string

type imagesPresent struct{}

// WithImages marks images as already present in the mock's store.
func WithImages(refs ...string) Option { return drivers.WithExtra(presentImages(refs)) }

// WithImagesPresent makes every image present, so ValidateImage never asks
// for a pull: Fn's mock driver behaves so.
func WithImagesPresent() Option { return drivers.WithExtra(imagesPresent{}) }

// Driver is the mock driver. It is safe for concurrent use.
type Driver struct {
	*lifecycle.Driver
	rt *runtime
}

var _ drivers.Driver = (*Driver)(nil)

// New creates a mock driver. Of cfg it uses what the life cycle does
// (label tag, instance, pool and cleaner settings are accepted; the pool
// and the cleaner need no daemon).
func New(cfg drivers.Config, opts ...Option) (*Driver, error) {
	s, err := lifecycle.Configure(Name, cfg, opts)
	if err != nil {
		return nil, err
	}
	rt := &runtime{
		images:       make(map[string]bool),
		pullAttempts: make(map[string]int),
		pullScripts:  make(map[string]script),
		containers:   make(map[string]*container),
	}
	for _, o := range s.Extra {
		switch o := o.(type) {
		case presentImages:
			for _, r := range o {
				if ref, err := drivers.NormalizeImage(r); err == nil {
					rt.images[ref.Normalized] = true
				}
			}
		case imagesPresent:
			rt.allPresent = true
		}
	}
	d, err := lifecycle.New(context.Background(), s, rt)
	if err != nil {
		return nil, err
	}
	return &Driver{Driver: d, rt: rt}, nil
}

// CreatedCookies returns how many cookies were ever created.
func (d *Driver) CreatedCookies() int {
	d.rt.mu.Lock()
	defer d.rt.mu.Unlock()
	return d.rt.created
}

// Pulls returns how many pull attempts reached the mock's "registry".
func (d *Driver) Pulls() int {
	d.rt.mu.Lock()
	defer d.rt.mu.Unlock()
	return d.rt.pulls
}

// HasImage reports whether the image is in the mock's store.
func (d *Driver) HasImage(image string) bool {
	ref, err := drivers.NormalizeImage(image)
	return err == nil && d.rt.hasImage(ref.Normalized)
}

// RemoveImage drops an image from the mock's store.
func (d *Driver) RemoveImage(image string) {
	ref, err := drivers.NormalizeImage(image)
	if err != nil {
		return
	}
	d.rt.mu.Lock()
	defer d.rt.mu.Unlock()
	delete(d.rt.images, ref.Normalized)
	delete(d.rt.pullAttempts, ref.Normalized)
}

// ContainerNames returns the names of the containers that exist.
func (d *Driver) ContainerNames() []string {
	d.rt.mu.Lock()
	defer d.rt.mu.Unlock()
	names := make([]string, 0, len(d.rt.containers))
	for n := range d.rt.containers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// script is a task's parsed extensions.
type script struct {
	exitCode     int
	delay        time.Duration
	stdout       string
	stderr       string
	echoStdin    bool
	oom          bool
	childOOM     bool
	hang         bool
	imageMissing bool
	pullError    string
	pullFailures int
	pullDelay    time.Duration
	createError  string
}

func parseScript(ext map[string]string) script {
	s := script{
		stdout:       ext[ExtStdout],
		stderr:       ext[ExtStderr],
		echoStdin:    ext[ExtEchoStdin] == "true",
		oom:          ext[ExtOOM] == "true",
		childOOM:     ext[ExtChildOOM] == "true",
		hang:         ext[ExtHang] == "true",
		imageMissing: ext[ExtImageMissing] == "true",
		pullError:    ext[ExtPullError],
		createError:  ext[ExtCreateError],
	}
	s.exitCode, _ = strconv.Atoi(ext[ExtExitCode])
	s.pullFailures, _ = strconv.Atoi(ext[ExtPullFailures])
	s.delay, _ = time.ParseDuration(ext[ExtDelay])
	s.pullDelay, _ = time.ParseDuration(ext[ExtPullDelay])
	return s
}

// GetSlotKeyExtensions returns the scripting extensions, sorted, since they
// change what a container does.
func (rt *runtime) GetSlotKeyExtensions(extn map[string]string) string {
	var parts []string
	for k, v := range extn {
		if strings.HasPrefix(k, "mock.") {
			parts = append(parts, k+"="+v)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ";")
}
