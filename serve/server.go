package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
)

// Defaults of the options.
const (
	DefaultMaxContainers      = 64
	DefaultMaxContainersPerFn = 8
	DefaultMaxQueue           = 100
	DefaultFreezeIdle         = 50 * time.Millisecond
	DefaultStartTimeout       = 10 * time.Second
	DefaultPullTimeout        = 5 * time.Minute
	DefaultMaxRequestSize     = 6 << 20
	DefaultMaxResponseSize    = 6 << 20
	DefaultRetryAfter         = 15 * time.Second
)

type options struct {
	log           *logrus.Entry
	driverName    string
	iofsDir       string
	maxContainers int
	maxPerFn      int
	maxQueue      int
	maxCalls      int
	freezeIdle    time.Duration
	startTimeout  time.Duration
	pullTimeout   time.Duration
	createTimeout time.Duration
	pauseTimeout  time.Duration
	closeTimeout  time.Duration
	maxRequest    int64
	maxResponse   int64
	retryAfter    time.Duration
	metrics       bool
	before        drivers.BeforeCall
	after         drivers.AfterCall
}

// Option configures a Server.
type Option func(*options)

// WithLogger sets the logger; the default discards.
func WithLogger(log *logrus.Entry) Option { return func(o *options) { o.log = log } }

// WithDriverName names the driver in logs, metrics and /health.
func WithDriverName(name string) Option { return func(o *options) { o.driverName = name } }

// WithSocketDir sets the folder under which each container gets the folder
// of its unix socket (default: the system's temporary folder). The server
// works in a folder of its own under it and removes it on Close. Keep the
// path short: a socket path holds at most 107 bytes.
func WithSocketDir(dir string) Option { return func(o *options) { o.iofsDir = dir } }

// WithLimits bounds the hot containers: in all, per slot (a function), and
// the calls that may wait for a container of one function. Zero keeps a
// default.
func WithLimits(maxContainers, maxPerFn, maxQueue int) Option {
	return func(o *options) {
		if maxContainers > 0 {
			o.maxContainers = maxContainers
		}
		if maxPerFn > 0 {
			o.maxPerFn = maxPerFn
		}
		if maxQueue > 0 {
			o.maxQueue = maxQueue
		}
	}
}

// WithFreezeIdle sets how long a container stays idle before it is frozen:
// 0 freezes it as soon as its call ends, a negative duration never.
func WithFreezeIdle(d time.Duration) Option { return func(o *options) { o.freezeIdle = d } }

// WithStartTimeout bounds the wait for a started function to listen on its
// socket (Fn's contract gives it 5 seconds).
func WithStartTimeout(d time.Duration) Option { return func(o *options) { o.startTimeout = d } }

// WithPullTimeout bounds an image pull.
func WithPullTimeout(d time.Duration) Option { return func(o *options) { o.pullTimeout = d } }

// WithMaxCallsPerContainer retires a container after n calls; 0 (the
// default) never does. 1 makes every call cold.
func WithMaxCallsPerContainer(n int) Option { return func(o *options) { o.maxCalls = n } }

// WithMaxSizes bounds a call's request and the function's response, in
// bytes. Zero keeps a default.
func WithMaxSizes(request, response int64) Option {
	return func(o *options) {
		if request > 0 {
			o.maxRequest = request
		}
		if response > 0 {
			o.maxResponse = response
		}
	}
}

// WithRetryAfter sets the Retry-After of a 503 (default 15s, as Fn).
func WithRetryAfter(d time.Duration) Option { return func(o *options) { o.retryAfter = d } }

// WithoutMetrics leaves out /metrics and the registration of views.
func WithoutMetrics() Option { return func(o *options) { o.metrics = false } }

// WithCallHooks sets the base BeforeCall and AfterCall of every container
// task; the driver may wrap them. A failing hook ends the container.
func WithCallHooks(before drivers.BeforeCall, after drivers.AfterCall) Option {
	return func(o *options) { o.before, o.after = before, after }
}

func discardLogger() *logrus.Entry {
	l := logrus.New()
	l.Out = io.Discard
	l.SetLevel(logrus.PanicLevel)
	return logrus.NewEntry(l)
}

// Server is an invocation agent speaking Fn's API over a fnrun driver: it
// keeps apps and functions in a Store and runs calls in hot containers
// that follow Fn's container contract. It is safe for concurrent use.
type Server struct {
	drv   drivers.Driver
	store Store
	opts  *options
	log   *logrus.Entry
	agent *agent
	mets  *metrics
	mux   *http.ServeMux

	mu       sync.Mutex
	draining bool
	inflight sync.WaitGroup
	httpSrv  *http.Server
	closed   bool
	closeErr error
	done     chan struct{}
}

// New returns a server over drv and store. The server does not own drv:
// close the driver after the server. It owns store and closes it.
func New(drv drivers.Driver, store Store, opts ...Option) (*Server, error) {
	if drv == nil || store == nil {
		return nil, errors.New("serve: a driver and a store are required")
	}
	o := &options{
		log:           discardLogger(),
		driverName:    "driver",
		iofsDir:       os.TempDir(),
		maxContainers: DefaultMaxContainers,
		maxPerFn:      DefaultMaxContainersPerFn,
		maxQueue:      DefaultMaxQueue,
		freezeIdle:    DefaultFreezeIdle,
		startTimeout:  DefaultStartTimeout,
		pullTimeout:   DefaultPullTimeout,
		createTimeout: time.Minute,
		pauseTimeout:  10 * time.Second,
		closeTimeout:  time.Minute,
		maxRequest:    DefaultMaxRequestSize,
		maxResponse:   DefaultMaxResponseSize,
		retryAfter:    DefaultRetryAfter,
		metrics:       true,
	}
	for _, opt := range opts {
		opt(o)
	}
	if o.startTimeout <= 0 || o.pullTimeout <= 0 {
		return nil, fmt.Errorf("serve: start and pull timeouts must be positive: %w", drivers.ErrInvalidConfig)
	}
	if dir, err := filepath.Abs(o.iofsDir); err == nil {
		o.iofsDir = dir
	}
	if err := os.MkdirAll(o.iofsDir, 0o755); err != nil {
		return nil, fmt.Errorf("serve: socket folder: %w", err)
	}
	m, err := newMetrics(o.metrics)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	a, err := newAgent(drv, o, m)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	s := &Server{drv: drv, store: store, opts: o, log: o.log, agent: a, mets: m, done: make(chan struct{})}
	s.routes()
	return s, nil
}

// Handler returns the server's HTTP handler: Fn's API, /invoke, /health,
// /version and /metrics.
func (s *Server) Handler() http.Handler { return s }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Serve answers on l until Shutdown or Close. It returns nil after a
// shutdown.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed || s.draining {
		s.mu.Unlock()
		return ErrClosed
	}
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          nil,
	}
	s.httpSrv = hs
	s.mu.Unlock()
	err := hs.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// enter counts a call in flight, unless the server is draining.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.inflight.Add(1)
	return true
}

// Shutdown stops the server gracefully: it stops accepting connections and
// calls (new calls get 503), lets the calls in flight finish until ctx
// ends, then cuts the rest, ends and removes every container, and closes
// the store. It returns ctx's error when calls had to be cut.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	hs := s.httpSrv
	s.mu.Unlock()

	var cut error
	if hs != nil {
		if err := hs.Shutdown(ctx); err != nil {
			cut = err
		}
	}
	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		cut = ctx.Err()
		s.log.Warn("shutdown: calls still running at the deadline are cut")
		s.agent.cancelCalls()
		<-done
	}
	if hs != nil {
		_ = hs.Close()
	}
	if err := s.Close(); err != nil {
		return err
	}
	return cut
}

// Close stops the server at once: calls in flight are cut, every container
// is ended and removed, the store is closed. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return s.closeErr
	}
	s.closed = true
	s.draining = true
	hs := s.httpSrv
	s.mu.Unlock()

	s.agent.cancelCalls()
	if hs != nil {
		_ = hs.Close()
	}
	s.inflight.Wait()
	err := errors.Join(s.agent.close(), s.store.Close())
	s.mu.Lock()
	s.closeErr = err
	s.mu.Unlock()
	close(s.done)
	return err
}

// Stats are the server's figures, as /health shows them.
type Stats struct {
	Containers int `json:"containers"` // every container counted: starting, idle, busy, being removed
	Idle       int `json:"idle"`
	Busy       int `json:"busy"`
	Starting   int `json:"starting"`
	Waiting    int `json:"waiting"` // calls waiting for a container
}

// Stats returns the server's figures.
func (s *Server) Stats() Stats {
	live, idle, busy, starting, waiting := s.agent.counts()
	return Stats{Containers: live, Idle: idle, Busy: busy, Starting: starting, Waiting: waiting}
}
