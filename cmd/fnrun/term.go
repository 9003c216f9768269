package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// isTerminal reports whether f is a terminal.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	if !ok || file == nil {
		return false
	}
	_, err := unix.IoctlGetTermios(int(file.Fd()), unix.TCGETS)
	return err == nil
}

// progress shows that long work is under way. On a terminal it is a
// spinner with the elapsed time, redrawn on one line of stderr and erased
// when done; elsewhere (a pipe, a log file) it is one plain line when the
// work starts, so logs stay readable.
type progress struct {
	w     io.Writer
	tty   bool
	label string
	start time.Time

	mu     sync.Mutex
	detail string

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func newProgress(w io.Writer, tty bool, label string) *progress {
	p := &progress{w: w, tty: tty, label: label, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	if !tty {
		fmt.Fprintf(w, "fnrun: %s\n", label)
		close(p.done)
		return p
	}
	go p.loop()
	return p
}

// set changes the detail shown after the label, such as "12/30".
func (p *progress) set(format string, args ...any) {
	p.mu.Lock()
	p.detail = fmt.Sprintf(format, args...)
	p.mu.Unlock()
}

func (p *progress) loop() {
	defer close(p.done)
	frames := []rune("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for i := 0; ; i++ {
		p.mu.Lock()
		detail := p.detail
		p.mu.Unlock()
		line := p.label
		if detail != "" {
			line += " " + detail
		}
		fmt.Fprintf(p.w, "\r\033[K%c %s %.1fs", frames[i%len(frames)], line, time.Since(p.start).Seconds())
		select {
		case <-p.stop:
			fmt.Fprint(p.w, "\r\033[K")
			return
		case <-t.C:
		}
	}
}

// end stops the indicator and erases it; it is idempotent.
func (p *progress) end() {
	p.once.Do(func() { close(p.stop) })
	<-p.done
}
