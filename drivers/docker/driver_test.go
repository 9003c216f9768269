package docker

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"
	"go.opencensus.io/stats/view"
	"go.opencensus.io/tag"
	"go.uber.org/goleak"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/stats"
)

func TestMain(m *testing.M) {
	// OpenCensus starts its worker at init; it is not the driver's.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"))
}

func TestNewUnreachable(t *testing.T) {
	for _, endpoint := range []string{
		"unix://" + filepath.Join(t.TempDir(), "nothing.sock"),
		"tcp://127.0.0.1:1",
	} {
		start := time.Now()
		_, err := New(context.Background(), drivers.Config{Docker: endpoint})
		if !errors.Is(err, drivers.ErrDaemonUnavailable) {
			t.Errorf("%s: %v, want ErrDaemonUnavailable", endpoint, err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%s: took %v to fail", endpoint, took)
		}
	}
	if _, err := New(context.Background(), drivers.Config{Docker: "ftp://x"}); !errors.Is(err, drivers.ErrInvalidConfig) {
		t.Errorf("bad scheme: %v, want ErrInvalidConfig", err)
	}
	if _, err := New(context.Background(), drivers.Config{}, drivers.WithCallTimeout(0)); !errors.Is(err, drivers.ErrInvalidConfig) {
		t.Errorf("zero call timeout: %v, want ErrInvalidConfig", err)
	}
}

// daemonProxy forwards a unix socket to the test daemon and can stop
// answering (hang) or cut every connection, to play a failing daemon.
type daemonProxy struct {
	path    string
	ln      net.Listener
	hanging atomic.Bool
	forward bool // false: accept and never answer at all

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newDaemonProxy(t *testing.T, target string, forward bool) *daemonProxy {
	t.Helper()
	p := &daemonProxy{path: filepath.Join(t.TempDir(), "d.sock"), forward: forward, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	p.ln = ln
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.track(c)
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.serve(c, strings.TrimPrefix(target, "unix://"))
			}()
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *daemonProxy) endpoint() string { return "unix://" + p.path }

func (p *daemonProxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns[c] = struct{}{}
}

func (p *daemonProxy) serve(c net.Conn, target string) {
	defer c.Close()
	if !p.forward {
		_, _ = io.Copy(io.Discard, c) // read everything, answer nothing
		return
	}
	up, err := net.Dial("unix", target)
	if err != nil {
		return
	}
	p.track(up)
	defer up.Close()
	go func() {
		_, _ = io.Copy(c, up)
		c.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 && !p.hanging.Load() {
			if _, werr := up.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// cut closes every connection, as a daemon restart would.
func (p *daemonProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *daemonProxy) close() {
	p.ln.Close()
	p.cut()
	p.wg.Wait()
}

// TestNewHungDaemon: a daemon that accepts and never answers fails New
// within the call timeout.
func TestNewHungDaemon(t *testing.T) {
	p := newDaemonProxy(t, "", false)
	start := time.Now()
	_, err := New(context.Background(), drivers.Config{Docker: p.endpoint()}, drivers.WithCallTimeout(300*time.Millisecond))
	if !errors.Is(err, drivers.ErrDaemonUnavailable) {
		t.Fatalf("New on a hung daemon: %v, want ErrDaemonUnavailable", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("New on a hung daemon took %v", took)
	}
	// The caller's own deadline is reported as such.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = New(ctx, drivers.Config{Docker: p.endpoint()})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("New with a short context on a hung daemon: %v, want DeadlineExceeded", err)
	}
}

// TestHungDaemonCalls: once the daemon stops answering, every call of a
// cookie returns ErrDaemonUnavailable after the call timeout instead of
// hanging, and the cookie can still be closed when it answers again.
func TestHungDaemonCalls(t *testing.T) {
	e := needEnv(t)
	p := newDaemonProxy(t, e.host, true)
	const timeout = 500 * time.Millisecond
	d := newDriver(t, drivers.Config{Docker: p.endpoint()}, drivers.WithCallTimeout(timeout))
	ctx := testCtx(t, time.Minute)
	c, err := d.CreateCookie(ctx, &drivers.Task{ID: "fnrun-hung-" + randomID(), ImageRef: e.localImage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ValidateImage(ctx); err != nil {
		t.Fatalf("ValidateImage before the hang: %v", err)
	}
	p.hanging.Store(true)
	for name, call := range map[string]func() error{
		"ValidateImage":   func() error { _, err := c.ValidateImage(ctx); return err },
		"CreateContainer": func() error { return c.CreateContainer(ctx) },
	} {
		start := time.Now()
		err := call()
		if !errors.Is(err, drivers.ErrDaemonUnavailable) {
			t.Errorf("%s on a hung daemon: %v, want ErrDaemonUnavailable", name, err)
		}
		if took := time.Since(start); took > 4*timeout {
			t.Errorf("%s on a hung daemon took %v with a %v timeout", name, took, timeout)
		}
	}
	p.hanging.Store(false)
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close once the daemon answers again: %v", err)
	}
}

// TestDaemonLostDuringRun: when the daemon connection breaks while a
// container runs, the result is an error, never a success.
func TestDaemonLostDuringRun(t *testing.T) {
	e := needEnv(t)
	p := newDaemonProxy(t, e.host, true)
	d := newDriver(t, drivers.Config{Docker: p.endpoint()})
	ctx := testCtx(t, time.Minute)
	c, err := d.CreateCookie(ctx, &drivers.Task{ID: "fnrun-lost-" + randomID(), ImageRef: e.localImage, Cmd: "sleep 3"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	p.cut()
	res := w.Wait(ctx)
	if res.Status() != drivers.StatusError || !errors.Is(res.Error(), drivers.ErrDaemonUnavailable) {
		t.Fatalf("lost daemon connection gave %s (%v), want error wrapping ErrDaemonUnavailable", res.Status(), res.Error())
	}
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestServerVersion(t *testing.T) {
	e := needEnv(t)
	newDriver(t, drivers.Config{ServerVersion: "17.06.0"})
	for _, v := range []string{"999.0", "not-a-version"} {
		_, err := New(context.Background(), drivers.Config{Docker: e.host, ServerVersion: v})
		if !errors.Is(err, drivers.ErrInvalidConfig) {
			t.Errorf("ServerVersion %q: %v, want ErrInvalidConfig", v, err)
		}
	}
	for _, tc := range []struct {
		have, want string
		ok         bool
	}{
		{"20.10.24+dfsg1", "20.10", true},
		{"20.10.24+dfsg1", "20.10.24", true},
		{"20.10.24+dfsg1", "20.10.25", false},
		{"20.10.24", "v17.06.0-ce", true},
		{"28.0.1", "20.10.24", true},
		{"19.03.15", "20.10", false},
	} {
		if err := checkVersion(tc.have, tc.want); (err == nil) != tc.ok {
			t.Errorf("checkVersion(%q, %q) = %v", tc.have, tc.want, err)
		}
	}
}

func TestLoadFile(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)
	// An archive of a tag of its own: untagging the shared test image would
	// pull it from under the packages that run at the same time.
	repo := "fnrun-test/loadfile-" + randomID()
	tagged := repo + ":latest"
	if err := bare.TagImage(e.localImage, docker.TagImageOptions{Repo: repo, Tag: "latest"}); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	err = bare.ExportImage(docker.ExportImageOptions{Name: tagged, OutputStream: f})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	// Untag it (its layers stay, under the shared tag) so that only the
	// load can bring the name back.
	if err := removeImage(bare, tagged); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = removeImage(bare, tagged) })
	newDriver(t, drivers.Config{DockerLoadFile: archive})
	if _, err := bare.InspectImage(tagged); err != nil {
		t.Fatalf("%s not present after loading %s: %v", tagged, archive, err)
	}

	bad := filepath.Join(t.TempDir(), "bad.tar")
	if err := os.WriteFile(bad, []byte("this is not a tar archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{bad, filepath.Join(t.TempDir(), "missing.tar")} {
		if _, err := New(context.Background(), drivers.Config{Docker: e.host, DockerLoadFile: path}); err == nil {
			t.Errorf("New with load file %s succeeded", path)
		}
	}
}

// TestReaper: a new driver removes the containers of other instances with
// its label tag, and leaves its own and everything without its labels.
func TestReaper(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)
	ctx := testCtx(t, time.Minute)
	tagValue := "reaper-" + randomID()
	mk := func(name string, labels map[string]string) string {
		t.Helper()
		ctr, err := bare.CreateContainer(docker.CreateContainerOptions{Name: name + "-" + randomID(), Context: ctx,
			Config: &docker.Config{Image: e.localImage, Cmd: []string{"sleep", "60"}, Labels: labels}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = bare.RemoveContainer(docker.RemoveContainerOptions{ID: ctr.ID, Force: true}) })
		return ctr.ID
	}
	leaked := mk("fnrun-leaked", map[string]string{LabelLibrary: libraryName, LabelTag: tagValue, LabelInstance: "dead"})
	if err := bare.StartContainer(leaked, nil); err != nil {
		t.Fatal(err)
	}
	mine := mk("fnrun-mine", map[string]string{LabelLibrary: libraryName, LabelTag: tagValue, LabelInstance: "live"})
	foreign := mk("fnrun-foreign", map[string]string{LabelTag: tagValue, LabelInstance: "dead"})
	otherTag := mk("fnrun-othertag", map[string]string{LabelLibrary: libraryName, LabelTag: "other-" + tagValue, LabelInstance: "dead"})

	newDriver(t, drivers.Config{ContainerLabelTag: tagValue, InstanceId: "live"})
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := bare.InspectContainer(leaked)
		if errors.As(err, new(*docker.NoSuchContainer)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leaked container still there: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for name, id := range map[string]string{"own": mine, "unlabelled": foreign, "other tag": otherTag} {
		if _, err := bare.InspectContainer(id); err != nil {
			t.Errorf("the %s container was touched: %v", name, err)
		}
	}
}

// TestDriverClose: closing the driver ends running containers, refuses new
// cookies, and leaves cookies closable.
func TestDriverClose(t *testing.T) {
	e := needEnv(t)
	d := newDriver(t, drivers.Config{}, drivers.WithStopGrace(100*time.Millisecond))
	ctx := testCtx(t, time.Minute)
	c, err := d.CreateCookie(ctx, &drivers.Task{ID: "fnrun-dclose-" + randomID(), ImageRef: e.localImage, Cmd: "sleep 60"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("driver Close took %v with a running container", took)
	}
	if res := w.Wait(ctx); res.Status() != drivers.StatusCancelled {
		t.Errorf("run ended by driver Close: %s (%v), want cancelled", res.Status(), res.Error())
	}
	if _, err := d.CreateCookie(ctx, &drivers.Task{ID: "fnrun-after", ImageRef: e.localImage}); !errors.Is(err, drivers.ErrClosed) {
		t.Errorf("CreateCookie after Close: %v, want ErrClosed", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Errorf("cookie Close after driver Close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second driver Close: %v", err)
	}
}

// TestGracefulStop: ending a container sends SIGTERM first, so a process
// that traps it can clean up within the grace period.
func TestGracefulStop(t *testing.T) {
	e := needEnv(t)
	d := newDriver(t, drivers.Config{}, drivers.WithStopGrace(5*time.Second))
	var out syncWriter
	task := &drivers.Task{ID: "fnrun-graceful-" + randomID(), ImageRef: e.localImage, Stdout: &out,
		Cmd: `sh -c 'trap "echo got-term; exit 0" TERM; echo ready; while true; do sleep 0.1; done'`}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := d.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(out.String(), "ready") {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	res := w.Wait(context.Background())
	if res.Status() != drivers.StatusCancelled {
		t.Errorf("status %s, want cancelled", res.Status())
	}
	if !strings.Contains(out.String(), "got-term") {
		t.Errorf("output %q: the process never saw SIGTERM", out.String())
	}
}

type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestMetrics: daemon calls, pulls and exits are recorded with their tags.
func TestMetrics(t *testing.T) {
	e := needEnv(t)
	if err := stats.RegisterViews(); err != nil {
		t.Fatal(err)
	}
	defer stats.UnregisterViews()
	d := newDriver(t, drivers.Config{})
	ctx := testCtx(t, time.Minute)
	// A task that keeps its output: one that keeps nothing is not attached
	// at all (see container.Start), and the attach must be recorded too.
	res := runTask(ctx, t, d, &drivers.Task{ID: "fnrun-metrics-" + randomID(), ImageRef: e.localImage, Cmd: "sh -c 'exit 2'", Stdout: &syncWriter{}})
	if res.Status() != drivers.StatusError {
		t.Fatalf("status %s", res.Status())
	}
	if err := pullWith(ctx, d, &drivers.Task{ID: "fnrun-metrics-pull", ImageRef: e.image}); err != nil {
		t.Fatal(err)
	}
	apis := tagValues(t, stats.DaemonCallLatency.Name(), stats.KeyAPI)
	for _, api := range []string{"ping", "info", "inspect_image", "create", "attach", "start", "wait", "inspect_container", "remove", "pull"} {
		if !apis[api] {
			t.Errorf("no latency recorded for daemon call %q (have %v)", api, apis)
		}
	}
	if !tagValues(t, stats.ContainerExits.Name(), stats.KeyStatus)[drivers.StatusError] {
		t.Error("no exit recorded with status error")
	}
	if !tagValues(t, stats.Pulls.Name(), stats.KeyOutcome)[stats.OutcomeOK] {
		t.Error("no pull recorded")
	}
}

func tagValues(t *testing.T, viewName string, key tag.Key) map[string]bool {
	t.Helper()
	rows, err := view.RetrieveData(viewName)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, r := range rows {
		for _, tg := range r.Tags {
			if tg.Key == key {
				out[tg.Value] = true
			}
		}
	}
	return out
}

func TestErrorClasses(t *testing.T) {
	for _, tc := range []struct {
		kind objectKind
		err  error
		want error
	}{
		{kindContainer, &docker.NoSuchContainer{ID: "x"}, drivers.ErrContainerGone},
		{kindImage, docker.ErrNoSuchImage, drivers.ErrImageNotFound},
		{kindContainer, &docker.Error{Status: 404, Message: "No such container: x"}, drivers.ErrContainerGone},
		{kindImage, &docker.Error{Status: 404, Message: "manifest unknown"}, drivers.ErrImageNotFound},
		{kindImage, &docker.Error{Status: 401, Message: "x"}, drivers.ErrUnauthorized},
		{kindImage, &docker.Error{Status: 500, Message: "unauthorized: authentication required"}, drivers.ErrUnauthorized},
		{kindImage, &docker.Error{Status: 500, Message: `Head "http://r/v2/x/manifests/latest": no basic auth credentials`}, drivers.ErrUnauthorized},
		{kindImage, &docker.Error{Status: 404, Message: "pull access denied for x, repository does not exist or may require 'docker login'"}, drivers.ErrImageNotFound},
		{kindImage, &docker.Error{Status: 500, Message: "--storage-opt is supported only for overlay over xfs with 'pquota' mount option"}, drivers.ErrInvalidTask},
		{kindNone, docker.ErrConnectionRefused, drivers.ErrDaemonUnavailable},
	} {
		got := translate(context.Background(), "api", "obj", tc.kind, tc.err)
		if !errors.Is(got, tc.want) {
			t.Errorf("%v: %v, want %v", tc.err, got, tc.want)
		}
		if !errors.Is(got, tc.err) && !errors.As(got, new(*docker.Error)) && !errors.As(got, new(*docker.NoSuchContainer)) {
			t.Errorf("%v: the daemon's error is lost in %v", tc.err, got)
		}
	}
}
