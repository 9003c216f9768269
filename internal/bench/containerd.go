package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/snapshots"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/fnrun/fnrun/drivers"
	fncd "github.com/fnrun/fnrun/drivers/containerd"
)

// Containerd is the bare containerd side of the benchmark: a client of its
// own (not the driver's), the namespace and the image.
type Containerd struct {
	Client    *ctrd.Client
	Namespace string
	// Image is the normalized reference of the image in the store.
	Image string
	// Labels go on every container and snapshot the bare side creates,
	// so that leftovers are found like the driver's.
	Labels map[string]string

	cni *cniNet // see UseCNI
	// runtime is the shim the driver runs its tasks with (see Spec).
	runtime string
	// etcFiles are the /etc files the driver mounts into its containers,
	// by mount destination (see Spec): the bare side writes them per
	// container too, as any user of bare containerd wanting DNS must.
	etcFiles map[string][]byte
}

// EtcDir is where the bare side writes the /etc files of its containers.
const EtcDir = "/run/fnrun/bench/etc"

// UseCNI makes the bare cold calls network their containers as the driver
// does when it has a CNI configuration: a pinned namespace per call, set
// up with CNI before the container is created and torn down after it is
// removed.
func (c *Containerd) UseCNI(confDir, binDir string) error {
	n, err := newCNINet(confDir, binDir)
	if err != nil {
		return err
	}
	c.cni = n
	return nil
}

// JoinsNetNS reports whether spec puts the container in an existing
// network namespace by path: how the containerd driver networks a
// container with CNI (or with a pool holder).
func JoinsNetNS(spec *oci.Spec) bool {
	if spec == nil || spec.Linux == nil {
		return false
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace && ns.Path != "" {
			return true
		}
	}
	return false
}

// NewContainerd connects a bare client to address, in namespace.
func NewContainerd(address, namespace, image string, labels map[string]string) (*Containerd, error) {
	ref, err := drivers.NormalizeImage(image)
	if err != nil {
		return nil, err
	}
	c, err := ctrd.New(address, ctrd.WithDefaultNamespace(namespace))
	if err != nil {
		return nil, err
	}
	return &Containerd{Client: c, Namespace: namespace, Image: ref.Normalized, Labels: labels}, nil
}

func (c *Containerd) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, c.Namespace)
}

// Close closes the client.
func (c *Containerd) Close() error { return c.Client.Close() }

// Spec returns the OCI spec the containerd driver drv generates for task:
// it creates the container through a cookie, reads its spec with the bare
// client, and closes the cookie. task must not be run.
func (c *Containerd) Spec(ctx context.Context, drv drivers.Driver, task *drivers.Task) (*oci.Spec, error) {
	ck, err := drv.CreateCookie(ctx, task)
	if err != nil {
		return nil, err
	}
	defer ck.Close(context.WithoutCancel(ctx))
	if err := ck.CreateContainer(ctx); err != nil {
		return nil, err
	}
	ctr, err := c.Client.LoadContainer(c.ctx(ctx), task.ID)
	if err != nil {
		return nil, err
	}
	info, err := ctr.Info(c.ctx(ctx))
	if err != nil {
		return nil, err
	}
	c.runtime = info.Runtime.Name
	spec, err := ctr.Spec(c.ctx(ctx))
	if err != nil {
		return nil, err
	}
	// Read now: the files go with the cookie.
	files := map[string][]byte{}
	for _, m := range spec.Mounts {
		if isEtcFile(m.Destination) {
			if files[m.Destination], err = os.ReadFile(m.Source); err != nil {
				return nil, err
			}
		}
	}
	c.etcFiles = files
	return spec, nil
}

// MinimalSpec is the spec of the minimal client: what containerd's own
// defaults make of the image's configuration, run as the driver's
// unprivileged user with no new privileges, with the driver's network
// arrangement (proto's network namespace) and nothing else of the driver's:
// no /etc files, no init, no seccomp profile or capability set of its own.
// It is the least a user of bare containerd would ask for.
func (c *Containerd) MinimalSpec(ctx context.Context, proto *oci.Spec) (*oci.Spec, error) {
	ctx = c.ctx(ctx)
	img, err := c.Client.GetImage(ctx, c.Image)
	if err != nil {
		return nil, err
	}
	config, err := img.Spec(ctx)
	if err != nil {
		return nil, err
	}
	cwd := config.Config.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	// oci.WithImageConfig would also read the image's /etc/group, which
	// needs the container's snapshot mounted: the user is set here anyway.
	spec, err := oci.GenerateSpec(ctx, c.Client, &containers.Container{ID: callID("minimal")},
		oci.WithEnv(config.Config.Env), oci.WithProcessCwd(cwd), oci.WithProcessArgs(TrivialCommand),
		oci.WithUIDGID(fncd.UnprivilegedUID, fncd.UnprivilegedGID), oci.WithNoNewPrivileges)
	if err != nil {
		return nil, err
	}
	for _, ns := range proto.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			withNamespace(spec, ns)
		}
	}
	return spec, nil
}

// withNamespace sets the spec's namespace of ns's type to ns.
func withNamespace(spec *oci.Spec, ns specs.LinuxNamespace) {
	for i, have := range spec.Linux.Namespaces {
		if have.Type == ns.Type {
			spec.Linux.Namespaces[i] = ns
			return
		}
	}
	spec.Linux.Namespaces = append(spec.Linux.Namespaces, ns)
}

func isEtcFile(dst string) bool {
	switch dst {
	case "/etc/resolv.conf", "/etc/hosts", "/etc/hostname":
		return true
	}
	return false
}

// withEtcFiles writes the container's /etc files, as the driver does, and
// returns spec with its mounts pointing at them.
func (c *Containerd) withEtcFiles(spec *oci.Spec, id string) (*oci.Spec, error) {
	if !slices.ContainsFunc(spec.Mounts, func(m specs.Mount) bool { return c.etcFiles[m.Destination] != nil }) {
		return spec, nil
	}
	dir := filepath.Join(EtcDir, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	out := *spec
	out.Mounts = append([]specs.Mount(nil), spec.Mounts...)
	for i, m := range out.Mounts {
		content, ok := c.etcFiles[m.Destination]
		if !ok {
			continue
		}
		if m.Destination == "/etc/hostname" {
			content = []byte(spec.Hostname + "\n")
		}
		out.Mounts[i].Source = filepath.Join(dir, filepath.Base(m.Destination))
		if err := os.WriteFile(out.Mounts[i].Source, content, 0o644); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
	return &out, nil
}

func removeEtcFiles(id string) { _ = os.RemoveAll(filepath.Join(EtcDir, id)) }

// specFor copies proto for the container id: its own cgroup and host name,
// and the network namespace netns, or a new one when netns is empty. A
// container joining a holder (group, its id) runs in the holder's shim, as
// the driver's pooled calls do.
func (c *Containerd) specFor(proto *oci.Spec, id, netns, group string) *oci.Spec {
	spec := *proto
	spec.Annotations = maps.Clone(proto.Annotations)
	delete(spec.Annotations, fncd.ShimGroupAnnotation)
	if group != "" {
		if spec.Annotations == nil {
			spec.Annotations = map[string]string{}
		}
		spec.Annotations[fncd.ShimGroupAnnotation] = group
	}
	linux := *proto.Linux
	linux.CgroupsPath = "/" + c.Namespace + "/" + id
	linux.Namespaces = append([]specs.LinuxNamespace(nil), proto.Linux.Namespaces...)
	spec.Linux = &linux
	withNamespace(&spec, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: netns})
	spec.Hostname = id
	if len(id) > 64 {
		spec.Hostname = id[:64]
	}
	return &spec
}

func (c *Containerd) labels(role string) map[string]string {
	return withRole(c.Labels, role)
}

// driverRuntime is the runtime the driver's containers named (see Spec).
func (c *Containerd) driverRuntime() string {
	if c.runtime == "" {
		return fncd.DefaultRuntime
	}
	return c.runtime
}

// newContainer creates a container of the image on a new snapshot, run by
// the runtime (shim) named.
func (c *Containerd) newContainer(ctx context.Context, id string, spec *oci.Spec, role, runtime string) (ctrd.Container, error) {
	img, err := c.Client.GetImage(ctx, c.Image)
	if err != nil {
		return nil, err
	}
	if spec, err = c.withEtcFiles(spec, id); err != nil {
		return nil, err
	}
	ctr, err := c.Client.NewContainer(ctx, id,
		ctrd.WithSnapshotter(fncd.DefaultSnapshotter),
		ctrd.WithNewSnapshot(id, img, snapshots.WithLabels(c.labels(role))),
		ctrd.WithSpec(spec),
		ctrd.WithRuntime(runtime, nil),
		ctrd.WithContainerLabels(c.labels(role)))
	if err != nil {
		removeEtcFiles(id)
	}
	return ctr, err
}

// remove kills and deletes the container's task, then the container and
// its snapshot; what is gone already is skipped.
func (c *Containerd) remove(ctx context.Context, ctr ctrd.Container) error {
	ctx = c.ctx(ctx)
	if t, err := ctr.Task(ctx, nil); err == nil {
		_ = t.Resume(ctx) // a frozen task ignores even SIGKILL until thawed
		if _, err := t.Delete(ctx, ctrd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
	}
	if err := ctr.Delete(ctx, ctrd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	removeEtcFiles(ctr.ID())
	return nil
}

// ContainerdCall is the bare twin of a cold or pooled call: find the image,
// create the container on a new snapshot with the driver's spec (its own
// cgroup and host name), create the task with FIFO streams, wait, start,
// wait for the exit and the output, delete task and container. When the
// driver networks its cold containers with CNI (its spec joins a pinned
// namespace), each cold call also pins a namespace and sets it up with
// CNI first, and tears both down last (see UseCNI). For the pooled mode, Prepare starts one holder per worker (a sleeping task) and a
// worker's calls join its holder's network namespace by path, as the
// driver's containers join the pool's holders.
type ContainerdCall struct {
	c       *Containerd
	proto   *oci.Spec
	variant Variant
	runtime string

	mu      sync.Mutex
	holders []ctrd.Container
	netns   []string
}

// NewContainerdCall returns the bare containerd target of mode (Cold or
// Pooled); proto is the driver's spec for `true` (see Containerd.Spec), or
// the minimal one (see MinimalSpec) for client Minimal. The bare client
// runs its tasks with the driver's runtime; the minimal one with
// containerd's runc shim, as a user of bare containerd would.
func NewContainerdCall(c *Containerd, proto *oci.Spec, driverName, mode, client string) *ContainerdCall {
	runtime := c.driverRuntime()
	if client == Minimal {
		runtime = fncd.DefaultRuntime
	}
	return &ContainerdCall{c: c, proto: proto, variant: Variant{driverName, mode, client}, runtime: runtime}
}

func (t *ContainerdCall) Variant() Variant { return t.variant }

func (t *ContainerdCall) Prepare(ctx context.Context, workers int) error {
	if t.variant.Mode != Pooled {
		if JoinsNetNS(t.proto) && t.c.cni == nil {
			return errors.New("the driver networks its containers with CNI: the bare side needs the CNI configuration too (UseCNI)")
		}
		return nil
	}
	ctx = t.c.ctx(ctx)
	for w := 0; w < workers; w++ {
		id := callID("bh")
		spec := t.c.specFor(t.proto, id, "", "")
		proc := *spec.Process
		proc.Args = holderArgs(proc.Args)
		spec.Process = &proc
		ctr, err := t.c.newContainer(ctx, id, spec, drivers.RoleHolder, t.runtime)
		if err != nil {
			return fmt.Errorf("holder: %w", err)
		}
		t.mu.Lock()
		t.holders = append(t.holders, ctr)
		t.mu.Unlock()
		task, err := ctr.NewTask(ctx, cio.NullIO)
		if err != nil {
			return fmt.Errorf("holder: %w", err)
		}
		if err := task.Start(ctx); err != nil {
			return fmt.Errorf("holder: %w", err)
		}
		t.mu.Lock()
		t.netns = append(t.netns, fmt.Sprintf("/proc/%d/ns/net", task.Pid()))
		t.mu.Unlock()
	}
	return nil
}

// holderArgs turns the arguments of the driver's spec into a long sleep,
// keeping the init (tini) the driver runs as process 1, if any.
func holderArgs(args []string) []string {
	sleep := []string{"sleep", "2147483647"}
	if len(args) > 0 && args[0] == fncd.InitPath {
		return append([]string{fncd.InitPath, "--"}, sleep...)
	}
	return sleep
}

func (t *ContainerdCall) Call(ctx context.Context, worker int) error {
	netns, group := "", ""
	if t.variant.Mode == Pooled {
		t.mu.Lock()
		netns, group = t.netns[worker], t.holders[worker].ID()
		t.mu.Unlock()
	}
	id := callID("b")
	if t.variant.Mode == Cold && JoinsNetNS(t.proto) {
		path, err := t.c.cni.attach(ctx, id)
		if err != nil {
			return err
		}
		err = t.c.lifecycle(t.c.ctx(ctx), t.c.specFor(t.proto, id, path, ""), id, t.runtime)
		if derr := t.c.cni.detach(context.WithoutCancel(ctx), id, path); err == nil {
			err = derr
		}
		return err
	}
	return t.c.lifecycle(t.c.ctx(ctx), t.c.specFor(t.proto, id, netns, group), id, t.runtime)
}

func (c *Containerd) lifecycle(ctx context.Context, spec *oci.Spec, id, runtime string) (err error) {
	ctr, err := c.newContainer(ctx, id, spec, drivers.RoleCall, runtime)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil { // a failed call only: clean-up is not timed otherwise
			_ = c.remove(context.WithoutCancel(ctx), ctr)
		}
	}()
	task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, io.Discard, io.Discard)))
	if err != nil {
		return err
	}
	statusC, err := task.Wait(ctx)
	if err != nil {
		return err
	}
	if err := task.Start(ctx); err != nil {
		return err
	}
	var st ctrd.ExitStatus
	select {
	case st = <-statusC:
	case <-ctx.Done():
		return ctx.Err()
	}
	task.IO().Wait()
	if code := st.ExitCode(); code != 0 || st.Error() != nil {
		return fmt.Errorf("container %s exited %d: %v", id, code, st.Error())
	}
	markResult(ctx)
	if _, err := task.Delete(ctx); err != nil {
		return err
	}
	if err := ctr.Delete(ctx, ctrd.WithSnapshotCleanup); err != nil {
		return err
	}
	removeEtcFiles(id)
	return nil
}

func (t *ContainerdCall) Close(ctx context.Context) error {
	t.mu.Lock()
	holders := t.holders
	t.holders, t.netns = nil, nil
	t.mu.Unlock()
	var errs []error
	for _, h := range holders {
		errs = append(errs, t.c.remove(ctx, h))
	}
	return errors.Join(errs...)
}

// ContainerdWarm is the bare twin of the warm target: one long-lived task
// per worker with the driver's spec for HotCommand, its stdin and stdout
// wired through FIFOs, paused between calls; a call resumes it, echoes one
// line through it and pauses it again.
type ContainerdWarm struct {
	c       *Containerd
	proto   *oci.Spec
	variant Variant

	mu  sync.Mutex
	hot []*containerdHot
}

type containerdHot struct {
	ctr   ctrd.Container
	task  ctrd.Task
	stdin *io.PipeWriter
	out   *lineConn
	seq   int
}

// NewContainerdWarm returns the bare warm target; proto is the driver's
// spec for HotCommand (see Containerd.Spec).
func NewContainerdWarm(c *Containerd, proto *oci.Spec, driverName string) *ContainerdWarm {
	return &ContainerdWarm{c: c, proto: proto, variant: Variant{driverName, Warm, Bare}}
}

func (t *ContainerdWarm) Variant() Variant { return t.variant }

func (t *ContainerdWarm) Prepare(ctx context.Context, workers int) error {
	ctx = t.c.ctx(ctx)
	for w := 0; w < workers; w++ {
		id := callID("bw")
		ctr, err := t.c.newContainer(ctx, id, t.c.specFor(t.proto, id, "", ""), drivers.RoleCall, t.c.driverRuntime())
		if err != nil {
			return err
		}
		inR, inW := io.Pipe()
		h := &containerdHot{ctr: ctr, stdin: inW, out: newLineConn()}
		t.mu.Lock()
		t.hot = append(t.hot, h)
		t.mu.Unlock()
		h.task, err = ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(inR, h.out.w, io.Discard)))
		if err != nil {
			return err
		}
		if err := h.task.Start(ctx); err != nil {
			return err
		}
		h.seq++
		if err := echo(ctx, h.stdin, h.out, fmt.Sprintf("call %d", h.seq)); err != nil {
			return err
		}
		if err := h.task.Pause(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (t *ContainerdWarm) Call(ctx context.Context, worker int) error {
	t.mu.Lock()
	h := t.hot[worker]
	t.mu.Unlock()
	ctx = t.c.ctx(ctx)
	if err := h.task.Resume(ctx); err != nil {
		return err
	}
	h.seq++
	if err := echo(ctx, h.stdin, h.out, fmt.Sprintf("call %d", h.seq)); err != nil {
		return err
	}
	return h.task.Pause(ctx)
}

// Repair pauses the worker's task again after a failed call.
func (t *ContainerdWarm) Repair(ctx context.Context, worker int) {
	t.mu.Lock()
	h := t.hot[worker]
	t.mu.Unlock()
	time.Sleep(repairDelay)
	_ = h.task.Pause(t.c.ctx(ctx))
}

func (t *ContainerdWarm) Close(ctx context.Context) error {
	t.mu.Lock()
	hot := t.hot
	t.hot = nil
	t.mu.Unlock()
	var errs []error
	for _, h := range hot {
		h.out.discard()
		_ = h.stdin.Close()
		if h.task != nil {
			_ = h.task.Resume(t.c.ctx(ctx))
			_ = h.task.Kill(t.c.ctx(ctx), syscall.SIGKILL)
		}
		errs = append(errs, t.c.remove(ctx, h.ctr))
		h.out.close()
	}
	return errors.Join(errs...)
}
