package docker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
)

var errOutputStuck = errors.New("output stream did not end after the container exited")

// attachment is a hijacked connection carrying a container's stdio.
type attachment struct {
	conn      net.Conn
	done      chan struct{} // closed when the output copy has ended
	err       error         // why the copy ended, if not at the stream's end; read after done
	closeOnce sync.Once
}

// attach connects the container's stdin (when in is non-nil), stdout and
// stderr. The daemon has attached when it returns, so a container started
// afterwards cannot write anything the copy misses.
func (d *daemon) attach(ctx context.Context, id string, in io.Reader, stdout, stderr io.Writer) (*attachment, error) {
	var (
		conn   net.Conn
		stream io.Reader
	)
	err := d.do(ctx, "attach", fmt.Sprintf("container %q", id), kindContainer, func(ctx context.Context) error {
		var err error
		conn, stream, err = d.api.attach(ctx, id, in != nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	a := &attachment{conn: conn, done: make(chan struct{})}
	copyOut := func() {
		defer close(a.done)
		// Tty is never set, so the stream is multiplexed.
		_, err := stdcopy.StdCopy(stdout, stderr, stream)
		a.err = err
	}
	// Owned by the run: it ends with the stream, which the run's end
	// closes (close) if the daemon does not.
	go copyOut()
	if in != nil {
		// Not owned by the run: it ends when in returns, which the
		// driver cannot force. Closing the connection makes its next
		// write fail, so it never outlives a reader that returns.
		go func() {
			_, _ = io.Copy(conn, in)
			if cw, ok := conn.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite() // EOF on the container's stdin
			}
		}()
	}
	return a, nil
}

// drain waits for the output copy to reach the stream's end, at most
// timeout, then closes the connection. It returns why the copy did not end
// cleanly, or nil.
func (a *attachment) drain(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-a.done:
		a.close()
		return a.err
	case <-t.C:
		a.close()
		<-a.done
		return errOutputStuck
	}
}

func (a *attachment) close() {
	a.closeOnce.Do(func() { _ = a.conn.Close() })
}

// attach performs the attach handshake on a connection of its own and
// returns it with the reader of the multiplexed output.
func (a *rawAPI) attach(ctx context.Context, id string, stdin bool) (net.Conn, io.Reader, error) {
	conn, err := a.dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	// Bound the handshake by ctx: closing the connection unblocks it.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	fail := func(err error) (net.Conn, io.Reader, error) {
		stop()
		conn.Close()
		return nil, nil, err
	}
	query := "stream=1&stdout=1&stderr=1"
	if stdin {
		query += "&stdin=1"
	}
	req, err := http.NewRequest(http.MethodPost, a.baseURL+"/containers/"+id+"/attach?"+query, nil)
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
		stream = resp.Body // a daemon that does not upgrade streams the body
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
