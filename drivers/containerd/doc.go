// Package containerd is the fnrun driver over the containerd API (the v1.7
// Go client; the daemon is containerd 1.6 or newer). It registers itself as
// "containerd"; New builds one without the registry.
//
// One cookie maps to one containerd container whose id is the task's id,
// with a snapshot of the image for its root filesystem and, once Run is
// called, one task. The container's OCI spec is built from the image
// configuration and the task (see ContainerOptions): limits in the cgroup,
// the four rlimits, a tmpfs /tmp, an optional read-only root, bind mounts,
// an unprivileged user with no capabilities, and a new network namespace
// with loopback only (or, with a NetworkProvider, the namespace of a pool
// holder). A static tini, when the host has one, runs as process 1 so that
// signals behave as they do outside a container (see WithInit).
//
// Run wires the task's streams through FIFOs and awaits the exit from
// before the start, so no output and no quick exit is missed. A run ends as
// the drivers contract says: exit codes, timeout and cancelled (SIGTERM,
// a grace, then SIGKILL), and killed only when containerd reports an OOM
// kill (its TaskOOM event, or the cgroup's OOM-kill counter), never from
// exit code 137 alone.
//
// Ownership: every container and snapshot carries the labels of Labels, and
// every lease the driver takes carries them too and expires on its own, so a
// crashed process leaves nothing that outlives it. At start a driver removes
// what other instances with the same label tag left behind. Every goroutine
// the driver starts belongs to it and ends before Close returns.
//
// The package name clashes with the client's, so the client is imported as
// ctrd throughout.
package containerd
