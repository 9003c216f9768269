package dockerconn_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/dockerconn"
	"github.com/fnrun/fnrun/internal/dockerconn/dockerconntest"
)

func TestTLSFromEnv(t *testing.T) {
	for value, want := range map[string]bool{"": false, "0": true, "1": true} {
		t.Setenv("DOCKER_TLS_VERIFY", value)
		if got := dockerconn.TLSFromEnv(); got.Enabled != want || got.Explicit {
			t.Errorf("DOCKER_TLS_VERIFY=%q: %+v", value, got)
		}
	}
}

func TestClientTLSConfig(t *testing.T) {
	pki := dockerconntest.NewPKI(t)
	tcp := "tcp://127.0.0.1:2376"

	cfg, err := dockerconn.ClientTLSConfig(dockerconn.TLSRequest{}, tcp)
	if cfg != nil || err != nil {
		t.Errorf("not asked for: %v, %v", cfg, err)
	}
	// As with the docker CLI, the environment's wish does not apply to a
	// unix socket; an explicit one is a mistake.
	cfg, err = dockerconn.ClientTLSConfig(dockerconn.TLSRequest{Enabled: true, CertPath: t.TempDir()}, "unix:///var/run/docker.sock")
	if cfg != nil || err != nil {
		t.Errorf("environment, unix socket: %v, %v", cfg, err)
	}
	_, err = dockerconn.ClientTLSConfig(dockerconn.TLSRequest{Enabled: true, CertPath: pki.ClientDir, Explicit: true}, "unix:///var/run/docker.sock")
	if !errors.Is(err, drivers.ErrInvalidConfig) || !strings.Contains(err.Error(), "TLS needs a tcp:// endpoint") {
		t.Errorf("explicit, unix socket: %v", err)
	}

	cfg, err = dockerconn.ClientTLSConfig(dockerconn.TLSRequest{Enabled: true, CertPath: pki.ClientDir}, tcp)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RootCAs == nil || len(cfg.Certificates) != 1 || cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("client folder: %+v", cfg)
	}
	cfg, err = dockerconn.ClientTLSConfig(dockerconn.TLSRequest{Enabled: true, CertPath: dockerconntest.CertDir(t, pki.CA.PEM, nil, nil)}, tcp)
	if err != nil || len(cfg.Certificates) != 0 {
		t.Errorf("ca.pem alone: %v, %v", cfg, err)
	}

	for _, tc := range []struct {
		name, dir, msg string
	}{
		{"no files", t.TempDir(), "ca.pem"},
		{"key without certificate", dockerconntest.CertDir(t, pki.CA.PEM, nil, pki.ClientKey), "cert.pem and key.pem"},
		{"certificate without key", dockerconntest.CertDir(t, pki.CA.PEM, pki.ClientCert, nil), "cert.pem and key.pem"},
		{"garbage CA", dockerconntest.CertDir(t, []byte("not a certificate"), pki.ClientCert, pki.ClientKey), "no PEM certificate"},
		{"mismatched key", dockerconntest.CertDir(t, pki.CA.PEM, pki.ClientCert, pki.CA.StrayKey(t)), "client certificate"},
	} {
		_, err := dockerconn.ClientTLSConfig(dockerconn.TLSRequest{Enabled: true, CertPath: tc.dir}, tcp)
		if !errors.Is(err, drivers.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), tc.dir) {
			t.Errorf("%s: %v, want ErrInvalidConfig naming the folder and saying %q", tc.name, err, tc.msg)
		}
	}
}

// TestCertPathFallback: no folder given means DOCKER_CERT_PATH, else
// ~/.docker.
func TestCertPathFallback(t *testing.T) {
	pki := dockerconntest.NewPKI(t)
	req := dockerconn.TLSRequest{Enabled: true}
	t.Setenv("DOCKER_CERT_PATH", pki.ClientDir)
	if _, err := dockerconn.ClientTLSConfig(req, "tcp://127.0.0.1:2376"); err != nil {
		t.Errorf("DOCKER_CERT_PATH: %v", err)
	}
	home := t.TempDir()
	t.Setenv("DOCKER_CERT_PATH", "")
	t.Setenv("HOME", home)
	_, err := dockerconn.ClientTLSConfig(req, "tcp://127.0.0.1:2376")
	if want := filepath.Join(home, ".docker"); !errors.Is(err, drivers.ErrInvalidConfig) || !strings.Contains(err.Error(), want) {
		t.Errorf("empty ~/.docker: %v, want ErrInvalidConfig naming %s", err, want)
	}
	if err := os.CopyFS(filepath.Join(home, ".docker"), os.DirFS(pki.ClientDir)); err != nil {
		t.Fatal(err)
	}
	if _, err := dockerconn.ClientTLSConfig(req, "tcp://127.0.0.1:2376"); err != nil {
		t.Errorf("~/.docker: %v", err)
	}
}

// serve answers /_ping on a local listener, over TLS with client
// certificates required when config is non-nil; it returns the endpoint.
func serve(t *testing.T, config *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if config != nil {
		ln = tls.NewListener(ln, config)
	}
	srv := &http.Server{
		Handler:  http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, `"OK"`) }),
		ErrorLog: log.New(io.Discard, "", 0), // the refused handshakes
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "tcp://" + ln.Addr().String()
}

// TestTLSCall: a call goes over TLS with the client certificate, and each
// way a handshake fails is named by DescribeTLSFailure.
func TestTLSCall(t *testing.T) {
	pki := dockerconntest.NewPKI(t)
	tlsEndpoint := serve(t, pki.ServerConfig())
	plainEndpoint := serve(t, nil)
	otherCA := dockerconntest.NewCA(t, "another CA")
	for _, tc := range []struct {
		name, endpoint, dir, why string // empty why: the call succeeds
		dial                     bool   // Dial, as a hijack does, rather than Call
	}{
		{"client certificate", tlsEndpoint, pki.ClientDir, "", false},
		{"no client certificate", tlsEndpoint, dockerconntest.CertDir(t, pki.CA.PEM, nil, nil), "refused the handshake", false},
		{"wrong CA", tlsEndpoint, dockerconntest.CertDir(t, otherCA.PEM, pki.ClientCert, pki.ClientKey), "certificate failed verification", false},
		{"wrong CA, dial", tlsEndpoint, dockerconntest.CertDir(t, otherCA.PEM, pki.ClientCert, pki.ClientKey), "certificate failed verification", true},
		{"plain endpoint", plainEndpoint, pki.ClientDir, "does not speak TLS", false},
		{"plain endpoint, dial", plainEndpoint, pki.ClientDir, "does not speak TLS", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := dockerconn.ClientTLSConfig(dockerconn.TLSRequest{Enabled: true, CertPath: tc.dir, Explicit: true}, tc.endpoint)
			if err != nil {
				t.Fatal(err)
			}
			c, err := dockerconn.New(tc.endpoint, 5*time.Second, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseIdle()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var answer string
			if tc.dial {
				var conn net.Conn
				if conn, err = c.Dial(ctx); err == nil {
					conn.Close()
					answer = "OK"
				}
			} else {
				err = c.Call(ctx, http.MethodGet, "/_ping", &answer)
			}
			why, ok := dockerconn.DescribeTLSFailure(err)
			switch {
			case tc.why == "" && (err != nil || answer != "OK"):
				t.Fatalf("call: %q, %v", answer, err)
			case tc.why == "" && ok:
				t.Errorf("no failure described as %q", why)
			case tc.why != "" && (!ok || !strings.Contains(why, tc.why)):
				t.Errorf("%v described as %q (%v), want %q", err, why, ok, tc.why)
			}
		})
	}
	if why, ok := dockerconn.DescribeTLSFailure(errors.New("connection refused")); ok {
		t.Errorf("a plain error described as %q", why)
	}
}
