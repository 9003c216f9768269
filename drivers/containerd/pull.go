package containerd

import (
	"context"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/log"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/registry"
)

// pullOnce is one pull of ref, unpacked for the snapshotter, under a
// lease. containerd's resolver logs through the context's logger: it is
// kept on ours instead of the process-wide one.
func (d *daemon) pullOnce(ctx context.Context, ref drivers.Reference, auth *drivers.AuthConfig) (err error) {
	ctx, release, err := d.withLease(ctx, "pull")
	if err != nil {
		return err
	}
	// The image record holds what the pull wrote once it exists. A failed
	// attempt's partial layers (ingests) are only the lease's: a synchronous
	// delete has the daemon collect them before answering, rather than at a
	// later collection that nothing may trigger.
	defer func() { release(err != nil) }()
	ctx = log.WithLogger(ctx, d.log.WithField("image", ref.Normalized))
	_, err = d.client.Pull(ctx, ref.Normalized,
		ctrd.WithPullUnpack,
		ctrd.WithPullSnapshotter(d.opts.snapshotter),
		ctrd.WithResolver(registry.Resolver(d.http, ref, auth)),
		ctrd.WithPullLabels(d.s.Labels("")))
	return registry.PullError(err, ref.Normalized)
}
