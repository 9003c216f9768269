// Package syslog sends a run's output lines to a syslog endpoint as RFC 5424
// messages, the way Docker's syslog log driver (format rfc5424micro) does,
// for the runtimes that have no log driver of their own (containerd, the
// mock): package lifecycle dials it before a container starts.
//
// We write our own rather than use srslog, the client Docker's driver
// uses: srslog writes with no deadline, so a stalled server blocks the
// writer; it delimits messages on a stream with a newline unless told to
// count octets; and it dials again after every failed write, with no
// bound. Here the dial, each write and the wait at Close are bounded,
// stream messages are always octet-counted, the queue is bounded (a slow
// server loses messages rather than slow the container's output), and a
// run dials again at most maxReconnects times.
//
// Target and Parse validate a task's drivers.LoggerConfig; the errors
// wrap drivers.ErrInvalidTask, and an endpoint Dial cannot reach
// drivers.ErrSyslogUnavailable, so callers see the contract's classes.
package syslog

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
)

const (
	// dialTimeout bounds the connect (and TLS handshake) at the start
	// of a run: an endpoint that does not answer fails Run.
	dialTimeout = 5 * time.Second
	// writeTimeout bounds one write: a stalled server loses the
	// rest of the run's messages instead of holding them up.
	writeTimeout = time.Second
	// closeTimeout bounds the wait for the queue at the end of a run.
	closeTimeout = 2 * time.Second
	// queueLen messages wait for the writer; more are dropped, so a
	// slow server never slows the container's output.
	queueLen = 1024
	// maxReconnects bounds the dials again of streams closed in a run.
	maxReconnects = 3
	// maxLine is Docker's copier buffer: a longer line becomes
	// several messages, and a UDP datagram stays well under its limit.
	maxLine = 16 << 10

	// RFC 5424 field limits.
	maxHostname = 255
	maxAppName  = 48

	facilityUser = 1 // Fn's choice for Docker's syslog driver
	severityErr  = 3 // stderr
	severityInfo = 6 // stdout
)

// timestampFormat is RFC 3339 with microseconds, the most RFC 5424 allows.
const timestampFormat = "2006-01-02T15:04:05.000000Z07:00"

// Sink queues one run's output lines for a writer goroutine of its own.
type Sink struct {
	target   *Target
	framed   bool // stream transports need octet counting to delimit messages
	hostname string
	appName  string
	log      *logrus.Entry

	mu      sync.Mutex // orders sends against the close of queue
	closed  bool
	queue   chan []byte
	streams []*lineWriter

	done    chan struct{} // closed when the writer goroutine has ended
	dropped atomic.Int64

	// ctx ends a dial again of the writer when Close stops waiting.
	ctx    context.Context
	cancel context.CancelFunc
	connMu sync.Mutex // the writer replaces conn, Close closes it
	conn   net.Conn
}

// Dial connects to target and starts the sink's writer. The APP-NAME of
// every message is the target's Tag, or containerID without tags, as
// Docker's default tag is. An endpoint that cannot be reached within
// dialTimeout gives an error wrapping drivers.ErrSyslogUnavailable.
func Dial(ctx context.Context, target *Target, containerID string, log *logrus.Entry) (*Sink, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	conn, framed, err := dialConn(ctx, target)
	if err != nil {
		if errors.Is(err, drivers.ErrInvalidTask) {
			return nil, fmt.Errorf("syslog %s: %w", target.URL(), err)
		}
		return nil, fmt.Errorf("syslog %s: %w: %w", target.URL(), drivers.ErrSyslogUnavailable, err)
	}
	hostname, _ := os.Hostname()
	appName := target.Tag
	if appName == "" {
		appName = containerID
	}
	sinkCtx, stop := context.WithCancel(context.Background())
	s := &Sink{
		target:   target,
		ctx:      sinkCtx,
		cancel:   stop,
		conn:     conn,
		framed:   framed,
		hostname: headerField(hostname, maxHostname),
		appName:  headerField(appName, maxAppName),
		log:      log.WithField("syslog", target.URL()),
		queue:    make(chan []byte, queueLen),
		done:     make(chan struct{}),
	}
	go s.writeLoop()
	return s, nil
}

// dialConn connects, and reports whether the connection is a
// stream (whose messages need framing) rather than datagrams.
func dialConn(ctx context.Context, target *Target) (net.Conn, bool, error) {
	var d net.Dialer
	switch target.Network {
	case "udp", "unixgram":
		conn, err := d.DialContext(ctx, target.Network, target.Address)
		return conn, false, err
	case "unix":
		// As Docker does: the usual local socket (/dev/log) is a datagram
		// socket, and a stream socket refuses a datagram dial.
		if conn, err := d.DialContext(ctx, "unixgram", target.Address); err == nil {
			return conn, false, nil
		}
		conn, err := d.DialContext(ctx, "unix", target.Address)
		return conn, true, err
	case "tcp":
		conn, err := d.DialContext(ctx, "tcp", target.Address)
		return conn, true, err
	case "tcp+tls":
		host, _, err := net.SplitHostPort(target.Address)
		if err != nil {
			return nil, false, err
		}
		// Nil RootCAs: the system roots verify the server.
		td := tls.Dialer{NetDialer: &d, Config: &tls.Config{ServerName: host}}
		conn, err := td.DialContext(ctx, "tcp", target.Address)
		return conn, true, err
	}
	return nil, false, drivers.InvalidTaskf("log network %q", target.Network)
}

// Stdout returns a writer that hands everything to next unchanged (nil
// next: to no one) and sends each line to syslog with severity info.
func (s *Sink) Stdout(next io.Writer) io.Writer { return s.lines(severityInfo, next) }

// Stderr is Stdout with severity err.
func (s *Sink) Stderr(next io.Writer) io.Writer { return s.lines(severityErr, next) }

func (s *Sink) lines(severity int, next io.Writer) io.Writer {
	w := &lineWriter{sink: s, severity: severity, next: next}
	s.mu.Lock()
	s.streams = append(s.streams, w)
	s.mu.Unlock()
	return w
}

// send queues one message; a full queue or a closed sink drops it.
func (s *Sink) send(severity int, line []byte) {
	msg := message(facilityUser*8+severity, time.Now(), s.hostname, s.appName, line)
	if s.framed {
		msg = octetFrame(msg)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	select {
	case s.queue <- msg:
	default:
		s.dropped.Add(1)
	}
}

func (s *Sink) writeLoop() {
	defer close(s.done)
	broken, reconnects := false, 0
	for msg := range s.queue {
		if broken {
			s.dropped.Add(1)
			continue
		}
		err := s.write(msg)
		var ne net.Error
		timedOut := errors.As(err, &ne) && ne.Timeout()
		if err != nil && s.framed && !timedOut && reconnects < maxReconnects && s.ctx.Err() == nil {
			// The server closed the stream (it restarted, say): dial again,
			// as Docker's syslog driver does, and send the message once
			// more. A message written just before the close may be lost.
			reconnects++
			if err = s.redial(); err == nil {
				err = s.write(msg)
			}
		}
		if err != nil {
			s.dropped.Add(1)
			// A partly written frame leaves a stream unusable, and a
			// timed-out server would cost every later message the same
			// wait; a refused datagram may be the next one's luck.
			if s.framed || timedOut || errors.Is(err, net.ErrClosed) {
				broken = true
				s.log.WithError(err).Warn("syslog write failed, dropping the rest of the run's messages")
			}
		}
	}
}

func (s *Sink) write(msg []byte) error {
	s.connMu.Lock()
	conn := s.conn
	s.connMu.Unlock()
	_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := conn.Write(msg)
	return err
}

// redial replaces the connection; Close's cancel ends a dial under way.
func (s *Sink) redial() error {
	ctx, cancel := context.WithTimeout(s.ctx, dialTimeout)
	defer cancel()
	conn, _, err := dialConn(ctx, s.target)
	if err != nil {
		return err
	}
	s.connMu.Lock()
	old := s.conn
	s.conn = conn
	s.connMu.Unlock()
	_ = old.Close()
	if s.ctx.Err() != nil {
		_ = conn.Close() // Close has given up waiting meanwhile
	}
	return nil
}

func (s *Sink) closeConn() {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	_ = s.conn.Close()
}

// Close is called once the run's output copies have ended: it sends the
// last partial lines, waits at most closeTimeout for the queue, and drops
// later lines. It is idempotent, and a no-op on a nil sink (no log URL).
func (s *Sink) Close() {
	if s == nil {
		return
	}
	s.mu.Lock()
	streams := s.streams
	s.mu.Unlock()
	for _, w := range streams {
		w.flush()
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.queue)
	s.mu.Unlock()

	t := time.NewTimer(closeTimeout)
	select {
	case <-s.done:
		t.Stop()
	case <-t.C:
		// Closing makes the pending write and the rest fail at once, and
		// the cancel a dial again.
		s.cancel()
		s.closeConn()
		<-s.done
	}
	s.cancel()
	s.closeConn()
	if n := s.dropped.Load(); n > 0 {
		s.log.WithField("dropped", n).Warn("syslog messages dropped")
	}
}

// lineWriter splits one stream into lines for the sink.
type lineWriter struct {
	sink     *Sink
	severity int
	next     io.Writer

	mu      sync.Mutex // the stream's copy and Close both flush
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.split(p)
	if w.next == nil {
		return len(p), nil
	}
	return w.next.Write(p)
}

func (w *lineWriter) split(p []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(p) > 0 {
		room := maxLine - len(w.partial)
		// One byte past the room: a full line may still end right there.
		if i := bytes.IndexByte(p[:min(len(p), room+1)], '\n'); i >= 0 {
			w.partial = append(w.partial, p[:i]...)
			w.emit()
			p = p[i+1:]
			continue
		}
		if room == 0 {
			w.emit() // a line longer than a message goes out in pieces
			continue
		}
		n := min(len(p), room)
		w.partial = append(w.partial, p[:n]...)
		p = p[n:]
	}
}

// flush sends a last line that had no newline.
func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.emit()
	}
}

func (w *lineWriter) emit() {
	w.sink.send(w.severity, w.partial)
	w.partial = w.partial[:0]
}

// message formats an RFC 5424 message as Docker's rfc5424micro format
// does, with nil PROCID and MSGID: the container's process id is unknown
// here, and the tag is already the APP-NAME.
func message(priority int, now time.Time, hostname, appName string, line []byte) []byte {
	msg := make([]byte, 0, 64+len(hostname)+len(appName)+len(line))
	msg = append(msg, '<')
	msg = strconv.AppendInt(msg, int64(priority), 10)
	msg = append(msg, ">1 "...)
	msg = now.AppendFormat(msg, timestampFormat)
	msg = append(msg, ' ')
	msg = append(msg, hostname...)
	msg = append(msg, ' ')
	msg = append(msg, appName...)
	msg = append(msg, " - - - "...)
	return append(msg, line...)
}

// octetFrame prefixes msg with its length (RFC 5425, RFC 6587 octet
// counting), which delimits messages on a stream whatever they contain.
func octetFrame(msg []byte) []byte {
	out := strconv.AppendInt(make([]byte, 0, len(msg)+8), int64(len(msg)), 10)
	out = append(out, ' ')
	return append(out, msg...)
}

// headerField makes s a valid RFC 5424 header field: printable ASCII
// without spaces, at most limit bytes, "-" when empty. A space would shift
// every later field for the receiver.
func headerField(s string, limit int) string {
	if s == "" {
		return "-"
	}
	b := []byte(s)
	for i, c := range b {
		if c < 33 || c > 126 {
			b[i] = '_'
		}
	}
	if len(b) > limit {
		b = b[:limit]
	}
	return string(b)
}
