package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// fakeAdapter is an in-memory runtime: holders are map entries, a death is
// a closed channel. Tests change its behaviour with set.
type fakeAdapter struct {
	mu      sync.Mutex
	seq     int
	live    map[string]*fakeHolder
	specs   []HolderSpec // every successful start, in order
	starts  int          // StartHolder calls
	stops   int          // StopHolder calls
	ensures int          // EnsureImage calls
	stopped []string
	// startTimes records when each StartHolder call began, to check pacing.
	startTimes []time.Time

	startErr  error
	ensureErr error
	stopErr   error
	// waitErr makes WaitHolder return at once: a watch that cannot work.
	waitErr error
	// gate, when set, makes StartHolder wait for a receive (or ctx).
	gate chan struct{}
	// ignoreCtx makes a gated StartHolder finish its start even after ctx
	// ends, like a daemon completing a create it already received.
	ignoreCtx bool
}

type fakeHolder struct {
	spec HolderSpec
	died chan struct{}
}

func newFake() *fakeAdapter { return &fakeAdapter{live: map[string]*fakeHolder{}} }

func (f *fakeAdapter) set(change func(f *fakeAdapter)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

func (f *fakeAdapter) EnsureImage(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ensures++
	return f.ensureErr
}

func (f *fakeAdapter) StartHolder(ctx context.Context, spec HolderSpec) (Holder, error) {
	f.mu.Lock()
	f.starts++
	f.startTimes = append(f.startTimes, time.Now())
	gate, ignore := f.gate, f.ignoreCtx
	f.mu.Unlock()
	if gate != nil {
		if ignore {
			<-gate
		} else {
			select {
			case <-gate:
			case <-ctx.Done():
				return Holder{}, ctx.Err()
			}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.startErr != nil {
		return Holder{}, fmt.Errorf("start %s: %w", spec.Name, f.startErr)
	}
	f.seq++
	id := fmt.Sprintf("h%d", f.seq)
	f.live[id] = &fakeHolder{spec: spec, died: make(chan struct{})}
	f.specs = append(f.specs, spec)
	return Holder{ID: id, NetNSPath: "/proc/" + id + "/ns/net"}, nil
}

func (f *fakeAdapter) StopHolder(ctx context.Context, h Holder) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stops++
	f.stopped = append(f.stopped, h.ID)
	if f.stopErr != nil {
		return f.stopErr
	}
	if fh, ok := f.live[h.ID]; ok {
		delete(f.live, h.ID)
		close(fh.died) // a real runtime also reports the exit of a stopped holder
	}
	return nil
}

func (f *fakeAdapter) WaitHolder(ctx context.Context, h Holder) error {
	f.mu.Lock()
	fh, ok := f.live[h.ID]
	werr := f.waitErr
	f.mu.Unlock()
	if werr != nil {
		return werr
	}
	if !ok {
		return errors.New("no such holder")
	}
	select {
	case <-fh.died:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// kill ends a holder from outside, as `docker kill` would.
func (f *fakeAdapter) kill(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fh, ok := f.live[id]; ok {
		delete(f.live, id)
		close(fh.died)
	}
}

func (f *fakeAdapter) liveIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, 0, len(f.live))
	for id := range f.live {
		ids = append(ids, id)
	}
	return ids
}

func (f *fakeAdapter) counts() (starts, stops, ensures int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts, f.stops, f.ensures
}
