package drivers

import (
	"time"

	"github.com/sirupsen/logrus"
)

// Settings are what a driver takes besides its Config: a logger and the
// bounds of its daemon calls. Options set them; each driver starts from its
// defaults and refuses values it cannot use with ErrInvalidConfig.
type Settings struct {
	// Logger receives the driver's logs; drivers default to discarding.
	Logger *logrus.Entry
	// CallTimeout bounds every daemon call but pulls and waits.
	CallTimeout time.Duration
	// PullTimeout bounds one pull attempt; the retry policy decides about
	// the next.
	PullTimeout time.Duration
	// StopGrace is how long a container ended early has between SIGTERM
	// and SIGKILL.
	StopGrace time.Duration
	// DockerConfig is a Docker config.json (or a folder holding one) whose
	// registry credentials pulls use, for the image's exact host only.
	DockerConfig string
	// NoLeakReaper keeps the driver from removing what other instances
	// with its label tag left behind: for tools that inspect a running
	// instance's containers.
	NoLeakReaper bool
	// Extra holds options only one runtime understands; others ignore them.
	Extra []any
}

// Option changes Settings.
type Option func(*Settings)

// WithLogger sets the logger.
func WithLogger(log *logrus.Entry) Option { return func(s *Settings) { s.Logger = log } }

// WithCallTimeout bounds every short daemon call.
func WithCallTimeout(d time.Duration) Option { return func(s *Settings) { s.CallTimeout = d } }

// WithPullTimeout bounds one pull attempt.
func WithPullTimeout(d time.Duration) Option { return func(s *Settings) { s.PullTimeout = d } }

// WithStopGrace sets Settings.StopGrace; 0 sends SIGKILL at once.
func WithStopGrace(d time.Duration) Option { return func(s *Settings) { s.StopGrace = d } }

// WithDockerConfig reads registry credentials from a Docker config.json, or
// from the config.json in the folder path names, as DOCKER_CONFIG does.
func WithDockerConfig(path string) Option { return func(s *Settings) { s.DockerConfig = path } }

// WithoutLeakReaper sets Settings.NoLeakReaper.
func WithoutLeakReaper() Option { return func(s *Settings) { s.NoLeakReaper = true } }

// WithExtra passes an option that only one runtime understands.
func WithExtra(opt any) Option { return func(s *Settings) { s.Extra = append(s.Extra, opt) } }
