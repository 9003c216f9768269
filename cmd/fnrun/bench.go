package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/bench"
	"github.com/fnrun/fnrun/pool"
)

const benchAbout = `Measures the latency of calls through each driver, in three modes, next
to the bare client (go-dockerclient, the containerd client) doing the same
daemon steps with the same container options, in the same run:

` + bench.Legend + `

The calls are split in rounds; the order of fnrun and bare alternates
from round to round so both see the same host load. Percentiles are by
nearest rank. --png writes a box plot of the latencies.`

func (a *app) cmdBench(ctx context.Context, args []string) int {
	fs := newFlagSet("bench", "[--driver NAME | --all] [--n N] [--concurrency C] [--quick] [--png FILE]", benchAbout)
	var sel driverSelection
	addDriverFlag(fs, &sel, true)
	n := fs.Int("n", 30, "timed calls per variant")
	conc := fs.Int("concurrency", 2, "calls in flight at once (workers); also the pool size and the number of hot containers")
	rounds := fs.Int("rounds", 3, "rounds the calls are split in, alternating fnrun and bare")
	warmup := fs.Int("warmup", 2, "untimed calls per variant before the timed ones")
	maxErrors := fs.Int("max-errors", 0, "failed calls a variant may have, counted in the NOTE column, before its mode fails (default n/10)")
	quick := fs.Bool("quick", false, "a small run for tests: --n 3 --rounds 1 --warmup 1 --concurrency 1 unless given")
	modes := fs.String("modes", "cold,pooled,warm", "comma-separated `MODES` to measure: cold, pooled, warm")
	image := fs.String("image", "", "`IMAGE` to run, with sh and sleep in it (default $FNRUN_TEST_IMAGE, else busybox:latest)")
	png := fs.String("png", "", "write a latency chart (box plot per variant) to `FILE`; .svg and .pdf work too")
	cf := addConfigFlags(fs)
	if done, code := fs.parse(a, args, exitUsage); done {
		return code
	}
	if fs.NArg() > 0 {
		return fs.usageError(a, exitUsage, "unexpected argument %q", fs.Arg(0))
	}
	names, err := sel.resolve(fs)
	if err != nil {
		return fs.usageError(a, exitUsage, "%v", err)
	}
	if *quick {
		for name, v := range map[string]*int{"n": n, "rounds": rounds, "warmup": warmup, "concurrency": conc} {
			if !isFlagSet(fs, name) {
				*v = map[string]int{"n": 3, "rounds": 1, "warmup": 1, "concurrency": 1}[name]
			}
		}
	}
	switch {
	case *n <= 0:
		return fs.usageError(a, exitUsage, "--n must be positive")
	case *conc <= 0 || *conc > pool.MaxSize:
		return fs.usageError(a, exitUsage, "--concurrency must be between 1 and %d", pool.MaxSize)
	case *rounds <= 0:
		return fs.usageError(a, exitUsage, "--rounds must be positive")
	case *warmup < 0:
		return fs.usageError(a, exitUsage, "--warmup must not be negative")
	case *maxErrors < 0:
		return fs.usageError(a, exitUsage, "--max-errors must not be negative")
	}
	want := map[string]bool{}
	for _, m := range strings.Split(*modes, ",") {
		m = strings.TrimSpace(m)
		switch m {
		case bench.Cold, bench.Pooled, bench.Warm:
			want[m] = true
		default:
			return fs.usageError(a, exitUsage, "--modes: unknown mode %q (cold, pooled, warm)", m)
		}
	}
	if *image == "" {
		*image = a.getenv("FNRUN_TEST_IMAGE")
	}
	if *image == "" {
		*image = "busybox:latest"
	}
	if _, err := drivers.NormalizeImage(*image); err != nil {
		return fs.usageError(a, exitUsage, "--image: %v", err)
	}
	if *png != "" {
		if err := checkWritable(*png); err != nil {
			return fs.usageError(a, exitUsage, "--png: %v", err)
		}
	}
	cfg, log, err := a.loadConfig(cf)
	if err != nil {
		a.errorf("bench: %v", err)
		return exitFailure
	}

	opt := bench.Options{N: *n, Concurrency: *conc, Rounds: *rounds, Warmup: *warmup, MaxErrors: *maxErrors}
	var (
		results         []*bench.Result
		notes, versions []string
		failed          bool
	)
	for _, name := range names {
		var p *progress
		sess := &bench.Session{Driver: name, Config: cfg, Image: *image, Options: opt,
			Open: func(ctx context.Context, name string, cfg drivers.Config) (drivers.Driver, error) {
				return openDriver(ctx, name, cfg, log)
			},
			Step: func(what string) func() {
				p = newProgress(a.stderr, a.stderrTTY, "bench "+what)
				return p.end
			},
		}
		sess.Options.Progress = func(v bench.Variant, done, total int) {
			if p != nil {
				p.set("%s %d/%d", v.Client, done, total)
			}
		}
		var modes []string
		for _, m := range []string{bench.Cold, bench.Pooled, bench.Warm} {
			if want[m] {
				modes = append(modes, m)
			}
		}
		res, errs := sess.Run(ctx, modes...)
		results = append(results, res...)
		notes = append(notes, sess.Notes...)
		if v := daemonVersion(ctx, name, cfg); v != "" {
			versions = append(versions, v)
		}
		for _, err := range errs {
			a.errorf("bench: %v", err)
			failed = true
		}
		if ctx.Err() != nil {
			a.errorf("bench: interrupted")
			return exitFailure
		}
	}

	fmt.Fprintf(a.stdout, "fnrun bench: %d calls per variant, concurrency %d, %d round(s), image %s\n", *n, *conc, *rounds, *image)
	fmt.Fprintf(a.stdout, "machine: %s\n", machineInfo())
	for _, v := range versions {
		fmt.Fprintf(a.stdout, "%s\n", v)
	}
	fmt.Fprintln(a.stdout)
	if len(results) > 0 {
		if err := bench.WriteTable(a.stdout, results); err != nil {
			a.errorf("bench: %v", err)
			return exitFailure
		}
		fmt.Fprintf(a.stdout, "\n%s\n", bench.Legend)
		for _, note := range append(notes, bench.FailureNotes(results)...) {
			fmt.Fprintf(a.stdout, "note: %s\n", note)
		}
	}
	if *png != "" && len(results) > 0 {
		title := fmt.Sprintf("fnrun bench: latency per call (%d calls, concurrency %d)", *n, *conc)
		if err := bench.WriteChart(*png, title, results); err != nil {
			a.errorf("bench: chart: %v", err)
			return exitFailure
		}
		fmt.Fprintf(a.stdout, "chart: %s\n", *png)
	}
	if failed || len(results) == 0 {
		return exitFailure
	}
	return exitOK
}

// checkWritable makes sure path can be written before an expensive run.
func checkWritable(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// machineInfo describes the host: CPUs, CPU model, kernel.
func machineInfo() string {
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown kernel"
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(data))
	}
	return fmt.Sprintf("%d CPUs (%s), Linux %s, %s/%s", runtime.NumCPU(), model, kernel, runtime.GOOS, runtime.GOARCH)
}
