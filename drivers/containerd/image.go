package containerd

import (
	"context"
	"fmt"
	"sort"
	"sync"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/fnrun/fnrun/drivers"
)

type localImage struct {
	image  ctrd.Image
	config ocispec.Image
}

// findImage loads ref from the image store. It returns (nil, nil) when the
// image is absent, or present but not usable for the snapshotter (content
// collected, not unpacked and not unpackable): both mean "pull it". What a
// digest was found to be cannot change while a record holds its content and
// snapshots, so after the first look (see imageCache) it is one daemon call.
func (d *daemon) findImage(ctx context.Context, ref string) (*localImage, error) {
	var img ctrd.Image
	err := d.call(ctx, "images.Get", func(ctx context.Context) error {
		var err error
		img, err = d.client.GetImage(ctx, ref)
		return err
	})
	switch {
	case errdefs.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, daemonErr(err, fmt.Sprintf("image %s", ref))
	}
	if cfg, ok := d.images.get(img.Target().Digest); ok {
		return &localImage{image: img, config: cfg}, nil
	}
	var unpacked bool
	err = d.call(ctx, "images.IsUnpacked", func(ctx context.Context) error {
		var err error
		unpacked, err = img.IsUnpacked(ctx, d.opts.snapshotter)
		return err
	})
	switch {
	case errdefs.IsNotFound(err):
		return nil, nil // a record whose content is gone: pull again
	case err != nil:
		return nil, daemonErr(err, fmt.Sprintf("image %s", ref))
	}
	if !unpacked {
		// Present but not unpacked for our snapshotter (imported with
		// another one, or its snapshots collected): unpacking is local and
		// cheaper than a pull, and works for images no registry has.
		if err := d.unpack(ctx, img); err != nil {
			d.log.WithError(err).WithField("image", ref).Info("cannot unpack image, asking for a pull")
			return nil, nil
		}
	}
	li := &localImage{image: img}
	err = d.call(ctx, "images.Config", func(ctx context.Context) error {
		var err error
		li.config, err = img.Spec(ctx)
		return err
	})
	switch {
	case errdefs.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, daemonErr(err, fmt.Sprintf("image %s config", ref))
	}
	d.images.put(img.Target().Digest, li.config)
	return li, nil
}

// imageCache remembers the configuration of image digests found unpacked.
// It is bounded; when full it starts over, which costs a few daemon calls.
type imageCache struct {
	mu      sync.Mutex
	configs map[digest.Digest]ocispec.Image
}

const imageCacheSize = 256

func (c *imageCache) get(dgst digest.Digest) (ocispec.Image, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cfg, ok := c.configs[dgst]
	return cfg, ok
}

func (c *imageCache) put(dgst digest.Digest, cfg ocispec.Image) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.configs == nil || len(c.configs) >= imageCacheSize {
		c.configs = make(map[digest.Digest]ocispec.Image)
	}
	c.configs[dgst] = cfg
}

// forget drops a digest whose snapshots turned out to be gone.
func (c *imageCache) forget(dgst digest.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.configs, dgst)
}

func (d *daemon) unpack(ctx context.Context, img ctrd.Image) error {
	ctx, release, err := d.withLease(ctx, "unpack")
	if err != nil {
		return err
	}
	defer release(false)
	return d.callWithin(ctx, "images.Unpack", d.s.PullTimeout, func(ctx context.Context) error {
		return img.Unpack(ctx, d.opts.snapshotter)
	})
}

func (d *daemon) checkImageConfig(ref string, cfg ocispec.Image) error {
	if len(cfg.Config.Volumes) > 0 && !d.s.Policy.ImageVolumes {
		vols := make([]string, 0, len(cfg.Config.Volumes))
		for v := range cfg.Config.Volumes {
			vols = append(vols, v)
		}
		sort.Strings(vols)
		return drivers.InvalidTaskf("image %s declares volumes %v and image volumes are not enabled", ref, vols)
	}
	return nil
}

func (d *daemon) removeImage(ctx context.Context, ref string) error {
	norm, err := drivers.NormalizeImage(ref)
	if err != nil {
		return err
	}
	ctx = d.nsCtx(ctx)
	err = d.call(ctx, "images.Delete", func(ctx context.Context) error {
		return d.client.ImageService().Delete(ctx, norm.Normalized, images.SynchronousDelete())
	})
	if err != nil && !errdefs.IsNotFound(err) {
		return daemonErr(err, "remove image "+norm.Normalized)
	}
	return nil
}
