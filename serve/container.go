package serve

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
)

// Fn's container contract: the folder of the unix socket is mounted at
// udsDest in the container, and the function listens on udsFile in it
// (FN_LISTENER=unix:/tmp/iofs/lsnr.sock).
const (
	udsDest = "/tmp/iofs"
	udsFile = "lsnr.sock"
	// maxSocketPath is the room of sun_path, with its terminating NUL.
	maxSocketPath = 107
)

// Container states, guarded by the agent's mutex.
type cState int

const (
	stateStarting cState = iota
	stateIdle
	stateBusy
	stateRetiring
)

// container is one hot container of a slot.
type container struct {
	id          string
	slot        *slot
	dir         string // the socket folder, as the agent (and the daemon) see it
	sock        string
	idleTimeout time.Duration
	log         *logrus.Entry

	task      *drivers.Task
	cookie    drivers.Cookie
	wait      drivers.WaitResult
	runCtx    context.Context
	runCancel context.CancelFunc
	exited    chan struct{} // closed by the monitor once the run ended
	result    drivers.RunResult

	transport *http.Transport
	client    *http.Client
	stdout    *lineLogger
	stderr    *lineLogger

	freezeTimer *time.Timer
	idleTimer   *time.Timer

	// Guarded by the agent's mutex.
	state     cState
	calls     int
	gen       uint64
	idleSince time.Time

	// pauseMu serialises Freeze, Unfreeze and Close of the cookie.
	pauseMu sync.Mutex
	frozen  bool
}

func (c *container) exitedNow() bool {
	if c.exited == nil {
		return false
	}
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

func (c *container) stopTimers() {
	if c.freezeTimer != nil {
		c.freezeTimer.Stop()
	}
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// launch creates and starts a container for s and waits until the function
// listens on its socket.
func (a *agent) launch(s *slot) (*container, error) {
	spec := s.spec
	id := "fnserve-" + randomHex(6)
	dir := filepath.Join(a.iofsRoot, id)
	c := &container{
		id:          id,
		slot:        s,
		dir:         dir,
		sock:        filepath.Join(dir, udsFile),
		idleTimeout: time.Duration(spec.fn.IdleTimeout) * time.Second,
		log:         a.log.WithFields(logrus.Fields{"container": id, "fn_id": spec.fn.ID, "app_id": spec.app.ID}),
		state:       stateStarting,
	}
	if len(c.sock) > maxSocketPath {
		return nil, errInternal.WithCause(fmt.Errorf("socket path %s is longer than %d bytes: use a shorter socket folder", c.sock, maxSocketPath))
	}
	if err := os.Mkdir(dir, 0o777); err != nil {
		return nil, errInternal.WithCause(err)
	}
	// The function runs as an unprivileged user and creates its socket
	// here; the umask must not take the write bits away.
	if err := os.Chmod(dir, 0o777); err != nil {
		_ = os.RemoveAll(dir)
		return nil, errInternal.WithCause(err)
	}
	c.stdout = newLineLogger(c.log.WithField("stream", "stdout"))
	c.stderr = newLineLogger(c.log.WithField("stream", "stderr"))
	task := &drivers.Task{
		ID:          id,
		ImageRef:    spec.image,
		Env:         spec.env,
		Stdout:      c.stdout,
		Stderr:      c.stderr,
		MemoryBytes: spec.fn.Memory << 20,
		Ext:         cloneStrings(spec.ext),
		UDSAgent:    dir,
		UDSHost:     dir,
		UDSDest:     udsDest,
		Before:      a.opts.before,
		After:       a.opts.after,
	}
	if u := spec.app.SyslogURL; u != nil && *u != "" {
		task.Logging = drivers.LoggerConfig{URL: *u, Tags: []drivers.LoggerTag{
			{Name: "app_id", Value: spec.app.ID}, {Name: "fn_id", Value: spec.fn.ID}}}
	}
	c.task = task

	ctx, cancel := context.WithTimeout(a.ctx, a.opts.pullTimeout+a.opts.startTimeout+a.opts.createTimeout)
	defer cancel()
	if err := a.prepare(ctx, c); err != nil {
		c.close(a, "start failed")
		if a.ctx.Err() != nil {
			return nil, errShuttingDown.WithCause(err)
		}
		return nil, err
	}
	return c, nil
}

// prepare runs the cookie's life cycle up to a listening function.
func (a *agent) prepare(ctx context.Context, c *container) error {
	cookie, err := a.drv.CreateCookie(ctx, c.task)
	if err != nil {
		return startError(err)
	}
	c.cookie = cookie
	need, err := cookie.ValidateImage(ctx)
	if err != nil {
		return startError(err)
	}
	if need {
		pctx, pcancel := context.WithTimeout(ctx, a.opts.pullTimeout)
		err := cookie.PullImage(pctx)
		timedOut := errors.Is(pctx.Err(), context.DeadlineExceeded)
		pcancel()
		switch {
		case err != nil && timedOut:
			return errImagePullTimeout.WithCause(err)
		case err != nil:
			return pullError(c.task.ImageRef, err)
		}
		if need, err = cookie.ValidateImage(ctx); err != nil {
			return startError(err)
		} else if need {
			return pullError(c.task.ImageRef, errors.New("image still missing after a pull"))
		}
	}
	if err := cookie.CreateContainer(ctx); err != nil {
		return startError(err)
	}
	// The run lives as long as the container: not bound to this start.
	c.runCtx, c.runCancel = context.WithCancel(context.Background())
	wait, err := cookie.Run(c.runCtx)
	if err != nil {
		return startError(err)
	}
	c.wait = wait
	c.exited = make(chan struct{})
	a.wg.Add(1)
	go a.monitor(c)

	if err := c.awaitSocket(ctx, a.opts.startTimeout); err != nil {
		return err
	}
	c.transport = &http.Transport{
		DialContext:            c.dial,
		MaxIdleConns:           1,
		MaxIdleConnsPerHost:    1,
		MaxConnsPerHost:        1, // the contract: one connection to a function
		IdleConnTimeout:        2 * time.Minute,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 1 << 20,
	}
	c.client = &http.Client{Transport: c.transport}
	c.freezeTimer = time.AfterFunc(time.Hour, func() { a.onFreezeTimer(c) })
	c.freezeTimer.Stop()
	c.idleTimer = time.AfterFunc(time.Hour, func() { a.onIdleTimer(c) })
	c.idleTimer.Stop()
	return nil
}

// startError turns a driver error into the API error of a failed start.
func startError(err error) error {
	var api *APIError
	switch {
	case errors.As(err, &api):
		return err
	case errors.Is(err, drivers.ErrInvalidTask):
		return errInvalidTask.WithCause(err)
	case errors.Is(err, drivers.ErrImageNotFound), errors.Is(err, drivers.ErrUnauthorized):
		return errImagePull.WithCause(err)
	case errors.Is(err, context.DeadlineExceeded):
		return errContainerInitTimeout.WithCause(err)
	}
	return errInternal.WithCause(err)
}

func pullError(image string, err error) error {
	e := errImagePull.WithCause(err)
	e.Message = fmt.Sprintf("Failed to pull image '%s'", image)
	return e
}

// awaitSocket waits until the function's socket exists and is valid, the
// container ends, or timeout passes.
func (c *container) awaitSocket(ctx context.Context, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTimer(0)
	defer tick.Stop()
	pause := time.Millisecond
	for {
		select {
		case <-tick.C:
		case <-c.exited:
			res := c.result
			if res != nil {
				return errContainerInitFail.WithCause(fmt.Errorf("container ended before listening: %s: %v", res.Status(), res.Error()))
			}
			return errContainerInitFail.WithCause(errors.New("container ended before listening"))
		case <-deadline.C:
			return errContainerInitTimeout.WithCause(fmt.Errorf("no socket at %s after %v", c.sock, timeout))
		case <-ctx.Done():
			return errContainerInitTimeout.WithCause(ctx.Err())
		}
		if _, err := os.Lstat(c.sock); err == nil {
			return checkSocket(c.sock)
		}
		tick.Reset(pause)
		if pause < 10*time.Millisecond {
			pause += pause / 2
		}
	}
}

// checkSocket accepts a unix socket, or a symlink to one in the same folder
// (as fdk-go makes it: it listens on another name, sets the socket's mode,
// then links FN_LISTENER to it).
func checkSocket(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return errContainerInitFail.WithCause(err)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		target, err := os.Readlink(path)
		if err != nil {
			return errContainerInitFail.WithCause(err)
		}
		if filepath.Dir(target) != "." {
			return errContainerInitFail.WithCause(fmt.Errorf("socket link %s points to %q, outside its folder", path, target))
		}
	}
	fi, err = os.Stat(path)
	if err != nil {
		return errContainerInitFail.WithCause(err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return errContainerInitFail.WithCause(fmt.Errorf("%s is not a socket", path))
	}
	return nil
}

// dial connects to the function's socket. A socket file can exist a moment
// before its listen call: a refused connection is tried again shortly.
func (c *container) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	var d net.Dialer
	for i := 0; ; i++ {
		conn, err := d.DialContext(ctx, "unix", c.sock)
		if err == nil || i >= 50 || !errors.Is(err, syscall.ECONNREFUSED) {
			return conn, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// invocation is one call's request to the function.
type invocation struct {
	callID string
	body   []byte
	header http.Header
}

// response is the function's answer to a call.
type response struct {
	header http.Header
	body   []byte
}

// hopHeaders are not forwarded in either direction.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length"}

func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		dst[k] = append([]string(nil), vs...)
	}
	for _, h := range hopHeaders {
		dst.Del(h)
	}
}

// do sends one call to the function: POST /call over the socket, with the
// call id and deadline in Fn's headers. healthy says whether the container
// can serve another call.
func (c *container) do(ctx context.Context, inv *invocation, maxResponse int64) (res *response, healthy bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://localhost/call", bytes.NewReader(inv.body))
	if err != nil {
		return nil, true, errInternal.WithCause(err)
	}
	copyHeader(req.Header, inv.header)
	req.Header.Del("Host")
	req.Header.Set("Fn-Call-Id", inv.callID)
	if dl, ok := ctx.Deadline(); ok {
		req.Header.Set("Fn-Deadline", dl.UTC().Format(time.RFC3339))
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, false, errFunctionResponse.WithCause(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, false, errFunctionResponse.WithCause(err)
	}
	if int64(len(body)) > maxResponse {
		return nil, false, errFunctionTooBig
	}
	switch resp.StatusCode {
	case http.StatusOK:
		h := make(http.Header, len(resp.Header))
		copyHeader(h, resp.Header)
		return &response{header: h, body: body}, true, nil
	case http.StatusBadGateway:
		// The function says it failed; it can serve the next call.
		return nil, true, errFunctionFailed.WithCause(fmt.Errorf("function answered 502: %.200s", body))
	case http.StatusGatewayTimeout:
		return nil, true, errCallTimeout.WithCause(errors.New("function answered 504"))
	}
	return nil, false, errFunctionInvalid.WithCause(fmt.Errorf("function answered status %d", resp.StatusCode))
}

// close ends and removes the container and its socket folder. It waits for
// a freeze in progress, and for the monitor to see the run end.
func (c *container) close(a *agent, why string) {
	c.pauseMu.Lock()
	defer c.pauseMu.Unlock()
	if c.cookie != nil {
		// Cleanup finishes even while the agent closes: a fresh context,
		// bounded.
		ctx, cancel := context.WithTimeout(context.Background(), a.opts.closeTimeout)
		if err := c.cookie.Close(ctx); err != nil {
			c.log.WithError(err).Error("closing the container failed; the driver's leak reaper removes it at the next start")
		}
		cancel()
	}
	if c.runCancel != nil {
		c.runCancel()
	}
	if c.exited != nil {
		<-c.exited
	}
	if c.transport != nil {
		c.transport.CloseIdleConnections()
	}
	c.task.Close()
	c.stdout.flush()
	c.stderr.flush()
	if err := os.RemoveAll(c.dir); err != nil {
		c.log.WithError(err).Warn("removing the socket folder failed")
	}
	c.log.WithField("reason", why).Debug("container removed")
}

// lineLogger logs what a container writes, one entry per line. It never
// blocks for long: a line is cut at maxLogLine bytes.
type lineLogger struct {
	log *logrus.Entry
	mu  sync.Mutex
	buf []byte
}

const maxLogLine = 4096

func newLineLogger(log *logrus.Entry) *lineLogger { return &lineLogger{log: log} }

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxLogLine - len(l.buf)
			if len(p) > room {
				l.buf = append(l.buf, p[:room]...)
				l.emit()
				p = p[room:]
				continue
			}
			l.buf = append(l.buf, p...)
			break
		}
		l.buf = append(l.buf, p[:i]...)
		l.emit()
		p = p[i+1:]
	}
	return n, nil
}

func (l *lineLogger) emit() {
	if len(l.buf) > maxLogLine {
		l.buf = l.buf[:maxLogLine]
	}
	l.log.Info(string(l.buf))
	l.buf = l.buf[:0]
}

func (l *lineLogger) flush() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit()
	}
}
