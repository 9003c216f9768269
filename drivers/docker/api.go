package docker

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/images/dockerstore"
)

// do runs one daemon call bounded by the call timeout (see translate).
func (d *daemon) do(ctx context.Context, api, what string, kind objectKind, call func(ctx context.Context) error) error {
	return d.doWithin(ctx, api, what, kind, d.s.CallTimeout, call)
}

// doWithin is do with an explicit timeout; 0 means only ctx bounds the call.
func (d *daemon) doWithin(ctx context.Context, api, what string, kind objectKind, timeout time.Duration, call func(ctx context.Context) error) error {
	return d.caller.CallWithin(ctx, api, timeout, func(ctx context.Context) error {
		return translate(ctx, api, what, kind, call(ctx))
	})
}

// storeCall is the image store's way to the daemon: a raw API call, bounded
// and translated like every other.
func (d *daemon) storeCall(ctx context.Context, r dockerstore.Request, out any) error {
	kind := kindNone
	if r.Image {
		kind = kindImage
	}
	return d.do(ctx, r.API, r.Object, kind, func(ctx context.Context) error {
		return d.api.rawCall(ctx, r.Method, r.Path, out)
	})
}

// rawCall sends one request and decodes a JSON answer into out, if non-nil;
// a status of 400 or more gives a *docker.Error, like go-dockerclient's.
func (a *rawAPI) rawCall(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, a.baseURL+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "fnrun")
	resp, err := a.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= http.StatusBadRequest {
		return readAPIError(resp)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	// Drain so that the connection goes back to the pool.
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return err
}

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

func (d *daemon) info(ctx context.Context) (hostInfo, error) {
	var raw struct {
		ServerVersion string
		Driver        string
		DriverStatus  [][2]string
		CgroupVersion string
	}
	err := d.do(ctx, "info", "", kindNone, func(ctx context.Context) error {
		return d.api.rawCall(ctx, http.MethodGet, "/info", &raw)
	})
	if err != nil {
		return hostInfo{}, err
	}
	h := hostInfo{version: raw.ServerVersion, storageDriver: raw.Driver, cgroupVersion: raw.CgroupVersion}
	for _, kv := range raw.DriverStatus {
		if kv[0] == "Backing Filesystem" {
			h.backingFs = kv[1]
		}
	}
	if h.cgroupVersion == "" {
		h.cgroupVersion = "1" // daemons before API 1.40 do not say, and only know v1
	}
	return h, nil
}

// inspectImage fails with drivers.ErrImageNotFound for a missing image.
func (d *daemon) inspectImage(ctx context.Context, ref string) (*docker.Image, error) {
	var img docker.Image
	err := d.do(ctx, "inspect_image", fmt.Sprintf("image %q", ref), kindImage, func(ctx context.Context) error {
		return d.api.rawCall(ctx, http.MethodGet, "/images/"+ref+"/json", &img)
	})
	if err != nil {
		return nil, err
	}
	return &img, nil
}

// inspectContainer fails with drivers.ErrContainerGone for a missing one.
func (d *daemon) inspectContainer(ctx context.Context, id string) (*docker.Container, error) {
	var ctr *docker.Container
	err := d.do(ctx, "inspect_container", fmt.Sprintf("container %q", id), kindContainer, func(ctx context.Context) error {
		var err error
		ctr, err = d.client.InspectContainerWithOptions(docker.InspectContainerOptions{ID: id, Context: ctx})
		return err
	})
	return ctr, err
}

func (d *daemon) kill(ctx context.Context, id string, sig docker.Signal) error {
	return d.do(ctx, "kill", fmt.Sprintf("container %q", id), kindContainer, func(ctx context.Context) error {
		return d.client.KillContainer(docker.KillContainerOptions{ID: id, Signal: sig, Context: ctx})
	})
}

// startContainer goes through the raw API: go-dockerclient's start asks the
// daemon's version on first use and writes the client's version fields
// without a lock, a race when the pool starts several holders at once.
func (d *daemon) startContainer(ctx context.Context, id, what string) error {
	return d.do(ctx, "start", what, kindContainer, func(ctx context.Context) error {
		return d.api.rawCall(ctx, http.MethodPost, "/containers/"+id+"/start", nil)
	})
}

// setPaused freezes or thaws a container; one already so is no error.
func (d *daemon) setPaused(ctx context.Context, id string, paused bool) error {
	api := "unpause"
	if paused {
		api = "pause"
	}
	return d.do(ctx, api, fmt.Sprintf("container %q", id), kindContainer, func(ctx context.Context) error {
		return retryPauseRace(ctx, paused, func() error {
			return d.api.rawCall(ctx, http.MethodPost, "/containers/"+id+"/"+api, nil)
		}, func() (bool, error) {
			var st struct{ State struct{ Paused bool } }
			err := d.api.rawCall(ctx, http.MethodGet, "/containers/"+id+"/json", &st)
			return st.State.Paused, err
		})
	})
}

// pauseRaceRetries bounds the retries of a pause refused by a stale record.
const pauseRaceRetries = 10

// pauseSettle is how long dockerd's record must keep showing the state a
// refused pause or unpause asked for before the driver believes it.
const pauseSettle = 50 * time.Millisecond

// retryPauseRace handles a pause or unpause refused because the container
// is in the wanted state already. containerd's refusal (isPauseDone) is the
// truth. dockerd's (isPauseRace) comes from its record, which lags
// containerd's events under load (20.10 shows a state one event late), so
// it is believed only once the record keeps that state for pauseSettle.
func retryPauseRace(ctx context.Context, paused bool, call func() error, state func() (bool, error)) error {
	var err error
	for attempt := 0; attempt < pauseRaceRetries; attempt++ {
		err = call()
		switch {
		case err == nil || isPauseDone(err, paused):
			return nil
		case !isPauseRace(err):
			return err
		case pauseSettled(ctx, paused, state):
			return nil
		}
		t := time.NewTimer(time.Duration(attempt+1) * 20 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
	return err
}

// pauseSettled reports whether the daemon's record shows the container
// paused (or not) as wanted, and still does pauseSettle later.
func pauseSettled(ctx context.Context, paused bool, state func() (bool, error)) bool {
	if now, err := state(); err != nil || now != paused {
		return false
	}
	t := time.NewTimer(pauseSettle)
	select {
	case <-ctx.Done():
		t.Stop()
		return false
	case <-t.C:
	}
	now, err := state()
	return err == nil && now == paused
}

// isPauseRace: dockerd's record says the container is in that state already.
func isPauseRace(err error) bool {
	var apiErr *docker.Error
	if !errors.As(err, &apiErr) {
		return false
	}
	return (apiErr.Status == http.StatusConflict && strings.Contains(apiErr.Message, "already paused")) ||
		(apiErr.Status == http.StatusInternalServerError && strings.Contains(apiErr.Message, "is not paused"))
}

// isPauseDone: containerd says the processes are in that state already.
func isPauseDone(err error, paused bool) bool {
	var apiErr *docker.Error
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusInternalServerError {
		return false
	}
	if paused {
		return strings.Contains(apiErr.Message, "cannot pause a paused container")
	}
	return strings.Contains(apiErr.Message, "cannot resume a running process")
}

// remove removes a container with its anonymous volumes, killing it if it
// runs. A container already gone is not an error.
func (d *daemon) remove(ctx context.Context, id string) error {
	err := d.do(ctx, "remove", fmt.Sprintf("container %q", id), kindContainer, func(ctx context.Context) error {
		return d.client.RemoveContainer(docker.RemoveContainerOptions{ID: id, RemoveVolumes: true, Force: true, Context: ctx})
	})
	if isGone(err) || isRemovalInProgress(err) {
		return nil
	}
	return err
}

// isRemovalInProgress: another remove of the same container is under way
// (the reaper and a Close racing), which will finish the job.
func isRemovalInProgress(err error) bool {
	var apiErr *docker.Error
	return errors.As(err, &apiErr) && apiErr.Status == http.StatusConflict && strings.Contains(apiErr.Message, "already in progress")
}

// streamError finds an error message in a JSON message stream that the
// daemon sent with a success status.
func streamError(stream string) error {
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

// rawAPI reaches the daemon directly for what go-dockerclient offers
// without a context (pause, unpause, image inspect, info, a stats stream
// that can be abandoned) and for attach, whose go-dockerclient form can
// neither be cancelled while its handshake hangs nor report a refused
// handshake. It shares go-dockerclient's connection pool, so every
// connection of the driver comes from dial.
type rawAPI struct {
	endpoint  string
	network   string // "unix" or "tcp", to dial for attach
	address   string
	baseURL   string
	tls       *tls.Config // nil: plain connections
	dialer    *net.Dialer
	transport *http.Transport
	http      *http.Client
}

// newRawAPI parses endpoint; tlsConfig, when non-nil, wraps every
// connection in TLS (a tcp:// endpoint only).
func newRawAPI(endpoint string, dialTimeout time.Duration, tlsConfig *tls.Config) (*rawAPI, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("docker driver: endpoint %q: %w", endpoint, drivers.ErrInvalidConfig)
	}
	a := &rawAPI{endpoint: endpoint, tls: tlsConfig}
	switch u.Scheme {
	case "unix":
		a.network, a.address, a.baseURL = "unix", u.Path, "http://docker"
	case "tcp", "http":
		a.network, a.address, a.baseURL = "tcp", u.Host, "http://"+u.Host
	default:
		return nil, fmt.Errorf("docker driver: endpoint %q: scheme %q is not supported (unix, tcp): %w", endpoint, u.Scheme, drivers.ErrInvalidConfig)
	}
	if tlsConfig != nil {
		if a.network != "tcp" {
			return nil, fmt.Errorf("docker driver: endpoint %q: TLS needs a tcp:// endpoint: %w", endpoint, drivers.ErrInvalidConfig)
		}
		a.baseURL = "https://" + u.Host
	}
	// The timeout covers the TLS handshake too: tls.Dialer applies it to
	// the whole dial.
	a.dialer = &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	// One pooled transport with keep-alives for every call: go-dockerclient's
	// default opens a connection per call. With TLS the URLs are https, so
	// the transport dials through DialTLSContext, which also keeps it on
	// HTTP/1.1, the protocol the daemon's streams and upgrades speak.
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) { return a.dial(ctx) }
	a.transport = &http.Transport{
		DialContext:         dial,
		MaxIdleConns:        100,
		MaxIdleConnsPerHost: 100,
		IdleConnTimeout:     90 * time.Second,
	}
	if tlsConfig != nil {
		a.transport.DialTLSContext = dial
	}
	a.http = &http.Client{Transport: a.transport}
	return a, nil
}

// dial opens one connection to the daemon, the TLS handshake bounded by ctx.
func (a *rawAPI) dial(ctx context.Context) (net.Conn, error) {
	if a.tls == nil {
		return a.dialer.DialContext(ctx, a.network, a.address)
	}
	d := tls.Dialer{NetDialer: a.dialer, Config: a.tls}
	return d.DialContext(ctx, a.network, a.address)
}

// share makes client use the raw API's connection pool.
func (a *rawAPI) share(client *docker.Client) {
	client.HTTPClient = a.http
	client.Dialer = contextlessDialer{a}
	if a.tls != nil {
		// go-dockerclient's own hijack dials TLS itself, and only through
		// a *net.Dialer; its streams go through HTTPClient.
		client.TLSConfig = a.tls
		client.Dialer = a.dialer
	}
}

// clientEndpoint is go-dockerclient's endpoint: https with TLS, so that its
// URLs make the shared transport dial through DialTLSContext.
func (a *rawAPI) clientEndpoint() string {
	if a.tls != nil {
		return a.baseURL
	}
	return a.endpoint
}

// closeIdle closes pooled connections, so none outlives the driver.
func (a *rawAPI) closeIdle() { a.transport.CloseIdleConnections() }

// contextlessDialer is go-dockerclient's Dialer for its streams (pull, load)
// on a unix socket, bounded by a dial timeout since it gets no context.
type contextlessDialer struct{ a *rawAPI }

func (c contextlessDialer) Dial(string, string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.a.dial(ctx)
}
