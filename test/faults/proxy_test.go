package faults

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Registry fault modes.
const (
	modePass    int32 = iota // forward everything
	modeDown                 // close every connection without an answer
	modeStall                // blobs: send part of a large body, then stall until the client gives up
	modeCut                  // blobs: send half of a large body (nothing of a ranged request), then close the connection
	modeCutOnce              // like modeCut for the first large blob response only, then pass
)

// largeBlob is the size above which a blob is the layer (the config blob
// is a few hundred bytes): the stall and cut modes only hit those, so the
// pull fails half-way, with the manifest and config already fetched.
const largeBlob = 64 << 10

// regProxy is a registry on 127.0.0.1 that forwards to the shared loopback
// registry and breaks on demand. Each proxy has its own port, so its image
// references are new to every daemon.
type regProxy struct {
	srv       *httptest.Server
	upstream  *url.URL
	transport *http.Transport
	rp        *httputil.ReverseProxy
	stop      chan struct{}
	stopOnce  sync.Once

	mode      atomic.Int32
	holdFirst atomic.Int64 // nanoseconds the first request is held before it is served
	latency   atomic.Int64 // nanoseconds added to every manifest request
	requests  atomic.Int64
	faults    atomic.Int64
	first     sync.Once
}

func newRegProxy(t testing.TB, upstream string) *regProxy {
	t.Helper()
	u := &url.URL{Scheme: "http", Host: upstream}
	p := &regProxy{
		upstream:  u,
		transport: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 5 * time.Second},
		stop:      make(chan struct{}),
	}
	p.rp = httputil.NewSingleHostReverseProxy(u)
	p.rp.Transport = p.transport
	p.rp.ErrorLog = nil
	p.srv = httptest.NewUnstartedServer(p)
	p.srv.Config.ErrorLog = nil
	p.srv.Start()
	t.Cleanup(p.Close)
	return p
}

// Close ends stalled requests and stops the proxy.
func (p *regProxy) Close() {
	p.stopOnce.Do(func() {
		close(p.stop)
		p.srv.CloseClientConnections()
		p.srv.Close()
		p.transport.CloseIdleConnections()
	})
}

// host is the proxy's registry host, 127.0.0.1:port.
func (p *regProxy) host() string { return strings.TrimPrefix(p.srv.URL, "http://") }

// ref is the test image as seen through the proxy.
func (p *regProxy) ref(repoTag string) string { return p.host() + "/" + repoTag }

func (p *regProxy) setMode(m int32) { p.mode.Store(m) }

func isBlob(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/")
}

func isManifest(r *http.Request) bool { return strings.Contains(r.URL.Path, "/manifests/") }

func (p *regProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	if d := time.Duration(p.holdFirst.Load()); d > 0 {
		p.first.Do(func() { p.sleep(r, d) })
	}
	if d := time.Duration(p.latency.Load()); d > 0 && isManifest(r) {
		p.sleep(r, d)
	}
	switch p.mode.Load() {
	case modeDown:
		p.faults.Add(1)
		panic(http.ErrAbortHandler) // the connection is closed, no answer
	case modeStall, modeCut, modeCutOnce:
		if isBlob(r) {
			p.breakBlob(w, r)
			return
		}
	}
	p.rp.ServeHTTP(w, r)
}

func (p *regProxy) sleep(r *http.Request, d time.Duration) {
	select {
	case <-time.After(d):
	case <-r.Context().Done():
	case <-p.stop:
	}
}

// breakBlob fetches the blob upstream and sends half of a large one before
// stalling or cutting; small blobs pass whole.
func (p *regProxy) breakBlob(w http.ResponseWriter, r *http.Request) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.upstream.String()+r.URL.RequestURI(), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for _, h := range []string{"Range", "Accept", "Authorization"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	resp, err := p.transport.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	if resp.ContentLength <= largeBlob {
		_, _ = io.Copy(w, resp.Body)
		return
	}
	mode := p.mode.Load()
	if mode == modeCutOnce && p.faults.Load() > 0 {
		_, _ = io.Copy(w, resp.Body)
		return
	}
	p.faults.Add(1)
	// A client that resumes with a range request gets nothing more from a
	// persistently broken registry.
	if mode != modeCut || r.Header.Get("Range") == "" {
		_, _ = io.CopyN(w, resp.Body, resp.ContentLength/2)
	}
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	if mode == modeStall {
		select {
		case <-r.Context().Done():
		case <-p.stop:
		}
	}
	panic(http.ErrAbortHandler)
}

// sockProxy is a unix socket in front of a daemon's socket that counts
// the bytes clients send, so a test can prove that a call reached no
// daemon.
type sockProxy struct {
	path   string
	target string
	ln     net.Listener
	sent   atomic.Int64 // bytes from clients to the daemon
	conns  atomic.Int64
	wg     sync.WaitGroup
	mu     sync.Mutex
	open   map[net.Conn]struct{}
	closed bool
}

func newSockProxy(t testing.TB, target string) *sockProxy {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "fnfp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &sockProxy{path: filepath.Join(dir, "p.sock"), target: target, open: map[net.Conn]struct{}{}}
	if p.ln, err = net.Listen("unix", p.path); err != nil {
		t.Fatal(err)
	}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

func (p *sockProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.conns.Add(1)
		up, err := net.Dial("unix", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		p.open[c], p.open[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(countingWriter{up, &p.sent}, c)
			if cw, ok := up.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
		}()
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(c, up)
			c.Close()
			up.Close()
		}()
	}
}

// countingWriter counts what goes through it as it goes.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// Close closes every connection and the listener.
func (p *sockProxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// address is the proxy's socket path; url is it as a docker host.
func (p *sockProxy) address() string { return p.path }
func (p *sockProxy) url() string     { return "unix://" + p.path }
