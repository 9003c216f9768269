package pool

import (
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/clock"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultIdleShrinkAfter  = time.Minute
	DefaultStartConcurrency = 4
	DefaultStopTimeout      = 10 * time.Second
	DefaultNamePrefix       = "fnrun-holder"
)

// DefaultReplaceBackoff paces retries after adapter failures: about 0.3s,
// 0.5s, 0.9s... doubling up to 30s, then every 30s for as long as the
// failure lasts. Durations are in milliseconds.
var DefaultReplaceBackoff = drivers.BackOffConfig{MaxRetries: 8, Interval: 200, MinDelay: 100, MaxDelay: 30_000}

// MaxSize bounds Config.Size and Config.Max. A pool is a per-host cache
// of namespaces; thousands of idle containers would be a mistake in the
// configuration, not a wish.
const MaxSize = 1024

// Config configures a pool. Zero fields take the defaults above.
type Config struct {
	// Size is the number of holders kept running. It must be positive: a
	// zero PreForkPoolSize means no pool, so the driver does not create one.
	Size int
	// Max bounds growth on misses; 0 means Size (a fixed pool).
	Max int
	// UseOnce replaces a holder once its lease is released, so every lease
	// gets a fresh network namespace.
	UseOnce bool
	// Networks are the networks holders are spread over (the one with the
	// fewest holders first, round-robin among equals). Empty uses the
	// runtime's default network.
	Networks []string
	// IdleShrinkAfter is how long a holder beyond Size sits free before it
	// is stopped.
	IdleShrinkAfter time.Duration
	// ReplaceBackoff paces retries after adapter failures. The pool never
	// gives up: once MaxRetries delays are used, it retries every MaxDelay,
	// so a daemon that comes back gets a full pool again without a restart.
	// A zero value means DefaultReplaceBackoff.
	ReplaceBackoff drivers.BackOffConfig
	// StartConcurrency bounds the StartHolder calls in flight, so filling a
	// large pool does not flood the daemon.
	StartConcurrency int
	// StopTimeout bounds one StopHolder call.
	StopTimeout time.Duration
	// NamePrefix starts every holder name.
	NamePrefix string
	// Driver names the driver in metric tags.
	Driver string
}

// withDefaults validates c and fills in the defaults.
func (c Config) withDefaults() (Config, error) {
	invalid := func(format string, args ...any) (Config, error) {
		return c, fmt.Errorf("pool: %s: %w", fmt.Sprintf(format, args...), drivers.ErrInvalidConfig)
	}
	if c.Size <= 0 || c.Size > MaxSize {
		return invalid("size %d is outside [1, %d]", c.Size, MaxSize)
	}
	if c.Max == 0 {
		c.Max = c.Size
	}
	if c.Max < c.Size || c.Max > MaxSize {
		return invalid("max %d is outside [size %d, %d]", c.Max, c.Size, MaxSize)
	}
	for _, n := range c.Networks {
		if strings.TrimSpace(n) == "" || strings.ContainsAny(n, " \t\n") {
			return invalid("network name %q is empty or has spaces", n)
		}
	}
	c.Networks = append([]string(nil), c.Networks...) // the caller may reuse its slice
	switch {
	case c.IdleShrinkAfter < 0:
		return invalid("idle shrink delay %v is negative", c.IdleShrinkAfter)
	case c.IdleShrinkAfter == 0:
		c.IdleShrinkAfter = DefaultIdleShrinkAfter
	}
	if c.ReplaceBackoff == (drivers.BackOffConfig{}) {
		c.ReplaceBackoff = DefaultReplaceBackoff
	}
	// The pool retries forever, so even a config without retries must give
	// a positive delay; validating as if retries were on catches the spin.
	check := c.ReplaceBackoff
	if check.MaxRetries == 0 {
		check.MaxRetries = 1
	}
	if err := check.Validate(); err != nil {
		return c, fmt.Errorf("pool: replace backoff: %w", err)
	}
	switch {
	case c.StartConcurrency < 0:
		return invalid("start concurrency %d is negative", c.StartConcurrency)
	case c.StartConcurrency == 0:
		c.StartConcurrency = DefaultStartConcurrency
	}
	switch {
	case c.StopTimeout < 0:
		return invalid("stop timeout %v is negative", c.StopTimeout)
	case c.StopTimeout == 0:
		c.StopTimeout = DefaultStopTimeout
	}
	if c.NamePrefix == "" {
		c.NamePrefix = DefaultNamePrefix
	}
	return c, nil
}

// Option changes how a pool runs without changing what it does.
type Option func(*options)

type options struct {
	log   *logrus.Entry
	clock Clock
}

// WithLogger sets the logger. The default discards everything; the pool
// never logs through logrus's global logger.
func WithLogger(log *logrus.Entry) Option {
	return func(o *options) {
		if log != nil {
			o.log = log
		}
	}
}

// WithClock sets the clock the pool reads and sleeps on; tests use it to
// drive idle shrinking and retry delays without waiting.
func WithClock(c Clock) Option {
	return func(o *options) {
		if c != nil {
			o.clock = c
		}
	}
}

// Clock is the pool's source of time.
type Clock = clock.Clock

// Timer is a Clock's one-shot timer, as time.Timer.
type Timer = clock.Timer
