package pool

import "context"

// HolderSpec is what the pool asks an adapter to start.
type HolderSpec struct {
	// Name is unique among the holders of every pool in this process (it
	// carries Config.NamePrefix, a random token per pool and a sequence
	// number), so an adapter can use it as the container name.
	Name string
	// Network is the network to put the holder on, one of
	// Config.Networks; empty means the runtime's default network.
	Network string
}

// Holder is a running namespace-holder container, as an adapter started it.
// The pool copies it by value and never changes it.
type Holder struct {
	// ID is the runtime's container id. A Docker container joins the
	// holder's network namespace with network mode "container:" + ID.
	ID string
	// Name is HolderSpec.Name.
	Name string
	// Network is the network the holder was put on. If an adapter leaves it
	// empty, the pool fills in HolderSpec.Network.
	Network string
	// NetNSPath is the holder's network namespace as a path, such as
	// /proc/<pid>/ns/net of a containerd holder task, for runtimes that join
	// a namespace by path in the OCI spec. Adapters that join by ID leave it
	// empty.
	NetNSPath string
	// Data is the adapter's own state for this holder (a task handle, a
	// CNI result to tear down...). The pool hands it back to StopHolder and
	// WaitHolder and never looks at it.
	Data any
}

// Adapter is what a driver supplies so the pool can manage holders on its
// runtime. The pool calls it from several goroutines at once; every method
// must honour ctx.
//
// The pool owns the policy (how many holders, when to replace one, how
// fast to retry); the adapter only does one runtime operation per call and
// should not retry on its own beyond what one call needs.
type Adapter interface {
	// EnsureImage makes sure the holders' image is present, pulling it if
	// it is absent. The pool calls it before it starts the first holder and
	// again after StartHolder fails with an error wrapping
	// drivers.ErrImageNotFound.
	EnsureImage(ctx context.Context) error

	// StartHolder creates and starts one holder as spec says and returns
	// once it is running and joinable. On error it must leave nothing
	// behind: the pool only stops holders it was given. When ctx ends
	// during the call, StartHolder should undo what it did and return
	// ctx's error; if it returns a Holder anyway, the pool stops it.
	StartHolder(ctx context.Context, spec HolderSpec) (Holder, error)

	// StopHolder stops and removes the holder, and whatever StartHolder set
	// up for it. The pool calls it once per holder, with a context that
	// outlives the pool's own (so Close can clean up) but has a deadline
	// (Config.StopTimeout). A holder that is already gone is not an error.
	StopHolder(ctx context.Context, h Holder) error

	// WaitHolder blocks until the holder stops running, or ctx ends. It may
	// use the runtime's event stream or a wait call. Whatever it returns
	// before ctx ends, the pool takes the holder for dead and replaces it,
	// so an adapter whose watch breaks for a passing reason (a dropped
	// event stream) should re-establish it rather than return. The pool
	// cancels ctx when it stops the holder itself.
	WaitHolder(ctx context.Context, h Holder) error
}
