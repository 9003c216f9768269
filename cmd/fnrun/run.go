package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/stats"
)

// Exit codes of fnrun run besides the container's own.
const (
	exitRunError = 125 // fnrun failed on its own, as docker run
	exitTimeout  = 124 // --timeout ended the call, as timeout(1)
	exitOOM      = 137 // the kernel's OOM killer ended the call: 128+SIGKILL
)

const runAbout = `Runs one function call: validates the image (pulling it when needed,
with progress on stderr), creates the container with the limits given,
streams stdin (when it is not a terminal, or with -i), stdout and stderr,
and exits with the container's exit code.

Exit status: the container's exit code; 124 when --timeout ended the call;
137 when the kernel's OOM killer ended it ("out of memory" on stderr; a
plain SIGKILL of the container also exits 137, without that line); 130 or
143 when fnrun was interrupted (SIGINT, SIGTERM) and ended the container;
125 when fnrun failed on its own (bad flags, daemon, image).

Words after IMAGE (after an optional --) are the command, quoted with
drivers.QuoteCommand so that each word stays one argument; none runs the
image's default command.

Example:
  fnrun run --memory 64m --cpus 0.5 -e GREETING=hi 127.0.0.1:5000/fnrun/busybox -- sh -c 'echo $GREETING'`

type runFlags struct {
	driver      string
	name        string
	memory      sizeFlag
	cpus        string
	pids        optUint
	timeout     time.Duration
	env         stringList
	workdir     string
	volumes     stringList
	readOnly    bool
	tmpfsSize   sizeFlag
	fsSize      sizeFlag
	network     bool
	noNetwork   bool
	nofile      optUint
	memlock     sizeFlag
	sigpending  optUint
	msgqueue    sizeFlag
	ext         stringList
	interactive bool
	verbose     bool
	noPull      bool
}

func (a *app) cmdRun(ctx context.Context, args []string) int {
	fs := newFlagSet("run", "[flags] IMAGE [-- COMMAND [ARG...]]", runAbout)
	var f runFlags
	fs.StringVar(&f.driver, "driver", "docker", "driver `NAME`: "+strings.Join(drivers.Drivers(), ", "))
	fs.StringVar(&f.name, "name", "", "container `ID` (default fnrun-<random>)")
	fs.Var(&f.memory, "memory", "memory limit, `SIZE` such as 64m or 1g (swap is off)")
	fs.StringVar(&f.cpus, "cpus", "", "CPU limit in `CPUS`, such as 0.5 (500 milli-CPUs)")
	fs.Var(&f.pids, "pids", "limit of processes and threads `N`")
	fs.DurationVar(&f.timeout, "timeout", 0, "end the call after `DURATION` (such as 30s) and exit 124; pulls do not count")
	fs.Var(&f.env, "env", "set `K=V` in the container; K alone copies fnrun's own value (repeatable)")
	fs.StringVar(&f.workdir, "workdir", "", "working `DIR` in the container")
	fs.Var(&f.volumes, "volume", "bind-mount `HOST:CONTAINER` (absolute paths; repeatable; no short form: -v is --verbose)")
	fs.BoolVar(&f.readOnly, "read-only", false, "mount the root filesystem read-only, with a writable /tmp")
	fs.Var(&f.tmpfsSize, "tmpfs-size", "mount a tmpfs of `SIZE` (such as 64m; whole MiB) on /tmp")
	fs.Var(&f.fsSize, "fs-size", "limit the root filesystem to `SIZE` (whole MiB; needs a storage that supports it)")
	fs.BoolVar(&f.network, "network", true, "give the container a network; --network=false runs it with loopback only")
	fs.BoolVar(&f.noNetwork, "no-network", false, "same as --network=false")
	fs.Var(&f.nofile, "nofile", "limit of open files `N` (RLIMIT_NOFILE)")
	fs.Var(&f.memlock, "memlock", "limit of locked memory `SIZE` (RLIMIT_MEMLOCK)")
	fs.Var(&f.sigpending, "sigpending", "limit of queued signals `N` (RLIMIT_SIGPENDING)")
	fs.Var(&f.msgqueue, "msgqueue", "limit of POSIX message queue bytes `SIZE` (RLIMIT_MSGQUEUE)")
	fs.Var(&f.ext, "ext", "task extension `K=V` passed to the driver, such as mock.exit_code=3 (repeatable)")
	fs.BoolVar(&f.interactive, "interactive", false, "stream stdin even when it is a terminal")
	fs.BoolVar(&f.verbose, "verbose", false, "print the status, the time of each step and the resource samples on stderr")
	fs.BoolVar(&f.noPull, "no-pull", false, "fail instead of pulling a missing image")
	fs.alias("e", "env")
	fs.alias("w", "workdir")
	fs.alias("i", "interactive")
	fs.alias("v", "verbose")
	cf := addConfigFlags(fs)

	if done, code := fs.parse(a, args, exitRunError); done {
		return code
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return fs.usageError(a, exitRunError, "an IMAGE is required")
	}
	image, cmdWords := rest[0], rest[1:]
	if len(cmdWords) > 0 && cmdWords[0] == "--" {
		cmdWords = cmdWords[1:]
	}
	if err := checkDriverName(f.driver); err != nil {
		return fs.usageError(a, exitRunError, "%v", err)
	}
	task, err := f.task(a, image, cmdWords)
	if err != nil {
		return fs.usageError(a, exitRunError, "%v", err)
	}
	cfg, err := cf.load(a.getenv)
	if err != nil {
		a.errorf("run: %v", err)
		return exitRunError
	}
	cfg.EnableReadOnlyRootFs = cfg.EnableReadOnlyRootFs || f.readOnly
	log, err := a.logger(cf.logLevelValue(a.getenv))
	if err != nil {
		return fs.usageError(a, exitRunError, "%v", err)
	}

	r := &runner{a: a, f: &f, task: task, log: log}
	return r.run(ctx, cfg)
}

// task builds the drivers.Task of the flags.
func (f *runFlags) task(a *app, image string, cmdWords []string) (*drivers.Task, error) {
	if _, err := drivers.NormalizeImage(image); err != nil {
		return nil, err
	}
	id := f.name
	if id == "" {
		id = "fnrun-" + randomHex(6)
	}
	task := &drivers.Task{
		ID:        id,
		ImageRef:  image,
		Cmd:       drivers.QuoteCommand(cmdWords),
		Dir:       f.workdir,
		NoNetwork: f.noNetwork || !f.network,
		MaxPIDs:   f.pids.v,
	}
	if len(cmdWords) == 0 {
		task.Cmd = ""
	}
	if f.memory.set {
		if f.memory.v == 0 {
			return nil, errors.New("--memory must be positive")
		}
		task.MemoryBytes = f.memory.v
	}
	if f.cpus != "" {
		m, err := parseCPUs(f.cpus)
		if err != nil {
			return nil, fmt.Errorf("--cpus: %v", err)
		}
		task.MilliCPUs = m
	}
	if f.pids.set && f.pids.v == 0 {
		return nil, errors.New("--pids must be positive")
	}
	if f.timeout < 0 {
		return nil, errors.New("--timeout must not be negative")
	}
	var err error
	if task.TmpFsSizeMB, err = wholeMiB("--tmpfs-size", f.tmpfsSize); err != nil {
		return nil, err
	}
	if task.FsSizeMB, err = wholeMiB("--fs-size", f.fsSize); err != nil {
		return nil, err
	}
	if f.nofile.set {
		task.MaxOpenFiles = &f.nofile.v
	}
	if f.memlock.set {
		task.MaxLockedMemory = &f.memlock.v
	}
	if f.sigpending.set {
		task.MaxPendingSignals = &f.sigpending.v
	}
	if f.msgqueue.set {
		task.MaxMessageQueue = &f.msgqueue.v
	}
	for _, kv := range f.env {
		k, v, ok := strings.Cut(kv, "=")
		if k == "" {
			return nil, fmt.Errorf("--env %q: want K=V", kv)
		}
		if !ok {
			v = a.getenv(k)
		}
		if task.Env == nil {
			task.Env = map[string]string{}
		}
		task.Env[k] = v
	}
	for _, m := range f.volumes {
		host, ctr, ok := strings.Cut(m, ":")
		if !ok || host == "" || ctr == "" || strings.Contains(ctr, ":") {
			return nil, fmt.Errorf("--volume %q: want HOST:CONTAINER (read-only mounts are not supported)", m)
		}
		task.Mounts = append(task.Mounts, [2]string{host, ctr})
	}
	for _, kv := range f.ext {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--ext %q: want K=V", kv)
		}
		if task.Ext == nil {
			task.Ext = map[string]string{}
		}
		task.Ext[k] = v
	}
	return task, nil
}

// wholeMiB turns a size flag into MiB, refusing a size that is not a
// whole number of MiB.
func wholeMiB(name string, s sizeFlag) (uint64, error) {
	if !s.set {
		return 0, nil
	}
	if s.v == 0 || s.v%(1<<20) != 0 {
		return 0, fmt.Errorf("%s %s: want a positive whole number of MiB, such as 64m", name, formatSize(s.v))
	}
	return s.v >> 20, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// runner runs one call and keeps what -v reports.
type runner struct {
	a    *app
	f    *runFlags
	task *drivers.Task
	log  *logrus.Entry

	steps   []step
	statsMu sync.Mutex
	samples []stats.Stat
}

type step struct {
	name string
	took time.Duration
}

func (r *runner) timed(name string, f func() error) error {
	start := time.Now()
	err := f()
	r.steps = append(r.steps, step{name, time.Since(start)})
	return err
}

func (r *runner) run(ctx context.Context, cfg drivers.Config) int {
	a, f, task := r.a, r.f, r.task
	if f.verbose {
		task.Stats = func(_ context.Context, s stats.Stat) {
			r.statsMu.Lock()
			r.samples = append(r.samples, s)
			r.statsMu.Unlock()
		}
	}
	task.Stdout, task.Stderr = a.stdout, a.stderr
	var in *stdinPipe
	if f.interactive || !a.stdinTTY {
		in = newStdinPipe(a.stdin)
		task.Stdin = in
		defer in.Close()
	}
	return r.call(ctx, cfg, f.driver)
}

// call runs the cookie life cycle and returns the exit code.
func (r *runner) call(ctx context.Context, cfg drivers.Config, driverName string) int {
	a, f, task := r.a, r.f, r.task
	total := time.Now()
	var drv drivers.Driver
	err := r.timed("connect", func() (err error) {
		drv, err = openDriver(ctx, driverName, cfg, r.log)
		return err
	})
	if err != nil {
		return r.fail(ctx, err)
	}
	defer drv.Close()

	cookie, err := drv.CreateCookie(ctx, task)
	if err != nil {
		return r.fail(ctx, err)
	}
	// Close even when ctx has ended: the cookie bounds its own cleanup.
	defer cookie.Close(context.WithoutCancel(ctx))
	if f.verbose {
		a.infof("driver %s, image %s, container %s", driverName, task.ImageRef, task.ID)
	}

	var needPull bool
	if err := r.timed("validate", func() (err error) {
		needPull, err = cookie.ValidateImage(ctx)
		return err
	}); err != nil {
		return r.fail(ctx, err)
	}
	if needPull {
		if f.noPull {
			return r.fail(ctx, fmt.Errorf("image %s is not present and --no-pull is set: %w", task.ImageRef, drivers.ErrImageNotFound))
		}
		p := newProgress(a.stderr, a.stderrTTY, "pulling "+task.ImageRef)
		err := r.timed("pull", func() error { return cookie.PullImage(ctx) })
		p.end()
		if err != nil {
			return r.fail(ctx, fmt.Errorf("pull: %w", err))
		}
		if err := r.timed("validate", func() (err error) {
			needPull, err = cookie.ValidateImage(ctx)
			return err
		}); err != nil {
			return r.fail(ctx, err)
		}
		if needPull {
			return r.fail(ctx, fmt.Errorf("image %s still missing after the pull: %w", task.ImageRef, drivers.ErrImageNotFound))
		}
	}
	if err := r.timed("create", func() error { return cookie.CreateContainer(ctx) }); err != nil {
		return r.fail(ctx, err)
	}

	runCtx := ctx
	if f.timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, f.timeout)
		defer cancel()
	}
	var res drivers.RunResult
	if err := r.timed("run", func() error {
		w, err := cookie.Run(runCtx)
		if err != nil {
			return err
		}
		res = w.Wait(runCtx)
		return nil
	}); err != nil {
		if ctx.Err() == nil && errors.Is(runCtx.Err(), context.DeadlineExceeded) {
			// --timeout ran out while the container was starting.
			a.errorf("run: container %s: timed out after %v: %v", task.ID, f.timeout, err)
			return exitTimeout
		}
		return r.fail(ctx, err)
	}
	closeErr := r.timed("close", func() error { return cookie.Close(context.WithoutCancel(ctx)) })
	r.steps = append(r.steps, step{"total", time.Since(total)})

	code := r.exitCode(ctx, res)
	if f.verbose {
		r.report(res, code)
	}
	if closeErr != nil {
		a.errorf("run: removing container %s: %v", task.ID, closeErr)
	}
	return code
}

// exitCode maps the result of the call to fnrun's exit code, printing why
// the call did not succeed when the code alone does not say it.
func (r *runner) exitCode(ctx context.Context, res drivers.RunResult) int {
	a := r.a
	var exit *drivers.ExitError
	switch {
	case res.Status() == drivers.StatusSuccess:
		return 0
	case res.Status() == drivers.StatusKilled || errors.Is(res.Error(), drivers.ErrOutOfMemory):
		a.errorf("run: container %s: out of memory: %v", r.task.ID, res.Error())
		return exitOOM
	case res.Status() == drivers.StatusTimeout:
		a.errorf("run: container %s: timed out after %v", r.task.ID, r.f.timeout)
		return exitTimeout
	case res.Status() == drivers.StatusCancelled:
		a.errorf("run: container %s: cancelled", r.task.ID)
		return interruptCode(ctx)
	case errors.As(res.Error(), &exit):
		return exit.ExitCode
	}
	a.errorf("run: container %s: %s: %v", r.task.ID, res.Status(), res.Error())
	return exitRunError
}

// fail reports an error of fnrun itself (not of the container).
func (r *runner) fail(ctx context.Context, err error) int {
	if ctx.Err() != nil {
		r.a.errorf("run: interrupted: %v", err)
		return interruptCode(ctx)
	}
	r.a.errorf("run: %v%s", err, hint(r.f.driver, err))
	return exitRunError
}

// interruptCode is 128 + the signal that cancelled ctx: 130 for SIGINT,
// 143 for SIGTERM.
func interruptCode(ctx context.Context) int {
	if errors.Is(context.Cause(ctx), errSIGTERM) {
		return 128 + int(syscall.SIGTERM)
	}
	return 128 + int(syscall.SIGINT)
}

// report prints what -v promises on stderr.
func (r *runner) report(res drivers.RunResult, code int) {
	a := r.a
	status := res.Status()
	if res.Error() != nil {
		a.infof("status %s, exit code %d: %v", status, code, res.Error())
	} else {
		a.infof("status %s, exit code %d", status, code)
	}
	parts := make([]string, 0, len(r.steps))
	for _, s := range r.steps {
		parts = append(parts, s.name+" "+formatDuration(s.took))
	}
	a.infof("timings: %s", strings.Join(parts, ", "))

	r.statsMu.Lock()
	samples := append([]stats.Stat(nil), r.samples...)
	r.statsMu.Unlock()
	if len(samples) == 0 {
		a.infof("stats: no samples (the call ended before the driver's first sample)")
		return
	}
	a.infof("stats: %s", summarizeStats(samples))
}

// summarizeStats sums up resource samples: peaks of gauges and the last
// value of counters.
func summarizeStats(samples []stats.Stat) string {
	peak := map[string]uint64{}
	last := samples[len(samples)-1].Metrics
	for _, s := range samples {
		for k, v := range s.Metrics {
			if v > peak[k] {
				peak[k] = v
			}
		}
	}
	var parts []string
	add := func(format string, args ...any) { parts = append(parts, fmt.Sprintf(format, args...)) }
	add("%d samples over %s", len(samples), formatDuration(samples[len(samples)-1].Timestamp.Sub(samples[0].Timestamp)))
	if v, ok := last[stats.MetricCPUTotal]; ok {
		add("cpu %s (user %s, kernel %s)", formatDuration(time.Duration(v)), formatDuration(time.Duration(last[stats.MetricCPUUser])), formatDuration(time.Duration(last[stats.MetricCPUKernel])))
	}
	if v, ok := peak[stats.MetricMemUsage]; ok {
		s := "memory peak " + formatSize(v)
		if l := last[stats.MetricMemLimit]; l > 0 && l < 1<<60 {
			s += " of " + formatSize(l)
		}
		parts = append(parts, s)
	}
	if v, ok := peak[stats.MetricPids]; ok {
		add("pids peak %d", v)
	}
	if _, ok := last[stats.MetricNetRx]; ok {
		add("net rx %s tx %s", formatSize(last[stats.MetricNetRx]), formatSize(last[stats.MetricNetTx]))
	}
	if _, ok := last[stats.MetricDiskRead]; ok {
		add("disk read %s write %s", formatSize(last[stats.MetricDiskRead]), formatSize(last[stats.MetricDiskWrite]))
	}
	known := map[string]bool{stats.MetricCPUTotal: true, stats.MetricCPUUser: true, stats.MetricCPUKernel: true, stats.MetricMemUsage: true,
		stats.MetricMemLimit: true, stats.MetricPids: true, stats.MetricNetRx: true, stats.MetricNetTx: true, stats.MetricDiskRead: true, stats.MetricDiskWrite: true}
	var other []string
	for k := range last {
		if !known[k] {
			other = append(other, fmt.Sprintf("%s %d", k, last[k]))
		}
	}
	sort.Strings(other)
	parts = append(parts, other...)
	return strings.Join(parts, ", ")
}

// stdinPipe hands fnrun's stdin to the driver through a pipe that fnrun
// can close: when the call ends, the driver's reader sees EOF even if
// stdin itself never ends (an idle pipe, a terminal).
type stdinPipe struct {
	r *io.PipeReader
	w *io.PipeWriter
}

func newStdinPipe(src io.Reader) *stdinPipe {
	pr, pw := io.Pipe()
	go func() {
		// This goroutine may stay blocked in a read of stdin after the
		// call; the process exits then anyway.
		_, err := io.Copy(pw, src)
		pw.CloseWithError(err)
	}()
	return &stdinPipe{r: pr, w: pw}
}

func (p *stdinPipe) Read(b []byte) (int, error) { return p.r.Read(b) }

// Close ends the pipe: readers see EOF.
func (p *stdinPipe) Close() error {
	_ = p.w.Close()
	return p.r.Close()
}
