package docker

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/moby/moby/api/pkg/stdcopy"
)

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
		query := "stream=1&stdout=1&stderr=1"
		if in != nil {
			query += "&stdin=1"
		}
		var err error
		conn, stream, err = d.conn.Hijack(ctx, "/containers/"+id+"/attach?"+query)
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

func (a *attachment) close() {
	a.closeOnce.Do(func() { _ = a.conn.Close() })
}
