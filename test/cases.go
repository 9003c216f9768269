package test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/stats"
)

// cases is the suite, in the order it runs.
var cases = []testCase{
	{name: "Success", run: testSuccess},
	{name: "Stdout", run: testStdout},
	{name: "Stderr", run: testStderr},
	{name: "OutputWithoutNewlineAtExit", run: testOutputWithoutNewline},
	{name: "LargeOutput", run: testLargeOutput},
	{name: "Stdin", run: testStdin},
	{name: "Env", needs: drivers.CapRunsCommands, run: testEnv},
	{name: "WorkDir", needs: drivers.CapRunsCommands, run: testWorkDir},
	{name: "QuotedArguments", needs: drivers.CapRunsCommands, run: testQuotedArgs},
	{name: "ExitCode", run: testExitCode},
	{name: "Timeout", run: testTimeout},
	{name: "Cancel", run: testCancel},
	{name: "OutOfMemory", needs: drivers.CapOOMDetection, run: testOOM},
	{name: "SIGKILLIsNotOutOfMemory", run: testSIGKILL},
	{name: "FreezeStopsProgress", needs: drivers.CapFreeze, run: testFreeze},
	{name: "CloseWhileFrozen", needs: drivers.CapFreeze, run: testCloseFrozen},
	{name: "ImagePull", needs: drivers.CapImagePull, run: testImagePull},
	{name: "MissingImage", needs: drivers.CapImagePull, run: testMissingImage},
	{name: "InvalidTask", run: testInvalidTask},
	{name: "ReadOnlyRoot", needs: drivers.CapReadOnlyRoot | drivers.CapRunsCommands, run: testReadOnlyRoot},
	{name: "Limits", needs: drivers.CapResourceLimits | drivers.CapRunsCommands, run: testLimits},
	{name: "UnprivilegedByDefault", needs: drivers.CapUnprivileged | drivers.CapRunsCommands, run: testUnprivileged},
	{name: "Stats", run: testStats},
	{name: "CloseIdempotent", run: testCloseIdempotent},
	{name: "Concurrent", run: testConcurrent},
	{name: "NoNetwork", needs: drivers.CapRunsCommands, run: testNoNetwork},
	{name: "FsSize", needs: drivers.CapRunsCommands, run: testFsSize},
	{name: "DriverCloseEndsCookies", run: testDriverCloseEndsCookies},
	{name: "CloseWithEndedContext", run: testCloseWithEndedContext},
	{name: "CloseWhileWaiting", run: testCloseWhileWaiting},
	{name: "BlockedWriter", run: testBlockedWriter},
	{name: "FailingWriter", run: testFailingWriter},
	{name: "DuplicateID", run: testDuplicateID},
	{name: "ChildOOMThenExitZero", needs: drivers.CapOOMDetection, run: testChildOOM},
	{name: "Syslog", run: testSyslog},
	{name: "SyslogUnavailable", run: testSyslogUnavailable},
	{name: "HolderDiesBeforeRun", run: testHolderDiesBeforeRun},
	{name: "SupervisorDies", needs: drivers.CapRunsCommands, run: testSupervisorDies},
	{name: "NoNetworkPool", needs: drivers.CapRunsCommands, run: testNoNetworkPool},
	{name: "ImageRemovedAfterValidate", needs: drivers.CapImagePull, run: testImageRemovedAfterValidate},
}

func testSuccess(t *testing.T, s *suite) {
	out := s.mustRun(t, testContext(t, time.Minute), s.task(t, "true", Script{}))
	wantSuccess(t, out)
}

func testStdout(t *testing.T, s *suite) {
	out := s.mustRun(t, testContext(t, time.Minute), s.task(t, "echo hello world", Script{Stdout: "hello world\n"}))
	wantSuccess(t, out)
	if out.Stdout != "hello world\n" || out.Stderr != "" {
		t.Fatalf("stdout %q stderr %q, want %q and nothing", out.Stdout, out.Stderr, "hello world\n")
	}
}

func testStderr(t *testing.T, s *suite) {
	out := s.mustRun(t, testContext(t, time.Minute), s.task(t, `sh -c 'echo oops >&2'`, Script{Stderr: "oops\n"}))
	wantSuccess(t, out)
	if out.Stderr != "oops\n" || out.Stdout != "" {
		t.Fatalf("stdout %q stderr %q, want nothing and %q", out.Stdout, out.Stderr, "oops\n")
	}
}

// A process that writes without a trailing newline and exits at once is
// where naive attach-after-start implementations lose output.
func testOutputWithoutNewline(t *testing.T, s *suite) {
	ctx := testContext(t, 2*time.Minute)
	for i := 0; i < 5; i++ {
		want := fmt.Sprintf("abc%d", i)
		out := s.mustRun(t, ctx, s.task(t, "printf "+want, Script{Stdout: want}))
		wantSuccess(t, out)
		if out.Stdout != want {
			t.Fatalf("run %d: stdout %q, want %q", i, out.Stdout, want)
		}
	}
}

func testLargeOutput(t *testing.T, s *suite) {
	const size = 1 << 20
	cmd := fmt.Sprintf(`sh -c 'head -c %d /dev/zero | tr "\000" x'`, size)
	out := s.mustRun(t, testContext(t, time.Minute), s.task(t, cmd, Script{Stdout: strings.Repeat("x", size)}))
	wantSuccess(t, out)
	if len(out.Stdout) != size || strings.Trim(out.Stdout, "x") != "" {
		t.Fatalf("got %d bytes of stdout, want %d x's", len(out.Stdout), size)
	}
}

func testStdin(t *testing.T, s *suite) {
	const in = "ping\npong without newline"
	task := s.task(t, "cat", Script{EchoStdin: true})
	task.Stdin = strings.NewReader(in)
	out := s.mustRun(t, testContext(t, time.Minute), task)
	wantSuccess(t, out)
	if out.Stdout != in {
		t.Fatalf("stdout %q, want stdin echoed %q", out.Stdout, in)
	}
}

func testEnv(t *testing.T, s *suite) {
	task := s.task(t, `sh -c 'echo "$FOO|$BAR"'`, Script{})
	task.Env = map[string]string{"FOO": "a b  c", "BAR": "x=y"}
	out := s.mustRun(t, testContext(t, time.Minute), task)
	wantSuccess(t, out)
	if out.Stdout != "a b  c|x=y\n" {
		t.Fatalf("stdout %q, want the env values", out.Stdout)
	}
}

func testWorkDir(t *testing.T, s *suite) {
	task := s.task(t, "pwd", Script{})
	task.Dir = "/tmp"
	out := s.mustRun(t, testContext(t, time.Minute), task)
	wantSuccess(t, out)
	if out.Stdout != "/tmp\n" {
		t.Fatalf("pwd printed %q, want /tmp", out.Stdout)
	}
}

func testQuotedArgs(t *testing.T, s *suite) {
	task := s.task(t, `sh -c 'printf "%s|" "$@"' _ 'a b' "c \"d\"" e`, Script{})
	out := s.mustRun(t, testContext(t, time.Minute), task)
	wantSuccess(t, out)
	if want := `a b|c "d"|e|`; out.Stdout != want {
		t.Fatalf("stdout %q, want %q: quoted arguments must stay whole", out.Stdout, want)
	}
}

func testExitCode(t *testing.T, s *suite) {
	out := s.mustRun(t, testContext(t, time.Minute), s.task(t, `sh -c 'exit 3'`, Script{ExitCode: 3}))
	if out.Result.Status() != drivers.StatusError {
		t.Fatalf("status %q, want error", out.Result.Status())
	}
	var exit *drivers.ExitError
	if !errors.As(out.Result.Error(), &exit) || exit.ExitCode != 3 {
		t.Fatalf("error %v, want *ExitError with code 3", out.Result.Error())
	}
}

func testTimeout(t *testing.T, s *suite) {
	// The deadline is the run's: a create slowed down by a loaded host must
	// not end the call before it has started.
	cookie := prepared(t, testContext(t, time.Minute), s.h, s.task(t, "sleep 120", Script{Hang: true}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	began := time.Now()
	wait, err := cookie.Run(ctx)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	res := wait.Wait(ctx)
	if res.Status() != drivers.StatusTimeout {
		t.Fatalf("status %q (%v), want timeout", res.Status(), res.Error())
	}
	if !errors.Is(res.Error(), context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", res.Error())
	}
	if took := time.Since(began); took > 30*time.Second {
		t.Errorf("timed-out run took %v to end", took)
	}
	if err := cookie.Close(ctx); err != nil {
		t.Fatalf("Close with the ended context: %v", err)
	}
}

func testCancel(t *testing.T, s *suite) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	task := s.task(t, "sleep 120", Script{Hang: true})
	cookie, wait := start(t, ctx, s.h, task)
	time.AfterFunc(500*time.Millisecond, cancel)
	res := wait.Wait(ctx)
	if res.Status() != drivers.StatusCancelled {
		t.Fatalf("status %q (%v), want cancelled", res.Status(), res.Error())
	}
	if !errors.Is(res.Error(), context.Canceled) {
		t.Errorf("error %v does not wrap context.Canceled", res.Error())
	}
	if err := cookie.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// oomCommand grows a shell variable until the kernel's OOM killer ends it.
const oomCommand = `sh -c 'a=x; while true; do a="$a$a"; done'`

func testOOM(t *testing.T, s *suite) {
	task := s.task(t, oomCommand, Script{OOM: true})
	task.MemoryBytes = 32 << 20
	out := s.mustRun(t, testContext(t, 2*time.Minute), task)
	if out.Result.Status() != drivers.StatusKilled {
		t.Fatalf("status %q (%v), want killed", out.Result.Status(), out.Result.Error())
	}
	if !errors.Is(out.Result.Error(), drivers.ErrOutOfMemory) {
		t.Fatalf("error %v does not wrap ErrOutOfMemory", out.Result.Error())
	}
}

// A process killed by SIGKILL exits 137 like an OOM kill; only the
// runtime's OOM report may turn that into "killed".
func testSIGKILL(t *testing.T, s *suite) {
	task := s.task(t, `sh -c 'kill -9 $$'`, Script{ExitCode: 137})
	task.MemoryBytes = 64 << 20
	out := s.mustRun(t, testContext(t, time.Minute), task)
	if out.Result.Status() != drivers.StatusError {
		t.Fatalf("status %q (%v), want error", out.Result.Status(), out.Result.Error())
	}
	var exit *drivers.ExitError
	if !errors.As(out.Result.Error(), &exit) || exit.ExitCode != 137 {
		t.Fatalf("error %v, want *ExitError with code 137", out.Result.Error())
	}
	if errors.Is(out.Result.Error(), drivers.ErrOutOfMemory) {
		t.Fatal("a plain SIGKILL was reported as out of memory")
	}
}

func testFreeze(t *testing.T, s *suite) {
	ctx := testContext(t, 2*time.Minute)
	task := s.task(t, `sh -c 'sleep 5; echo done'`, Script{Delay: 5 * time.Second, Stdout: "done\n"})
	var stdout SyncBuffer
	task.Stdout = &stdout
	cookie, wait := start(t, ctx, s.h, task)
	ran := time.Now()
	if err := cookie.Freeze(ctx); err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	done := make(chan drivers.RunResult, 1)
	go func() { done <- wait.Wait(ctx) }()
	// Unfrozen, it would have finished by then.
	select {
	case res := <-done:
		t.Fatalf("a frozen container finished (%s, stdout %q)", res.Status(), stdout.String())
	case <-time.After(time.Until(ran.Add(6 * time.Second))):
	}
	if got := stdout.String(); got != "" {
		t.Fatalf("a frozen container wrote %q", got)
	}
	if err := cookie.Unfreeze(ctx); err != nil {
		t.Fatalf("Unfreeze: %v", err)
	}
	select {
	case res := <-done:
		if res.Status() != drivers.StatusSuccess {
			t.Fatalf("status %q (%v) after unfreeze, want success", res.Status(), res.Error())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("container did not finish after Unfreeze")
	}
	if got := stdout.String(); got != "done\n" {
		t.Fatalf("stdout %q, want done", got)
	}
}

func testCloseFrozen(t *testing.T, s *suite) {
	ctx := testContext(t, time.Minute)
	cookie, err := s.h.Driver.CreateCookie(ctx, s.task(t, "sleep 120", Script{Hang: true}))
	if err != nil {
		t.Fatal(err)
	}
	if err := Prepare(ctx, cookie); err != nil {
		t.Fatal(err)
	}
	if _, err := cookie.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cookie.Freeze(ctx); err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	if err := cookie.Close(ctx); err != nil {
		t.Fatalf("Close of a frozen container: %v", err)
	}
}

func testImagePull(t *testing.T, s *suite) {
	ctx := testContext(t, 2*time.Minute)
	if s.h.PullImage == "" || s.h.RemoveImage == nil {
		t.Fatal("harness sets no PullImage or RemoveImage")
	}
	if err := s.h.RemoveImage(ctx, s.h.PullImage); err != nil {
		t.Fatalf("RemoveImage: %v", err)
	}
	task := s.task(t, "echo pulled", Script{Stdout: "pulled\n"})
	task.ImageRef = s.h.PullImage
	cookie, err := s.h.Driver.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	defer cookie.Close(context.Background())
	needsPull, err := cookie.ValidateImage(ctx)
	if err != nil || !needsPull {
		t.Fatalf("ValidateImage of a removed image = %v, %v; want true, nil", needsPull, err)
	}
	if err := cookie.PullImage(ctx); err != nil {
		t.Fatalf("PullImage: %v", err)
	}
	if needsPull, err = cookie.ValidateImage(ctx); err != nil || needsPull {
		t.Fatalf("ValidateImage after pull = %v, %v; want false, nil", needsPull, err)
	}
	if err := cookie.CreateContainer(ctx); err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	var stdout SyncBuffer
	task.Stdout = &stdout
	wait, err := cookie.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res := wait.Wait(ctx); res.Status() != drivers.StatusSuccess {
		t.Fatalf("status %q (%v)", res.Status(), res.Error())
	}
	if stdout.String() != "pulled\n" {
		t.Fatalf("stdout %q", stdout.String())
	}
}

func testMissingImage(t *testing.T, s *suite) {
	ctx := testContext(t, time.Minute)
	task := s.task(t, "true", Script{ImageMissing: true})
	task.ImageRef = s.h.MissingImage
	cookie, err := s.h.Driver.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	defer cookie.Close(context.Background())
	needsPull, err := cookie.ValidateImage(ctx)
	if err != nil || !needsPull {
		t.Fatalf("ValidateImage of a missing image = %v, %v; want true, nil", needsPull, err)
	}
	err = cookie.PullImage(ctx)
	if !errors.Is(err, drivers.ErrImageNotFound) {
		t.Fatalf("PullImage of a missing image: %v; want ErrImageNotFound", err)
	}
	if err := cookie.CreateContainer(ctx); err == nil {
		t.Fatal("CreateContainer of a missing image succeeded")
	}
}

func testInvalidTask(t *testing.T, s *suite) {
	huge := uint64(1 << 63)
	for _, tc := range []struct {
		name   string
		modify func(*drivers.Task)
	}{
		{"malformed image", func(task *drivers.Task) { task.ImageRef = "UPPER/Case::tag" }},
		{"empty image", func(task *drivers.Task) { task.ImageRef = "" }},
		{"bad id", func(task *drivers.Task) { task.ID = "no spaces/allowed" }},
		{"env name with =", func(task *drivers.Task) { task.Env = map[string]string{"A=B": "c"} }},
		{"env with NUL", func(task *drivers.Task) { task.Env = map[string]string{"A": "b\x00c"} }},
		{"unbalanced quote", func(task *drivers.Task) { task.Cmd = `echo "unterminated` }},
		{"memory below minimum", func(task *drivers.Task) { task.MemoryBytes = 1 }},
		{"absurd open files", func(task *drivers.Task) { task.MaxOpenFiles = &huge }},
		{"relative volume", func(task *drivers.Task) { task.Mounts = [][2]string{{"rel/path", "/data"}} }},
		{"missing volume source", func(task *drivers.Task) { task.Mounts = [][2]string{{"/does/not/exist/fnrun", "/data"}} }},
		{"relative work dir", func(task *drivers.Task) { task.Dir = "tmp" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t, time.Minute)
			task := s.task(t, "true", Script{})
			tc.modify(task)
			_, err := Lifecycle(ctx, s.h.Driver, task)
			if !errors.Is(err, drivers.ErrInvalidTask) {
				t.Fatalf("got %v, want ErrInvalidTask", err)
			}
		})
	}
	s.checkNoLeftovers(t, s.h)
}

func testReadOnlyRoot(t *testing.T, s *suite) {
	h := s.newHarness(t, drivers.Config{EnableReadOnlyRootFs: true})
	defer h.Driver.Close()
	task := s.task(t, `sh -c 'touch /x 2>/dev/null && echo rw || echo ro; touch /tmp/y && echo tmp-ok'`, Script{})
	task.ImageRef = h.Image
	out, err := Lifecycle(testContext(t, time.Minute), h.Driver, task)
	if err != nil {
		t.Fatal(err)
	}
	wantSuccess(t, out)
	if out.Stdout != "ro\ntmp-ok\n" {
		t.Fatalf("stdout %q, want a read-only root and a writable /tmp", out.Stdout)
	}
	s.checkNoLeftovers(t, h)
}

// limitsScript prints the limits as the container sees them, from the v2
// files when /sys/fs/cgroup is a cgroup2 mount (it has cgroup.controllers)
// and from the v1 hierarchies otherwise, so the same checks hold on either
// host. swap is what the container may swap beyond its memory (v2
// memory.swap.max, v1 memory+swap less memory); it is printed only where
// the kernel accounts swap. freezer is the state of the container's
// freezer, which Freeze needs: v2 cgroup.freeze, v1 freezer.state. cgroup
// (v2 only) is /proc/self/cgroup, "0::/" in a cgroup namespace of its own.
const limitsScript = `sh -c '
c=/sys/fs/cgroup
if [ -f $c/cgroup.controllers ]; then
echo "hierarchy=v2"
echo "cgroup=$(cat /proc/self/cgroup)"
echo "mem=$(cat $c/memory.max)"
[ -f $c/memory.swap.max ] && echo "swap=$(cat $c/memory.swap.max)"
echo "pids=$(cat $c/pids.max)"
echo "cpu=$(cat $c/cpu.max)"
echo "freezer=$(cat $c/cgroup.freeze)"
else
echo "hierarchy=v1"
mem=$(cat $c/memory/memory.limit_in_bytes)
echo "mem=$mem"
[ -f $c/memory/memory.memsw.limit_in_bytes ] && echo "swap=$(( $(cat $c/memory/memory.memsw.limit_in_bytes) - mem ))"
echo "pids=$(cat $c/pids/pids.max)"
echo "cpu=$(cat $c/cpu/cpu.cfs_quota_us) $(cat $c/cpu/cpu.cfs_period_us)"
echo "freezer=$(cat $c/freezer/freezer.state)"
fi
echo "nofile=$(ulimit -n)"
echo "tmp=$(df -k /tmp | tail -n 1 | awk "{print \$2}")"
'`

// thawed is how each hierarchy's freezer file reads when not frozen.
var thawed = map[string]string{"v1": "THAWED", "v2": "0"}

// The limits testLimits sets.
const (
	limitMemory  = 64 << 20
	limitPIDs    = 50
	limitMilli   = 500
	limitNoFile  = 256
	limitTmpFsMB = 16
)

func testLimits(t *testing.T, s *suite) {
	task := s.task(t, limitsScript, Script{})
	task.MemoryBytes = limitMemory
	task.MaxPIDs = limitPIDs
	task.MilliCPUs = limitMilli
	nofile := uint64(limitNoFile)
	task.MaxOpenFiles = &nofile
	task.TmpFsSizeMB = limitTmpFsMB
	out := s.mustRun(t, testContext(t, time.Minute), task)
	wantSuccess(t, out)
	got := parseLimits(out.Stdout)
	t.Logf("limits read from the cgroup %s files", got["hierarchy"])
	for _, p := range cgroupLimitProblems(got) {
		t.Error(p)
	}
	if got["nofile"] != strconv.Itoa(limitNoFile) {
		t.Errorf("open files %q, want %d", got["nofile"], limitNoFile)
	}
	if got["tmp"] != strconv.Itoa(limitTmpFsMB*1024) {
		t.Errorf("/tmp size %q KiB, want %d", got["tmp"], limitTmpFsMB*1024)
	}
	if t.Failed() {
		t.Logf("container printed:\n%s%s", out.Stdout, out.Stderr)
	}
}

// cgroupLimitProblems checks what limitsScript read from the container's
// cgroup, on either hierarchy, against the limits testLimits sets.
func cgroupLimitProblems(got map[string]string) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	h := got["hierarchy"]
	if h == "v2" && got["cgroup"] != "0::/" {
		bad("/proc/self/cgroup %q, want 0::/ (a cgroup namespace of its own)", got["cgroup"])
	}
	if got["mem"] != strconv.Itoa(limitMemory) {
		bad("memory limit %q, want %d", got["mem"], limitMemory)
	}
	if swap, ok := got["swap"]; ok && swap != "0" {
		bad("swap beyond memory %q, want 0", swap)
	}
	if got["pids"] != strconv.Itoa(limitPIDs) {
		bad("pids limit %q, want %d", got["pids"], limitPIDs)
	}
	if f := strings.Fields(got["cpu"]); len(f) != 2 || !ratioIs(f[0], f[1], limitMilli/1000.0) {
		bad("cpu quota/period %q, want %d milli-CPUs", got["cpu"], limitMilli)
	}
	if want := thawed[h]; want == "" || got["freezer"] != want {
		bad("freezer %q on cgroup %q, want a thawed freezer (%v)", got["freezer"], h, thawed)
	}
	return out
}

// parseLimits reads limitsScript's key=value lines.
func parseLimits(stdout string) map[string]string {
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			got[k] = strings.TrimSpace(v)
		}
	}
	return got
}

func ratioIs(quota, period string, want float64) bool {
	q, err1 := strconv.ParseFloat(quota, 64)
	p, err2 := strconv.ParseFloat(period, 64)
	return err1 == nil && err2 == nil && p > 0 && q/p == want
}

func testUnprivileged(t *testing.T, s *suite) {
	out := s.mustRun(t, testContext(t, time.Minute), s.task(t,
		`sh -c 'id -u; grep -E "^(CapEff|NoNewPrivs):" /proc/self/status'`, Script{}))
	wantSuccess(t, out)
	lines := strings.Split(strings.TrimSpace(out.Stdout), "\n")
	if len(lines) != 3 {
		t.Fatalf("unexpected output %q", out.Stdout)
	}
	if lines[0] != "1000" {
		t.Errorf("uid %s, want 1000", lines[0])
	}
	if f := strings.Fields(lines[1]); len(f) != 2 || strings.Trim(f[1], "0") != "" {
		t.Errorf("effective capabilities %q, want none", lines[1])
	}
	if f := strings.Fields(lines[2]); len(f) != 2 || f[1] != "1" {
		t.Errorf("%q, want NoNewPrivs 1", lines[2])
	}
}

// testStats: the samples taken while the task runs carry its CPU time,
// memory use and limit, process count and network figures. The last one may
// be taken after the process has exited (no pids, no network namespace any
// more), so the case looks for one complete sample, not at the last.
func testStats(t *testing.T, s *suite) {
	var rec statRecorder
	task := s.task(t, `sh -c 'i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; sleep 3'`, Script{Delay: 3 * time.Second})
	task.MemoryBytes = 64 << 20
	task.Stats = rec.write
	out := s.mustRun(t, testContext(t, time.Minute), task)
	wantSuccess(t, out)
	samples := rec.all()
	if len(samples) == 0 {
		t.Fatal("no stat written for a 3s run")
	}
	for _, st := range samples {
		m := st.Metrics
		_, net := m[stats.MetricNetRx]
		if m[stats.MetricCPUTotal] > 0 && m[stats.MetricMemUsage] > 0 && m[stats.MetricMemLimit] == 64<<20 && m[stats.MetricPids] > 0 && net {
			return
		}
	}
	t.Errorf("none of %d samples has CPU time, memory use, the 64 MiB limit, pids and network figures; last %v", len(samples), samples[len(samples)-1].Metrics)
}

func testCloseIdempotent(t *testing.T, s *suite) {
	ctx := testContext(t, time.Minute)
	// Closing a cookie that never created anything.
	c1, err := s.h.Driver.CreateCookie(ctx, s.task(t, "true", Script{}))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := c1.Close(ctx); err != nil {
			t.Fatalf("close %d of an unused cookie: %v", i, err)
		}
	}
	// Closing a created, never-run container, twice.
	c2, err := s.h.Driver.CreateCookie(ctx, s.task(t, "true", Script{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := Prepare(ctx, c2); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := c2.Close(ctx); err != nil {
			t.Fatalf("close %d of a created cookie: %v", i, err)
		}
	}
	s.checkNoLeftovers(t, s.h)
}

func testConcurrent(t *testing.T, s *suite) {
	ctx := testContext(t, 3*time.Minute)
	const n = 6
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			want := fmt.Sprintf("call %d\n", i)
			out, err := Lifecycle(ctx, s.h.Driver, s.task(t, fmt.Sprintf("echo call %d", i), Script{Stdout: want}))
			switch {
			case err != nil:
				errs <- fmt.Errorf("call %d: %w", i, err)
			case out.Result.Status() != drivers.StatusSuccess:
				errs <- fmt.Errorf("call %d: status %s: %v", i, out.Result.Status(), out.Result.Error())
			case out.Stdout != want:
				errs <- fmt.Errorf("call %d: stdout %q, want %q", i, out.Stdout, want)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func testNoNetwork(t *testing.T, s *suite) {
	task := s.task(t, "ls /sys/class/net", Script{})
	task.NoNetwork = true
	out := s.mustRun(t, testContext(t, time.Minute), task)
	wantSuccess(t, out)
	if got := strings.Fields(out.Stdout); len(got) != 1 || got[0] != "lo" {
		t.Fatalf("interfaces %q, want only lo", got)
	}
}

// FsSize either holds inside the container or, where the storage cannot
// limit a root filesystem, is refused up front as an invalid task.
func testFsSize(t *testing.T, s *suite) {
	task := s.task(t, `sh -c 'df -k / | tail -n 1 | awk "{print \$2}"'`, Script{})
	task.FsSizeMB = 64
	out, err := Lifecycle(testContext(t, time.Minute), s.h.Driver, task)
	if err != nil {
		if !errors.Is(err, drivers.ErrInvalidTask) {
			t.Fatalf("FsSize refused with %v, want ErrInvalidTask", err)
		}
		t.Logf("FsSize unsupported here: %v", err)
		return
	}
	wantSuccess(t, out)
	kb, err := strconv.Atoi(strings.TrimSpace(out.Stdout))
	if err != nil || kb > 64*1024 {
		t.Fatalf("root filesystem size %q KiB, want at most %d", out.Stdout, 64*1024)
	}
}
