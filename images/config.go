package images

import (
	"fmt"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/clock"
)

// Defaults of Config and of the options.
const (
	// DefaultResyncInterval is how often the store is listed again to pick
	// up changes made from outside.
	DefaultResyncInterval = time.Minute
	// DefaultMinInterval is the least time between two passes of the
	// background job, however often it is kicked.
	DefaultMinInterval = time.Second
	// defaultPersistInterval is the least time between two writes of last
	// uses (state file or LastUseStore). Close writes what is left.
	defaultPersistInterval = 30 * time.Second
	// closeFlushTimeout bounds the last write of last uses in Close.
	closeFlushTimeout = 10 * time.Second
	// maxFailuresPerPass ends a pass after this many failed removals: when
	// the daemon is down every removal fails, and trying each image in
	// turn would be a tight loop over the whole store.
	maxFailuresPerPass = 3
)

// DefaultRemoveBackOff spaces the retries of a failed removal of one image:
// about 1s, 2s, 4s... capped at 10 minutes, for as long as the image stays
// a candidate.
var DefaultRemoveBackOff = drivers.BackOffConfig{
	MaxRetries: 1 << 40,
	Interval:   1000,
	MinDelay:   1000,
	MaxDelay:   10 * 60 * 1000,
}

// Config configures a Cleaner.
type Config struct {
	// MaxSize is the byte budget of the image store; it must be positive.
	// When the tracked size of the store passes it, idle images are
	// removed, least recently used first, until it is at most LowWater.
	MaxSize uint64
	// LowWater is the size eviction brings the store down to, so that it
	// does not churn around MaxSize. Zero means 90% of MaxSize; it must not
	// exceed MaxSize.
	LowWater uint64
	// Exempt lists images never removed, as users write references:
	// "busybox" matches docker.io/library/busybox:latest, a digest
	// reference "repo@sha256:<hex>" matches any image with that digest, and
	// an image id "sha256:<hex>" (or the bare 64 hex digits) matches the
	// image with that id or digest, for images only reachable by digest.
	// The caller adds the pre-fork pool's image.
	Exempt []string
	// ResyncInterval is how often the background job lists the store to
	// pick up external changes; zero means DefaultResyncInterval.
	ResyncInterval time.Duration
	// MinInterval is the least time between two passes of the background
	// job (a pass lists the store and evicts); zero means
	// DefaultMinInterval.
	MinInterval time.Duration
	// StateDir is a folder, owned by this cleaner, where it keeps the last
	// use of each image in a small JSON file when the Store does not
	// implement LastUseStore. Empty keeps last uses in memory only; see the
	// package documentation for the approximation used after a restart.
	StateDir string
	// Driver names the driver in the metrics' fnrun_driver tag and in logs.
	Driver string
}

// validate fills defaults and refuses unusable settings.
func (c *Config) validate() error {
	if c.MaxSize == 0 {
		return configErrorf("max size must be positive (a zero budget disables the cleaner: do not create one)")
	}
	if c.LowWater == 0 {
		c.LowWater = c.MaxSize - c.MaxSize/10
	}
	if c.LowWater > c.MaxSize {
		return configErrorf("low-water mark %d is above the budget %d", c.LowWater, c.MaxSize)
	}
	if c.ResyncInterval < 0 || c.MinInterval < 0 {
		return configErrorf("negative interval (resync %v, min %v)", c.ResyncInterval, c.MinInterval)
	}
	if c.ResyncInterval == 0 {
		c.ResyncInterval = DefaultResyncInterval
	}
	if c.MinInterval == 0 {
		c.MinInterval = DefaultMinInterval
	}
	if c.StateDir != "" {
		if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
			return configErrorf("state folder: %v", err)
		}
		if fi, err := os.Stat(c.StateDir); err != nil || !fi.IsDir() {
			return configErrorf("state folder %q is not a folder", c.StateDir)
		}
	}
	return nil
}

func configErrorf(format string, args ...any) error {
	return fmt.Errorf("images: %s: %w", fmt.Sprintf(format, args...), drivers.ErrInvalidConfig)
}

// Option configures a Cleaner beyond its Config.
type Option func(*options)

type options struct {
	log     *logrus.Entry
	clock   Clock
	backoff drivers.BackOffConfig
}

// WithLogger sets the logger; the default discards everything.
func WithLogger(log *logrus.Entry) Option { return func(o *options) { o.log = log } }

// WithClock replaces the wall clock, for tests.
func WithClock(c Clock) Option { return func(o *options) { o.clock = c } }

// WithRemoveBackOff sets the spacing of retries of a failed removal
// (default DefaultRemoveBackOff). MaxRetries bounds the growth of the
// delay, not the number of attempts: once the retries are used up, every
// further retry waits MaxDelay.
func WithRemoveBackOff(cfg drivers.BackOffConfig) Option {
	return func(o *options) { o.backoff = cfg }
}

// Clock tells the time and makes timers. The background job uses nothing
// else, so a test can drive it with fake time.
type Clock = clock.Clock

// Timer is the part of *time.Timer the cleaner uses.
type Timer = clock.Timer
