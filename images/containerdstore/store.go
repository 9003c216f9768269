// Package containerdstore is the image store of one containerd namespace
// as the image cleaner (package images) sees it: an images.Store and
// images.LastUseStore over the containerd client.
//
// It is a package of its own because it is the cleaner's adapter to one
// runtime's store, not part of running containers: the containerd driver
// builds one over its client (New, with the driver's call bounds) and
// hands it out through ImageStore, and the cleaner is all that uses it.
//
// An image is every record pointing at one target digest, its ID that
// digest; it is in use when any container of the namespace, ours or not,
// names one of its records.
//
// Sizes are bytes on disk: the blobs the target reaches (every platform
// present) and the committed snapshots of its unpacked layers, in Size when
// one image reaches them, else in each one's SharedSize. Not counted: a
// container's writable snapshot (the container's, not the image's) and
// content no image reaches any more (awaiting GC, or held by a lease).
package containerdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	ctrdimages "github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/internal/ctrderr"
	"github.com/fnrun/fnrun/internal/logs"
)

// LabelLastUse is the image label where the image cleaner keeps an image's
// last use (RFC 3339, UTC), so it survives restarts. It is set on every
// record (name) of the image.
const LabelLastUse = "io.fnrun.last-use"

// Caller bounds and records the store's daemon calls, api naming each in
// the metrics; lifecycle.Caller is one. Call bounds a call by the driver's
// call timeout, CallWithin by limit (0: by ctx alone).
type Caller interface {
	Call(ctx context.Context, api string, f func(context.Context) error) error
	CallWithin(ctx context.Context, api string, limit time.Duration, f func(context.Context) error) error
}

// Option configures a Store.
type Option func(*Store)

// WithLogger sets the logger, which containerd's image helpers also log
// through (default: discard).
func WithLogger(l *logrus.Entry) Option { return func(s *Store) { s.log = l } }

// WithRemoveTimeout bounds each image record's delete in Remove, the last
// of which waits for the garbage collector (default 0: ctx alone).
func WithRemoveTimeout(d time.Duration) Option { return func(s *Store) { s.removeTimeout = d } }

// WithOnRemove has f told the target digest of every image Remove removed,
// for a caller that caches what it knows of an image by digest.
func WithOnRemove(f func(digest.Digest)) Option { return func(s *Store) { s.onRemove = f } }

// Store is the image store of one namespace.
type Store struct {
	client        *ctrd.Client
	namespace     string
	call          Caller
	snapshotter   string
	log           *logrus.Entry
	removeTimeout time.Duration
	onRemove      func(digest.Digest)

	mu sync.Mutex
	// refs caches what each target digest reaches; content is addressed
	// by digest, so it cannot change while the digest is listed. Presence
	// is checked at every List.
	refs map[digest.Digest]*imageRefs
	// usage caches the size of committed snapshots, which cannot change.
	usage map[string]int64
}

var (
	_ images.Store        = (*Store)(nil)
	_ images.LastUseStore = (*Store)(nil)
)

// New returns the store of namespace, reached through client with every
// call made through call. snapshotter is the one images are unpacked into,
// whose snapshots count in the images' sizes.
func New(client *ctrd.Client, namespace, snapshotter string, call Caller, opts ...Option) *Store {
	s := &Store{client: client, namespace: namespace, snapshotter: snapshotter, call: call}
	for _, o := range opts {
		o(s)
	}
	if s.log == nil {
		s.log = logs.Discard()
	}
	return s
}

// imageGroup is the records of one target digest, during a List.
type imageGroup struct {
	target  ocispec.Descriptor
	names   []string
	created time.Time
	last    time.Time
	inUse   bool
	refs    *imageRefs
}

type imageRefs struct {
	blobs   []digest.Digest
	chains  []string
	created time.Time
}

// storeCtx puts the namespace and the logger on ctx (containerd's image
// helpers log through the context).
func (s *Store) storeCtx(ctx context.Context) context.Context {
	return log.WithLogger(namespaces.WithNamespace(ctx, s.namespace), s.log)
}

// List implements images.Store.
func (s *Store) List(ctx context.Context) ([]images.Image, error) {
	ctx = s.storeCtx(ctx)
	var records []ctrdimages.Image
	if err := s.call.Call(ctx, "images.List", func(ctx context.Context) error {
		var err error
		records, err = s.client.ImageService().List(ctx)
		return err
	}); err != nil {
		return nil, ctrderr.Wrap(err, "list images")
	}
	used, err := s.usedNames(ctx)
	if err != nil {
		return nil, err
	}
	blobs := map[digest.Digest]int64{}
	if err := s.call.Call(ctx, "content.Walk", func(ctx context.Context) error {
		return s.client.ContentStore().Walk(ctx, func(info content.Info) error {
			blobs[info.Digest] = info.Size
			return nil
		})
	}); err != nil {
		return nil, ctrderr.Wrap(err, "list content")
	}
	sn := s.client.SnapshotService(s.snapshotter)
	committed := map[string]bool{}
	if err := s.call.Call(ctx, "snapshots.Walk", func(ctx context.Context) error {
		return sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			if info.Kind == snapshots.KindCommitted {
				committed[info.Name] = true
			}
			return nil
		})
	}); err != nil {
		return nil, ctrderr.Wrap(err, "list snapshots")
	}

	groups := map[digest.Digest]*imageGroup{}
	var order []digest.Digest
	for _, r := range records {
		g := groups[r.Target.Digest]
		if g == nil {
			g = &imageGroup{target: r.Target, created: r.CreatedAt}
			groups[r.Target.Digest] = g
			order = append(order, r.Target.Digest)
		}
		g.names = append(g.names, r.Name)
		if r.CreatedAt.Before(g.created) {
			g.created = r.CreatedAt
		}
		if t, err := time.Parse(time.RFC3339Nano, r.Labels[LabelLastUse]); err == nil && t.After(g.last) {
			g.last = t
		}
		g.inUse = g.inUse || used[r.Name]
	}

	// What each image reaches, and how many images reach each thing.
	blobUsers := map[digest.Digest]int{}
	chainUsers := map[string]int{}
	for _, dg := range order {
		g := groups[dg]
		refs, err := s.refsOf(ctx, g.target)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			s.log.WithError(err).WithField("image", g.names[0]).Debug("cannot walk image content; counting what was found")
		}
		g.refs = refs
		for _, b := range refs.blobs {
			if _, ok := blobs[b]; ok {
				blobUsers[b]++
			}
		}
		for _, c := range refs.chains {
			if committed[c] {
				chainUsers[c]++
			}
		}
	}
	usage, err := s.snapshotUsage(ctx, chainUsers)
	if err != nil {
		return nil, err
	}

	out := make([]images.Image, 0, len(order))
	for _, dg := range order {
		g := groups[dg]
		img := images.Image{
			ID:         dg.String(),
			References: g.names,
			Created:    g.created,
			InUse:      g.inUse,
			LastUsed:   g.last,
		}
		if !g.refs.created.IsZero() {
			img.Created = g.refs.created
		}
		add := func(n int, size int64) {
			if size <= 0 {
				return
			}
			if n > 1 {
				img.SharedSize += uint64(size)
			} else {
				img.Size += uint64(size)
			}
		}
		for _, b := range g.refs.blobs {
			if size, ok := blobs[b]; ok {
				add(blobUsers[b], size)
			}
		}
		for _, c := range g.refs.chains {
			if committed[c] {
				add(chainUsers[c], usage[c])
			}
		}
		out = append(out, img)
	}
	s.prune(groups, chainUsers)
	return out, nil
}

// usedNames is the set of image names the namespace's containers use.
func (s *Store) usedNames(ctx context.Context) (map[string]bool, error) {
	var ctrs []containers.Container
	if err := s.call.Call(ctx, "containers.List", func(ctx context.Context) error {
		var err error
		ctrs, err = s.client.ContainerService().List(ctx)
		return err
	}); err != nil {
		return nil, ctrderr.Wrap(err, "list containers")
	}
	used := make(map[string]bool, len(ctrs))
	for _, c := range ctrs {
		if c.Image != "" {
			used[c.Image] = true
		}
	}
	return used, nil
}

// refsOf walks what target reaches, once per digest. Content that is not
// there (platforms never fetched) is skipped.
func (s *Store) refsOf(ctx context.Context, target ocispec.Descriptor) (*imageRefs, error) {
	s.mu.Lock()
	r := s.refs[target.Digest]
	s.mu.Unlock()
	if r != nil {
		return r, nil
	}
	cs := s.client.ContentStore()
	r = &imageRefs{}
	seen := map[digest.Digest]bool{}
	var configs []ocispec.Descriptor
	err := s.call.Call(ctx, "images.Walk", func(ctx context.Context) error {
		return ctrdimages.Walk(ctx, ctrdimages.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
			if seen[desc.Digest] {
				return nil, ctrdimages.ErrSkipDesc
			}
			seen[desc.Digest] = true
			r.blobs = append(r.blobs, desc.Digest)
			if ctrdimages.IsConfigType(desc.MediaType) {
				configs = append(configs, desc)
			}
			children, err := ctrdimages.Children(ctx, cs, desc)
			if errdefs.IsNotFound(err) {
				return nil, nil
			}
			return children, err
		}), target)
	})
	if err != nil {
		return r, err // partial, not cached
	}
	chains := map[string]bool{}
	for _, c := range configs {
		var cfg ocispec.Image
		err := s.call.Call(ctx, "images.Config", func(ctx context.Context) error {
			p, err := content.ReadBlob(ctx, cs, c)
			if err != nil {
				return err
			}
			return json.Unmarshal(p, &cfg)
		})
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return r, err
		}
		if cfg.Created != nil && (r.created.IsZero() || cfg.Created.Before(r.created)) {
			r.created = *cfg.Created
		}
		for _, id := range identity.ChainIDs(append([]digest.Digest(nil), cfg.RootFS.DiffIDs...)) {
			if name := id.String(); !chains[name] {
				chains[name] = true
				r.chains = append(r.chains, name)
			}
		}
	}
	s.mu.Lock()
	if s.refs == nil {
		s.refs = map[digest.Digest]*imageRefs{}
	}
	s.refs[target.Digest] = r
	s.mu.Unlock()
	return r, nil
}

// snapshotUsage returns the size of the committed snapshots in chains,
// asking the snapshotter only about those it was not asked about before.
func (s *Store) snapshotUsage(ctx context.Context, chains map[string]int) (map[string]int64, error) {
	sn := s.client.SnapshotService(s.snapshotter)
	out := make(map[string]int64, len(chains))
	for name := range chains {
		s.mu.Lock()
		size, ok := s.usage[name]
		s.mu.Unlock()
		if !ok {
			var u snapshots.Usage
			err := s.call.Call(ctx, "snapshots.Usage", func(ctx context.Context) error {
				var err error
				u, err = sn.Usage(ctx, name)
				return err
			})
			switch {
			case errdefs.IsNotFound(err):
				continue // collected since the walk
			case err != nil:
				return nil, ctrderr.Wrap(err, "snapshot usage "+name)
			}
			size = u.Size
			s.mu.Lock()
			if s.usage == nil {
				s.usage = map[string]int64{}
			}
			s.usage[name] = size
			s.mu.Unlock()
		}
		out[name] = size
	}
	return out, nil
}

// prune forgets the cached walks of images no longer listed, and the sizes
// of snapshots none of the listed images reaches.
func (s *Store) prune(listed map[digest.Digest]*imageGroup, chains map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for dg := range s.refs {
		if listed[dg] == nil {
			delete(s.refs, dg)
		}
	}
	for name := range s.usage {
		if _, ok := chains[name]; !ok {
			delete(s.usage, name)
		}
	}
}

// Remove implements images.Store. The last record goes with a synchronous
// garbage collection, so the content and snapshots are gone on return.
func (s *Store) Remove(ctx context.Context, id string) error {
	ctx = s.storeCtx(ctx)
	records, err := s.recordsOf(ctx, id)
	if err != nil {
		return err
	}
	used, err := s.usedNames(ctx)
	if err != nil {
		return err
	}
	for _, r := range records {
		if used[r.Name] {
			return fmt.Errorf("remove image %s: container of %s: %w", id, r.Name, images.ErrImageInUse)
		}
	}
	is := s.client.ImageService()
	for i, r := range records {
		var opts []ctrdimages.DeleteOpt
		if i == len(records)-1 {
			opts = append(opts, ctrdimages.SynchronousDelete())
		}
		err := s.call.CallWithin(ctx, "images.Delete", s.removeTimeout, func(ctx context.Context) error {
			return is.Delete(ctx, r.Name, opts...)
		})
		if err != nil && !errdefs.IsNotFound(err) {
			return ctrderr.Wrap(err, "remove image "+r.Name)
		}
	}
	if s.onRemove != nil {
		s.onRemove(records[0].Target.Digest)
	}
	return nil
}

// SetLastUse implements images.LastUseStore with the LabelLastUse label.
func (s *Store) SetLastUse(ctx context.Context, id string, t time.Time) error {
	ctx = s.storeCtx(ctx)
	records, err := s.recordsOf(ctx, id)
	if err != nil {
		return err
	}
	value := t.UTC().Format(time.RFC3339Nano)
	is := s.client.ImageService()
	var errs []error
	for _, r := range records {
		if r.Labels[LabelLastUse] == value {
			continue
		}
		err := s.call.Call(ctx, "images.Update", func(ctx context.Context) error {
			_, err := is.Update(ctx, ctrdimages.Image{Name: r.Name, Labels: map[string]string{LabelLastUse: value}}, "labels."+LabelLastUse)
			return err
		})
		if err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, ctrderr.Wrap(err, "label image "+r.Name))
		}
	}
	return errors.Join(errs...)
}

func (s *Store) recordsOf(ctx context.Context, id string) ([]ctrdimages.Image, error) {
	dg, err := digest.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("image id %q: %w: %w", id, drivers.ErrImageNotFound, err)
	}
	var records []ctrdimages.Image
	err = s.call.Call(ctx, "images.List", func(ctx context.Context) error {
		var err error
		records, err = s.client.ImageService().List(ctx, fmt.Sprintf("target.digest==%q", dg.String()))
		return err
	})
	if err != nil {
		return nil, ctrderr.Wrap(err, "list images of "+id)
	}
	if len(records) == 0 {
		return nil, fmt.Errorf("image %s: %w", id, drivers.ErrImageNotFound)
	}
	return records, nil
}
