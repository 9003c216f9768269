package docker

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/dockerconn/dockerconntest"
	"github.com/fnrun/fnrun/stats"
	"github.com/fnrun/fnrun/test"
)

// tlsProxy terminates TLS with client certificates required, as a dockerd
// started with --tlsverify does, and pipes each connection byte for byte to
// the test daemon's unix socket, hijacked attach streams included.
type tlsProxy struct {
	ln       net.Listener
	target   string
	accepted atomic.Int64 // connections that passed the handshake

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newTLSProxy(t testing.TB, target string, pki *dockerconntest.PKI) *tlsProxy {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", pki.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	p := &tlsProxy{ln: ln, target: strings.TrimPrefix(target, "unix://"), conns: map[net.Conn]struct{}{}}
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
				p.serve(c.(*tls.Conn))
			}()
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *tlsProxy) endpoint() string { return "tcp://" + p.ln.Addr().String() }

func (p *tlsProxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns[c] = struct{}{}
}

func (p *tlsProxy) serve(c *tls.Conn) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := c.HandshakeContext(ctx)
	cancel()
	if err != nil {
		return // the client is turned down with the handshake's alert
	}
	p.accepted.Add(1)
	up, err := net.Dial("unix", p.target)
	if err != nil {
		return
	}
	p.track(up)
	defer up.Close()
	// Each direction passes its end on as a half close, so the
	// container's stdin sees EOF while its output still flows.
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(c, up)
		_ = c.CloseWrite()
	}()
	_, _ = io.Copy(up, c)
	_ = up.(*net.UnixConn).CloseWrite()
	<-done
}

func (p *tlsProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestTLSEndpoint: with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, a tcp://
// endpoint is reached over TLS with the client certificate, for every kind
// of connection the driver makes: plain calls, the pull stream, the
// hijacked attach with stdin, the stats stream, pause and unpause.
func TestTLSEndpoint(t *testing.T) {
	e := needEnv(t)
	pki := dockerconntest.NewPKI(t)
	proxy := newTLSProxy(t, e.host, pki)
	t.Setenv("DOCKER_TLS_VERIFY", "1")
	t.Setenv("DOCKER_CERT_PATH", pki.ClientDir)
	d := newDriver(t, drivers.Config{Docker: proxy.endpoint()}, WithStatsDelay(0))
	if !d.d.conn.TLS() {
		t.Fatal("DOCKER_TLS_VERIFY=1 did not turn TLS on")
	}
	ctx := testCtx(t, 2*time.Minute)

	var stdout, stderr syncWriter
	var samples atomic.Int64
	res := runTask(ctx, t, d, &drivers.Task{
		ID:       "fnrun-tls-" + randomID(),
		ImageRef: e.localImage,
		// Long enough for the daemon's first sample (it publishes a second,
		// later under load) to come over the TLS stats stream.
		Cmd:    `sh -c 'cat; echo to-stderr >&2; sleep 5'`,
		Stdin:  strings.NewReader("hello over tls\n"),
		Stdout: &stdout,
		Stderr: &stderr,
		Stats:  func(context.Context, stats.Stat) { samples.Add(1) },
	})
	if res.Status() != drivers.StatusSuccess {
		t.Fatalf("status %s (%v)", res.Status(), res.Error())
	}
	if got := stdout.String(); got != "hello over tls\n" {
		t.Errorf("stdout %q, want the stdin echoed", got)
	}
	if got := stderr.String(); got != "to-stderr\n" {
		t.Errorf("stderr %q", got)
	}
	if samples.Load() == 0 {
		t.Error("no stats sample came over TLS")
	}

	if err := pullWith(ctx, d, &drivers.Task{ID: "fnrun-tls-pull-" + randomID(), ImageRef: e.image}); err != nil {
		t.Fatalf("pull over TLS: %v", err)
	}

	c, w := startCall(t, d, e.localImage, "sleep 120")
	if err := c.Freeze(ctx); err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	if err := c.Unfreeze(ctx); err != nil {
		t.Fatalf("Unfreeze: %v", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if res := w.Wait(ctx); res.Status() == drivers.StatusSuccess {
		t.Error("a closed sleep 120 reported success")
	}
	if proxy.accepted.Load() == 0 {
		t.Fatal("nothing went through the TLS proxy")
	}
}

// TestTLSEnvIgnoredOnUnixSocket: as with the docker CLI, DOCKER_TLS_VERIFY
// does not apply to a unix socket, even with no certificates around;
// WithTLS on one is a configuration error.
func TestTLSEnvIgnoredOnUnixSocket(t *testing.T) {
	e := needEnv(t)
	t.Setenv("DOCKER_TLS_VERIFY", "1")
	t.Setenv("DOCKER_CERT_PATH", t.TempDir())
	d := newDriver(t, drivers.Config{Docker: e.host})
	if d.d.conn.TLS() {
		t.Error("TLS turned on for a unix socket")
	}
	_, err := New(testCtx(t, time.Minute), drivers.Config{Docker: e.host}, WithTLS(dockerconntest.NewPKI(t).ClientDir))
	if !errors.Is(err, drivers.ErrInvalidConfig) {
		t.Errorf("WithTLS on a unix socket: %v, want ErrInvalidConfig", err)
	}
}

// TestTLSRefused: certificates that cannot work fail New with an error
// that says why, and leave nothing running.
func TestTLSRefused(t *testing.T) {
	e := needEnv(t)
	pki := dockerconntest.NewPKI(t)
	proxy := newTLSProxy(t, e.host, pki)
	otherCA := dockerconntest.NewCA(t, "another CA")
	for _, tc := range []struct {
		name string
		dir  string
		want error
		msg  string
	}{
		{"no client certificate", dockerconntest.CertDir(t, pki.CA.PEM, nil, nil), drivers.ErrDaemonUnavailable, "refused the handshake"},
		{"wrong CA", dockerconntest.CertDir(t, otherCA.PEM, pki.ClientCert, pki.ClientKey), drivers.ErrDaemonUnavailable, "certificate failed verification"},
		{"no files", t.TempDir(), drivers.ErrInvalidConfig, "ca.pem"},
		{"key without certificate", dockerconntest.CertDir(t, pki.CA.PEM, nil, pki.ClientKey), drivers.ErrInvalidConfig, "cert.pem and key.pem"},
		{"garbage CA", dockerconntest.CertDir(t, []byte("not a certificate"), pki.ClientCert, pki.ClientKey), drivers.ErrInvalidConfig, "no PEM certificate"},
		{"mismatched key", dockerconntest.CertDir(t, pki.CA.PEM, pki.ClientCert, pki.CA.StrayKey(t)), drivers.ErrInvalidConfig, "client certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("DOCKER_TLS_VERIFY", "1")
			t.Setenv("DOCKER_CERT_PATH", tc.dir)
			start := time.Now()
			d, err := New(testCtx(t, time.Minute), drivers.Config{Docker: proxy.endpoint()})
			if err == nil {
				_ = d.Close()
				t.Fatal("New succeeded")
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("New: %v\nwant an error wrapping %v that says %q", err, tc.want, tc.msg)
			}
			t.Logf("New: %v", err)
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %v to fail", took)
			}
		})
	}
	// The same through the option, without the environment.
	_, err := New(testCtx(t, time.Minute), drivers.Config{Docker: proxy.endpoint()}, WithTLS(dockerconntest.CertDir(t, otherCA.PEM, pki.ClientCert, pki.ClientKey)))
	if !errors.Is(err, drivers.ErrDaemonUnavailable) {
		t.Errorf("WithTLS, wrong CA: %v, want ErrDaemonUnavailable", err)
	}
	// And a plain client on the TLS port is not mistaken for a daemon.
	_, err = New(testCtx(t, time.Minute), drivers.Config{Docker: proxy.endpoint()})
	if !errors.Is(err, drivers.ErrDaemonUnavailable) {
		t.Errorf("plain HTTP to a TLS port: %v, want ErrDaemonUnavailable", err)
	}
	// Nor is a plain HTTP server taken for a TLS daemon.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "OK") }))
	defer plain.Close()
	_, err = New(testCtx(t, time.Minute), drivers.Config{Docker: "tcp://" + plain.Listener.Addr().String()}, WithTLS(pki.ClientDir))
	if !errors.Is(err, drivers.ErrDaemonUnavailable) || !strings.Contains(err.Error(), "does not speak TLS") {
		t.Errorf("TLS to a plain HTTP port: %v, want ErrDaemonUnavailable saying it does not speak TLS", err)
	}
}

// TestConformanceTLS runs the shared suite over a TLS endpoint.
func TestConformanceTLS(t *testing.T) {
	e := needEnv(t)
	pki := dockerconntest.NewPKI(t)
	proxy := newTLSProxy(t, e.host, pki)
	test.Run(t, func(t *testing.T, cfg drivers.Config) *test.Harness {
		h := newHarness(t, cfg, false, proxy.endpoint(), WithTLS(pki.ClientDir))
		if !h.Driver.(*Driver).d.conn.TLS() {
			t.Fatal("WithTLS did not turn TLS on")
		}
		return h
	})
}
