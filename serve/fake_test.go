package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fnrun/fnrun/drivers"
	_ "github.com/fnrun/fnrun/drivers/mock" // registers "mock"
)

// fakeDriver runs a function in-process for each container of the mock
// driver: when a cookie runs, a goroutine listens on the task's socket
// folder as a function following Fn's contract would, with the behaviours
// of test/fnfunc (Fnfunc-* request headers, FNFUNC_* environment). The
// mock keeps the driver's life cycle (pull, create, run until closed,
// freeze); the fake adds what the mock cannot do: a process that listens.
type fakeDriver struct {
	drivers.Driver

	mu      sync.Mutex
	procs   map[string]*fakeProc
	started atomic.Int64
	frozen  atomic.Int64 // freezes seen
	// callsWhileFrozen counts calls that reached a frozen container: the
	// agent must thaw before calling.
	callsWhileFrozen atomic.Int64
}

func newFakeDriver() (*fakeDriver, error) {
	d, err := drivers.New("mock", drivers.Config{})
	if err != nil {
		return nil, err
	}
	return &fakeDriver{Driver: d, procs: map[string]*fakeProc{}}, nil
}

func (d *fakeDriver) CreateCookie(ctx context.Context, task drivers.ContainerTask) (drivers.Cookie, error) {
	if t, ok := task.(*drivers.Task); ok {
		// The mock's run lasts until the cookie closes, like a server's.
		ext := cloneStrings(t.Ext)
		if ext == nil {
			ext = map[string]string{}
		}
		ext["mock.hang"] = "true"
		t.Ext = ext
	}
	c, err := d.Driver.CreateCookie(ctx, task)
	if err != nil {
		return nil, err
	}
	return &fakeCookie{Cookie: c, d: d, task: task}, nil
}

// live returns the fake processes still running.
func (d *fakeDriver) live() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.procs)
}

type fakeCookie struct {
	drivers.Cookie
	d    *fakeDriver
	task drivers.ContainerTask

	mu   sync.Mutex
	proc *fakeProc
}

type fakeWait struct {
	inner drivers.WaitResult
	proc  *fakeProc
}

func (w *fakeWait) Wait(ctx context.Context) drivers.RunResult {
	res := w.inner.Wait(ctx)
	if code := w.proc.exitCode.Load(); code != 0 {
		return exitResult{&drivers.ExitError{ExitCode: int(code)}}
	}
	return res
}

// exitResult is a run that exited non-zero.
type exitResult struct{ err *drivers.ExitError }

func (r exitResult) Status() string { return drivers.StatusError }
func (r exitResult) Error() error   { return r.err }

func (c *fakeCookie) Run(ctx context.Context) (drivers.WaitResult, error) {
	runCtx, cancel := context.WithCancel(ctx)
	w, err := c.Cookie.Run(runCtx)
	if err != nil {
		cancel()
		return nil, err
	}
	p := &fakeProc{d: c.d, task: c.task, end: cancel, instance: fmt.Sprintf("fake-%d", c.d.started.Add(1)), stopped: make(chan struct{})}
	c.mu.Lock()
	c.proc = p
	c.mu.Unlock()
	c.d.mu.Lock()
	c.d.procs[c.task.Id()] = p
	c.d.mu.Unlock()
	go p.run()
	return &fakeWait{inner: w, proc: p}, nil
}

func (c *fakeCookie) Freeze(ctx context.Context) error {
	if err := c.Cookie.Freeze(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	p := c.proc
	c.mu.Unlock()
	p.frozen.Store(true)
	c.d.frozen.Add(1)
	return nil
}

func (c *fakeCookie) Unfreeze(ctx context.Context) error {
	if err := c.Cookie.Unfreeze(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	p := c.proc
	c.mu.Unlock()
	p.frozen.Store(false)
	return nil
}

func (c *fakeCookie) Close(ctx context.Context) error {
	c.mu.Lock()
	p := c.proc
	c.mu.Unlock()
	if p != nil {
		p.stop(0)
	}
	return c.Cookie.Close(ctx)
}

// fakeProc is the in-process function of one container.
type fakeProc struct {
	d        *fakeDriver
	task     drivers.ContainerTask
	end      context.CancelFunc // ends the mock's run: the "process" exited
	instance string
	calls    atomic.Int64
	frozen   atomic.Bool
	exitCode atomic.Int32

	once    sync.Once
	stopped chan struct{}
	mu      sync.Mutex
	srv     *http.Server
}

func (p *fakeProc) run() {
	env := p.task.EnvVars()
	if code := env["FNFUNC_EXIT_AT_START"]; code != "" {
		n, _ := strconv.Atoi(code)
		p.stop(int32(n))
		return
	}
	if d, err := time.ParseDuration(env["FNFUNC_START_DELAY"]); err == nil {
		select {
		case <-time.After(d):
		case <-p.stopped:
			return
		}
	}
	sock := filepath.Join(p.task.UDSAgentPath(), udsFile)
	phony := filepath.Join(p.task.UDSAgentPath(), "phony.sock")
	l, err := net.Listen("unix", phony)
	if err != nil {
		p.stop(1)
		return
	}
	if err := os.Symlink("phony.sock", sock); err != nil {
		l.Close()
		p.stop(1)
		return
	}
	srv := &http.Server{Handler: http.HandlerFunc(p.handle)}
	p.mu.Lock()
	p.srv = srv
	p.mu.Unlock()
	select {
	case <-p.stopped:
		l.Close()
		return
	default:
	}
	_ = srv.Serve(l)
}

// stop ends the process with code (0 for a kill by the driver).
func (p *fakeProc) stop(code int32) {
	p.once.Do(func() {
		p.exitCode.Store(code)
		close(p.stopped)
		p.mu.Lock()
		srv := p.srv
		p.mu.Unlock()
		if srv != nil {
			_ = srv.Close()
		}
		p.end()
		p.d.mu.Lock()
		delete(p.d.procs, p.task.Id())
		p.d.mu.Unlock()
	})
}

func (p *fakeProc) handle(w http.ResponseWriter, r *http.Request) {
	if p.frozen.Load() {
		p.d.callsWhileFrozen.Add(1)
		http.Error(w, "called while frozen", http.StatusInternalServerError)
		return
	}
	n := p.calls.Add(1)
	body, _ := io.ReadAll(r.Body)
	h := w.Header()
	h.Set("Fnfunc-Instance", p.instance)
	h.Set("Fnfunc-Calls", strconv.FormatInt(n, 10))
	h.Set("Fnfunc-Call-Id", r.Header.Get("Fn-Call-Id"))
	h.Set("Fnfunc-Deadline", r.Header.Get("Fn-Deadline"))
	if d, err := time.ParseDuration(r.Header.Get("Fnfunc-Sleep")); err == nil {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	if c := r.Header.Get("Fnfunc-Crash"); c != "" {
		code, _ := strconv.Atoi(c)
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
			}
		}
		go p.stop(int32(code))
		return
	}
	status := http.StatusOK
	if s, err := strconv.Atoi(r.Header.Get("Fnfunc-Status")); err == nil {
		status = s
	}
	if r.Header.Get("Fnfunc-Env") != "" {
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(p.task.EnvVars())
		return
	}
	if len(body) == 0 {
		body = []byte("world")
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, "hello %s", body)
}
