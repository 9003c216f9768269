// Package containerd is the fnrun driver over the containerd API (the v1.7
// Go client; the daemon is containerd 1.6 or newer). It registers itself as
// "containerd"; New builds one without the registry.
//
// One cookie maps to one containerd container whose id is the task's id,
// with a snapshot of the image for its root filesystem and, once Run is
// called, one task. The container's OCI spec is built from the image
// configuration and the task (see ContainerOptions): limits in the cgroup,
// the four rlimits, a tmpfs /tmp, an optional read-only root, bind mounts,
// an unprivileged user with no capabilities, and a network (below). A
// static tini, when the host has one, runs as process 1 so that signals
// behave as they do outside a container (see WithInit).
//
// Run wires the task's streams through FIFOs and awaits the exit from
// before the start, so no output and no quick exit is missed. A run ends as
// the drivers contract says: exit codes, timeout and cancelled (SIGTERM,
// a grace, then SIGKILL), and killed only when containerd reports an OOM
// kill (its TaskOOM event, or the cgroup's OOM-kill counter), never from
// exit code 137 alone.
//
// Pulls use the task's own registry credentials (drivers.Auther), else
// those a Docker config.json holds for the image's exact registry
// (WithDockerConfig: auths, credsStore and credHelpers, read as the docker
// CLI reads them).
//
// containerd has no log driver, so with a LoggerConfig URL the driver
// itself sends each output line, besides the task's own writers, as an RFC
// 5424 syslog message, as Docker's syslog log driver does. Run dials the
// endpoint before the task starts and fails when it cannot be reached; a
// slow endpoint loses messages but never holds up the run.
//
// # Networking
//
// With CNI (github.com/containerd/go-cni, the first network configuration
// of Config.CNIConfDir, plugins from Config.CNIBinDir; Debian's
// containernetworking-plugins bridge, host-local and loopback are enough),
// every container that wants a network gets one: the driver creates a
// network namespace, pins it with a bind mount under its state folder
// (WithStateDir, default DefaultStateDir), has CNI set it up (interface
// eth0) before the container exists, and names it by path in the OCI spec;
// the cookie's Close removes the container, then tears the CNI attachment
// down and removes the namespace. A task with DisableNet gets the fresh
// namespace runc makes, with loopback only and no CNI call.
//
// Every container also gets /etc/resolv.conf, /etc/hosts and /etc/hostname
// as Docker writes them (the host's resolv.conf without loopback
// nameservers, or the DNS the CNI network gives; the container's address
// with its host name), generated under the state folder and bind-mounted
// read-only.
//
// Networking is decided in New. When CNIConfDir or CNIBinDir is set, a
// configuration that does not load, or a plugin it names that is missing,
// fails New with drivers.ErrInvalidConfig. When neither is set and the
// default folder has no configuration, the host has no CNI networking:
// containers get loopback only and a warning is logged once. The driver
// must share the daemon's host and mount namespace (the pinned namespace
// files are opened by runc) and needs CAP_SYS_ADMIN to create namespaces;
// New checks that. CNI plugins write their errors to the process's
// standard error (go-cni's choice).
//
// # Pre-fork pool
//
// With Config.PreForkPoolSize > 0 the driver runs a pool (package pool) of
// holders: containers of PreForkImage (DefaultPreForkImage when empty;
// pulled when absent) running PreForkCmd (DefaultPreForkCmd), unprivileged,
// with a read-only root, each in a namespace with its own CNI network.
// CreateContainer leases a free holder, never waiting, and the container
// joins the holder's namespace by path; with none free it falls back to a
// fresh CNI network and the pool counts the miss (and grows up to
// PreForkPoolMax). Close returns the lease. A container whose holder dies
// fails with an error wrapping drivers.ErrContainerGone: Run refuses to
// start it, and a running one is ended at once. PreForkNetworks is ignored:
// holders use the CNI network. PoolStats implements pool.Reporter.
//
// # Image cleaner
//
// With Config.ImageCleanMaxSize > 0 the driver runs an image cleaner
// (package images) over its namespace's image store, which ImageStore
// returns (images.Provider, usable by a one-shot job even without a
// cleaner). A cookie marks its image busy from ValidateImage, across the
// pull, to Close; a pull kicks the cleaner. An image is every record
// pointing at one target digest; sizes count the content store's blobs and
// the snapshotter's committed snapshots, split into unique and shared
// bytes; any container of the namespace, ours or not, makes its image in
// use; last uses live in the LabelLastUse image label, so they survive
// restarts. The pool image is always exempt.
//
// # Ownership
//
// Every container (with its role, RoleCall or RoleHolder), snapshot and
// lease carries the labels of Labels, and every lease the driver takes
// expires on its own, so a crashed process leaves nothing that outlives it
// for good. At start a driver removes what other instances with the same
// label tag left behind: containers and holders with their tasks and
// snapshots, leases, and pinned namespaces with their CNI attachments (a
// tool that inspects a running instance opts out with WithoutLeakReaper).
// Containers lists the containers and holders of the label tag
// (drivers.ContainerLister) and KillContainer ends one. Every goroutine
// the driver starts belongs to it and ends before Close returns; Close
// closes the cookies, then the pool, then the cleaner, then the rest.
//
// The package name clashes with the client's, so the client is imported as
// ctrd throughout.
package containerd
