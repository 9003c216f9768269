package images

import (
	"container/heap"
	"time"

	"github.com/fnrun/fnrun/internal/backoff"
)

type entryState uint8

const (
	// stateTracked: in the store and not being removed. It is a candidate
	// (in the idle heap) when it is also idle, not in use and not exempt.
	stateTracked entryState = iota
	// stateRemoving: popped from the heap, Store.Remove in flight.
	stateRemoving
	// stateWaiting: a removal failed; not a candidate before retryAt.
	stateWaiting
	// stateGone: forgotten; a release that still points here is ignored.
	stateGone
)

// entry is one tracked image. Every field is guarded by Cleaner.mu.
type entry struct {
	id    string   // Image.ID as the store spells it, for Remove
	idKey string   // canonical key of id
	refs  []string // Image.References as reported, for display
	keys  []string // canonical keys of refs, deduplicated

	size, sharedSize uint64
	created          time.Time

	// lastUse orders the idle heap; seq breaks ties between equal times in
	// the order the uses happened, so a coarse or fake clock still gives a
	// strict LRU order.
	lastUse time.Time
	seq     uint64

	uses   int  // holders through Use, summed over the keys this entry owns
	inUse  bool // a container in the store uses it
	exempt bool
	stale  bool // another image took one of its keys: rekey at the next sync

	state   entryState
	index   int    // position in the idle heap, -1 when not in it
	gen     uint64 // sync generation that last saw it
	backoff *backoff.BackOff
	retryAt time.Time
}

// candidate reports whether the entry may be evicted now.
func (e *entry) candidate() bool {
	return e.state == stateTracked && e.uses == 0 && !e.inUse && !e.exempt
}

// busy reports whether the entry counts as busy in the metrics.
func (e *entry) busy() bool { return e.uses > 0 || e.inUse || e.state == stateRemoving }

// before is the LRU order: least recently used first.
func (e *entry) before(o *entry) bool {
	if !e.lastUse.Equal(o.lastUse) {
		return e.lastUse.Before(o.lastUse)
	}
	return e.seq < o.seq
}

// idleHeap is a min-heap of eviction candidates by last use: choosing the
// next victim is O(1), and every change (a use, a release, a removal) is
// O(log n).
type idleHeap []*entry

func (h idleHeap) Len() int           { return len(h) }
func (h idleHeap) Less(i, j int) bool { return h[i].before(h[j]) }
func (h idleHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *idleHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *idleHeap) Pop() any {
	old := *h
	n := len(old) - 1
	e := old[n]
	old[n] = nil
	e.index = -1
	*h = old[:n]
	return e
}

// place puts e in the idle heap or takes it out, as its state asks, and
// restores the heap order after a change of its last use. Callers hold mu.
func (c *Cleaner) place(e *entry) {
	want := e.candidate()
	switch {
	case want && e.index < 0:
		heap.Push(&c.idle, e)
	case !want && e.index >= 0:
		heap.Remove(&c.idle, e.index)
	case want:
		heap.Fix(&c.idle, e.index)
	}
}

// touch records a use of e now. Callers hold mu.
func (c *Cleaner) touch(e *entry, now time.Time) {
	e.lastUse = now
	c.seq++
	e.seq = c.seq
	c.markDirty(e)
}

// forget drops e from every index. Callers hold mu.
func (c *Cleaner) forget(e *entry) {
	if c.byID[e.id] == e {
		delete(c.byID, e.id)
	}
	if c.byKey[e.idKey] == e {
		delete(c.byKey, e.idKey)
	}
	for _, k := range e.keys {
		if c.byKey[k] == e {
			delete(c.byKey, k)
		}
	}
	if e.index >= 0 {
		heap.Remove(&c.idle, e.index)
	}
	delete(c.retrying, e)
	delete(c.dirty, e.id)
	c.total -= e.size
	e.state = stateGone
	c.stateDirty = true
}

// countUses is the holders of the keys e owns. Callers hold mu.
func (c *Cleaner) countUses(e *entry) int {
	n := 0
	if c.byKey[e.idKey] == e {
		n += c.users[e.idKey]
	}
	for _, k := range e.keys {
		if c.byKey[k] == e {
			n += c.users[k]
		}
	}
	return n
}
