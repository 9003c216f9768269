package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

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

	b := &benchRun{a: a, cfg: cfg, log: log, image: *image, modes: want,
		opt: bench.Options{N: *n, Concurrency: *conc, Rounds: *rounds, Warmup: *warmup, MaxErrors: *maxErrors}}
	var results []*bench.Result
	failed := false
	for _, name := range names {
		res, errs := b.driver(ctx, name)
		results = append(results, res...)
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
	for _, v := range b.versions {
		fmt.Fprintf(a.stdout, "%s\n", v)
	}
	fmt.Fprintln(a.stdout)
	if len(results) > 0 {
		if err := bench.WriteTable(a.stdout, results); err != nil {
			a.errorf("bench: %v", err)
			return exitFailure
		}
		fmt.Fprintf(a.stdout, "\n%s\n", bench.Legend)
		for _, note := range append(b.notes, bench.FailureNotes(results)...) {
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

type benchRun struct {
	a        *app
	cfg      drivers.Config
	log      logEntry
	image    string
	modes    map[string]bool
	opt      bench.Options
	versions []string
	notes    []string
}

// driver measures every mode of one driver; a mode that fails is reported
// and the next one still runs.
func (b *benchRun) driver(ctx context.Context, name string) ([]*bench.Result, []error) {
	var (
		results []*bench.Result
		errs    []error
	)
	p := newProgress(b.a.stderr, b.a.stderrTTY, "bench "+name+": starting the driver and the image")
	cold, err := openDriver(ctx, name, b.cfg, b.log)
	if err == nil {
		defer cold.Close()
		// One call makes sure the image is present (pulled if needed) and
		// unpacked before anything is timed.
		err = bench.Lifecycle(ctx, cold, &drivers.Task{ID: "fnrun-bench-probe-" + randomHex(4), ImageRef: b.image, Cmd: bench.TrivialCommand})
	}
	p.end()
	if err != nil {
		return nil, []error{fmt.Errorf("%s: %w", name, err)}
	}
	if v := daemonVersion(ctx, name, b.cfg); v != "" {
		b.versions = append(b.versions, v)
	}

	bare, err := b.bareSide(ctx, name, cold)
	if err != nil {
		return nil, []error{fmt.Errorf("%s: bare client: %w", name, err)}
	}
	defer bare.close()

	for _, mode := range []string{bench.Cold, bench.Pooled, bench.Warm} {
		if !b.modes[mode] {
			continue
		}
		res, err := b.mode(ctx, name, mode, cold, bare)
		var skip *skipError
		switch {
		case errors.As(err, &skip):
			b.notes = append(b.notes, fmt.Sprintf("%s %s: skipped: %s", name, mode, skip.why))
		case err != nil:
			errs = append(errs, fmt.Errorf("%s %s: %w", name, mode, err))
		}
		results = append(results, res...)
		if ctx.Err() != nil {
			break
		}
	}
	return results, errs
}

func (b *benchRun) mode(ctx context.Context, name, mode string, cold drivers.Driver, bare *bareSide) ([]*bench.Result, error) {
	var targets []bench.Target
	switch mode {
	case bench.Cold:
		targets = append(targets, bench.NewFnrunCall(cold, bench.Variant{Driver: name, Mode: bench.Cold, Client: bench.Fnrun}, b.image))
	case bench.Pooled:
		cfg := b.cfg
		cfg.PreForkPoolSize = uint64(b.opt.Concurrency)
		if cfg.PreForkPoolMax < cfg.PreForkPoolSize {
			cfg.PreForkPoolMax = cfg.PreForkPoolSize
		}
		if cfg.PreForkImage == "" {
			cfg.PreForkImage = b.image
		}
		p := newProgress(b.a.stderr, b.a.stderrTTY, fmt.Sprintf("bench %s pooled: starting a pool of %d", name, b.opt.Concurrency))
		pooled, err := openDriver(ctx, name, cfg, b.log)
		if err == nil {
			if _, ok := pooled.(pool.Reporter); !ok {
				pooled.Close()
				err = &skipError{fmt.Sprintf("the %s driver runs no pre-fork pool (it does not implement pool.Reporter)", name)}
			}
		}
		if err == nil {
			defer pooled.Close()
			err = bench.WaitPool(ctx, pooled.(pool.Reporter), 2*time.Minute)
		}
		p.end()
		if err != nil {
			return nil, err
		}
		targets = append(targets, bench.NewFnrunCall(pooled, bench.Variant{Driver: name, Mode: bench.Pooled, Client: bench.Fnrun}, b.image))
	case bench.Warm:
		if name == "mock" {
			return nil, &skipError{"the mock runs no command, so no hot container can serve a call"}
		}
		targets = append(targets, bench.NewFnrunWarm(cold, name, b.image))
	}
	if t, err := bare.target(ctx, mode); err != nil {
		return nil, err
	} else if t != nil {
		targets = append(targets, t)
	}

	p := newProgress(b.a.stderr, b.a.stderrTTY, fmt.Sprintf("bench %s %s: %d calls per client at concurrency %d", name, mode, b.opt.N, b.opt.Concurrency))
	opt := b.opt
	opt.Progress = func(v bench.Variant, done, total int) { p.set("%s %d/%d", v.Client, done, total) }
	res, err := bench.Compare(ctx, targets, opt)
	p.end()
	return res, err
}

// skipError says why a mode cannot be measured on a driver: reported
// under the table, not as a failure.
type skipError struct{ why string }

func (e *skipError) Error() string { return "skipped: " + e.why }

// bareSide builds the bare-client targets of one driver, with the options
// its fnrun driver generates.
type bareSide struct {
	target func(ctx context.Context, mode string) (bench.Target, error)
	close  func()
}

func (b *benchRun) bareSide(ctx context.Context, name string, drv drivers.Driver) (*bareSide, error) {
	probe := func(cmd string, stdin bool) *drivers.Task {
		t := &drivers.Task{ID: "fnrun-bench-proto-" + randomHex(4), ImageRef: b.image, Cmd: cmd}
		if stdin {
			t.Stdin = strings.NewReader("")
		}
		return t
	}
	switch name {
	case "docker":
		client, closeIdle, err := bench.DockerClient(b.cfg.Docker)
		if err != nil {
			return nil, err
		}
		return &bareSide{
			close: closeIdle,
			target: func(ctx context.Context, mode string) (bench.Target, error) {
				if mode == bench.Warm {
					opts, err := bench.DockerOptions(ctx, drv, probe(bench.HotCommand, true))
					if err != nil {
						return nil, err
					}
					return bench.NewDockerWarm(client, opts, name), nil
				}
				opts, err := bench.DockerOptions(ctx, drv, probe(bench.TrivialCommand, false))
				if err != nil {
					return nil, err
				}
				return bench.NewDockerCall(client, opts, name, mode), nil
			},
		}, nil
	case "containerd":
		labels := map[string]string{
			drivers.LabelLibrary:  drivers.LibraryName,
			drivers.LabelDriver:   name,
			drivers.LabelTag:      b.cfg.ContainerLabelTag,
			drivers.LabelInstance: b.cfg.InstanceId,
		}
		c, err := bench.NewContainerd(containerdAddress(b.cfg), b.cfg.Namespace(), b.image, labels)
		if err != nil {
			return nil, err
		}
		cniReady := false
		return &bareSide{
			close: func() { _ = c.Close() },
			target: func(ctx context.Context, mode string) (bench.Target, error) {
				if mode == bench.Warm {
					spec, err := c.Spec(ctx, drv, probe(bench.HotCommand, true))
					if err != nil {
						return nil, err
					}
					return bench.NewContainerdWarm(c, spec, name), nil
				}
				spec, err := c.Spec(ctx, drv, probe(bench.TrivialCommand, false))
				if err != nil {
					return nil, err
				}
				if mode == bench.Cold && bench.JoinsNetNS(spec) && !cniReady {
					// The driver gives each container a CNI network: so
					// does the bare side, with the same configuration.
					confDir, binDir := b.cfg.CNIConfDir, b.cfg.CNIBinDir
					if confDir == "" {
						confDir = drivers.DefaultCNIConfDir
					}
					if binDir == "" {
						binDir = drivers.DefaultCNIBinDir
					}
					if err := c.UseCNI(confDir, binDir); err != nil {
						return nil, err
					}
					cniReady = true
				}
				return bench.NewContainerdCall(c, spec, name, mode), nil
			},
		}, nil
	}
	b.notes = append(b.notes, fmt.Sprintf("%s: no bare client to compare with", name))
	return &bareSide{close: func() {}, target: func(context.Context, string) (bench.Target, error) { return nil, nil }}, nil
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
