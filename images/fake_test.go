package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/clock"
)

// t0 is the fake clock's start.
var t0 = time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)

// idOf is a stable, valid image id for a short test name.
func idOf(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// hexOf is the 64 hex digits of idOf(name).
func hexOf(name string) string { return idOf(name)[len("sha256:"):] }

// fakeStore is an in-memory Store. It does not implement LastUseStore; wrap
// it in luStore for that.
type fakeStore struct {
	mu        sync.Mutex
	images    map[string]Image
	order     []string // ids in insertion order: List is deterministic
	lastUse   map[string]time.Time
	removeErr func(id string) error
	listErr   error
	removes   []string // every Remove attempt, in order
	lists     int
	sets      int
}

func newStore(imgs ...Image) *fakeStore {
	s := &fakeStore{images: map[string]Image{}, lastUse: map[string]time.Time{}}
	for _, img := range imgs {
		s.add(img)
	}
	return s
}

func (s *fakeStore) add(img Image) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.images[img.ID]; !ok {
		s.order = append(s.order, img.ID)
	}
	s.images[img.ID] = img
}

func (s *fakeStore) del(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.images, id)
	s.order = slices.DeleteFunc(s.order, func(x string) bool { return x == id })
}

func (s *fakeStore) update(id string, f func(*Image)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	img := s.images[id]
	f(&img)
	s.images[id] = img
}

func (s *fakeStore) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.images[id]
	return ok
}

func (s *fakeStore) setRemoveErr(f func(id string) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeErr = f
}

func (s *fakeStore) removeAttempts(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.removes {
		if r == id {
			n++
		}
	}
	return n
}

func (s *fakeStore) listCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lists
}

func (s *fakeStore) List(ctx context.Context) ([]Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lists++
	if s.listErr != nil {
		return nil, s.listErr
	}
	out := make([]Image, 0, len(s.order))
	for _, id := range s.order {
		img := s.images[id]
		img.References = slices.Clone(img.References)
		if t, ok := s.lastUse[id]; ok {
			img.LastUsed = t
		}
		out = append(out, img)
	}
	return out, nil
}

func (s *fakeStore) Remove(ctx context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removes = append(s.removes, id)
	if s.removeErr != nil {
		if err := s.removeErr(id); err != nil {
			return err
		}
	}
	if _, ok := s.images[id]; !ok {
		return fmt.Errorf("image %s: %w", id, drivers.ErrImageNotFound)
	}
	delete(s.images, id)
	s.order = slices.DeleteFunc(s.order, func(x string) bool { return x == id })
	delete(s.lastUse, id)
	return nil
}

// luStore is a fakeStore that persists last uses, as containerd's labels.
type luStore struct{ *fakeStore }

func (s luStore) SetLastUse(ctx context.Context, id string, t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sets++
	if _, ok := s.images[id]; !ok {
		return fmt.Errorf("image %s: %w", id, drivers.ErrImageNotFound)
	}
	s.lastUse[id] = t
	return nil
}

func newClock() *clock.Fake { return clock.NewFake(t0) }

// checkInvariants verifies the cache's internal consistency.
func checkInvariants(t testing.TB, c *Cleaner) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var total uint64
	for id, e := range c.byID {
		if e.id != id || e.state == stateGone {
			t.Errorf("byID[%s] holds %s in state %d", id, e.id, e.state)
		}
		total += e.size
		if got := c.countUses(e); got != e.uses {
			t.Errorf("image %s: uses %d, holders of its keys %d", id, e.uses, got)
		}
		if in := e.index >= 0; in != e.candidate() {
			t.Errorf("image %s: in heap %v, candidate %v", id, in, e.candidate())
		}
		if e.index >= 0 && (e.index >= len(c.idle) || c.idle[e.index] != e) {
			t.Errorf("image %s: heap index %d is wrong", id, e.index)
		}
		if _, r := c.retrying[e]; r != (e.state == stateWaiting) {
			t.Errorf("image %s: retrying %v, state %d", id, r, e.state)
		}
	}
	for k, e := range c.byKey {
		if c.byID[e.id] != e {
			t.Errorf("key %s points to untracked image %s", k, e.id)
		}
		if k != e.idKey && !slices.Contains(e.keys, k) {
			t.Errorf("key %s owned by %s which does not list it", k, e.id)
		}
	}
	for i := range c.idle {
		for _, ch := range []int{2*i + 1, 2*i + 2} {
			if ch < len(c.idle) && c.idle[ch].before(c.idle[i]) {
				t.Errorf("heap order broken at %d", i)
			}
		}
	}
	if total != c.total {
		t.Errorf("total %d, sum of sizes %d", c.total, total)
	}
	for e := range c.retrying {
		if c.byID[e.id] != e {
			t.Errorf("retrying untracked image %s", e.id)
		}
	}
}

// ids maps infos to their ids.
func ids(infos []ImageInfo) []string {
	out := make([]string, len(infos))
	for i, in := range infos {
		out[i] = in.ID
	}
	return out
}

// names maps test names to ids.
func names(ns ...string) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = idOf(n)
	}
	return out
}

// nameOf inverts idOf over a set of names, for readable failures.
func nameOf(id string, ns []string) string {
	for _, n := range ns {
		if idOf(n) == id {
			return n
		}
	}
	return id
}
