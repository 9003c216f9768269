package containerd

import (
	"context"
	"fmt"
	"sync"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/events"
	"github.com/containerd/containerd/runtime"
	"github.com/containerd/typeurl/v2"
)

// oomWatcher follows containerd's TaskOOM events for the driver's namespace
// on one shared stream, and tells each run whether the kernel's OOM killer
// struck its container (see process.Wait).
type oomWatcher struct {
	d       *daemon
	mu      sync.Mutex
	watched map[string]*oomMark
}

type oomMark struct {
	ch    chan struct{}
	fired bool
}

func newOOMWatcher(d *daemon) *oomWatcher {
	return &oomWatcher{d: d, watched: make(map[string]*oomMark)}
}

// watch registers a container; the channel is closed when an OOM event for
// it arrives. stop unregisters it.
func (w *oomWatcher) watch(id string) (<-chan struct{}, func()) {
	m := &oomMark{ch: make(chan struct{})}
	w.mu.Lock()
	w.watched[id] = m
	w.mu.Unlock()
	return m.ch, func() {
		w.mu.Lock()
		if w.watched[id] == m {
			delete(w.watched, id)
		}
		w.mu.Unlock()
	}
}

func (w *oomWatcher) fire(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if m, ok := w.watched[id]; ok && !m.fired {
		m.fired = true
		close(m.ch)
	}
}

// run follows the event stream until ctx ends, subscribing again after a
// broken stream (a daemon restart).
func (w *oomWatcher) run(ctx context.Context) {
	filter := fmt.Sprintf("topic==%q,namespace==%q", runtime.TaskOOMEventTopic, w.d.ns)
	for {
		if err := w.follow(ctx, filter); err != nil && ctx.Err() == nil {
			w.d.log.WithError(err).Warn("OOM event stream broken, subscribing again")
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (w *oomWatcher) follow(ctx context.Context, filter string) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, errs := w.d.client.Subscribe(sctx, filter)
	defer func() {
		cancel()
		for range errs { // the client's stream goroutine closes errs when it ends
		}
	}()
	for {
		select {
		case env := <-ch:
			w.handle(env)
		case err, ok := <-errs:
			if !ok {
				return nil
			}
			return err
		case <-ctx.Done():
			return nil
		}
	}
}

func (w *oomWatcher) handle(env *events.Envelope) {
	if env == nil || env.Event == nil {
		return
	}
	v, err := typeurl.UnmarshalAny(env.Event)
	if err != nil {
		w.d.log.WithError(err).Debug("undecodable event")
		return
	}
	if e, ok := v.(*apievents.TaskOOM); ok {
		w.fire(e.ContainerID)
	}
}
