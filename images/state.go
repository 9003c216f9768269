package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fnrun/fnrun/drivers"
)

// stateFileName is the file under Config.StateDir holding last uses.
const stateFileName = "last-use.json"

const stateVersion = 1

// stateFile is the state file's format. Times are RFC 3339.
type stateFile struct {
	Version int                  `json:"version"`
	Driver  string               `json:"driver,omitempty"`
	LastUse map[string]time.Time `json:"last_use"` // Image.ID -> last use
}

// readState reads the state file. A missing file is an empty state; an
// unreadable or corrupt one is logged and ignored, since last uses are a
// hint and the next write replaces the file.
func (c *Cleaner) readState() map[string]time.Time {
	b, err := os.ReadFile(c.statePath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var st stateFile
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err == nil && st.Version != stateVersion {
		err = fmt.Errorf("unknown version %d", st.Version)
	}
	if err != nil {
		c.log.WithError(err).WithField("file", c.statePath).Warn("ignoring image state file")
		return nil
	}
	return st.LastUse
}

// markDirty notes that e's last use must be persisted. Callers hold mu.
func (c *Cleaner) markDirty(e *entry) {
	if c.lastUse != nil {
		c.dirty[e.id] = e.lastUse
	} else {
		c.stateDirty = true
	}
}

// persist writes the last uses not yet written: to the LastUseStore, or
// the whole state file. Without force it does nothing before the first
// sync (the state file would lose what it holds).
func (c *Cleaner) persist(ctx context.Context, force bool) error {
	c.persistMu.Lock()
	defer c.persistMu.Unlock()
	switch {
	case c.lastUse != nil:
		return c.persistStore(ctx)
	case c.statePath != "":
		return c.persistFile(force)
	}
	return nil
}

func (c *Cleaner) persistStore(ctx context.Context) error {
	c.mu.Lock()
	dirty := c.dirty
	c.dirty = map[string]time.Time{}
	c.lastPersist = c.clock.Now()
	c.mu.Unlock()

	var errs []error
	for id, t := range dirty {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		err := c.lastUse.SetLastUse(ctx, id, t)
		if err == nil || errors.Is(err, drivers.ErrImageNotFound) {
			delete(dirty, id)
			continue
		}
		errs = append(errs, fmt.Errorf("image %s: %w", id, err))
	}
	if len(dirty) > 0 {
		// Keep what failed for the next write, unless used again since.
		c.mu.Lock()
		for id, t := range dirty {
			if _, tracked := c.byID[id]; !tracked {
				continue
			}
			if cur, ok := c.dirty[id]; !ok || cur.Before(t) {
				c.dirty[id] = t
			}
		}
		c.mu.Unlock()
	}
	if len(errs) > 0 {
		return fmt.Errorf("images: persist last uses (%d not written): %w", len(dirty), errors.Join(errs...))
	}
	return nil
}

func (c *Cleaner) persistFile(force bool) error {
	c.mu.Lock()
	if !c.stateDirty || (!c.synced && !force) {
		c.mu.Unlock()
		return nil
	}
	st := stateFile{Version: stateVersion, Driver: c.cfg.Driver, LastUse: make(map[string]time.Time, len(c.byID)+len(c.loaded))}
	// Before the first sync, keep what was read: a cleaner closed early
	// must not erase what the previous one knew.
	for id, t := range c.loaded {
		st.LastUse[id] = t
	}
	for id, e := range c.byID {
		if !e.lastUse.IsZero() {
			st.LastUse[id] = e.lastUse
		}
	}
	c.stateDirty = false
	c.lastPersist = c.clock.Now()
	c.mu.Unlock()

	b, err := json.Marshal(st)
	if err == nil {
		err = writeFileAtomic(c.statePath, b)
	}
	if err != nil {
		c.mu.Lock()
		c.stateDirty = true
		c.mu.Unlock()
		return fmt.Errorf("images: write state file: %w", err)
	}
	return nil
}

// writeFileAtomic replaces path with data so that a reader (or a restart
// after a crash) sees the old file or the new one, never a torn one.
func writeFileAtomic(path string, data []byte) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
