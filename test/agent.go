package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/pool"
)

// The cases of this file call the drivers the way an agent really does:
// with contexts that have already ended, writers that stop reading, ids
// used twice, Close racing Wait.

// prepared creates a cookie for task on h's driver and prepares it up to
// its container; the test's cleanup closes it.
func prepared(t *testing.T, ctx context.Context, h *Harness, task *drivers.Task) drivers.Cookie {
	t.Helper()
	cookie, err := h.Driver.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cookie.Close(context.Background()) })
	if err := Prepare(ctx, cookie); err != nil {
		t.Fatal(err)
	}
	return cookie
}

// start creates, prepares and runs a task on h's driver.
func start(t *testing.T, ctx context.Context, h *Harness, task *drivers.Task) (drivers.Cookie, drivers.WaitResult) {
	t.Helper()
	cookie := prepared(t, ctx, h, task)
	wait, err := cookie.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return cookie, wait
}

// checkIdle checks that nothing is leased from the driver's pool and no
// image is busy in its cleaner, when it has them.
func checkIdle(t *testing.T, drv drivers.Driver) {
	t.Helper()
	if r, ok := drv.(pool.Reporter); ok {
		if st, ok := r.PoolStats(); ok && st.Leased != 0 {
			t.Errorf("%d pool holders still leased", st.Leased)
		}
	}
	if p, ok := drv.(images.Provider); ok {
		if cl, ok := p.ImageCleaner(); ok {
			snap := cl.Snapshot()
			for _, img := range snap.Images {
				if img.Uses != 0 {
					t.Errorf("image %v still busy (%d uses)", img.References, img.Uses)
				}
			}
			if len(snap.Pending) != 0 {
				t.Errorf("references still in use: %v", snap.Pending)
			}
		}
	}
}

// An agent closes the cookie with the call's context, which has often
// ended: Close still removes everything, whatever the container's state.
func testCloseWithEndedContext(t *testing.T, s *suite) {
	h := s.newHarness(t, drivers.Config{ImageCleanMaxSize: 1 << 50})
	defer h.Driver.Close()
	for _, state := range []string{"created", "running", "frozen", "exited"} {
		t.Run(state, func(t *testing.T) {
			if state == "frozen" && !s.caps.Has(drivers.CapFreeze) {
				t.Skip("driver lacks capability freeze")
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			task := s.task(t, "sleep 120", Script{Hang: true})
			if state == "exited" {
				task = s.task(t, "true", Script{})
			}
			task.ImageRef = h.Image
			cookie := prepared(t, ctx, h, task)
			if state != "created" {
				wait, err := cookie.Run(ctx)
				if err != nil {
					t.Fatal(err)
				}
				switch state {
				case "exited":
					if res := wait.Wait(ctx); res.Status() != drivers.StatusSuccess {
						t.Fatalf("status %s: %v", res.Status(), res.Error())
					}
				case "frozen":
					if err := cookie.Freeze(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
			cancel()
			if err := cookie.Close(ctx); err != nil {
				t.Fatalf("Close with an ended context: %v", err)
			}
		})
	}
	s.checkNoLeftovers(t, h)
	checkIdle(t, h.Driver)

	// The same with the suite's driver, which may run a pre-fork pool.
	ctx, cancel := context.WithCancel(context.Background())
	cookie, _ := start(t, ctx, s.h, s.task(t, "sleep 120", Script{Hang: true}))
	cancel()
	if err := cookie.Close(ctx); err != nil {
		t.Fatalf("Close with an ended context: %v", err)
	}
	s.checkNoLeftovers(t, s.h)
	checkIdle(t, s.h.Driver)
}

// Driver.Close ends and removes the containers of every cookie still open,
// before any of them is closed.
func testDriverCloseEndsCookies(t *testing.T, s *suite) {
	h := s.newHarness(t, drivers.Config{})
	ctx := testContext(t, time.Minute)
	var cookies []drivers.Cookie
	var running drivers.WaitResult
	for _, state := range []string{"created", "running", "exited"} {
		task := s.task(t, "sleep 120", Script{Hang: true})
		if state == "exited" {
			task = s.task(t, "true", Script{})
		}
		task.ImageRef = h.Image
		cookie := prepared(t, ctx, h, task)
		cookies = append(cookies, cookie)
		if state == "created" {
			continue
		}
		wait, err := cookie.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if state == "exited" {
			wait.Wait(ctx)
		} else {
			running = wait
		}
	}
	start := time.Now()
	if err := h.Driver.Close(); err != nil {
		t.Fatalf("driver Close: %v", err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("driver Close took %v with cookies open", took)
	}
	if res := running.Wait(ctx); res.Status() == drivers.StatusSuccess {
		t.Fatal("a container ended by driver Close reported success")
	}
	s.checkNoLeftovers(t, h)
	for _, c := range cookies {
		if err := c.Close(ctx); err != nil {
			t.Errorf("cookie Close after driver Close: %v", err)
		}
	}
}

// blockingWriter accepts its first write, then blocks every later one
// until release is closed.
type blockingWriter struct {
	mu      sync.Mutex
	writes  int
	release chan struct{}
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.writes++
	first := w.writes == 1
	w.mu.Unlock()
	if !first {
		<-w.release
	}
	return len(p), nil
}

// A consumer that stops reading holds up neither Wait nor Close: the call
// ends at its deadline, and the container is removed.
func testBlockedWriter(t *testing.T, s *suite) {
	w := &blockingWriter{release: make(chan struct{})}
	defer close(w.release) // lets the delivering goroutine end
	task := s.task(t, `sh -c 'echo first; sleep 0.2; head -c 4000000 /dev/zero >&2; sleep 120'`,
		Script{Stdout: "first\n", Stderr: strings.Repeat("x", 4000000)})
	task.Stdout, task.Stderr = w, w
	// The deadline is the run's, so that a slow create cannot use it up.
	cookie := prepared(t, testContext(t, time.Minute), s.h, task)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	began := time.Now()
	wait, err := cookie.Run(ctx)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	res := wait.Wait(ctx)
	if took := time.Since(began); took > 15*time.Second {
		t.Errorf("Wait returned %v after the start, deadline 3s", took)
	}
	if res.Status() == drivers.StatusSuccess {
		t.Fatal("a run whose output could not be delivered reported success")
	}
	began = time.Now()
	if err := cookie.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("Close took %v", took)
	}
	s.checkNoLeftovers(t, s.h)
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

// Output a writer refused is an error, never a silent success.
func testFailingWriter(t *testing.T, s *suite) {
	task := s.task(t, "echo hello", Script{Stdout: "hello\n"})
	task.Stdout = failingWriter{}
	ctx := testContext(t, time.Minute)
	_, wait := start(t, ctx, s.h, task)
	res := wait.Wait(ctx)
	if res.Status() == drivers.StatusSuccess || !errors.Is(res.Error(), drivers.ErrOutputLost) {
		t.Fatalf("status %s (%v), want an error wrapping ErrOutputLost", res.Status(), res.Error())
	}
}

// A second cookie with the id of an open one fails to create, and closing
// it leaves the first one's container, files and lease alone.
func testDuplicateID(t *testing.T, s *suite) {
	ctx := testContext(t, time.Minute)
	first := s.task(t, `sh -c 'cat /etc/hosts; sleep 3; echo ---; cat /etc/hosts'`, Script{Delay: 3 * time.Second, Stdout: "same\n---\nsame\n"})
	var out SyncBuffer
	first.Stdout = &out
	_, wait := start(t, ctx, s.h, first)

	for _, h := range []*Harness{s.h, s.newHarness(t, drivers.Config{})} {
		second := &drivers.Task{ID: first.ID, ImageRef: h.Image, Cmd: "true"}
		cookie, err := h.Driver.CreateCookie(ctx, second)
		if err != nil {
			t.Fatal(err)
		}
		err = Prepare(ctx, cookie)
		if !errors.Is(err, drivers.ErrAlreadyExists) {
			t.Errorf("create of a taken id: %v, want ErrAlreadyExists", err)
		}
		if err := cookie.Close(ctx); err != nil {
			t.Fatalf("Close of the second cookie: %v", err)
		}
		if h != s.h {
			_ = h.Driver.Close()
		}
	}
	res := wait.Wait(ctx)
	if res.Status() != drivers.StatusSuccess {
		t.Fatalf("first cookie: status %s (%v) after the second closed", res.Status(), res.Error())
	}
	before, after, ok := strings.Cut(out.String(), "---\n")
	if !ok || before != after || before == "" {
		t.Fatalf("the first container's /etc/hosts changed under it:\n%s", out.String())
	}
}

// Only the runtime's OOM report together with a non-zero exit is
// "killed": a command whose child the OOM killer ended, and that exits 0,
// succeeded.
func testChildOOM(t *testing.T, s *suite) {
	task := s.task(t, `sh -c 'sh -c "a=x; while true; do a=\$a\$a; done"; echo survived'`, Script{ChildOOM: true, Stdout: "survived\n"})
	task.MemoryBytes = 32 << 20
	out := s.mustRun(t, testContext(t, 2*time.Minute), task)
	wantSuccess(t, out)
	if out.Stdout != "survived\n" {
		t.Fatalf("stdout %q", out.Stdout)
	}
}

// An image removed between ValidateImage and CreateContainer (the cleaner
// picked it, or a user) is pulled again by the cookie that needs it.
func testImageRemovedAfterValidate(t *testing.T, s *suite) {
	ctx := testContext(t, 2*time.Minute)
	task := s.task(t, "echo here", Script{Stdout: "here\n"})
	task.ImageRef = s.h.PullImage
	var stdout SyncBuffer
	task.Stdout = &stdout
	cookie, err := s.h.Driver.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	defer cookie.Close(context.Background())
	needsPull, err := cookie.ValidateImage(ctx)
	if err == nil && needsPull {
		if err = cookie.PullImage(ctx); err == nil {
			needsPull, err = cookie.ValidateImage(ctx)
		}
	}
	if err != nil || needsPull {
		t.Fatalf("ValidateImage = %v, %v", needsPull, err)
	}
	if err := s.h.RemoveImage(ctx, s.h.PullImage); err != nil {
		t.Fatal(err)
	}
	if err := cookie.CreateContainer(ctx); err != nil {
		t.Fatalf("CreateContainer after the image was removed: %v", err)
	}
	wait, err := cookie.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res := wait.Wait(ctx); res.Status() != drivers.StatusSuccess || stdout.String() != "here\n" {
		t.Fatalf("status %s (%v), stdout %q", res.Status(), res.Error(), stdout.String())
	}
}

// Close while another goroutine waits: Wait reports the end, Close
// succeeds, nothing is left.
func testCloseWhileWaiting(t *testing.T, s *suite) {
	ctx := testContext(t, time.Minute)
	cookie, wait := start(t, ctx, s.h, s.task(t, "sleep 120", Script{Hang: true}))
	done := make(chan drivers.RunResult, 1)
	go func() { done <- wait.Wait(ctx) }()
	if err := cookie.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case res := <-done:
		if res.Status() == drivers.StatusSuccess {
			t.Fatal("a run ended by Close reported success")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not return after Close")
	}
	s.checkNoLeftovers(t, s.h)
}

// The runtime's supervisor of a running container (its shim) dies: Wait
// ends without success, and once Close has returned the container's main
// process has ended too, whatever the daemon's own clean-up after the
// supervisor still has to do.
func testSupervisorDies(t *testing.T, s *suite) {
	if s.h.MainPID == nil {
		t.Skip("the runtime runs no process")
	}
	ctx := testContext(t, time.Minute)
	task := s.task(t, "sleep 120", Script{Hang: true})
	task.NoNetwork = true // the container's own supervisor, not a pool holder's
	cookie, wait := start(t, ctx, s.h, task)
	pid, err := s.h.MainPID(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	supervisor, err := parentOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(supervisor, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the supervisor %d: %v", supervisor, err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if res := wait.Wait(waitCtx); waitCtx.Err() != nil || res.Status() == drivers.StatusSuccess {
		t.Fatalf("after its supervisor died: %s, %v (wait: %v)", res.Status(), res.Error(), waitCtx.Err())
	}
	if err := cookie.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if running(pid) {
		t.Fatalf("the container's main process %d still runs after Close", pid)
	}
	s.checkNoLeftovers(t, s.h)
}

// running reports whether process pid exists and has not ended (a zombie
// has ended).
func running(pid int) bool {
	fields, err := procStat(pid)
	return err == nil && fields[0] != "Z"
}

// parentOf is the pid of process pid's parent.
func parentOf(pid int) (int, error) {
	fields, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(fields[1])
}

// procStat is /proc/PID/stat from the state on (the fields after the
// command's name, which may hold spaces).
func procStat(pid int) ([]string, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(fields) < 2 {
		return nil, fmt.Errorf("/proc/%d/stat: %q", pid, stat)
	}
	return fields, nil
}

// A syslog endpoint that cannot be reached fails Run with a typed error
// before the container starts, and Close leaves nothing.
func testSyslogUnavailable(t *testing.T, s *suite) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now: connections are refused
	ctx := testContext(t, time.Minute)
	task := s.task(t, "echo hi", Script{Stdout: "hi\n"})
	task.Logging = drivers.LoggerConfig{URL: "tcp://" + addr}
	cookie := prepared(t, ctx, s.h, task)
	if _, err := cookie.Run(ctx); !errors.Is(err, drivers.ErrSyslogUnavailable) {
		t.Errorf("Run with a refused syslog endpoint: %v, want ErrSyslogUnavailable", err)
	}
	if err := cookie.Close(ctx); err != nil {
		t.Fatal(err)
	}
	s.checkNoLeftovers(t, s.h)
}

// A task's output reaches its syslog endpoint as Docker's syslog log
// driver sends it for Fn: one RFC 5424 message per line (the last one
// without its newline too), facility user, severity info for stdout and
// err for stderr, the task's tags as the APP-NAME; and the task's own
// writers still get everything.
func testSyslog(t *testing.T, s *suite) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	received := make(chan string, 16)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				close(received)
				return
			}
			received <- string(buf[:n])
		}
	}()
	ctx := testContext(t, time.Minute)
	task := s.task(t, `sh -c 'echo out; echo err >&2; printf tail'`, Script{Stdout: "out\ntail", Stderr: "err\n"})
	task.Logging = drivers.LoggerConfig{URL: "udp://" + pc.LocalAddr().String(), Tags: []drivers.LoggerTag{{Name: "fn", Value: "app"}}}
	out := s.mustRun(t, ctx, task)
	wantSuccess(t, out)
	if out.Stdout != "out\ntail" || out.Stderr != "err\n" {
		t.Errorf("task writers got %q, %q", out.Stdout, out.Stderr)
	}
	const user, info, errSeverity = 1, 6, 3
	want := map[string]syslogRecord{
		"out":  {priority: user*8 + info, appName: "fn=app"},
		"err":  {priority: user*8 + errSeverity, appName: "fn=app"},
		"tail": {priority: user*8 + info, appName: "fn=app"},
	}
	got := map[string]syslogRecord{}
	timeout := time.After(10 * time.Second)
	for len(got) < len(want) {
		select {
		case m := <-received:
			text, r, ok := parseSyslog(m)
			if !ok {
				t.Fatalf("not an RFC 5424 message: %q", m)
			}
			got[text] = r
		case <-timeout:
			t.Fatalf("syslog messages %v, want %v", got, want)
		}
	}
	for text, w := range want {
		if got[text] != w {
			t.Errorf("message %q: %+v, want %+v", text, got[text], w)
		}
	}
}

type syslogRecord struct {
	priority int
	appName  string
}

// syslogMessage matches RFC 5424 as Docker (PROCID and MSGID its own)
// and the life cycle's sink (both "-") write it, without structured data.
var syslogMessage = regexp.MustCompile(`^<(\d+)>1 \S+ \S+ (\S+) \S+ \S+ - (.*?)\n?$`)

func parseSyslog(m string) (string, syslogRecord, bool) {
	sub := syslogMessage.FindStringSubmatch(m)
	if sub == nil {
		return "", syslogRecord{}, false
	}
	p, _ := strconv.Atoi(sub[1])
	return sub[3], syslogRecord{priority: p, appName: sub[2]}, true
}

// A pool holder that dies between the create of a container joining it
// and the container's start costs the call nothing: the container is made
// again with a network of its own, the call succeeds, and the dead
// holder's lease goes back.
func testHolderDiesBeforeRun(t *testing.T, s *suite) {
	h := s.newHarness(t, drivers.Config{PreForkPoolSize: 1, PreForkImage: s.h.Image})
	pooled, _ := h.Driver.(interface{ Pool() *pool.Pool })
	lister, _ := h.Driver.(drivers.ContainerLister)
	if pooled == nil || pooled.Pool() == nil || lister == nil {
		t.Skip("the driver has no pre-fork pool it lists")
	}
	p := pooled.Pool()
	ctx := testContext(t, 2*time.Minute)
	if err := p.Ready(ctx); err != nil {
		t.Fatalf("holders not ready: %v (%+v)", err, p.Stats())
	}
	task := s.task(t, "true", Script{})
	task.ImageRef = h.Image
	cookie := prepared(t, ctx, h, task)
	if st := p.Stats(); st.Leased != 1 {
		t.Fatalf("pool %+v: the container joined no holder", st)
	}
	list, err := lister.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	deaths := p.Stats().Deaths
	for _, c := range list {
		if c.Role == drivers.RoleHolder {
			if err := lister.KillContainer(ctx, c.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	for p.Stats().Deaths == deaths {
		if ctx.Err() != nil {
			t.Fatalf("pool %+v: the holder's death never noticed", p.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	w, err := cookie.Run(ctx)
	if err != nil {
		t.Fatalf("Run after the holder died: %v, want the container made again", err)
	}
	if res := w.Wait(ctx); res.Status() != drivers.StatusSuccess {
		t.Fatalf("result %s (%v), want success", res.Status(), res.Error())
	}
	if st := p.Stats(); st.Leased != 0 {
		t.Errorf("pool %+v: want the dead holder's lease returned", st)
	}
	if err := cookie.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Driver.Close(); err != nil {
		t.Fatal(err)
	}
	s.checkNoLeftovers(t, h)
}

// Tasks without a network may join holders without one
// (PreForkNoNetPoolSize): they still see loopback only, and everything,
// holders included, goes with the driver.
func testNoNetworkPool(t *testing.T, s *suite) {
	h := s.newHarness(t, drivers.Config{PreForkNoNetPoolSize: 1, PreForkImage: s.h.Image})
	ctx := testContext(t, 2*time.Minute)
	// A driver that keeps such holders says so, and has them ready.
	np, _ := h.Driver.(interface{ NoNetPool() *pool.Pool })
	var p *pool.Pool
	if np != nil {
		p = np.NoNetPool()
	}
	if p != nil {
		if err := p.Ready(ctx); err != nil {
			t.Fatalf("no-network holders not ready: %v (%+v)", err, p.Stats())
		}
	}
	for i := 0; i < 3; i++ {
		task := s.task(t, "ls /sys/class/net", Script{Stdout: "lo\n"})
		task.ImageRef, task.NoNetwork = h.Image, true
		out, err := Lifecycle(ctx, h.Driver, task)
		if err != nil {
			t.Fatal(err)
		}
		wantSuccess(t, out)
		if got := strings.Fields(out.Stdout); len(got) != 1 || got[0] != "lo" {
			t.Fatalf("call %d: interfaces %q, want only lo", i, got)
		}
	}
	checkIdle(t, h.Driver)
	if p != nil {
		if st := p.Stats(); st.Misses != 0 || st.Leased != 0 {
			t.Errorf("no-network holders: %d misses, %d leased; want every call to join one and return it", st.Misses, st.Leased)
		}
	}
	if err := h.Driver.Close(); err != nil {
		t.Fatal(err)
	}
	s.checkNoLeftovers(t, h)
}
