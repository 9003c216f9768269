package containerd

import (
	"io"
	"sync"
)

// gate serialises the writes of a run's stdout and stderr copies (the task's
// writers need not be safe for concurrent use, and are often one buffer),
// and shuts them once the run is over so nothing reaches them after Wait
// returns.
type gate struct {
	mu     sync.Mutex
	isShut bool
	err    error // the first error a writer returned
}

// writer wraps w; nil stays nil, so no FIFO is made for the stream.
func (g *gate) writer(w io.Writer) io.Writer {
	if w == nil {
		return nil
	}
	return &gatedWriter{g: g, w: w}
}

// shut closes the gate and returns the first writer error.
func (g *gate) shut() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.isShut = true
	return g.err
}

type gatedWriter struct {
	g *gate
	w io.Writer
}

// Write forwards p. After a writer error, or once shut, it discards: the
// container must not block on a full pipe because its reader gave up.
func (w *gatedWriter) Write(p []byte) (int, error) {
	w.g.mu.Lock()
	defer w.g.mu.Unlock()
	if w.g.isShut || w.g.err != nil {
		return len(p), nil
	}
	n, err := w.w.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		w.g.err = err
	}
	return len(p), nil
}

// eofReader closes done once its reader has returned EOF or an error, so
// the run knows when to tell the shim that stdin is over.
type eofReader struct {
	r    io.Reader
	done chan struct{}
	once sync.Once
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		e.once.Do(func() { close(e.done) })
	}
	return n, err
}
