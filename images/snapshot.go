package images

import (
	"slices"
	"strings"
	"time"
)

// ImageInfo is the cleaner's view of one tracked image.
type ImageInfo struct {
	ID         string
	References []string
	Size       uint64
	SharedSize uint64
	Created    time.Time
	LastUsed   time.Time
	// Uses is the number of holders (cookies) through Use.
	Uses int
	// InUse: a container in the store uses the image.
	InUse bool
	// Exempt: Config.Exempt names the image.
	Exempt bool
	// Removing: a removal is under way.
	Removing bool
	// RetryAt is when a failed removal may be tried again, or zero.
	RetryAt time.Time
}

// Evictable reports whether the image is a candidate for eviction now.
func (i ImageInfo) Evictable() bool {
	return i.Uses == 0 && !i.InUse && !i.Exempt && !i.Removing && i.RetryAt.IsZero()
}

// Pending is a reference held through Use that names no image in the store
// yet: a pull under way, or an image not listed since it arrived.
type Pending struct {
	Ref  string // canonical form
	Uses int
}

// Snapshot is the state of the cache at one moment.
type Snapshot struct {
	// Images are the tracked images, least recently used first: the order
	// in which idle ones would be evicted.
	Images []ImageInfo
	// Pending are references in use with no image yet, sorted.
	Pending []Pending
	// TrackedBytes is the size counted against the budget: the images'
	// Size plus the shared bytes, counted once. BusyBytes is the part held
	// by busy images, IdleBytes the rest.
	TrackedBytes, BusyBytes, IdleBytes, SharedBytes uint64
	// Budget and LowWater are Config.MaxSize and the low-water mark.
	Budget, LowWater uint64
	// LastSync is when the store was last listed, or zero.
	LastSync time.Time
}

// Snapshot returns the state of the cache, for a command that lists images
// or for tests. It costs O(n log n) in the number of images.
func (c *Cleaner) Snapshot() Snapshot {
	c.mu.Lock()
	s := Snapshot{
		Images:       make([]ImageInfo, 0, len(c.byID)),
		TrackedBytes: c.tracked(),
		SharedBytes:  c.shared,
		Budget:       c.cfg.MaxSize,
		LowWater:     c.cfg.LowWater,
		LastSync:     c.lastSync,
	}
	s.BusyBytes, s.IdleBytes = c.busyIdle()
	entries := make([]*entry, 0, len(c.byID))
	for _, e := range c.byID {
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b *entry) int {
		switch {
		case a.before(b):
			return -1
		case b.before(a):
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	for _, e := range entries {
		s.Images = append(s.Images, c.info(e))
	}
	for k, n := range c.users {
		if c.byKey[k] == nil {
			s.Pending = append(s.Pending, Pending{Ref: k, Uses: n})
		}
	}
	c.mu.Unlock()
	slices.SortFunc(s.Pending, func(a, b Pending) int { return strings.Compare(a.Ref, b.Ref) })
	return s
}

// info copies e out. Callers hold mu.
func (c *Cleaner) info(e *entry) ImageInfo {
	i := ImageInfo{
		ID:         e.id,
		References: slices.Clone(e.refs),
		Size:       e.size,
		SharedSize: e.sharedSize,
		Created:    e.created,
		LastUsed:   e.lastUse,
		Uses:       e.uses,
		InUse:      e.inUse,
		Exempt:     e.exempt,
		Removing:   e.state == stateRemoving,
	}
	if e.state == stateWaiting {
		i.RetryAt = e.retryAt
	}
	return i
}
