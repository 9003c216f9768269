package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// parseSize reads a byte size the way docker's --memory does: a number
// with an optional unit b, k, m, g or t (powers of 1024, case-insensitive,
// with an optional trailing "b" or "ib": 64m, 64MB, 64MiB, 1.5g). A bare
// number is bytes.
func parseSize(s string) (uint64, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, fmt.Errorf("empty size")
	}
	lower := strings.ToLower(in)
	if l := strings.TrimSuffix(lower, "ib"); l != lower && l != "" && strings.ContainsAny(l[len(l)-1:], "kmgt") {
		lower = l
	} else if l := strings.TrimSuffix(lower, "b"); l != lower && l != "" && strings.ContainsAny(l[len(l)-1:], "kmgt") {
		lower = l
	}
	mult := uint64(1)
	switch lower[len(lower)-1] {
	case 'b':
		lower = lower[:len(lower)-1]
	case 'k':
		mult, lower = 1<<10, lower[:len(lower)-1]
	case 'm':
		mult, lower = 1<<20, lower[:len(lower)-1]
	case 'g':
		mult, lower = 1<<30, lower[:len(lower)-1]
	case 't':
		mult, lower = 1<<40, lower[:len(lower)-1]
	}
	f, err := strconv.ParseFloat(lower, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Errorf("invalid size %q (want a number with an optional unit k, m, g or t, such as 64m)", s)
	}
	v := f * float64(mult)
	if v >= math.MaxUint64 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return uint64(v), nil
}

// formatSize prints bytes with a binary unit: 0B, 512B, 1.5KiB, 64MiB.
func formatSize(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit && exp < 4; n /= unit {
		div *= unit
		exp++
	}
	v := float64(b) / float64(div)
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + string("KMGTP"[exp]) + "iB"
}

// formatDuration prints a latency with a precision that suits its size:
// 850µs, 12.3ms, 1.25s, 3m4s.
func formatDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + formatDuration(-d)
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
	case d < time.Minute:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}

// formatAge prints how long ago t was, coarsely: 5s, 3m, 2h, 4d.
func formatAge(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// parseCPUs turns a CPU count such as 0.5 or 2 into milli-CPUs.
func parseCPUs(s string) (uint64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || f <= 0 || math.IsInf(f, 0) || f > 1e6 {
		return 0, fmt.Errorf("invalid CPU count %q (want a positive number such as 0.5 or 2)", s)
	}
	m := uint64(math.Round(f * 1000))
	if m == 0 {
		return 0, fmt.Errorf("CPU count %q is below one milli-CPU", s)
	}
	return m, nil
}
