package fn

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/test"
)

// Bad volumes in a task are refused by CreateCookie with ErrInvalidTask
// before any daemon call: the driver is opened through a socket proxy
// that is then cut, and the refusals still come, typed, at once. (Fn
// passes a task's volumes to Docker as they are, and Docker's error comes
// at create.)
func TestVolumeValidationTask(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, r *rig) {
		p := newSocketProxy(t, r.socket())
		cfg := drivers.Config{Containerd: p.path}
		if r.name == rtDocker {
			cfg = drivers.Config{Docker: "unix://" + p.path}
		}
		drv := r.open(t, cfg, drivers.WithoutLeakReaper())
		p.cut()

		dir := t.TempDir()
		ctx := testContext(t, time.Minute)
		for name, task := range map[string]*drivers.Task{
			"relative host path":      {Mounts: [][2]string{{"data", "/data"}}},
			"relative container path": {Mounts: [][2]string{{dir, "data"}}},
			"missing host path":       {Mounts: [][2]string{{filepath.Join(dir, "missing"), "/data"}}},
			"colon in a path":         {Mounts: [][2]string{{dir, "/data:ro"}}},
			"relative socket folder":  {UDSHost: "iofs", UDSDest: "/tmp/iofs"},
		} {
			task.ID, task.ImageRef, task.Cmd = "fn-vol-"+randomID(), r.image(), "true"
			began := time.Now()
			cookie, err := drv.CreateCookie(ctx, task)
			if !errors.Is(err, drivers.ErrInvalidTask) || cookie != nil {
				t.Errorf("%s: CreateCookie = %v, %v; want ErrInvalidTask", name, cookie, err)
			}
			if took := time.Since(began); took > time.Second {
				t.Errorf("%s: refused after %v", name, took)
			}
		}
		// A good task is accepted without the daemon too, and only its
		// first daemon call fails.
		ok := r.task("vol", "true")
		ok.Mounts = [][2]string{{dir, "/data"}}
		cookie, err := drv.CreateCookie(ctx, ok)
		if err != nil {
			t.Fatalf("CreateCookie of a good task: %v", err)
		}
		defer cookie.Close(context.Background())
		short, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := cookie.ValidateImage(short); err == nil {
			t.Error("ValidateImage with the daemon cut off succeeded")
		}
	})
}

// Fn's TestVolumeValidation: an image that declares volumes is refused by
// ValidateImage unless ImageEnableVolume is set. Fn answers its own
// ErrImageWithVolume; fnrun wraps ErrInvalidTask.
func TestVolumeValidationImage(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, r *rig) {
		reg := newRegistry(t, r.env["FNRUN_REGISTRY"], "", "")
		ref := reg.derive(t, "fnrun/fn-volume-"+randomID(), "v1", imageSpec{volumes: []string{"/data"}})
		t.Cleanup(func() { r.removeImage(ref) })
		ctx := testContext(t, time.Minute)

		strict := r.open(t, drivers.Config{})
		cookie := newCookie(t, ctx, strict, r.imageTask("imgvol", ref))
		defer cookie.Close(context.Background())
		err := test.Prepare(ctx, cookie)
		if !errors.Is(err, drivers.ErrInvalidTask) || !strings.Contains(err.Error(), "/data") {
			t.Fatalf("an image declaring /data: %v, want ErrInvalidTask naming the volume", err)
		}

		enabled := r.open(t, drivers.Config{ImageEnableVolume: true})
		wantSuccess(t, run(t, ctx, enabled, r.imageTask("imgvol", ref)))
	})
}

// socket returns the path of the runtime's daemon socket.
func (r *rig) socket() string {
	if r.name == rtDocker {
		return strings.TrimPrefix(r.env["FNRUN_DOCKER_HOST"], "unix://")
	}
	return r.env["FNRUN_CONTAINERD_ADDRESS"]
}

// socketProxy relays a unix socket to a daemon's, until cut.
type socketProxy struct {
	path string
	l    net.Listener

	mu    sync.Mutex
	conns []net.Conn
	cutOK bool
	wg    sync.WaitGroup
}

func newSocketProxy(t *testing.T, target string) *socketProxy {
	t.Helper()
	p := &socketProxy{path: filepath.Join(t.TempDir(), "daemon.sock")}
	l, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	p.l = l
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.cutOK {
				p.mu.Unlock()
				c.Close()
				up.Close()
				continue
			}
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); _, _ = io.Copy(up, c); up.Close() }()
			go func() { defer p.wg.Done(); _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(p.cut)
	return p
}

// cut closes the socket and every connection through it, and waits for
// the relays to end.
func (p *socketProxy) cut() {
	p.mu.Lock()
	p.cutOK = true
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	p.l.Close()
	for _, c := range conns {
		c.Close()
	}
	p.wg.Wait()
}
