package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/fnrun/fnrun/internal/bench"
	"github.com/fnrun/fnrun/pool"
)

const poolAbout = `Starts a driver with a pre-fork pool of namespace-holder containers, waits
until every holder runs, and prints the pool's figures (pool.Reporter):
free and leased holders, holders starting, the size aimed for, misses,
replacements, deaths and failures. The holders are removed when fnrun
exits; with --watch, fnrun keeps the pool and prints its figures every
INTERVAL until SIGINT or SIGTERM (fnrun ps shows the holders meanwhile).`

func (a *app) cmdPool(ctx context.Context, args []string) int {
	fs := newFlagSet("pool", "[--driver NAME] [--size N] [--image IMAGE] [--watch INTERVAL]", poolAbout)
	var sel driverSelection
	addDriverFlag(fs, &sel, false)
	size := fs.Int("size", 0, "holders to keep running (default pre_fork_pool_size of the config, else 2)")
	max := fs.Int("max", 0, "holders the pool may grow to on misses (default pre_fork_pool_max, else --size)")
	image := fs.String("image", "", "holders' `IMAGE` (default pre_fork_image of the config, else $FNRUN_TEST_IMAGE, else the driver's default)")
	wait := fs.Duration("wait", 2*time.Minute, "how long to wait for the pool to be ready")
	watch := fs.Duration("watch", 0, "keep the pool and print its figures every `INTERVAL` until interrupted")
	cf := addConfigFlags(fs)
	if done, code := fs.parse(a, args, exitUsage); done {
		return code
	}
	if fs.NArg() > 0 {
		return fs.usageError(a, exitUsage, "unexpected argument %q", fs.Arg(0))
	}
	if err := checkDriverName(sel.name); err != nil {
		return fs.usageError(a, exitUsage, "%v", err)
	}
	switch {
	case *size < 0 || *size > pool.MaxSize:
		return fs.usageError(a, exitUsage, "--size must be between 1 and %d", pool.MaxSize)
	case *max < 0 || *max > pool.MaxSize:
		return fs.usageError(a, exitUsage, "--max must be between 1 and %d", pool.MaxSize)
	case *wait <= 0:
		return fs.usageError(a, exitUsage, "--wait must be positive")
	case *watch < 0:
		return fs.usageError(a, exitUsage, "--watch must be positive")
	}
	cfg, log, err := a.loadConfig(cf)
	if err != nil {
		a.errorf("pool: %v", err)
		return exitFailure
	}
	if *size > 0 {
		cfg.PreForkPoolSize = uint64(*size)
	}
	if cfg.PreForkPoolSize == 0 {
		cfg.PreForkPoolSize = 2
	}
	if *max > 0 {
		cfg.PreForkPoolMax = uint64(*max)
	}
	if cfg.PreForkPoolMax != 0 && cfg.PreForkPoolMax < cfg.PreForkPoolSize {
		return fs.usageError(a, exitUsage, "--max %d is below --size %d", cfg.PreForkPoolMax, cfg.PreForkPoolSize)
	}
	if *image != "" {
		cfg.PreForkImage = *image
	}
	if cfg.PreForkImage == "" {
		cfg.PreForkImage = a.getenv("FNRUN_TEST_IMAGE")
	}

	start := time.Now()
	p := newProgress(a.stderr, a.stderrTTY, fmt.Sprintf("pool: starting %d holder(s) on %s", cfg.PreForkPoolSize, sel.name))
	drv, err := openDriver(ctx, sel.name, cfg, log)
	if err != nil {
		p.end()
		a.errorf("pool: %v", err)
		return exitFailure
	}
	defer func() {
		cp := newProgress(a.stderr, a.stderrTTY, "pool: removing the holders")
		_ = drv.Close()
		cp.end()
	}()
	rep, ok := drv.(pool.Reporter)
	if !ok {
		p.end()
		a.errorf("pool: the %s driver reports no pool (it does not implement pool.Reporter)", sel.name)
		return exitFailure
	}
	err = bench.WaitPool(ctx, rep, *wait)
	p.end()
	st, _ := rep.PoolStats()
	if err != nil {
		if ctx.Err() != nil {
			a.errorf("pool: interrupted")
		} else {
			a.errorf("pool: %s: %v (--log-level warn shows why)", sel.name, err)
		}
		writePoolStats(a.stdout, sel.name, st, true)
		return exitFailure
	}
	fmt.Fprintf(a.stdout, "pool ready on %s in %s (holder image %s)\n", sel.name, formatDuration(time.Since(start)), orDash(cfg.PreForkImage))
	writePoolStats(a.stdout, sel.name, st, true)
	if *watch == 0 {
		return exitOK
	}
	t := time.NewTicker(*watch)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return exitOK
		case <-t.C:
			st, _ := rep.PoolStats()
			writePoolStats(a.stdout, sel.name, st, false)
		}
	}
}

// writePoolStats prints one row of pool figures, under a header when
// header is set; rows printed later (--watch) line up with it.
func writePoolStats(w io.Writer, driver string, st pool.Stats, header bool) {
	const format = "%-11s  %4v  %6v  %8v  %4v  %6v  %12v  %6v  %8v\n"
	if header {
		fmt.Fprintf(w, format, "DRIVER", "FREE", "LEASED", "STARTING", "SIZE", "MISSES", "REPLACEMENTS", "DEATHS", "FAILURES")
	}
	fmt.Fprintf(w, format, driver, st.Free, st.Leased, st.Starting, st.Size, st.Misses, st.Replacements, st.Deaths, st.Failures)
}
