package serve

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Store keeps apps and functions. Every method is safe for concurrent use;
// the objects it returns are copies the caller may change.
type Store interface {
	CreateApp(ctx context.Context, app *App) (*App, error)
	GetApp(ctx context.Context, id string) (*App, error)
	ListApps(ctx context.Context, f ListFilter) ([]*App, string, error)
	UpdateApp(ctx context.Context, id string, patch *App) (*App, error)
	// DeleteApp removes the app and its functions.
	DeleteApp(ctx context.Context, id string) error

	CreateFn(ctx context.Context, fn *Fn) (*Fn, error)
	GetFn(ctx context.Context, id string) (*Fn, error)
	ListFns(ctx context.Context, f ListFilter) ([]*Fn, string, error)
	UpdateFn(ctx context.Context, id string, patch *Fn) (*Fn, error)
	DeleteFn(ctx context.Context, id string) error

	Close() error
}

// ListFilter selects a page of apps or functions, sorted by name. Cursor is
// the next_cursor of the previous page (the base64 of the last name).
type ListFilter struct {
	AppID   string // functions only; required there
	Name    string // exact match; empty matches all
	Cursor  string
	PerPage int
}

// Page sizes of the list calls, as Fn's.
const (
	defaultPerPage = 30
	maxPerPage     = 100
)

var (
	bucketApps = []byte("apps")
	bucketFns  = []byte("fns")
)

// boltStore is a Store over a bbolt file, with every object also held in
// memory: reads never touch the file, writes go to the file first, then to
// memory. A nil db keeps everything in memory only.
type boltStore struct {
	db *bolt.DB

	mu   sync.RWMutex
	apps map[string]*App
	fns  map[string]*Fn
}

var _ Store = (*boltStore)(nil)

// OpenStore opens (or creates) the bbolt file at path and loads every app
// and function it holds. Only one process may hold the file: a second one
// waits up to timeout, then fails.
func OpenStore(path string, timeout time.Duration) (Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	s := &boltStore{db: db, apps: map[string]*App{}, fns: map[string]*Fn{}}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketApps, bucketFns} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketApps).ForEach(func(k, v []byte) error {
			var a App
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("app %s: %w", k, err)
			}
			s.apps[a.ID] = &a
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketFns).ForEach(func(k, v []byte) error {
			var f Fn
			if err := json.Unmarshal(v, &f); err != nil {
				return fmt.Errorf("fn %s: %w", k, err)
			}
			s.fns[f.ID] = &f
			return nil
		})
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	return s, nil
}

// NewMemoryStore returns a Store that keeps nothing across restarts.
func NewMemoryStore() Store {
	return &boltStore{apps: map[string]*App{}, fns: map[string]*Fn{}}
}

// write runs f in a bbolt write transaction (or not at all in memory).
func (s *boltStore) write(f func(tx *bolt.Tx) error) error {
	if s.db == nil {
		return nil
	}
	return s.db.Update(f)
}

func putJSON(tx *bolt.Tx, bucket []byte, id string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(id), b)
}

func (s *boltStore) appNameTaken(name, except string) bool {
	for _, a := range s.apps {
		if a.Name == name && a.ID != except {
			return true
		}
	}
	return false
}

func (s *boltStore) fnNameTaken(appID, name, except string) bool {
	for _, f := range s.fns {
		if f.AppID == appID && f.Name == name && f.ID != except {
			return true
		}
	}
	return false
}

func (s *boltStore) CreateApp(ctx context.Context, app *App) (*App, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.appNameTaken(app.Name, "") {
		return nil, errAppsAlreadyExists
	}
	a := app.clone()
	if err := s.write(func(tx *bolt.Tx) error { return putJSON(tx, bucketApps, a.ID, a) }); err != nil {
		return nil, fmt.Errorf("store app %s: %w", a.ID, err)
	}
	s.apps[a.ID] = a
	return a.clone(), nil
}

func (s *boltStore) GetApp(ctx context.Context, id string) (*App, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, ok := s.apps[id]
	if !ok {
		return nil, errAppsNotFound
	}
	return a.clone(), nil
}

func (s *boltStore) UpdateApp(ctx context.Context, id string, patch *App) (*App, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.apps[id]
	if !ok {
		return nil, errAppsNotFound
	}
	if patch.Name != "" && patch.Name != cur.Name {
		return nil, errAppsNameImmutable
	}
	a := cur.clone()
	a.Config = mergeMap(a.Config, patch.Config)
	a.Annotations = mergeAnnotations(a.Annotations, patch.Annotations)
	if patch.SyslogURL != nil {
		if *patch.SyslogURL == "" {
			a.SyslogURL = nil
		} else {
			u := *patch.SyslogURL
			a.SyslogURL = &u
		}
	}
	if err := a.validate(); err != nil {
		return nil, err
	}
	a.UpdatedAt = DateTime(time.Now())
	if err := s.write(func(tx *bolt.Tx) error { return putJSON(tx, bucketApps, a.ID, a) }); err != nil {
		return nil, fmt.Errorf("store app %s: %w", a.ID, err)
	}
	s.apps[a.ID] = a
	return a.clone(), nil
}

func (s *boltStore) DeleteApp(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.apps[id]; !ok {
		return errAppsNotFound
	}
	var fnIDs []string
	for _, f := range s.fns {
		if f.AppID == id {
			fnIDs = append(fnIDs, f.ID)
		}
	}
	err := s.write(func(tx *bolt.Tx) error {
		for _, fid := range fnIDs {
			if err := tx.Bucket(bucketFns).Delete([]byte(fid)); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketApps).Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("delete app %s: %w", id, err)
	}
	for _, fid := range fnIDs {
		delete(s.fns, fid)
	}
	delete(s.apps, id)
	return nil
}

func (s *boltStore) ListApps(ctx context.Context, f ListFilter) ([]*App, string, error) {
	after, err := decodeCursor(f.Cursor)
	if err != nil {
		return nil, "", err
	}
	s.mu.RLock()
	var all []*App
	for _, a := range s.apps {
		if (f.Name == "" || a.Name == f.Name) && a.Name > after {
			all = append(all, a.clone())
		}
	}
	s.mu.RUnlock()
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	page, next := paginate(len(all), f.PerPage, func(i int) string { return all[i].Name })
	return all[:page], next, nil
}

func (s *boltStore) CreateFn(ctx context.Context, fn *Fn) (*Fn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.apps[fn.AppID]; !ok {
		return nil, errAppsNotFound
	}
	if s.fnNameTaken(fn.AppID, fn.Name, "") {
		return nil, errFnsExists
	}
	f := fn.clone()
	if err := s.write(func(tx *bolt.Tx) error { return putJSON(tx, bucketFns, f.ID, f) }); err != nil {
		return nil, fmt.Errorf("store fn %s: %w", f.ID, err)
	}
	s.fns[f.ID] = f
	return f.clone(), nil
}

func (s *boltStore) GetFn(ctx context.Context, id string) (*Fn, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	f, ok := s.fns[id]
	if !ok {
		return nil, errFnsNotFound
	}
	return f.clone(), nil
}

func (s *boltStore) UpdateFn(ctx context.Context, id string, patch *Fn) (*Fn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.fns[id]
	if !ok {
		return nil, errFnsNotFound
	}
	switch {
	case patch.Name != "" && patch.Name != cur.Name:
		return nil, errFnsNameImmutable
	case patch.AppID != "" && patch.AppID != cur.AppID:
		return nil, errFnsAppIDImmutable
	}
	f := cur.clone()
	if patch.Image != "" {
		f.Image = patch.Image
	}
	if patch.Memory != 0 {
		f.Memory = patch.Memory
	}
	if patch.Timeout != 0 {
		f.Timeout = patch.Timeout
	}
	if patch.IdleTimeout != 0 {
		f.IdleTimeout = patch.IdleTimeout
	}
	f.Config = mergeMap(f.Config, patch.Config)
	f.Annotations = mergeAnnotations(f.Annotations, patch.Annotations)
	if err := f.validate(); err != nil {
		return nil, err
	}
	f.UpdatedAt = DateTime(time.Now())
	if err := s.write(func(tx *bolt.Tx) error { return putJSON(tx, bucketFns, f.ID, f) }); err != nil {
		return nil, fmt.Errorf("store fn %s: %w", f.ID, err)
	}
	s.fns[f.ID] = f
	return f.clone(), nil
}

func (s *boltStore) DeleteFn(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.fns[id]; !ok {
		return errFnsNotFound
	}
	if err := s.write(func(tx *bolt.Tx) error { return tx.Bucket(bucketFns).Delete([]byte(id)) }); err != nil {
		return fmt.Errorf("delete fn %s: %w", id, err)
	}
	delete(s.fns, id)
	return nil
}

func (s *boltStore) ListFns(ctx context.Context, f ListFilter) ([]*Fn, string, error) {
	if f.AppID == "" {
		return nil, "", errFnsMissingAppID
	}
	after, err := decodeCursor(f.Cursor)
	if err != nil {
		return nil, "", err
	}
	s.mu.RLock()
	var all []*Fn
	for _, fn := range s.fns {
		if fn.AppID == f.AppID && (f.Name == "" || fn.Name == f.Name) && fn.Name > after {
			all = append(all, fn.clone())
		}
	}
	s.mu.RUnlock()
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	page, next := paginate(len(all), f.PerPage, func(i int) string { return all[i].Name })
	return all[:page], next, nil
}

func (s *boltStore) Close() error {
	if s.db == nil {
		return nil
	}
	return s.db.Close()
}

// paginate returns how many of n sorted items make the page and the cursor
// of the next page ("" when this page is the last one Fn would announce:
// a full page always gets a cursor, as Fn's does).
func paginate(n, perPage int, name func(int) string) (int, string) {
	if perPage <= 0 {
		perPage = defaultPerPage
	}
	if perPage > maxPerPage {
		perPage = maxPerPage
	}
	if n < perPage {
		return n, ""
	}
	return perPage, base64.RawURLEncoding.EncodeToString([]byte(name(perPage - 1)))
}

func decodeCursor(c string) (string, error) {
	if c == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		if b, err = base64.URLEncoding.DecodeString(c); err != nil {
			return "", errInvalidCursor.WithCause(err)
		}
	}
	return string(b), nil
}
