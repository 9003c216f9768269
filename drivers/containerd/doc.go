// Package containerd is the fnrun driver over containerd (the v1.7 Go
// client; the daemon is containerd 1.6 or newer): a runtime of the shared
// cookie life cycle (package lifecycle), which holds the contract's
// behaviour. It registers itself as "containerd"; New builds one without
// the registry.
//
// One cookie maps to one container whose id is the task's id, with a
// snapshot of the image for its root filesystem and, once run, one task
// whose streams are wired through FIFOs and whose exit is awaited from
// before the start. The OCI spec comes from the image and the task (see
// ContainerOptions): cgroup limits, rlimits, a tmpfs /tmp, an optional
// read-only root, bind mounts, an unprivileged user with no capabilities,
// Docker's seccomp profile, and a static tini as process 1 when the host
// has one (WithInit). An OOM kill is what containerd reports (its TaskOOM
// event, or the cgroup's OOM-kill counter), never exit code 137 alone.
//
// What a Docker user expects carries over: with CNI (the first network of
// Config.CNIConfDir, plugins from Config.CNIBinDir) every container that
// wants a network gets one in a namespace the driver pins under its state
// folder (WithStateDir) and tears down after the container; /etc/hosts,
// /etc/resolv.conf and /etc/hostname are written as Docker writes them and
// mounted read-only; a task's LoggerConfig sends each output line to syslog
// as Docker's syslog log driver does (package lifecycle); registry credentials
// come from the task or a Docker config.json (WithDockerConfig), for the
// exact registry host only. Without a CNI configuration, containers get
// loopback only and a warning is logged; a broken one fails New.
//
// Tasks run with fnrun's shim, FnrunRuntime, when its binary FnrunShim is
// on the PATH (containerd must find it on its own PATH too), and with
// containerd's runc shim otherwise (WithRuntime chooses). fnrun's shim is
// the runc shim less two of containerd's calls of the shim binary that need
// no runc shim: a second `runc delete` after every task delete, and a shim
// start for every task that joins a running group. When a task's shim dies,
// Remove kills what is left of the task itself (its first process is held
// by pidfd) rather than leave it to containerd's clean-up after the shim.
//
// Pool holders have a CNI network of their own, and a call's container
// joins one by namespace path, in the holder's shim. The image store the cleaner works through
// (ImageStore; package images/containerdstore) groups the records of one
// target digest, splits sizes into unique and shared bytes, and keeps last
// uses in an image label (LabelLastUse). Every container, snapshot and
// lease carries the ownership labels, and every lease expires on its own;
// a lease whose delete the daemon did not answer is retried in the
// background. The leak reaper also removes other instances' orphan
// snapshots, leases, namespaces and /etc files.
//
// The client package's name clashes with this one's: it is imported as
// ctrd throughout.
package containerd
