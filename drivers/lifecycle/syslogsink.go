package lifecycle

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
	// syslogDialTimeout bounds the connect (and TLS handshake) at the start
	// of a run: an endpoint that does not answer fails Run.
	syslogDialTimeout = 5 * time.Second
	// syslogWriteTimeout bounds one write: a stalled server loses the
	// rest of the run's messages instead of holding them up.
	syslogWriteTimeout = time.Second
	// syslogCloseTimeout bounds the wait for the queue at the end of a run.
	syslogCloseTimeout = 2 * time.Second
	// syslogQueueLen messages wait for the writer; more are dropped, so a
	// slow server never slows the container's output.
	syslogQueueLen = 1024
	// syslogMaxReconnects bounds the dials again of streams closed in a run.
	syslogMaxReconnects = 3
	// syslogMaxLine is Docker's copier buffer: a longer line becomes
	// several messages, and a UDP datagram stays well under its limit.
	syslogMaxLine = 16 << 10

	// RFC 5424 field limits.
	syslogMaxHostname = 255
	syslogMaxAppName  = 48

	facilityUser = 1 // Fn's choice for Docker's syslog driver
	severityErr  = 3 // stderr
	severityInfo = 6 // stdout
)

// syslogTimestamp is RFC 3339 with microseconds, the most RFC 5424 allows.
const syslogTimestamp = "2006-01-02T15:04:05.000000Z07:00"

// syslogSink queues one run's output lines for a writer goroutine of its own.
type syslogSink struct {
	target   *SyslogTarget
	framed   bool // stream transports need octet counting to delimit messages
	hostname string
	appName  string
	log      *logrus.Entry

	mu      sync.Mutex // orders sends against the close of queue
	closed  bool
	queue   chan []byte
	streams []*syslogLines

	done    chan struct{} // closed when the writer goroutine has ended
	dropped atomic.Int64

	// ctx ends a dial again of the writer when close stops waiting.
	ctx    context.Context
	cancel context.CancelFunc
	connMu sync.Mutex // the writer replaces conn, close closes it
	conn   net.Conn
}

// dialSyslog connects to target and starts the sink's writer. The APP-NAME
// of every message is the task's tag, or the container id without tags,
// as Docker's default tag is.
func dialSyslog(ctx context.Context, target *SyslogTarget, containerID string, log *logrus.Entry) (*syslogSink, error) {
	ctx, cancel := context.WithTimeout(ctx, syslogDialTimeout)
	defer cancel()
	conn, framed, err := dialSyslogConn(ctx, target)
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
	s := &syslogSink{
		target:   target,
		ctx:      sinkCtx,
		cancel:   stop,
		conn:     conn,
		framed:   framed,
		hostname: headerField(hostname, syslogMaxHostname),
		appName:  headerField(appName, syslogMaxAppName),
		log:      log.WithField("syslog", target.URL()),
		queue:    make(chan []byte, syslogQueueLen),
		done:     make(chan struct{}),
	}
	go s.writeLoop()
	return s, nil
}

// dialSyslogConn connects, and reports whether the connection is a
// stream (whose messages need framing) rather than datagrams.
func dialSyslogConn(ctx context.Context, target *SyslogTarget) (net.Conn, bool, error) {
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

// lines returns a writer that hands everything to next unchanged (nil
// next: to no one) and sends each line to syslog with severity.
func (s *syslogSink) lines(severity int, next io.Writer) io.Writer {
	w := &syslogLines{sink: s, severity: severity, next: next}
	s.mu.Lock()
	s.streams = append(s.streams, w)
	s.mu.Unlock()
	return w
}

// send queues one message; a full queue or a closed sink drops it.
func (s *syslogSink) send(severity int, line []byte) {
	msg := syslogMessage(facilityUser*8+severity, time.Now(), s.hostname, s.appName, line)
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

func (s *syslogSink) writeLoop() {
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
		if err != nil && s.framed && !timedOut && reconnects < syslogMaxReconnects && s.ctx.Err() == nil {
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

func (s *syslogSink) write(msg []byte) error {
	s.connMu.Lock()
	conn := s.conn
	s.connMu.Unlock()
	_ = conn.SetWriteDeadline(time.Now().Add(syslogWriteTimeout))
	_, err := conn.Write(msg)
	return err
}

// redial replaces the connection; close's cancel ends a dial under way.
func (s *syslogSink) redial() error {
	ctx, cancel := context.WithTimeout(s.ctx, syslogDialTimeout)
	defer cancel()
	conn, _, err := dialSyslogConn(ctx, s.target)
	if err != nil {
		return err
	}
	s.connMu.Lock()
	old := s.conn
	s.conn = conn
	s.connMu.Unlock()
	_ = old.Close()
	if s.ctx.Err() != nil {
		_ = conn.Close() // close has given up waiting meanwhile
	}
	return nil
}

func (s *syslogSink) closeConn() {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	_ = s.conn.Close()
}

// close is called once the run's output copies have ended: later lines are
// dropped. It is idempotent, and a no-op on a nil sink (no log URL).
func (s *syslogSink) close() {
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

	t := time.NewTimer(syslogCloseTimeout)
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

// syslogLines splits one stream into lines for the sink.
type syslogLines struct {
	sink     *syslogSink
	severity int
	next     io.Writer

	mu      sync.Mutex // the stream's copy and the run's close both flush
	partial []byte
}

func (w *syslogLines) Write(p []byte) (int, error) {
	w.split(p)
	if w.next == nil {
		return len(p), nil
	}
	return w.next.Write(p)
}

func (w *syslogLines) split(p []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(p) > 0 {
		room := syslogMaxLine - len(w.partial)
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
func (w *syslogLines) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.emit()
	}
}

func (w *syslogLines) emit() {
	w.sink.send(w.severity, w.partial)
	w.partial = w.partial[:0]
}

// syslogMessage formats an RFC 5424 message as Docker's rfc5424micro format
// does, with nil PROCID and MSGID: the container's process id is unknown
// here, and the tag is already the APP-NAME.
func syslogMessage(priority int, now time.Time, hostname, appName string, line []byte) []byte {
	msg := make([]byte, 0, 64+len(hostname)+len(appName)+len(line))
	msg = append(msg, '<')
	msg = strconv.AppendInt(msg, int64(priority), 10)
	msg = append(msg, ">1 "...)
	msg = now.AppendFormat(msg, syslogTimestamp)
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
