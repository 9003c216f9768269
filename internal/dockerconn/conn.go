// Package dockerconn is the Docker driver's connection to the daemon: the
// endpoint (unix:// or tcp://), TLS as the docker CLI sets it up
// (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH, ~/.docker), one pooled transport
// shared with go-dockerclient, and the raw Engine API calls the driver
// makes beside go-dockerclient: a JSON call, a stream to read, an upgraded
// (hijacked) connection.
//
// It is apart from the driver because none of it knows containers or the
// drivers contract beyond its error classes: it is how bytes reach the
// daemon, which the driver's daemon calls (package drivers/docker) and the
// image store's (package images/dockerstore, through the driver) build on.
// Errors keep the driver's wording ("docker driver: ...") and wrap
// drivers.ErrInvalidConfig for unusable settings; a daemon's error answer
// is a *docker.Error, like go-dockerclient's, for the driver to translate.
package dockerconn

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
)

// Conn reaches the daemon directly for what go-dockerclient offers
// without a context (pause, unpause, image inspect, info, a stats stream
// that can be abandoned) and for attach, whose go-dockerclient form can
// neither be cancelled while its handshake hangs nor report a refused
// handshake. It shares go-dockerclient's connection pool (Share), so every
// connection of the driver comes from Dial.
type Conn struct {
	endpoint  string
	network   string // "unix" or "tcp", to dial for a hijack
	address   string
	baseURL   string
	tls       *tls.Config // nil: plain connections
	dialer    *net.Dialer
	transport *http.Transport
	http      *http.Client
}

// New parses endpoint; tlsConfig, when non-nil, wraps every connection in
// TLS (a tcp:// endpoint only). dialTimeout bounds each dial, the TLS
// handshake included.
func New(endpoint string, dialTimeout time.Duration, tlsConfig *tls.Config) (*Conn, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("docker driver: endpoint %q: %w", endpoint, drivers.ErrInvalidConfig)
	}
	c := &Conn{endpoint: endpoint, tls: tlsConfig}
	switch u.Scheme {
	case "unix":
		c.network, c.address, c.baseURL = "unix", u.Path, "http://docker"
	case "tcp", "http":
		c.network, c.address, c.baseURL = "tcp", u.Host, "http://"+u.Host
	default:
		return nil, fmt.Errorf("docker driver: endpoint %q: scheme %q is not supported (unix, tcp): %w", endpoint, u.Scheme, drivers.ErrInvalidConfig)
	}
	if tlsConfig != nil {
		if c.network != "tcp" {
			return nil, fmt.Errorf("docker driver: endpoint %q: TLS needs a tcp:// endpoint: %w", endpoint, drivers.ErrInvalidConfig)
		}
		c.baseURL = "https://" + u.Host
	}
	// The timeout covers the TLS handshake too: tls.Dialer applies it to
	// the whole dial.
	c.dialer = &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	// One pooled transport with keep-alives for every call: go-dockerclient's
	// default opens a connection per call. With TLS the URLs are https, so
	// the transport dials through DialTLSContext, which also keeps it on
	// HTTP/1.1, the protocol the daemon's streams and upgrades speak.
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) { return c.Dial(ctx) }
	c.transport = &http.Transport{
		DialContext:         dial,
		MaxIdleConns:        100,
		MaxIdleConnsPerHost: 100,
		IdleConnTimeout:     90 * time.Second,
	}
	if tlsConfig != nil {
		c.transport.DialTLSContext = dial
	}
	c.http = &http.Client{Transport: c.transport}
	return c, nil
}

// Endpoint is the endpoint New was given.
func (c *Conn) Endpoint() string { return c.endpoint }

// TLS reports whether connections go over TLS.
func (c *Conn) TLS() bool { return c.tls != nil }

// Dial opens one connection to the daemon, the TLS handshake bounded by ctx.
func (c *Conn) Dial(ctx context.Context) (net.Conn, error) {
	if c.tls == nil {
		return c.dialer.DialContext(ctx, c.network, c.address)
	}
	d := tls.Dialer{NetDialer: c.dialer, Config: c.tls}
	return d.DialContext(ctx, c.network, c.address)
}

// Share makes client use the connection pool. client must have been made
// for ClientEndpoint.
func (c *Conn) Share(client *docker.Client) {
	client.HTTPClient = c.http
	client.Dialer = contextlessDialer{c}
	if c.tls != nil {
		// go-dockerclient's own hijack dials TLS itself, and only through
		// a *net.Dialer; its streams go through HTTPClient.
		client.TLSConfig = c.tls
		client.Dialer = c.dialer
	}
}

// ClientEndpoint is go-dockerclient's endpoint: https with TLS, so that its
// URLs make the shared transport dial through DialTLSContext.
func (c *Conn) ClientEndpoint() string {
	if c.tls != nil {
		return c.baseURL
	}
	return c.endpoint
}

// CloseIdle closes pooled connections, so none outlives the driver.
func (c *Conn) CloseIdle() { c.transport.CloseIdleConnections() }

// contextlessDialer is go-dockerclient's Dialer for its streams (pull, load)
// on a unix socket, bounded by a dial timeout since it gets no context.
type contextlessDialer struct{ c *Conn }

func (d contextlessDialer) Dial(string, string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return d.c.Dial(ctx)
}

// Call sends one request and decodes a JSON answer into out, if non-nil;
// a status of 400 or more gives a *docker.Error, like go-dockerclient's.
func (c *Conn) Call(ctx context.Context, method, path string, out any) error {
	body, err := c.Stream(ctx, method, path)
	if err != nil {
		return err
	}
	defer body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, io.LimitReader(body, 1<<20))
		return err
	}
	if err := json.NewDecoder(body).Decode(out); err != nil {
		return err
	}
	// Drain, so that the connection goes back to the pool: a decoder stops
	// at the end of the value, before the newline and the chunked body's
	// end the daemon sends after it. The answer is in by then: a failure
	// here only costs the connection.
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 1<<20))
	return nil
}

// Stream sends one request and returns the answer's body, for the caller
// to read (until ctx ends, for an endless stream) and close; a status of
// 400 or more gives a *docker.Error.
func (c *Conn) Stream(ctx context.Context, method, path string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "fnrun")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= http.StatusBadRequest {
		defer resp.Body.Close()
		return nil, readAPIError(resp)
	}
	return resp.Body, nil
}

// Hijack sends a POST asking to upgrade the connection, as attach does, on
// a connection of its own, and returns that connection with the reader of
// what the daemon sends on it. ctx bounds the handshake only: closing the
// connection unblocks it. A daemon that answers 200 instead of upgrading
// streams the answer's body, which is the returned reader then.
func (c *Conn) Hijack(ctx context.Context, path string) (net.Conn, io.Reader, error) {
	conn, err := c.Dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	fail := func(err error) (net.Conn, io.Reader, error) {
		stop()
		conn.Close()
		return nil, nil, err
	}
	req, err := http.NewRequest(http.MethodPost, c.baseURL+path, nil)
	if err != nil {
		return fail(err)
	}
	req.Header.Set("User-Agent", "fnrun")
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "tcp")
	if err := req.Write(conn); err != nil {
		return fail(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fail(err)
	}
	var stream io.Reader = br
	switch resp.StatusCode {
	case http.StatusSwitchingProtocols:
	case http.StatusOK:
		stream = resp.Body
	default:
		return fail(readAPIError(resp))
	}
	if !stop() {
		// ctx ended and closed the connection meanwhile.
		conn.Close()
		return nil, nil, ctx.Err()
	}
	return conn, stream, nil
}

// readAPIError reads the daemon's error answer: {"message": ...}, or the
// body as it is.
func readAPIError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var msg struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &msg) == nil && msg.Message != "" {
		return &docker.Error{Status: resp.StatusCode, Message: msg.Message}
	}
	return &docker.Error{Status: resp.StatusCode, Message: strings.TrimSpace(string(body))}
}

// StreamError finds an error message in a JSON message stream that the
// daemon sent with a success status (a load's), as a
// *docker.Error; nil when the stream reports none.
func StreamError(stream string) error {
	dec := json.NewDecoder(strings.NewReader(stream))
	for {
		var msg struct {
			Error       string `json:"error"`
			ErrorDetail *struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); err != nil {
			return nil // end of stream, or not JSON: nothing reported
		}
		switch {
		case msg.ErrorDetail != nil && msg.ErrorDetail.Message != "":
			return &docker.Error{Status: msg.ErrorDetail.Code, Message: msg.ErrorDetail.Message}
		case msg.Error != "":
			return &docker.Error{Message: msg.Error}
		}
	}
}
