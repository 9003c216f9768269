package docker

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	docker "github.com/fsouza/go-dockerclient"
	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/lifecycle"
	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/images/dockerstore"
	"github.com/fnrun/fnrun/internal/dockerconn"
)

const (
	driverName      = "docker"
	defaultEndpoint = "unix:///var/run/docker.sock"
)

// Labels put on every container the driver creates: package drivers' keys.
const (
	LabelLibrary  = drivers.LabelLibrary
	LabelTag      = drivers.LabelTag
	LabelInstance = drivers.LabelInstance
	libraryName   = drivers.LibraryName
)

// Defaults of this driver's own options.
const (
	defaultLoadTimeout = 10 * time.Minute
	// defaultStatsDelay: the daemon publishes a sample a second, so a run
	// shorter than this would get none worth having; not subscribing saves
	// short calls a daemon request.
	defaultStatsDelay = 250 * time.Millisecond
	// pullInactivity ends a pull whose progress stream went silent: a
	// registry that stalls mid-layer.
	pullInactivity = 2 * time.Minute
)

// Option configures a Driver: any drivers.Option (logger, timeouts, Docker
// config), or one of this package.
type Option = drivers.Option

type options struct {
	tls         dockerconn.TLSRequest
	loadTimeout time.Duration
	statsDelay  time.Duration
	// wrapStore, for tests, changes the image store the cleaner and
	// ImageStore use (to confine a test to its own images).
	wrapStore func(images.Store) images.Store
}

type option func(*options)

// WithTLS connects to a tcp:// endpoint over TLS, as DOCKER_TLS_VERIFY=1
// does for the docker CLI: certPath is a folder with ca.pem, which the
// daemon's certificate must verify against, and cert.pem and key.pem, the
// client certificate (both or neither). An empty certPath means
// DOCKER_CERT_PATH, else ~/.docker. It takes precedence over
// DOCKER_TLS_VERIFY; on a unix:// endpoint New fails.
func WithTLS(certPath string) Option {
	return drivers.WithExtra(option(func(o *options) {
		o.tls = dockerconn.TLSRequest{Enabled: true, CertPath: certPath, Explicit: true}
	}))
}

// WithLoadTimeout bounds the load of drivers.Config.DockerLoadFile (default 10m).
func WithLoadTimeout(d time.Duration) Option {
	return drivers.WithExtra(option(func(o *options) { o.loadTimeout = d }))
}

// WithStatsDelay is how long a container runs before its stats are
// streamed to the task (default 250ms; 0 streams from the start).
func WithStatsDelay(d time.Duration) Option {
	return drivers.WithExtra(option(func(o *options) { o.statsDelay = d }))
}

// Driver runs cookies as Docker containers over the shared life cycle.
type Driver struct {
	*lifecycle.Driver
	d *daemon
}

var _ drivers.Driver = (*Driver)(nil)

// New connects to the daemon of cfg.Docker (DOCKER_HOST or the default
// socket when empty), checks its version against cfg.ServerVersion, loads
// cfg.DockerLoadFile and starts what cfg asks for; ctx bounds the start-up.
// An unreachable daemon, or a failed TLS handshake, gives an error wrapping
// drivers.ErrDaemonUnavailable; unusable settings drivers.ErrInvalidConfig.
func New(ctx context.Context, cfg drivers.Config, opts ...Option) (*Driver, error) {
	s, err := lifecycle.Configure(driverName, cfg, opts)
	if err != nil {
		return nil, err
	}
	d, err := connect(ctx, cfg, s)
	if err != nil {
		return nil, err
	}
	ld, err := lifecycle.New(ctx, s, d)
	if err != nil {
		_ = d.Close()
		return nil, err
	}
	d.log.WithFields(logrus.Fields{"endpoint": d.conn.Endpoint(), "version": d.host.version, "storage": d.host.storageDriver, "instance": s.Instance}).Debug("docker driver ready")
	return &Driver{Driver: ld, d: d}, nil
}

// daemon is the lifecycle.Runtime of the Docker Engine.
type daemon struct {
	s        *lifecycle.Settings
	o        options
	log      *logrus.Entry
	caller   lifecycle.Caller
	client   *docker.Client
	conn     *dockerconn.Conn
	host     hostInfo
	networks *networkSpread
	store    images.Store
}

// hostInfo is what the driver learns about the daemon at start.
type hostInfo struct {
	version       string // engine version, e.g. "20.10.24+dfsg1"
	storageDriver string
	backingFs     string
	cgroupVersion string // "1" or "2"
}

// connect reaches the daemon and does the checks and loads of New.
func connect(ctx context.Context, cfg drivers.Config, s *lifecycle.Settings) (*daemon, error) {
	o := options{loadTimeout: defaultLoadTimeout, statsDelay: defaultStatsDelay}
	for _, x := range s.Extra {
		if f, ok := x.(option); ok {
			f(&o)
		}
	}
	if o.loadTimeout <= 0 || o.statsDelay < 0 {
		return nil, fmt.Errorf("docker driver: load timeout %v or stats delay %v out of range: %w", o.loadTimeout, o.statsDelay, drivers.ErrInvalidConfig)
	}
	endpoint := cfg.Docker
	if endpoint == "" {
		endpoint = os.Getenv("DOCKER_HOST")
	}
	if endpoint == "" {
		endpoint = defaultEndpoint
	}
	if !o.tls.Enabled {
		o.tls = dockerconn.TLSFromEnv()
	}
	tlsConfig, err := dockerconn.ClientTLSConfig(o.tls, endpoint)
	if err != nil {
		return nil, err
	}
	conn, err := dockerconn.New(endpoint, s.CallTimeout, tlsConfig)
	if err != nil {
		return nil, err
	}
	client, err := docker.NewClient(conn.ClientEndpoint())
	if err != nil {
		return nil, fmt.Errorf("docker driver: endpoint %q: %w: %v", endpoint, drivers.ErrInvalidConfig, err)
	}
	conn.Share(client)
	d := &daemon{
		s:        s,
		o:        o,
		log:      s.Logger,
		caller:   lifecycle.Caller{Driver: driverName, Timeout: s.CallTimeout},
		client:   client,
		conn:     conn,
		networks: newNetworkSpread(cfg.DockerNetworks),
	}
	d.store = dockerstore.New(d.storeCall)
	if o.wrapStore != nil {
		d.store = o.wrapStore(d.store)
	}
	if err := d.start(ctx, cfg); err != nil {
		conn.CloseIdle()
		return nil, err
	}
	return d, nil
}

func (d *daemon) start(ctx context.Context, cfg drivers.Config) error {
	if err := d.do(ctx, "ping", "", kindNone, func(ctx context.Context) error {
		return d.client.PingWithContext(ctx)
	}); err != nil {
		return fmt.Errorf("docker driver: daemon at %s: %w", d.conn.Endpoint(), err)
	}
	info, err := d.info(ctx)
	if err != nil {
		return fmt.Errorf("docker driver: %w", err)
	}
	d.host = info
	if want := cfg.ServerVersion; want != "" {
		if err := checkVersion(info.version, want); err != nil {
			return err
		}
	}
	if path := cfg.DockerLoadFile; path != "" {
		if err := d.loadImages(ctx, path); err != nil {
			return err
		}
	}
	return nil
}

// checkVersion compares dotted numeric versions, ignoring a suffix such as
// "-ce" or "+dfsg1".
func checkVersion(have, want string) error {
	w, err := parseVersion(want)
	if err != nil {
		return fmt.Errorf("docker driver: server version %q: %w", want, drivers.ErrInvalidConfig)
	}
	h, err := parseVersion(have)
	if err != nil {
		return fmt.Errorf("docker driver: daemon reports an unreadable version %q", have)
	}
	for i := 0; i < len(w); i++ {
		var hv int
		if i < len(h) {
			hv = h[i]
		}
		if hv != w[i] {
			if hv < w[i] {
				return fmt.Errorf("docker driver: daemon version %s is older than the required %s: %w", have, want, drivers.ErrInvalidConfig)
			}
			return nil
		}
	}
	return nil
}

func parseVersion(v string) ([]int, error) {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	if i := strings.IndexAny(v, "-+~ "); i >= 0 {
		v = v[:i]
	}
	if v == "" {
		return nil, fmt.Errorf("empty version")
	}
	parts := strings.Split(v, ".")
	out := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("version part %q is not a number", p)
		}
		out[i] = n
	}
	return out, nil
}

// loadImages loads an image tarball (docker save format) into the daemon.
func (d *daemon) loadImages(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("docker driver: load file: %w", err)
	}
	defer f.Close()
	var out strings.Builder
	err = d.doWithin(ctx, "load", path, kindNone, d.o.loadTimeout, func(ctx context.Context) error {
		if err := d.client.LoadImage(docker.LoadImageOptions{InputStream: f, OutputStream: &out, Context: ctx}); err != nil {
			return err
		}
		// The daemon answers 200 and reports a bad archive inside the
		// stream, which go-dockerclient copies as is.
		return dockerconn.StreamError(out.String())
	})
	if err != nil {
		return fmt.Errorf("docker driver: %w", err)
	}
	d.log.WithField("file", path).Info("loaded images")
	return nil
}

// Capabilities implements drivers.Capable.
func (d *daemon) Capabilities() drivers.Capability {
	return drivers.CapRunsCommands | drivers.CapResourceLimits | drivers.CapOOMDetection |
		drivers.CapFreeze | drivers.CapReadOnlyRoot | drivers.CapUnprivileged | drivers.CapImagePull
}

// ImageStore implements lifecycle.StoreProvider: the daemon's whole store.
func (d *daemon) ImageStore() images.Store { return d.store }

var _ lifecycle.SyslogSender = (*daemon)(nil)

// SendsSyslog implements lifecycle.SyslogSender (see logConfig).
func (d *daemon) SendsSyslog() {}

// Close implements lifecycle.Closer: no connection outlives the driver.
func (d *daemon) Close() error {
	d.conn.CloseIdle()
	return nil
}

// Instance is the instance id in this driver's labels.
func (dr *Driver) Instance() string { return dr.Settings().Instance }
