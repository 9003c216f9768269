package docker

import (
	"context"
	"fmt"
	"io"
	"time"

	docker "github.com/fsouza/go-dockerclient"
	"github.com/golang/groupcache/singleflight"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/stats"
)

// puller collapses concurrent pulls of one reference with the same
// credentials into one daemon pull, retried as the driver's policy says.
//
// The shared pull runs in a goroutine the driver owns, bounded by the
// driver's life and the pull timeout, not by any one caller: a caller that
// gives up must not fail the others, and the image is most likely wanted
// again soon. Each caller's context bounds only its own wait.
type puller struct {
	d     *Driver
	group singleflight.Group
}

func newPuller(d *Driver) *puller { return &puller{d: d} }

func (p *puller) pull(ctx context.Context, ref drivers.Reference, conf docker.AuthConfiguration) error {
	key := ref.Familiar + "\x00" + credentialKey(conf)
	res := make(chan error, 1)
	started := p.d.goOwned(func() {
		_, err := p.group.Do(key, func() (any, error) {
			return nil, p.pullWithRetries(ref, conf)
		})
		res <- err
	})
	if !started {
		return fmt.Errorf("pull %s: docker driver: %w", ref.Familiar, drivers.ErrClosed)
	}
	select {
	case err := <-res:
		if err != nil && p.d.ctx.Err() != nil {
			return fmt.Errorf("pull %s: docker driver: %w (%w)", ref.Familiar, drivers.ErrClosed, err)
		}
		return err
	case <-ctx.Done():
		return fmt.Errorf("pull %s: %w", ref.Familiar, ctx.Err())
	}
}

func (p *puller) pullWithRetries(ref drivers.Reference, conf docker.AuthConfiguration) error {
	policy, checker := p.d.retryPolicy()
	attempt := 0
	return drivers.Retry(p.d.ctx, policy, checker, func(ctx context.Context) error {
		attempt++
		err := p.d.pullOnce(ctx, ref, conf)
		if err != nil {
			p.d.log.WithError(err).WithFields(map[string]any{"image": ref.Familiar, "attempt": attempt}).Debug("pull failed")
		}
		return err
	})
}

// pullOnce is one pull attempt that reaches the daemon.
func (d *Driver) pullOnce(ctx context.Context, ref drivers.Reference, conf docker.AuthConfiguration) error {
	start := time.Now()
	tag := ref.Tag
	if ref.Digest != "" {
		tag = ref.Digest // the API takes a digest in the tag parameter
	}
	err := d.doWithin(ctx, "pull", fmt.Sprintf("image %q", ref.Familiar), kindImage, d.opts.pullTimeout, func(ctx context.Context) error {
		return d.client.PullImage(docker.PullImageOptions{
			Repository:        ref.Name(),
			Tag:               tag,
			OutputStream:      io.Discard,
			InactivityTimeout: pullInactivity,
			Context:           ctx,
		}, conf)
	})
	stats.RecordPull(ctx, driverName, start, err)
	if err == nil {
		d.log.WithFields(map[string]any{"image": ref.Familiar, "took": time.Since(start)}).Debug("pulled image")
	}
	return err
}
