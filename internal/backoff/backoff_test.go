package backoff

import (
	"context"
	"errors"
	"github.com/fnrun/fnrun/drivers"
	"testing"
	"time"
)

func TestBackOffValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  drivers.BackOffConfig
		ok   bool
	}{
		{"no retries", drivers.BackOffConfig{}, true},
		{"typical", drivers.BackOffConfig{MaxRetries: 3, Interval: 100, MaxDelay: 2000, MinDelay: 10}, true},
		{"zero max delay", drivers.BackOffConfig{MaxRetries: 3, Interval: 100}, false},
		{"max below min", drivers.BackOffConfig{MaxRetries: 3, Interval: 100, MaxDelay: 10, MinDelay: 20}, false},
		{"would spin", drivers.BackOffConfig{MaxRetries: 3, MaxDelay: 10}, false},
		{"absurd max", drivers.BackOffConfig{MaxRetries: 3, Interval: 1, MaxDelay: 1 << 62}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("New(%+v) error %v, want ok=%v", tc.cfg, err, tc.ok)
			}
			if err != nil && !errors.Is(err, drivers.ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap drivers.ErrInvalidConfig", err)
			}
		})
	}
}

func TestBackOffSchedule(t *testing.T) {
	cfg := drivers.BackOffConfig{MaxRetries: 50, Interval: 100, MaxDelay: 1000, MinDelay: 50}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var prevCap time.Duration
	for i := 1; i <= 50; i++ {
		d, ok := b.Next()
		if !ok {
			t.Fatalf("retry %d refused before MaxRetries", i)
		}
		if d < 50*time.Millisecond || d > time.Second {
			t.Fatalf("retry %d delay %v outside [MinDelay, MaxDelay]", i, d)
		}
		_ = prevCap
	}
	if _, ok := b.Next(); ok {
		t.Fatal("Next gave a delay after MaxRetries")
	}
	if b.Retries() != 50 {
		t.Fatalf("Retries() = %d", b.Retries())
	}
}

func TestBackOffGrowsAndJitters(t *testing.T) {
	b, _ := New(drivers.BackOffConfig{MaxRetries: 4, Interval: 100, MaxDelay: 10_000})
	b.jitter = func(n int64) int64 { return n - 1 } // the top of each range
	var got []time.Duration
	for {
		d, ok := b.Next()
		if !ok {
			break
		}
		got = append(got, d)
	}
	want := []time.Duration{100, 200, 400, 800}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("delays %v, want %v ms", got, want)
		}
	}
	b, _ = New(drivers.BackOffConfig{MaxRetries: 1, Interval: 100, MaxDelay: 10_000})
	b.jitter = func(int64) int64 { return 0 } // the bottom
	if d, _ := b.Next(); d != 50*time.Millisecond {
		t.Fatalf("lowest jittered delay %v, want half of 100ms", d)
	}
}

func TestRetry(t *testing.T) {
	cfg := drivers.BackOffConfig{MaxRetries: 3, Interval: 1, MaxDelay: 5}
	always := func(error) (bool, string) { return true, "test" }
	never := func(error) (bool, string) { return false, "" }
	errBoom := errors.New("boom")

	calls := 0
	err := Retry(context.Background(), cfg, always, func(context.Context) error {
		calls++
		if calls < 3 {
			return errBoom
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Retry = %v after %d calls, want success on the third", err, calls)
	}

	calls = 0
	err = Retry(context.Background(), cfg, always, func(context.Context) error { calls++; return errBoom })
	if !errors.Is(err, errBoom) || calls != 4 {
		t.Fatalf("Retry = %v after %d calls, want boom after 1+3", err, calls)
	}

	calls = 0
	err = Retry(context.Background(), cfg, never, func(context.Context) error { calls++; return errBoom })
	if !errors.Is(err, errBoom) || calls != 1 {
		t.Fatalf("non-retriable: %v after %d calls", err, calls)
	}

	ctx, cancel := context.WithCancel(context.Background())
	long := drivers.BackOffConfig{MaxRetries: 3, Interval: 60_000, MaxDelay: 60_000}
	go cancel()
	err = Retry(ctx, long, always, func(context.Context) error { return errBoom })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
}
