package lifecycle

import (
	"bytes"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fnrun/fnrun/drivers"
)

// output delivers a run's stdout and stderr to the task's writers (see the
// package doc), one write at a time: the two are often one buffer. Until
// shut, the runtime's copy waits for each chunk to be written, so a slow
// reader slows the container down as a pipe would. A Write that never
// returns is the one thing that can outlive the run, as with os/exec.
type output struct {
	chunks     chan chunk
	shutCh     chan struct{}
	shutOnce   sync.Once
	endingCh   chan struct{}
	endingOnce sync.Once
	delivered  atomic.Uint64 // chunks written so far, for the drain's progress

	mu   sync.Mutex
	err  error // the first writer error, or the loss at shut
	lost bool  // output was dropped
}

type chunk struct {
	w    io.Writer
	p    []byte
	done chan<- struct{}
}

// newOutput returns the output of a run and the writers to hand the
// runtime: nil for a stream the task discards, so the runtime can skip it.
func newOutput(stdout, stderr io.Writer) (*output, io.Writer, io.Writer) {
	o := &output{chunks: make(chan chunk), shutCh: make(chan struct{}), endingCh: make(chan struct{})}
	go o.deliver()
	return o, o.stream(stdout), o.stream(stderr)
}

func (o *output) stream(w io.Writer) io.Writer {
	if w == nil || w == io.Discard {
		return nil
	}
	return &stream{o: o, w: w, done: make(chan struct{}, 1)}
}

func (o *output) deliver() {
	for {
		select {
		case c := <-o.chunks:
			n, err := c.w.Write(c.p)
			if err == nil && n < len(c.p) {
				err = io.ErrShortWrite
			}
			if err != nil {
				o.fail(err)
			}
			o.delivered.Add(1)
			c.done <- struct{}{}
		case <-o.shutCh:
			return
		}
	}
}

func (o *output) fail(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		o.err = err
	}
}

func (o *output) failed() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err != nil || o.lost
}

func (o *output) markLost() {
	o.mu.Lock()
	o.lost = true
	o.mu.Unlock()
}

// stallTimeout is how long a writer may take a chunk once the run is
// ending before it is taken for stuck and the rest of the output dropped.
// Some runtimes (dockerd) report the exit only once the streams have
// moved, so a stuck writer would otherwise hold up the end itself.
const stallTimeout = 250 * time.Millisecond

// ending says the run is being ended: from now on a writer that does not
// keep up is given up on (see stallTimeout).
func (o *output) ending() { o.endingOnce.Do(func() { close(o.endingCh) }) }

// shut ends delivery: writes from now on are dropped. It returns why
// output was lost, or nil when everything reached the writers.
func (o *output) shut() error {
	o.shutOnce.Do(func() { close(o.shutCh) })
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.err != nil:
		return o.err
	case o.lost:
		return drivers.ErrOutputLost
	}
	return nil
}

// drain waits for the runtime's streams to end (done closes), as long as
// output keeps moving: it gives up after bound without progress. It
// reports whether the streams ended.
func (o *output) drain(done <-chan struct{}, bound time.Duration) bool {
	if bound <= 0 {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	t := time.NewTimer(bound)
	defer t.Stop()
	seen := o.delivered.Load()
	for {
		select {
		case <-done:
			return true
		case <-t.C:
			now := o.delivered.Load()
			if now == seen {
				return false
			}
			seen = now
			t.Reset(bound)
		}
	}
}

// stream is one of a run's output streams as the runtime writes it. It
// never fails: after a writer error or shut it discards, so the container
// never blocks on a pipe whose reader gave up.
type stream struct {
	o    *output
	w    io.Writer
	done chan struct{}
}

func (s *stream) Write(p []byte) (int, error) {
	o := s.o
	if o.failed() {
		return len(p), nil
	}
	// A copy: after shut the deliverer may still hold it while the
	// runtime reuses p.
	c := chunk{w: s.w, p: bytes.Clone(p), done: s.done}
	ending := o.endingCh
	var stall <-chan time.Time // nil, never ready, until the run is ending
	startStall := func() {
		ending = nil
		t := time.NewTimer(stallTimeout)
		stall = t.C
	}
	for sent := false; !sent; {
		select {
		case o.chunks <- c:
			sent = true
		case <-ending:
			startStall()
		case <-stall:
			o.markLost()
			return len(p), nil
		case <-o.shutCh:
			o.markLost()
			return len(p), nil
		}
	}
	for {
		select {
		case <-s.done:
			return len(p), nil
		case <-ending:
			startStall()
		case <-stall:
			o.markLost()
			return len(p), nil
		case <-o.shutCh:
			select {
			case <-s.done: // delivered as the run ended
			default:
				o.markLost()
			}
			return len(p), nil
		}
	}
}
