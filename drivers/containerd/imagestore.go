package containerd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	ctrdimages "github.com/containerd/containerd/images"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/images"
)

// LabelLastUse is the image label where the image cleaner keeps an image's
// last use (RFC 3339, UTC), so it survives restarts. It is set on every
// record (name) of the image.
const LabelLastUse = "io.fnrun.last-use"

// imageStore is the containerd image store of the driver's namespace, as
// the image cleaner sees it. An image is every record pointing at one target
// digest, its ID that digest; it is in use when any container of the
// namespace, ours or not, names one of its records.
//
// Sizes are bytes on disk: the blobs the target reaches (every platform
// present) and the committed snapshots of its unpacked layers, in Size when
// one image reaches them, else in each one's SharedSize. Not counted: a
// container's writable snapshot (the container's, not the image's) and
// content no image reaches any more (awaiting GC, or held by a lease).
type imageStore struct {
	d *daemon

	mu sync.Mutex
	// refs caches what each target digest reaches; content is addressed
	// by digest, so it cannot change while the digest is listed. Presence
	// is checked at every List.
	refs map[digest.Digest]*imageRefs
	// usage caches the size of committed snapshots, which cannot change.
	usage map[string]int64
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

var (
	_ images.Store        = (*imageStore)(nil)
	_ images.LastUseStore = (*imageStore)(nil)
)

// storeCtx puts the namespace and the driver's logger on ctx (containerd's
// image helpers log through the context).
func (s *imageStore) storeCtx(ctx context.Context) context.Context {
	return log.WithLogger(s.d.nsCtx(ctx), s.d.log)
}

// List implements images.Store.
func (s *imageStore) List(ctx context.Context) ([]images.Image, error) {
	d := s.d
	ctx = s.storeCtx(ctx)
	var records []ctrdimages.Image
	if err := d.call(ctx, "images.List", func(ctx context.Context) error {
		var err error
		records, err = d.client.ImageService().List(ctx)
		return err
	}); err != nil {
		return nil, daemonErr(err, "list images")
	}
	used, err := s.usedNames(ctx)
	if err != nil {
		return nil, err
	}
	blobs := map[digest.Digest]int64{}
	if err := d.call(ctx, "content.Walk", func(ctx context.Context) error {
		return d.client.ContentStore().Walk(ctx, func(info content.Info) error {
			blobs[info.Digest] = info.Size
			return nil
		})
	}); err != nil {
		return nil, daemonErr(err, "list content")
	}
	sn := d.client.SnapshotService(d.opts.snapshotter)
	committed := map[string]bool{}
	if err := d.call(ctx, "snapshots.Walk", func(ctx context.Context) error {
		return sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			if info.Kind == snapshots.KindCommitted {
				committed[info.Name] = true
			}
			return nil
		})
	}); err != nil {
		return nil, daemonErr(err, "list snapshots")
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
			d.log.WithError(err).WithField("image", g.names[0]).Debug("cannot walk image content; counting what was found")
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
func (s *imageStore) usedNames(ctx context.Context) (map[string]bool, error) {
	d := s.d
	var ctrs []containers.Container
	if err := d.call(ctx, "containers.List", func(ctx context.Context) error {
		var err error
		ctrs, err = d.client.ContainerService().List(ctx)
		return err
	}); err != nil {
		return nil, daemonErr(err, "list containers")
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
func (s *imageStore) refsOf(ctx context.Context, target ocispec.Descriptor) (*imageRefs, error) {
	s.mu.Lock()
	r := s.refs[target.Digest]
	s.mu.Unlock()
	if r != nil {
		return r, nil
	}
	cs := s.d.client.ContentStore()
	r = &imageRefs{}
	seen := map[digest.Digest]bool{}
	var configs []ocispec.Descriptor
	err := s.d.call(ctx, "images.Walk", func(ctx context.Context) error {
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
		err := s.d.call(ctx, "images.Config", func(ctx context.Context) error {
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
func (s *imageStore) snapshotUsage(ctx context.Context, chains map[string]int) (map[string]int64, error) {
	sn := s.d.client.SnapshotService(s.d.opts.snapshotter)
	out := make(map[string]int64, len(chains))
	for name := range chains {
		s.mu.Lock()
		size, ok := s.usage[name]
		s.mu.Unlock()
		if !ok {
			var u snapshots.Usage
			err := s.d.call(ctx, "snapshots.Usage", func(ctx context.Context) error {
				var err error
				u, err = sn.Usage(ctx, name)
				return err
			})
			switch {
			case errdefs.IsNotFound(err):
				continue // collected since the walk
			case err != nil:
				return nil, daemonErr(err, "snapshot usage "+name)
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
func (s *imageStore) prune(listed map[digest.Digest]*imageGroup, chains map[string]int) {
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
func (s *imageStore) Remove(ctx context.Context, id string) error {
	d := s.d
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
	is := d.client.ImageService()
	for i, r := range records {
		var opts []ctrdimages.DeleteOpt
		if i == len(records)-1 {
			opts = append(opts, ctrdimages.SynchronousDelete())
		}
		err := d.callWithin(ctx, "images.Delete", d.s.PullTimeout, func(ctx context.Context) error {
			return is.Delete(ctx, r.Name, opts...)
		})
		if err != nil && !errdefs.IsNotFound(err) {
			return daemonErr(err, "remove image "+r.Name)
		}
	}
	d.images.forget(records[0].Target.Digest)
	return nil
}

// SetLastUse implements images.LastUseStore with the LabelLastUse label.
func (s *imageStore) SetLastUse(ctx context.Context, id string, t time.Time) error {
	d := s.d
	ctx = s.storeCtx(ctx)
	records, err := s.recordsOf(ctx, id)
	if err != nil {
		return err
	}
	value := t.UTC().Format(time.RFC3339Nano)
	is := d.client.ImageService()
	var errs []error
	for _, r := range records {
		if r.Labels[LabelLastUse] == value {
			continue
		}
		err := d.call(ctx, "images.Update", func(ctx context.Context) error {
			_, err := is.Update(ctx, ctrdimages.Image{Name: r.Name, Labels: map[string]string{LabelLastUse: value}}, "labels."+LabelLastUse)
			return err
		})
		if err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, daemonErr(err, "label image "+r.Name))
		}
	}
	return errors.Join(errs...)
}

func (s *imageStore) recordsOf(ctx context.Context, id string) ([]ctrdimages.Image, error) {
	dg, err := digest.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("image id %q: %w: %w", id, drivers.ErrImageNotFound, err)
	}
	var records []ctrdimages.Image
	err = s.d.call(ctx, "images.List", func(ctx context.Context) error {
		var err error
		records, err = s.d.client.ImageService().List(ctx, fmt.Sprintf("target.digest==%q", dg.String()))
		return err
	})
	if err != nil {
		return nil, daemonErr(err, "list images of "+id)
	}
	if len(records) == 0 {
		return nil, fmt.Errorf("image %s: %w", id, drivers.ErrImageNotFound)
	}
	return records, nil
}
