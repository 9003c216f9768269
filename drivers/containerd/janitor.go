package containerd

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/leases"

	"github.com/fnrun/fnrun/drivers"
)

// Bounds of the janitor's retries: soon after a daemon comes back, without
// hammering one that stays silent.
const (
	janitorMinDelay = 250 * time.Millisecond
	janitorMaxDelay = 5 * time.Second
)

// janitor deletes the leases whose deletion the daemon did not answer (it
// hung, or restarted). A create the daemon accepted while it was stopped
// may still be served once it resumes, even after a delete sent later, so
// a lease is forgotten only once deleted, or once the daemon has said "not
// found" twice, a retry delay apart. The lease's expiry bounds its life
// should the driver close first.
type janitor struct {
	d    *daemon
	kick chan struct{}
	// minDelay is the first retry delay (janitorMinDelay; tests widen it).
	minDelay atomic.Int64

	mu sync.Mutex
	// leases maps each queued lease to the "not found" answers seen.
	leases map[string]int
}

func newJanitor(d *daemon) *janitor {
	j := &janitor{d: d, kick: make(chan struct{}, 1), leases: make(map[string]int)}
	j.minDelay.Store(int64(janitorMinDelay))
	return j
}

// deleteLeaseLater queues lease id for deletion; it never blocks.
func (j *janitor) deleteLeaseLater(id string) {
	j.mu.Lock()
	j.leases[id] = 0
	j.mu.Unlock()
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

func (j *janitor) pending() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	ids := make([]string, 0, len(j.leases))
	for id := range j.leases {
		ids = append(ids, id)
	}
	return ids
}

// run retries the queued deletions with a growing delay until ctx ends,
// then makes one last pass.
func (j *janitor) run(ctx context.Context) {
	delay := time.Duration(j.minDelay.Load())
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// Whatever the driver's Close queued still gets a try; not
			// bound to ctx, which has ended, but to one call per lease.
			j.sweep(context.WithoutCancel(ctx), true)
			return
		case <-j.kick:
			delay = time.Duration(j.minDelay.Load())
		case <-t.C:
		}
		if j.sweep(ctx, false) {
			continue
		}
		t.Reset(delay)
		delay = min(2*delay, janitorMaxDelay)
	}
}

// sweep tries every queued deletion once and reports whether none is left.
// It stops at the first call the daemon does not answer: the others would
// only wait as long. final forgets a lease at the first "not found".
func (j *janitor) sweep(ctx context.Context, final bool) bool {
	d := j.d
	ls := d.client.LeasesService()
	for _, id := range j.pending() {
		err := d.call(d.nsCtx(ctx), "leases.Delete", func(ctx context.Context) error {
			return ls.Delete(ctx, leases.Lease{ID: id})
		})
		notFound := errdefs.IsNotFound(err)
		switch {
		case err == nil, notFound:
		case errors.Is(err, drivers.ErrDaemonUnavailable), isUnavailable(err), ctx.Err() != nil:
			return false
		default:
			d.log.WithError(err).WithField("lease", id).Warn("cannot delete lease; its expiry bounds its life")
		}
		j.mu.Lock()
		if notFound && !final && j.leases[id] == 0 {
			j.leases[id]++
		} else {
			delete(j.leases, id)
		}
		j.mu.Unlock()
	}
	return len(j.pending()) == 0
}
