package containerd

import (
	"context"

	"github.com/fnrun/fnrun/drivers"
)

// NetworkProvider hands out the network namespace a container joins. Without
// one, every container gets a fresh network namespace with loopback only;
// that is also what DisableNet gives, since the namespace has no other
// interface. The pre-fork pool's adapter implements it with the namespace of
// a running holder.
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
	// Release gives the namespace back; it is called once.
	Release(ctx context.Context) error
}
