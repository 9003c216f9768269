package images

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// sync lists the store and reconciles the cache with it: new images are
// tracked, changed ones updated, vanished ones forgotten. Callers hold
// passMu; the store is called without mu.
func (c *Cleaner) sync(ctx context.Context) error {
	imgs, err := c.store.List(ctx)
	if err != nil {
		return fmt.Errorf("images: list store: %w", err)
	}
	now := c.clock.Now()

	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	first := !c.synced
	var shared uint64
	for i := range imgs {
		img := &imgs[i]
		if img.ID == "" {
			continue
		}
		e := c.byID[img.ID]
		isNew := e == nil
		if isNew {
			e = &entry{id: img.ID, idKey: idKey(img.ID), index: -1}
			c.byID[img.ID] = e
			c.stateDirty = true
		} else if e.gen == c.gen {
			continue // listed twice: the first wins
		}
		e.gen = c.gen
		shared = max(shared, img.SharedSize)
		c.total = c.total - e.size + img.Size
		e.size, e.sharedSize, e.created, e.inUse = img.Size, img.SharedSize, img.Created, img.InUse
		if isNew || e.stale || !slices.Equal(e.refs, img.References) {
			c.rekey(e, img.References)
		}
		switch {
		case isNew:
			e.lastUse = c.initialLastUse(img, first, now)
			c.seq++
			e.seq = c.seq
		case img.LastUsed.After(e.lastUse):
			// Used from outside (another process with the same
			// LastUseStore) more recently than we saw.
			e.lastUse = img.LastUsed
		}
		c.place(e)
	}
	for _, e := range c.byID {
		if e.gen != c.gen && e.state != stateRemoving {
			c.log.WithField("image", e.id).Debug("image vanished from the store")
			c.forget(e)
		}
	}
	c.shared = shared
	c.synced = true
	c.loaded = nil
	c.lastSync = now
	return nil
}

// initialLastUse is the last use of an image seen for the first time: the
// latest of what the store and the state file remember; failing that, at
// the first sync its creation time (so images used since a restart are
// kept before images nobody vouches for, and old builds go first), and
// later the time it was first seen. Callers hold mu.
func (c *Cleaner) initialLastUse(img *Image, first bool, now time.Time) time.Time {
	t := img.LastUsed
	if l, ok := c.loaded[img.ID]; ok && l.After(t) {
		t = l
	}
	if t.IsZero() {
		if !first {
			return now
		}
		t = img.Created
	}
	if t.After(now) {
		t = now
	}
	return t
}

// rekey sets the references of e and everything derived from them: the
// keys it owns in byKey, its use count and whether it is exempt. A key
// another image owned moves to e (the store names one image by it now).
// Callers hold mu.
func (c *Cleaner) rekey(e *entry, refs []string) {
	for _, k := range e.keys {
		if c.byKey[k] == e {
			delete(c.byKey, k)
		}
	}
	e.refs = refs
	e.stale = false
	keys := make([]string, 0, len(refs))
	for _, r := range refs {
		k, ok := refKey(r)
		if !ok || slices.Contains(keys, k) {
			continue
		}
		if k == r {
			k = r // already canonical (containerd's names): share the string
		}
		keys = append(keys, k)
	}
	e.keys = keys
	c.claim(e, e.idKey)
	for _, k := range keys {
		c.claim(e, k)
	}
	e.uses = c.countUses(e)
	e.exempt = c.exempt.matches(e.idKey, keys)
}

// claim makes e the owner of key, taking it from the image that owned it
// (the store moved the tag), whose use count drops by the key's holders.
// Two images listed with the same reference in one sync (a racy listing)
// keep the first owner; the other tries again at the next sync, so the
// owner does not flip at every sync. Callers hold mu.
func (c *Cleaner) claim(e *entry, key string) {
	if o := c.byKey[key]; o != nil && o != e {
		if o.gen == c.gen && o.state != stateGone && slices.Contains(o.keys, key) {
			e.stale = true
			return
		}
		o.uses -= c.users[key]
		if o.uses < 0 {
			o.uses = 0
		}
		o.stale = true
		c.place(o)
	}
	c.byKey[key] = e
}
