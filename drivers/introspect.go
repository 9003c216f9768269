package drivers

import (
	"context"
	"time"
)

// Container states, as ContainerInfo reports them.
const (
	StateStarting = "starting" // created, not yet running
	StateRunning  = "running"
	StatePaused   = "paused"
	StateExited   = "exited"
	StateUnknown  = "unknown"
)

// ContainerInfo describes one container a driver manages.
type ContainerInfo struct {
	ID string
	// Name is the container's name: the task's id, or the holder's name.
	Name    string
	Image   string
	State   string // one of the State constants
	Created time.Time
	// Role is RoleCall or RoleHolder.
	Role string
	// Instance is the driver instance that created it.
	Instance string
	Labels   map[string]string
}

// ContainerLister is an optional interface of a Driver that lists the
// containers carrying the library's labels (of every instance with the
// driver's label tag) and ends one of them. It never lists or touches a
// container without the library's labels.
type ContainerLister interface {
	Containers(ctx context.Context) ([]ContainerInfo, error)
	// KillContainer ends and removes a managed container, named by id,
	// name or id prefix. A container without the library's labels gives an
	// error wrapping ErrContainerGone and is left alone.
	KillContainer(ctx context.Context, id string) error
}
