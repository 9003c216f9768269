package syslog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
)

func TestSyslogMessage(t *testing.T) {
	at := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	for _, tc := range []struct {
		name     string
		priority int
		hostname string
		appName  string
		line     string
		framed   bool
		want     string
	}{
		{"stdout datagram", facilityUser*8 + severityInfo, "host1", "fn=app", "hello world", false,
			"<14>1 2024-05-06T07:08:09.123456Z host1 fn=app - - - hello world"},
		{"stderr stream", facilityUser*8 + severityErr, "host1", "fn=app,call=c1", "oops", true,
			"65 <11>1 2024-05-06T07:08:09.123456Z host1 fn=app,call=c1 - - - oops"},
		{"empty line", facilityUser*8 + severityInfo, "h", "id", "", true,
			"45 <14>1 2024-05-06T07:08:09.123456Z h id - - - "},
		{"unknown hostname, spaced tag", facilityUser*8 + severityInfo, headerField("", maxHostname), headerField("a b\tc", maxAppName), "x", false,
			"<14>1 2024-05-06T07:08:09.123456Z - a_b_c - - - x"},
		{"long tag cut to 48", facilityUser*8 + severityInfo, "h", headerField(strings.Repeat("t", 60), maxAppName), "x", false,
			"<14>1 2024-05-06T07:08:09.123456Z h " + strings.Repeat("t", 48) + " - - - x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := message(tc.priority, at, tc.hostname, tc.appName, []byte(tc.line))
			if tc.framed {
				msg = octetFrame(msg)
			}
			if string(msg) != tc.want {
				t.Fatalf("got  %q\nwant %q", msg, tc.want)
			}
		})
	}
	local := message(30, time.Date(2024, 5, 6, 7, 8, 9, 0, time.FixedZone("", 2*3600)), "h", "a", nil)
	if !strings.Contains(string(local), " 2024-05-06T07:08:09.000000+02:00 ") {
		t.Fatalf("timestamp with offset: %q", local)
	}
}

// messageLine matches a message as the sink writes it.
var messageLine = regexp.MustCompile(`^<(\d+)>1 (\S+) (\S+) (\S+) - - - (.*)$`)

type record struct {
	priority int
	appName  string
	text     string
}

func parseMessage(t testing.TB, msg string) record {
	t.Helper()
	m := messageLine.FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("not an RFC 5424 message: %q", msg)
	}
	if _, err := time.Parse(time.RFC3339Nano, m[2]); err != nil {
		t.Fatalf("timestamp of %q: %v", msg, err)
	}
	p, _ := strconv.Atoi(m[1])
	return record{priority: p, appName: m[4], text: m[5]}
}

// readFrames reads octet-counted messages until EOF.
func readFrames(r io.Reader) ([]string, error) {
	br := bufio.NewReader(r)
	var out []string
	for {
		n, err := br.ReadString(' ')
		if errors.Is(err, io.EOF) && n == "" {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		size, err := strconv.Atoi(strings.TrimSuffix(n, " "))
		if err != nil {
			return out, fmt.Errorf("frame length %q: %w", n, err)
		}
		msg := make([]byte, size)
		if _, err := io.ReadFull(br, msg); err != nil {
			return out, err
		}
		out = append(out, string(msg))
	}
}

// server listens on 127.0.0.1 (udp or tcp) and collects what it
// receives.
type server struct {
	url  string
	msgs chan string
}

func newServer(t *testing.T, network string) *server {
	t.Helper()
	s := &server{msgs: make(chan string, 100)}
	switch network {
	case "udp":
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pc.Close() })
		s.url = "udp://" + pc.LocalAddr().String()
		go func() {
			buf := make([]byte, 64<<10)
			for {
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				s.msgs <- string(buf[:n])
			}
		}()
	case "tcp":
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		s.url = "tcp://" + l.Addr().String()
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					defer conn.Close()
					frames, err := readFrames(conn)
					for _, f := range frames {
						s.msgs <- f
					}
					if err != nil {
						s.msgs <- "bad framing: " + err.Error()
					}
				}()
			}
		}()
	default:
		t.Fatalf("network %q", network)
	}
	return s
}

// receive waits for n messages.
func (s *server) receive(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	timeout := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case m := <-s.msgs:
			out = append(out, m)
		case <-timeout:
			t.Fatalf("got %d syslog messages of %d: %q", len(out), n, out)
		}
	}
	return out
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.Out = io.Discard
	return logrus.NewEntry(l)
}

func mustTarget(t *testing.T, url string, tags ...drivers.LoggerTag) *Target {
	t.Helper()
	target, err := Parse(drivers.LoggerConfig{URL: url, Tags: tags})
	if err != nil {
		t.Fatal(err)
	}
	return target
}

// TestSyslogSinkLines: lines are split on '\n', the last partial line goes
// out at close, a long line is cut like Docker's copier cuts it, and the
// next writer gets everything unchanged.
func TestSyslogSinkLines(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			srv := newServer(t, network)
			sink, err := Dial(context.Background(), mustTarget(t, srv.url), "ctr-1", quietLog())
			if err != nil {
				t.Fatal(err)
			}
			var stdout, stderr strings.Builder
			out, errw := sink.Stdout(&stdout), sink.Stderr(&stderr)
			long := strings.Repeat("x", maxLine+10)
			exact := strings.Repeat("z", maxLine)
			for _, p := range []string{"one\ntw", "o\n\nthree", "\n" + long + "\n" + exact, "\npartial"} {
				if _, err := io.WriteString(out, p); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := io.WriteString(errw, "failed\n"); err != nil {
				t.Fatal(err)
			}
			sink.Close()
			sink.Close()

			if want := "one\ntwo\n\nthree\n" + long + "\n" + exact + "\npartial"; stdout.String() != want || stderr.String() != "failed\n" {
				t.Fatalf("next writers got %q, %q", stdout.String(), stderr.String())
			}
			var got []string
			for _, m := range srv.receive(t, 9) {
				r := parseMessage(t, m)
				if r.appName != "ctr-1" {
					t.Errorf("app name %q, want the container id", r.appName)
				}
				got = append(got, fmt.Sprintf("%d:%s", r.priority, r.text))
			}
			want := []string{"14:one", "14:two", "14:", "14:three", "14:" + long[:maxLine], "14:" + long[maxLine:], "14:" + exact, "14:partial", "11:failed"}
			// stdout and stderr are separate streams: only each one's order holds.
			sort.SliceStable(got, func(i, j int) bool { return got[i][:2] > got[j][:2] })
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("messages\n%q\nwant\n%q", got, want)
			}
		})
	}
}

// TestSyslogUnixFallback: a unix:// URL on a stream socket works after the
// datagram dial is refused, with framing.
func TestSyslogUnixFallback(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan []string, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer conn.Close()
		frames, _ := readFrames(conn)
		got <- frames
	}()
	sink, err := Dial(context.Background(), mustTarget(t, "unix://"+path, drivers.LoggerTag{Name: "fn", Value: "app"}), "ctr", quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if !sink.framed {
		t.Fatal("stream socket not framed")
	}
	_, _ = sink.Stdout(nil).Write([]byte("hi\n"))
	sink.Close()
	frames := <-got
	if len(frames) != 1 || parseMessage(t, frames[0]) != (record{priority: 14, appName: "fn=app", text: "hi"}) {
		t.Fatalf("frames %q", frames)
	}
}

// TestSyslogReconnect: a server that closes the stream (a restart) gets
// the later messages on a new connection, as Docker's syslog driver dials
// again; a message written just before the close may be lost.
func TestSyslogReconnect(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	firstRead := make(chan struct{})
	second := make(chan []string, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			close(firstRead)
			second <- nil
			return
		}
		// One frame, then the close.
		br := bufio.NewReader(conn)
		n, _ := br.ReadString(' ')
		size, _ := strconv.Atoi(strings.TrimSuffix(n, " "))
		_, _ = io.ReadFull(br, make([]byte, size))
		conn.Close()
		close(firstRead)
		conn, err = l.Accept()
		if err != nil {
			second <- nil
			return
		}
		defer conn.Close()
		frames, _ := readFrames(conn)
		second <- frames
	}()
	sink, err := Dial(context.Background(), mustTarget(t, "tcp://"+l.Addr().String()), "ctr", quietLog())
	if err != nil {
		t.Fatal(err)
	}
	w := sink.Stdout(nil)
	_, _ = w.Write([]byte("first\n"))
	select {
	case <-firstRead:
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not get the first message")
	}
	// The first writes after the peer's close may still be accepted by the
	// kernel; keep writing until one fails and the sink dials again.
	for i := 0; i < 50; i++ {
		_, _ = fmt.Fprintf(w, "after %d\n", i)
		time.Sleep(10 * time.Millisecond)
	}
	sink.Close()
	var frames []string
	select {
	case frames = <-second:
	case <-time.After(10 * time.Second):
		t.Fatal("no second connection")
	}
	if len(frames) == 0 {
		t.Fatal("nothing arrived on a second connection")
	}
	if last := parseMessage(t, frames[len(frames)-1]).text; last != "after 49" {
		t.Fatalf("last message on the new connection %q, want %q (frames %d)", last, "after 49", len(frames))
	}
	if sink.dropped.Load() > 2 {
		t.Fatalf("%d messages dropped; at most the ones written as the stream closed may be", sink.dropped.Load())
	}
}

// TestSyslogStalledServer: a server that accepts and never reads neither
// blocks the writers nor holds the close for longer than its bound.
func TestSyslogStalledServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := l.Accept()
		if err == nil {
			accepted <- conn
		}
	}()
	sink, err := Dial(context.Background(), mustTarget(t, "tcp://"+l.Addr().String()), "ctr", quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if conn := <-accepted; conn != nil {
			conn.Close()
		}
	}()
	w := sink.Stdout(io.Discard)
	line := []byte(strings.Repeat("y", 8<<10) + "\n")
	start := time.Now()
	for i := 0; i < 2000; i++ { // 16 MB: far more than the socket buffers hold
		if _, err := w.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	sink.Close()
	if took := time.Since(start); took > 2*closeTimeout+writeTimeout {
		t.Fatalf("writes and close took %v with a stalled server", took)
	}
	if sink.dropped.Load() == 0 {
		t.Fatal("nothing dropped with a stalled server")
	}
}
