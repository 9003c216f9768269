package containerd

import (
	"context"
	"path/filepath"
	"strconv"

	"github.com/containerd/cgroups/v3"
	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/snapshots"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/lifecycle"
	"github.com/fnrun/fnrun/internal/cninet"
)

// Security and limit constants shared with the docker driver's behaviour.
const (
	// UnprivilegedUID and UnprivilegedGID run every container unless
	// Config.DisableUnprivilegedContainers is set.
	UnprivilegedUID = 1000
	UnprivilegedGID = 1000
	// cpuPeriod is the CFS period in microseconds; milli-CPUs scale against it.
	cpuPeriod = 100000
	// defaultPath is containerd's PATH for images that set no environment.
	defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// maxHostname is the kernel's limit on a host name.
	maxHostname = 64
)

// ContainerOptions is what Cookie.ContainerOptions returns for containerd.
type ContainerOptions struct {
	// SpecOpts build the OCI spec, in order, on top of containerd's default
	// spec and the image configuration (entrypoint, command with the
	// task's arguments, environment, working directory).
	SpecOpts []oci.SpecOpts
	// ContainerOpts are extra NewContainer options, applied after the
	// driver's (snapshot, spec, runtime, labels).
	ContainerOpts []ctrd.NewContainerOpts
	// Labels go on the container and its root snapshot.
	Labels map[string]string
	// Snapshotter prepares the root filesystem; Runtime runs the task.
	Snapshotter string
	Runtime     string
	// NetNSPath is the network namespace the container joins. Left empty,
	// CreateContainer fills it in for a task that wants a network (a pool
	// holder's, a fresh CNI one or a NetworkProvider's); without one the
	// container gets a new namespace with loopback only.
	NetNSPath string
	// Init is the host path of the init run as process 1 (see WithInit),
	// mounted read-only at InitPath.
	Init string
}

// InitPath is where the init binary appears inside the container: on the
// /dev tmpfs, so nothing is written into the image's filesystem.
const InitPath = "/dev/init"

func (d *daemon) containerOptions(task *lifecycle.Task) *ContainerOptions {
	checked := task
	labels := d.s.Labels(drivers.RoleCall)
	o := &ContainerOptions{
		Init:        d.opts.init,
		Labels:      labels,
		Snapshotter: d.opts.snapshotter,
		Runtime:     d.opts.runtime,
	}
	add := func(opts ...oci.SpecOpts) { o.SpecOpts = append(o.SpecOpts, opts...) }

	add(oci.WithHostname(hostname(task.Id())))
	if len(checked.Env) > 0 {
		add(oci.WithEnv(checked.Env))
	}
	if dir := task.WorkDir(); dir != "" {
		add(oci.WithProcessCwd(dir))
	}

	// Security: an unprivileged user with no capability that cannot gain
	// any, unless the configuration says otherwise (then the image's user
	// and containerd's default capabilities, as Docker would run it).
	if !d.s.Policy.Unprivileged {
		add(oci.WithNewPrivileges)
	} else {
		add(oci.WithUIDGID(UnprivilegedUID, UnprivilegedGID), oci.WithCapabilities(nil), withNoAmbientCaps, oci.WithNoNewPrivileges)
	}

	if m := task.Memory(); m > 0 {
		// Swap equal to memory: the limit covers memory plus swap, so the
		// container cannot swap at all.
		add(oci.WithMemoryLimit(m), oci.WithMemorySwap(int64(m)))
	}
	if c := task.CPUs(); c > 0 {
		add(oci.WithCPUCFS(int64(c*cpuPeriod/1000), cpuPeriod))
	}
	if p := task.PIDs(); p > 0 {
		add(oci.WithPidsLimit(int64(p)))
	}
	for _, rl := range []struct {
		kind string
		v    *uint64
	}{
		{"RLIMIT_NOFILE", task.OpenFiles()},
		{"RLIMIT_MEMLOCK", task.LockedMemory()},
		{"RLIMIT_SIGPENDING", task.PendingSignals()},
		{"RLIMIT_MSGQUEUE", task.MessageQueue()},
	} {
		if rl.v != nil {
			add(withRlimit(rl.kind, *rl.v))
		}
	}

	readOnly := d.s.Policy.ReadOnlyRoot
	if readOnly {
		add(oci.WithRootFSReadonly())
	}
	if size := task.TmpFsSize(); size > 0 || readOnly {
		add(withTmp(size, d.s.Policy.TmpFsInodes))
	}
	var mounts []specs.Mount
	for _, v := range task.Volumes() {
		mounts = append(mounts, bindMount(v[0], v[1]))
	}
	if src, dst := task.UDSDockerPath(), task.UDSDockerDest(); src != "" && dst != "" {
		mounts = append(mounts, bindMount(src, dst))
	}
	// The cgroup filesystem, read-only, so a function can read its own
	// limits; containerd's default spec has none.
	mode := hostCgroupMode()
	mounts = append(mounts, cgroupMount(mode))
	add(withMounts(mounts))
	add(withCgroupNamespace(mode)...)

	// Docker's default seccomp profile, computed from the capabilities
	// above, so it must come after them.
	add(seccomp.WithDefaultProfile())
	return o
}

// specOpts is the complete list CreateContainer hands to NewContainer: the
// image configuration first, the options, then the network namespace.
func (o *ContainerOptions) specOpts(img *localImage, args []string, privileged bool) []oci.SpecOpts {
	opts := make([]oci.SpecOpts, 0, len(o.SpecOpts)+2)
	opts = append(opts, withImageConfig(img.config.Config, args, privileged))
	opts = append(opts, o.SpecOpts...)
	if o.Init != "" {
		opts = append(opts, withInit(o.Init))
	}
	if o.NetNSPath != "" {
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: o.NetNSPath}))
	}
	return opts
}

// withImageConfig applies the image's entrypoint and command (args replace
// the command, as Docker does), environment and working directory. Unlike
// oci.WithImageConfig it does not mount the root filesystem to read
// /etc/group: an unprivileged container's user is fixed, and only a
// privileged container whose image names a user needs that lookup.
func withImageConfig(cfg ocispec.ImageConfig, args []string, privileged bool) oci.SpecOpts {
	return func(ctx context.Context, client oci.Client, c *containers.Container, s *oci.Spec) error {
		if s.Process == nil {
			s.Process = &specs.Process{}
		}
		env := append([]string(nil), cfg.Env...)
		if len(env) == 0 {
			env = []string{defaultPath}
		}
		s.Process.Env = env
		cmd := cfg.Cmd
		if len(args) > 0 {
			cmd = args
		}
		s.Process.Args = append(append([]string(nil), cfg.Entrypoint...), cmd...)
		if len(s.Process.Args) == 0 {
			return drivers.InvalidTaskf("the task gives no command and the image has none")
		}
		s.Process.Cwd = cfg.WorkingDir
		if s.Process.Cwd == "" {
			s.Process.Cwd = "/"
		}
		if privileged && cfg.User != "" {
			return oci.WithUser(cfg.User)(ctx, client, c, s)
		}
		return nil
	}
}

// withInit makes the init at host path process 1, with the command as its
// child. Process 1 ignores every signal it has no handler for, SIGKILL sent
// from inside included: without an init, "kill -9 $$" in a shell does
// nothing and SIGTERM never stops a plain command. tini forwards signals,
// reaps zombies and exits with its child's status (128+n for a signal).
func withInit(path string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Mounts = append(s.Mounts, specs.Mount{
			Destination: InitPath,
			Type:        "bind",
			Source:      path,
			Options:     []string{"bind", "ro", "nosuid", "nodev"},
		})
		s.Process.Args = append([]string{InitPath, "--"}, s.Process.Args...)
		return nil
	}
}

// withNoAmbientCaps clears the ambient set, which oci.WithCapabilities
// leaves alone.
func withNoAmbientCaps(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	if s.Process != nil && s.Process.Capabilities != nil {
		s.Process.Capabilities.Ambient = nil
		s.Process.Capabilities.Inheritable = nil
	}
	return nil
}

// withRlimit sets one rlimit, soft and hard, replacing any default.
func withRlimit(kind string, v uint64) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Process == nil {
			s.Process = &specs.Process{}
		}
		for i := range s.Process.Rlimits {
			if s.Process.Rlimits[i].Type == kind {
				s.Process.Rlimits[i].Hard, s.Process.Rlimits[i].Soft = v, v
				return nil
			}
		}
		s.Process.Rlimits = append(s.Process.Rlimits, specs.POSIXRlimit{Type: kind, Hard: v, Soft: v})
		return nil
	}
}

// withTmp mounts a tmpfs on /tmp with Docker's --tmpfs defaults; sizeMB 0
// leaves the kernel's default size.
func withTmp(sizeMB, inodes uint64) oci.SpecOpts {
	opts := []string{"nosuid", "nodev", "noexec", "mode=1777"}
	if sizeMB > 0 {
		opts = append(opts, "size="+strconv.FormatUint(sizeMB, 10)+"m")
	}
	if inodes > 0 {
		opts = append(opts, "nr_inodes="+strconv.FormatUint(inodes, 10))
	}
	return withMounts([]specs.Mount{{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: opts}})
}

// withMounts adds mounts, replacing any earlier mount at the same place.
func withMounts(mounts []specs.Mount) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		for _, m := range mounts {
			kept := s.Mounts[:0]
			for _, old := range s.Mounts {
				if old.Destination != m.Destination {
					kept = append(kept, old)
				}
			}
			s.Mounts = append(kept, m)
		}
		return nil
	}
}

func bindMount(src, dst string) specs.Mount {
	return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind", "rw"}}
}

// withEtcFiles mounts the files of dir (see cninet.EtcFiles) read-only at
// /etc, where a task volume wins, as with Docker. A read-only root is no
// obstacle: runc creates the mount points before making it read-only.
func withEtcFiles(dir string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		taken := map[string]bool{}
		for _, m := range s.Mounts {
			taken[m.Destination] = true
		}
		for _, name := range cninet.EtcFileNames() {
			dst := "/etc/" + name
			if taken[dst] {
				continue
			}
			s.Mounts = append(s.Mounts, specs.Mount{
				Destination: dst,
				Type:        "bind",
				Source:      filepath.Join(dir, name),
				Options:     []string{"rbind", "ro", "nosuid", "nodev", "noexec"},
			})
		}
		return nil
	}
}

func hostname(id string) string {
	if len(id) > maxHostname {
		return id[:maxHostname]
	}
	return id
}

func (o *ContainerOptions) newContainerOpts(id string, img *localImage, specOpts []oci.SpecOpts) []ctrd.NewContainerOpts {
	opts := []ctrd.NewContainerOpts{
		ctrd.WithSnapshotter(o.Snapshotter),
		withSnapshot(id, img, snapshots.WithLabels(o.Labels)),
		ctrd.WithNewSpec(specOpts...),
		ctrd.WithRuntime(o.Runtime, nil),
		ctrd.WithContainerLabels(o.Labels),
	}
	return append(opts, o.ContainerOpts...)
}

// withSnapshot prepares the container's root snapshot on the image's top
// layer, named from the configuration already read (see imageCache), where
// the client's WithNewSnapshot reads the manifest and the configuration
// from the content store again on every create. The record names its image,
// so the image store sees it in use.
func withSnapshot(id string, img *localImage, opts ...snapshots.Opt) ctrd.NewContainerOpts {
	return func(ctx context.Context, client *ctrd.Client, c *containers.Container) error {
		parent := identity.ChainID(img.config.RootFS.DiffIDs).String()
		if _, err := client.SnapshotService(c.Snapshotter).Prepare(ctx, id, parent, opts...); err != nil {
			return err
		}
		c.SnapshotKey, c.Image = id, img.image.Name()
		return nil
	}
}

// hostCgroupMode is the cgroup mode of this host, which is the daemon's (the
// driver's namespaces, FIFOs and /etc files assume so too). A variable so
// that tests build the spec of a cgroup v2 host on a v1 one.
var hostCgroupMode = cgroups.Mode

// cgroupMount is the read-only cgroup filesystem at /sys/fs/cgroup: cgroup2
// on a unified host, where the cgroup namespace (withCgroupNamespace) shows
// only the container's own cgroup. The type is named: to a runtime that does
// not translate it, "cgroup" means the v1 hierarchies.
func cgroupMount(mode cgroups.CGMode) specs.Mount {
	typ := "cgroup"
	if mode == cgroups.Unified {
		typ = "cgroup2"
	}
	return specs.Mount{
		Destination: "/sys/fs/cgroup",
		Type:        typ,
		Source:      "cgroup",
		Options:     []string{"ro", "nosuid", "noexec", "nodev"},
	}
}

// withCgroupNamespace gives the container a cgroup namespace of its own on a
// unified host, as Docker and containerd's CRI do: else the cgroup2 mount is
// the host's whole tree (every call's container id and use) and
// /proc/self/cgroup names the container's place in it. On v1 and hybrid
// hosts runc already mounts only the container's own cgroups.
// ShimGroupAnnotation puts a container in the runc v2 shim of the
// container it names instead of a shim of its own.
const ShimGroupAnnotation = "io.containerd.runc.v2.group"

// withShimGroup runs a call that joins a pool holder's network in the
// holder's shim: no shim process starts, and none exits, per call. The
// holder's death ends the call through its lease as before; the shim lives
// until its last task is deleted.
func withShimGroup(holderID string) oci.SpecOpts {
	return oci.WithAnnotations(map[string]string{ShimGroupAnnotation: holderID})
}

func withCgroupNamespace(mode cgroups.CGMode) []oci.SpecOpts {
	if mode != cgroups.Unified {
		return nil
	}
	return []oci.SpecOpts{oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.CgroupNamespace})}
}
