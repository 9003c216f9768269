package docker

import (
	"fmt"
	"strings"
	"sync"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/lifecycle"
)

// Values of the container options that do not come from the task.
const (
	unprivilegedUser = "1000:1000"
	// cpuPeriod is the CFS period; a milli-CPU is a thousandth of it.
	cpuPeriod = 100000
	// networkNone is Docker's network without any interface but lo.
	networkNone = "none"
)

// createOptions maps the task and the configuration to Docker's create
// options without a daemon call (the storage driver was learnt at start).
// The network mode is left for Create to choose, unless the task has none.
func (d *daemon) createOptions(task *lifecycle.Task) (*docker.CreateContainerOptions, error) {
	id := task.Id()
	cfg := &docker.Config{
		Image:        task.Ref.Familiar,
		Cmd:          task.Args, // nil runs the image's command
		Env:          task.Env,
		Labels:       d.s.Labels(drivers.RoleCall),
		WorkingDir:   task.WorkDir(),
		AttachStdout: true,
		AttachStderr: true,
	}
	if task.Input() != nil {
		// StdinOnce makes the daemon close the container's stdin when the
		// attached client closes its end: the process sees EOF.
		cfg.AttachStdin, cfg.OpenStdin, cfg.StdinOnce = true, true, true
	}
	host := &docker.HostConfig{
		ReadonlyRootfs: d.s.Policy.ReadOnlyRoot,
		// An init process reaps zombies and forwards SIGTERM, which a
		// function's PID 1 would otherwise ignore.
		Init:         true,
		CgroupnsMode: d.host.cgroupnsMode(),
	}
	if task.DisableNet() {
		host.NetworkMode = networkNone
	}
	d.unprivileged(cfg, host)
	if m := task.Memory(); m > 0 {
		// Swap equal to memory means no swap at all. No kernel-memory
		// limit: it is gone from cgroup v2 and recent runtimes.
		host.Memory, host.MemorySwap = int64(m), int64(m)
	}
	if c := task.CPUs(); c > 0 {
		host.CPUPeriod = cpuPeriod
		host.CPUQuota = int64(c) * cpuPeriod / 1000
	}
	if p := task.PIDs(); p > 0 {
		n := int64(p)
		host.PidsLimit = &n
	}
	host.Ulimits = ulimits(task)
	if tmpfs := d.tmpfsOptions(task); tmpfs != "" {
		host.Tmpfs = map[string]string{"/tmp": tmpfs}
	}
	if fs := task.FsSize(); fs > 0 {
		if !d.host.supportsStorageSize() {
			return nil, fmt.Errorf("task %s: storage driver %s on %s: %w", id, d.host.storageDriver, d.host.backingFs, ErrFsSizeUnsupported)
		}
		host.StorageOpt = map[string]string{"size": fmt.Sprintf("%dM", fs)}
	}
	for _, v := range task.Volumes() {
		host.Binds = append(host.Binds, v[0]+":"+v[1])
	}
	if src, dst := task.UDSDockerPath(), task.UDSDockerDest(); src != "" {
		host.Binds = append(host.Binds, src+":"+dst)
	}
	host.LogConfig = logConfig(task.Syslog)
	return &docker.CreateContainerOptions{Name: id, Config: cfg, HostConfig: host}, nil
}

func ulimits(task drivers.ContainerTask) []docker.ULimit {
	var out []docker.ULimit
	for _, l := range []struct {
		name string
		v    *uint64
	}{
		{"nofile", task.OpenFiles()},
		{"memlock", task.LockedMemory()},
		{"sigpending", task.PendingSignals()},
		{"msgqueue", task.MessageQueue()},
	} {
		if l.v != nil {
			out = append(out, docker.ULimit{Name: l.name, Soft: int64(*l.v), Hard: int64(*l.v)})
		}
	}
	return out
}

// tmpfsOptions are the mount options of the /tmp tmpfs, or "" for none. A
// read-only root gets one even without a size, so that /tmp stays writable.
func (d *daemon) tmpfsOptions(task drivers.ContainerTask) string {
	size := task.TmpFsSize()
	if size == 0 && !d.s.Policy.ReadOnlyRoot {
		return ""
	}
	// 1777 like a real /tmp: the unprivileged user must write to it.
	opts := []string{"rw", "nosuid", "nodev", "mode=1777"}
	if size > 0 {
		opts = append(opts, fmt.Sprintf("size=%dm", size))
	}
	if n := d.s.Policy.TmpFsInodes; n > 0 {
		opts = append(opts, fmt.Sprintf("nr_inodes=%d", n))
	}
	return strings.Join(opts, ",")
}

// supportsStorageSize reports whether the storage driver honours "size".
func (h hostInfo) supportsStorageSize() bool {
	switch h.storageDriver {
	case "devicemapper", "btrfs", "zfs", "windowsfilter":
		return true
	case "overlay2", "overlay":
		// Only on xfs, and then only with the pquota mount option, which
		// the daemon does not report: the create call tells (see
		// classifyStatus).
		return h.backingFs == "xfs"
	}
	return false
}

// cgroupnsPrivate is Docker's mode for a cgroup namespace of the container's own.
const cgroupnsPrivate = "private"

// cgroupnsMode is the cgroup namespace mode of every container, call or
// holder. On cgroup v2 it is "private" explicitly: that is only the daemon's
// default, which default-cgroupns-mode can turn to "host", showing the
// container the host's whole cgroup tree instead of its own limits. On v1
// the daemon's "host" is fine: runc mounts only the container's cgroups.
func (h hostInfo) cgroupnsMode() string {
	if h.cgroupVersion == "2" {
		return cgroupnsPrivate
	}
	return ""
}

// unprivileged applies Policy.Unprivileged.
func (d *daemon) unprivileged(cfg *docker.Config, host *docker.HostConfig) {
	if d.s.Policy.Unprivileged {
		cfg.User = unprivilegedUser
		host.CapDrop = []string{"ALL"}
		host.SecurityOpt = []string{"no-new-privileges"}
	}
}

// holderOptions are the create options of a pre-fork pool holder: no
// logging, unprivileged like calls, on the pool's network ("" is the bridge).
func (d *daemon) holderOptions(spec lifecycle.CreateSpec) docker.CreateContainerOptions {
	host := &docker.HostConfig{
		NetworkMode: spec.Holder.Network,
		LogConfig:   docker.LogConfig{Type: "none"},
		// An init reaps nothing here but makes the holder end at once on
		// SIGTERM, which a bare sleep as PID 1 ignores.
		Init:         true,
		CgroupnsMode: d.host.cgroupnsMode(),
	}
	cfg := &docker.Config{Image: spec.Holder.Image.Familiar, Cmd: spec.Holder.Args, Labels: spec.Labels}
	d.unprivileged(cfg, host)
	return docker.CreateContainerOptions{Config: cfg, HostConfig: host}
}

// logConfig maps the log target CheckTask derived to a Docker log driver:
// nothing at all when there is none, or syslog with the tags.
func logConfig(target *lifecycle.SyslogTarget) docker.LogConfig {
	if target == nil {
		return docker.LogConfig{Type: "none"}
	}
	conf := map[string]string{
		"syslog-address":  target.URL(),
		"syslog-facility": "user", // as Fn asks
		"syslog-format":   "rfc5424",
	}
	if target.Tag != "" {
		conf["tag"] = target.Tag
	}
	return docker.LogConfig{Type: "syslog", Config: conf}
}

// networkSpread hands out the configured networks, least used first.
type networkSpread struct {
	mu    sync.Mutex
	names []string
	use   map[string]int
}

func newNetworkSpread(list string) *networkSpread {
	names := strings.Fields(list)
	use := make(map[string]int, len(names))
	for _, n := range names {
		use[n] = 0
	}
	return &networkSpread{names: names, use: use}
}

// acquire returns the least used network, or "" (Docker's default) when
// none is configured.
func (n *networkSpread) acquire() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	best := ""
	for _, name := range n.names {
		if best == "" || n.use[name] < n.use[best] {
			best = name
		}
	}
	if best != "" {
		n.use[best]++
	}
	return best
}

func (n *networkSpread) release(name string) {
	if name == "" {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.use[name] > 0 {
		n.use[name]--
	}
}

// usage returns how many live cookies use each network.
func (n *networkSpread) usage() map[string]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string]int, len(n.use))
	for k, v := range n.use {
		out[k] = v
	}
	return out
}
