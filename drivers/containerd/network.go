package containerd

import (
	"context"
	"fmt"

	"github.com/fnrun/fnrun/drivers"
)

// NetworkProvider hands out the network namespace a container joins,
// replacing the driver's own choice (see acquireNetwork). A task with
// DisableNet never asks: it gets a fresh namespace with loopback only.
type NetworkProvider interface {
	// Acquire returns the network namespace for task's container. It is
	// called by CreateContainer; the lease is released by the cookie's
	// Close.
	Acquire(ctx context.Context, task drivers.ContainerTask) (NetworkLease, error)
}

// NetworkLease is one container's use of a network namespace.
type NetworkLease interface {
	// Path is the namespace to join, such as /proc/<pid>/ns/net of a
	// holder process.
	Path() string
	// Release gives the namespace back. An error fails the cookie's Close,
	// and the next Close calls Release again; after a success it is not
	// called any more.
	Release(ctx context.Context) error
}

// acquireNetwork decides the network of a container that wants one:
//
//  1. a NetworkProvider given with WithNetworkProvider;
//  2. a free holder of the pre-fork pool, whose namespace the container
//     joins (the lease never waits);
//  3. a fresh CNI network in a namespace of its own, when the pool is off
//     or has no free holder (a miss the pool counts);
//  4. nothing, on a host without CNI networking: runc's fresh namespace
//     with loopback only.
//
// A nil lease means case 4.
func (d *Driver) acquireNetwork(ctx context.Context, task drivers.ContainerTask) (NetworkLease, error) {
	if p := d.opts.network; p != nil {
		l, err := p.Acquire(ctx, task)
		if err != nil {
			return nil, fmt.Errorf("network: %w", err)
		}
		return l, nil
	}
	if d.pool != nil {
		if l, ok := d.pool.Lease(ctx); ok {
			return poolLease{l}, nil
		}
	}
	if d.cni == nil {
		return nil, nil
	}
	ns, err := d.attachNetwork(ctx)
	if err != nil {
		return nil, err
	}
	return &cniLease{d: d, ns: ns}, nil
}
