package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/backoff"
	"github.com/fnrun/fnrun/pool"
)

// holders is the pool.Adapter of every driver: holders are made and removed
// through the Runtime like a call's container.
type holders struct{ d *Driver }

var _ pool.Adapter = (*holders)(nil)

// holder is the adapter's state of one holder, in pool.Holder.Data.
type holder struct {
	ctr Container
	p   Process
}

// holderRewait paces new waits on a holder whose watch broke (a daemon
// restarting, a dropped connection): the holder most likely still runs,
// and returning would make the pool replace it for nothing.
var holderRewait = drivers.BackOffConfig{MaxRetries: 1 << 40, Interval: 100, MinDelay: 50, MaxDelay: 5000}

// EnsureImage implements pool.Adapter: the image is pulled when absent.
func (a *holders) EnsureImage(ctx context.Context) error {
	d := a.d
	ref := d.s.PreFork.Image
	found, err := d.rt.FindImage(ctx, ref)
	if err != nil || found {
		return err
	}
	auth, err := d.s.Credentials.ImageCredentials(ctx, ref)
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref.Familiar, err)
	}
	d.log.WithField("image", ref.Familiar).Info("pulling the pre-fork pool image")
	return d.pull(ctx, ref, auth)
}

// StartHolder implements pool.Adapter.
func (a *holders) StartHolder(ctx context.Context, spec pool.HolderSpec) (pool.Holder, error) {
	d := a.d
	hs := d.s.PreFork
	hs.Network = spec.Network
	ctr, err := d.rt.Create(ctx, CreateSpec{Name: spec.Name, Labels: d.s.Labels(drivers.RoleHolder), Holder: &hs})
	if err != nil {
		if ctr != nil {
			a.remove(ctx, ctr)
		}
		return pool.Holder{}, err
	}
	p, err := ctr.Start(ctx, IO{})
	if err != nil {
		a.remove(ctx, ctr)
		return pool.Holder{}, err
	}
	h := pool.Holder{ID: ctr.ID(), Name: spec.Name, Network: spec.Network, Data: &holder{ctr: ctr, p: p}}
	if n, ok := ctr.(NetNSHolder); ok {
		h.NetNSPath = n.NetNSPath()
	}
	return h, nil
}

// remove removes a holder that failed to start, whatever happened to ctx.
func (a *holders) remove(ctx context.Context, ctr Container) {
	if err := ctr.Remove(Detached(ctx)); err != nil {
		a.d.log.WithError(err).WithField("holder", ctr.ID()).Warn("cannot remove a holder that failed to start; the leak reaper of the next instance will")
	}
}

// JoinedContainer is the Container of the pool holder h, for a runtime
// that needs more of the holder it joins than pool.Holder says; nil for a
// holder of another adapter.
func JoinedContainer(h *pool.Holder) Container {
	if hd, ok := h.Data.(*holder); ok {
		return hd.ctr
	}
	return nil
}

func holderOf(h pool.Holder) (*holder, error) {
	hd, ok := h.Data.(*holder)
	if !ok {
		return nil, fmt.Errorf("holder %s: foreign holder data %T", h.ID, h.Data)
	}
	return hd, nil
}

// StopHolder implements pool.Adapter.
func (a *holders) StopHolder(ctx context.Context, h pool.Holder) error {
	hd, err := holderOf(h)
	if err != nil {
		return err
	}
	hd.p.StopOutput()
	return hd.ctr.Remove(ctx)
}

// WaitHolder implements pool.Adapter; a broken watch is set up again.
func (a *holders) WaitHolder(ctx context.Context, h pool.Holder) error {
	hd, err := holderOf(h)
	if err != nil {
		return err
	}
	var pace *backoff.BackOff
	for {
		exit, err := hd.p.Wait(ctx)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil:
			return fmt.Errorf("holder %s exited with code %d", h.ID, exit.Code)
		case errors.Is(err, drivers.ErrContainerGone):
			return err
		}
		if pace == nil {
			pace, _ = backoff.New(holderRewait) // valid
		}
		delay, _ := pace.Next()
		a.d.log.WithError(err).WithFields(map[string]any{"holder": h.ID, "retry_in": delay}).Debug("holder watch broke; watching again")
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
