package dockerconn

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
)

func TestNewEndpoint(t *testing.T) {
	for _, tc := range []struct {
		endpoint, network, address, baseURL string
	}{
		{"unix:///var/run/docker.sock", "unix", "/var/run/docker.sock", "http://docker"},
		{"tcp://127.0.0.1:2375", "tcp", "127.0.0.1:2375", "http://127.0.0.1:2375"},
		{"http://daemon:2375", "tcp", "daemon:2375", "http://daemon:2375"},
	} {
		c, err := New(tc.endpoint, time.Second, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.endpoint, err)
		}
		if c.network != tc.network || c.address != tc.address || c.baseURL != tc.baseURL {
			t.Errorf("%s: %s %s %s", tc.endpoint, c.network, c.address, c.baseURL)
		}
		if c.TLS() || c.ClientEndpoint() != tc.endpoint || c.Endpoint() != tc.endpoint {
			t.Errorf("%s: TLS %v, client endpoint %s", tc.endpoint, c.TLS(), c.ClientEndpoint())
		}
	}
	for _, endpoint := range []string{"", "/var/run/docker.sock", "ssh://host", "npipe:////./pipe/docker_engine", "::"} {
		if _, err := New(endpoint, time.Second, nil); !errors.Is(err, drivers.ErrInvalidConfig) {
			t.Errorf("%q: %v, want ErrInvalidConfig", endpoint, err)
		}
	}
	// TLS needs tcp; with it the URLs are https, go-dockerclient's too.
	if _, err := New("unix:///var/run/docker.sock", time.Second, &tls.Config{MinVersion: tls.VersionTLS12}); !errors.Is(err, drivers.ErrInvalidConfig) || !strings.Contains(err.Error(), "TLS needs a tcp:// endpoint") {
		t.Errorf("TLS on a unix socket: %v", err)
	}
	c, err := New("tcp://127.0.0.1:2376", time.Second, &tls.Config{MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	if !c.TLS() || c.baseURL != "https://127.0.0.1:2376" || c.ClientEndpoint() != "https://127.0.0.1:2376" {
		t.Errorf("TLS: %v %s %s", c.TLS(), c.baseURL, c.ClientEndpoint())
	}
}

// fakeDaemon serves handler on a unix socket and counts its connections.
type fakeDaemon struct {
	endpoint string
	conns    atomic.Int64
}

func newFakeDaemon(t *testing.T, handler http.Handler) *fakeDaemon {
	t.Helper()
	path := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDaemon{endpoint: "unix://" + path}
	srv := &http.Server{Handler: handler, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			f.conns.Add(1)
		}
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return f
}

func apiMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /info", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("User-Agent") != "fnrun" {
			http.Error(w, "no user agent", http.StatusBadRequest)
			return
		}
		io.WriteString(w, `{"ServerVersion":"20.10.24"}`)
	})
	mux.HandleFunc("GET /_ping", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "OK") })
	mux.HandleFunc("POST /containers/abc/start", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /images/gone/json", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"No such image: gone"}`)
	})
	mux.HandleFunc("GET /broken", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, "  not json\n")
	})
	// An inspect answer as large as a real container's, written as dockerd
	// writes it: chunked, with a trailing newline after the JSON value.
	mux.HandleFunc("GET /containers/big/json", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"Id": "big", "Padding": strings.Repeat("x", 32<<10)})
	})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"n":1}{"n":2}`)
	})
	return mux
}

// TestCall: JSON answers decode, error answers are *docker.Error with the
// daemon's message, calls reuse one pooled connection, and a
// go-dockerclient client that Share was given uses the same pool.
func TestCall(t *testing.T) {
	f := newFakeDaemon(t, apiMux())
	c, err := New(f.endpoint, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdle()
	ctx := context.Background()

	var info struct{ ServerVersion string }
	if err := c.Call(ctx, http.MethodGet, "/info", &info); err != nil || info.ServerVersion != "20.10.24" {
		t.Fatalf("info: %+v, %v", info, err)
	}
	if err := c.Call(ctx, http.MethodPost, "/containers/abc/start", nil); err != nil {
		t.Fatalf("start: %v", err)
	}
	for range 3 {
		var ctr struct{ Id string }
		if err := c.Call(ctx, http.MethodGet, "/containers/big/json", &ctr); err != nil || ctr.Id != "big" {
			t.Fatalf("inspect: %+v, %v", ctr, err)
		}
	}
	for _, tc := range []struct {
		path   string
		status int
		msg    string
	}{
		{"/images/gone/json", http.StatusNotFound, "No such image: gone"},
		{"/broken", http.StatusInternalServerError, "not json"},
	} {
		var apiErr *docker.Error
		err := c.Call(ctx, http.MethodGet, tc.path, &info)
		if !errors.As(err, &apiErr) || apiErr.Status != tc.status || apiErr.Message != tc.msg {
			t.Errorf("%s: %#v, want status %d message %q", tc.path, err, tc.status, tc.msg)
		}
	}

	body, err := c.Stream(ctx, http.MethodGet, "/stream")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(body)
	body.Close()
	if string(b) != `{"n":1}{"n":2}` {
		t.Errorf("stream: %q", b)
	}
	if _, err := c.Stream(ctx, http.MethodGet, "/images/gone/json"); err == nil {
		t.Error("stream of a 404 succeeded")
	}

	if n := f.conns.Load(); n != 1 {
		t.Errorf("%d connections, want every call on one pooled connection", n)
	}

	client, err := docker.NewClient(c.ClientEndpoint())
	if err != nil {
		t.Fatal(err)
	}
	c.Share(client)
	if client.HTTPClient != c.http {
		t.Fatal("Share left go-dockerclient its own HTTP client")
	}
	if err := client.PingWithContext(ctx); err != nil {
		t.Fatalf("ping through the shared pool: %v", err)
	}
}

// hijackDaemon answers each connection's request with answer, then echoes
// what follows; a nil answer never answers.
func hijackDaemon(t *testing.T, answer func(r *http.Request) string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				r, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				if answer == nil {
					_, _ = io.Copy(io.Discard, br) // until the client hangs up
					return
				}
				io.WriteString(conn, answer(r))
				_, _ = io.Copy(conn, br)
			}()
		}
	}()
	return "unix://" + path
}

func TestHijack(t *testing.T) {
	ctx := context.Background()
	endpoint := hijackDaemon(t, func(r *http.Request) string {
		if r.Method != http.MethodPost || r.Header.Get("Upgrade") != "tcp" || r.URL.RequestURI() != "/containers/abc/attach?stream=1" {
			return "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
		}
		return "HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
	})
	c, err := New(endpoint, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, stream, err := c.Hijack(ctx, "/containers/abc/attach?stream=1")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(stream, buf); err != nil || string(buf) != "ping" {
		t.Errorf("echo: %q, %v", buf, err)
	}

	refused := hijackDaemon(t, func(*http.Request) string {
		body := `{"message":"No such container: abc"}`
		return "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	})
	c, err = New(refused, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	var apiErr *docker.Error
	if _, _, err := c.Hijack(ctx, "/containers/abc/attach"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound || apiErr.Message != "No such container: abc" {
		t.Errorf("refused: %v", err)
	}

	// A handshake the daemon never answers ends with ctx.
	c, err = New(hijackDaemon(t, nil), time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, _, err := c.Hijack(short, "/containers/abc/attach"); err == nil {
		t.Error("a hung handshake succeeded")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a hung handshake took %v to end", took)
	}
}

func TestStreamError(t *testing.T) {
	for _, tc := range []struct {
		stream string
		status int
		msg    string // empty: no error
	}{
		{`{"stream":"Loaded image: busybox:latest\n"}`, 0, ""},
		{"", 0, ""},
		{"not json", 0, ""},
		{`{"stream":"x"}` + "\n" + `{"errorDetail":{"code":1,"message":"bad archive"},"error":"bad archive"}`, 1, "bad archive"},
		{`{"error":"unexpected EOF"}`, 0, "unexpected EOF"},
	} {
		err := StreamError(tc.stream)
		if tc.msg == "" {
			if err != nil {
				t.Errorf("%q: %v", tc.stream, err)
			}
			continue
		}
		var apiErr *docker.Error
		if !errors.As(err, &apiErr) || apiErr.Status != tc.status || apiErr.Message != tc.msg {
			t.Errorf("%q: %#v, want status %d message %q", tc.stream, err, tc.status, tc.msg)
		}
	}
}
