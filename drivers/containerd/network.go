package containerd

import (
	"context"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/cninet"
)

// NetworkProvider hands out the network namespace a container joins,
// instead of a pool holder's or a fresh CNI network. A task with
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

// The default network, when no NetworkProvider is given, is package
// cninet's: a CNI network per container.
var _ NetworkLease = (*cninet.NS)(nil)
