package containerd

import (
	"context"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/leases"
)

// withLease takes a lease for an operation that writes content or
// snapshots (a pull, a container's root snapshot), so containerd's garbage
// collector cannot remove them before an image or container record holds
// them. The lease carries the ownership labels and an expiry: if this
// process dies mid-operation, what it wrote is collected once the lease
// expires instead of staying forever.
//
// release deletes the lease whatever happened to ctx. With sync set the
// daemon also runs its garbage collector before answering, so what only the
// lease held is gone when release returns.
func (d *Driver) withLease(ctx context.Context, purpose string) (_ context.Context, release func(sync bool), _ error) {
	if _, ok := leases.FromContext(ctx); ok {
		return ctx, func(bool) {}, nil // an outer operation holds one already
	}
	labels := d.Labels()
	labels[LabelLease] = purpose
	ls := d.client.LeasesService()
	var l leases.Lease
	err := d.call(ctx, "leases.Create", func(ctx context.Context) error {
		var err error
		l, err = ls.Create(ctx, leases.WithRandomID(), leases.WithExpiration(d.opts.leaseExpiry), leases.WithLabels(labels))
		return err
	})
	if err != nil {
		return ctx, nil, daemonErr(err, "create "+purpose+" lease")
	}
	release = func(sync bool) {
		cctx, cancel := d.cleanupCtx(ctx)
		defer cancel()
		var opts []leases.DeleteOpt
		if sync {
			opts = append(opts, leases.SynchronousDelete)
		}
		err := d.call(cctx, "leases.Delete", func(ctx context.Context) error { return ls.Delete(ctx, l, opts...) })
		if err != nil && !errdefs.IsNotFound(err) {
			// The expiry still bounds its life.
			d.log.WithError(err).WithField("lease", l.ID).Warn("cannot delete lease")
		}
	}
	return leases.WithLease(ctx, l.ID), release, nil
}
