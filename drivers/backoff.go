package drivers

import (
	"fmt"
	"time"
)

// BackOffConfig configures retries with bounded exponential backoff. The
// durations are in milliseconds.
type BackOffConfig struct {
	// MaxRetries is the number of retries after the first attempt.
	MaxRetries uint64 `json:"max_retries"`
	// Interval is the base delay; the n-th retry waits about
	// MinDelay + Interval*2^(n-1), capped at MaxDelay.
	Interval uint64 `json:"interval"`
	// MaxDelay caps one delay; it must be at least MinDelay and non-zero
	// when retries are enabled.
	MaxDelay uint64 `json:"max_delay"`
	// MinDelay is the least delay between attempts.
	MinDelay uint64 `json:"min_delay"`
}

// maxBackOffDelay bounds MaxDelay so the arithmetic cannot overflow.
const maxBackOffDelay = uint64(24 * time.Hour / time.Millisecond)

// Validate reports settings that cannot produce a sensible schedule.
func (c BackOffConfig) Validate() error {
	if c.MaxRetries == 0 {
		return nil // no retries: the delays are never used
	}
	switch {
	case c.MaxDelay == 0:
		return fmt.Errorf("backoff: max delay must be positive when retries are enabled: %w", ErrInvalidConfig)
	case c.MaxDelay < c.MinDelay:
		return fmt.Errorf("backoff: max delay %dms is below min delay %dms: %w", c.MaxDelay, c.MinDelay, ErrInvalidConfig)
	case c.MaxDelay > maxBackOffDelay:
		return fmt.Errorf("backoff: max delay %dms is above 24h: %w", c.MaxDelay, ErrInvalidConfig)
	case c.Interval == 0 && c.MinDelay == 0:
		return fmt.Errorf("backoff: interval and min delay are both zero, retries would spin: %w", ErrInvalidConfig)
	}
	return nil
}
