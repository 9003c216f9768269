package containerd

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/leases"
)

// withLease takes a lease for an operation that writes content or
// snapshots, so the garbage collector cannot remove them before an image or
// container record holds them; its expiry bounds what a process that dies
// mid-operation leaves. release deletes the lease whatever happened to ctx;
// with sync the daemon collects garbage before answering, so what only the
// lease held is gone when release returns.
func (d *daemon) withLease(ctx context.Context, purpose string) (_ context.Context, release func(sync bool), _ error) {
	if _, ok := leases.FromContext(ctx); ok {
		return ctx, func(bool) {}, nil // an outer operation holds one already
	}
	labels := d.s.Labels("")
	labels[LabelLease] = purpose
	ls := d.client.LeasesService()
	// The ID is chosen here, so a lease the daemon made although the call
	// failed on our side (a cancelled caller, a timeout) can still be
	// deleted. The create itself is not cancelled with the caller: it is
	// bounded by the per-operation timeout, and a caller that gave up
	// meanwhile gets its lease deleted below.
	id := "fnrun-" + purpose + "-" + randomID()
	var l leases.Lease
	err := d.call(context.WithoutCancel(ctx), "leases.Create", func(ctx context.Context) error {
		var err error
		l, err = ls.Create(ctx, leases.WithID(id), leases.WithExpiration(d.opts.leaseExpiry), leases.WithLabels(labels))
		return err
	})
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		cctx, cancel := d.cleanupCtx(ctx)
		defer cancel()
		derr := d.call(cctx, "leases.Delete", func(ctx context.Context) error { return ls.Delete(ctx, leases.Lease{ID: id}) })
		if derr != nil && !errdefs.IsNotFound(derr) {
			d.deleteLeaseLater(id, derr)
		}
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w: %w", cerr, err)
		}
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
			d.deleteLeaseLater(l.ID, err)
		}
	}
	return leases.WithLease(ctx, l.ID), release, nil
}

// deleteLeaseLater hands a lease whose deletion failed to the janitor.
func (d *daemon) deleteLeaseLater(id string, err error) {
	d.log.WithError(err).WithField("lease", id).Info("cannot delete lease yet; trying again in the background")
	d.janitor.deleteLeaseLater(id)
}
