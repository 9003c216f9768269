package containerd

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
)

// TestContainers lists the containers of a label tag through every state,
// with their roles, and ends them with KillContainer; others are refused.
func TestContainers(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	d := poolDriver(t, env, drivers.Config{PreForkPoolSize: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Another instance with the same tag, as a tool would make one: its
	// containers are listed too, and it leaves the running instance's
	// alone.
	other := newTestDriver(t, env, drivers.Config{ContainerLabelTag: d.Settings().Tag, InstanceId: "other-" + randomID()}, drivers.WithoutLeakReaper())

	state := func(id string) drivers.ContainerInfo {
		t.Helper()
		all, err := d.Containers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range all {
			if c.ID == id {
				return c
			}
		}
		return drivers.ContainerInfo{}
	}

	id := "fnrun-list-" + randomID()
	created, err := d.CreateCookie(ctx, &drivers.Task{ID: id, ImageRef: env.localImage, Cmd: "sleep 120"})
	if err != nil {
		t.Fatal(err)
	}
	defer created.Close(context.Background())
	if err := created.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	info := state(id)
	if info.State != drivers.StateStarting || info.Role != drivers.RoleCall || info.Instance != d.Settings().Instance ||
		info.Image != "docker.io/fnrun-test/busybox:latest" || info.Created.IsZero() || info.Labels[LabelTag] != d.Settings().Tag {
		t.Errorf("created: %+v", info)
	}
	w, err := created.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s := state(id).State; s != drivers.StateRunning {
		t.Errorf("state %s, want running", s)
	}
	if err := created.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	if s := state(id).State; s != drivers.StatePaused {
		t.Errorf("state %s, want paused", s)
	}
	if err := created.Unfreeze(ctx); err != nil {
		t.Fatal(err)
	}
	h := oneHolder(t, d)
	if h.Role != drivers.RoleHolder || h.Image != env.localImage {
		t.Errorf("holder %+v", h)
	}

	// KillContainer of our own call: its run ends, the container is gone.
	if err := d.KillContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if res := w.Wait(ctx); res.Status() == drivers.StatusSuccess {
		t.Errorf("killed container reported success")
	}
	if got := state(id); got.ID != "" {
		t.Errorf("killed container still listed: %+v", got)
	}

	// An exited container of the other instance: listed, then killed from
	// this one (with its network).
	oid := "fnrun-list-" + randomID()
	oc, err := other.CreateCookie(ctx, &drivers.Task{ID: oid, ImageRef: env.localImage, Cmd: "true"})
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close(context.Background())
	if err := oc.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	ow, err := oc.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ow.Wait(ctx)
	if got := state(oid); got.State != drivers.StateExited || got.Instance != other.Settings().Instance {
		t.Errorf("other instance's exited container: %+v", got)
	}
	netns := state(oid).Labels[LabelNetNS]
	if netns == "" {
		t.Errorf("a container with a CNI network has no %s label", LabelNetNS)
	}
	if err := d.KillContainer(ctx, oid); err != nil {
		t.Fatal(err)
	}
	if got := state(oid); got.ID != "" {
		t.Errorf("killed container still listed: %+v", got)
	}
	if netns != "" {
		if _, ok := d.d.cni.OwnNS(netns); !ok {
			t.Errorf("namespace %s not recognised as the tag's", netns)
		}
	}
	if err := oc.Close(ctx); err != nil {
		t.Errorf("closing the cookie of a killed container: %v", err)
	}

	// Not ours: unlabelled, another tag, absent.
	bare := "fnrun-list-bare-" + randomID()
	leftover(t, in, env.localImage, bare, map[string]string{}, false)
	otherTag := "fnrun-list-tag-" + randomID()
	leftover(t, in, env.localImage, otherTag, labelsFor("another-"+randomID(), "x"), false)
	for _, id := range []string{bare, otherTag, "fnrun-list-absent-" + randomID()} {
		if err := d.KillContainer(ctx, id); !errors.Is(err, drivers.ErrContainerGone) {
			t.Errorf("KillContainer(%s): %v, want ErrContainerGone", id, err)
		}
		if got := state(id); got.ID != "" {
			t.Errorf("foreign container listed: %+v", got)
		}
	}
	for _, id := range []string{bare, otherTag} {
		if !exists(t, in, id) {
			t.Errorf("foreign container %s removed", id)
		}
	}
}

// TestContainersWithoutTag: a driver without a label tag lists the
// library's untagged containers (containerd keeps no empty label).
func TestContainersWithoutTag(t *testing.T) {
	env := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := New(ctx, drivers.Config{Containerd: env.address, ContainerdNamespace: env.namespace, CNIConfDir: env.cniConf, CNIBinDir: env.cniBin}, drivers.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	id := "fnrun-list-" + randomID()
	c, err := d.CreateCookie(ctx, &drivers.Task{ID: id, ImageRef: env.localImage, Cmd: "true"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	all, err := d.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, info := range all {
		if info.Labels[LabelTag] != "" {
			t.Errorf("tagged container %s listed by an untagged driver", info.ID)
		}
		found = found || (info.ID == id && info.Instance == d.Settings().Instance && info.State == drivers.StateStarting)
	}
	if !found {
		t.Fatalf("container %s not listed in %+v", id, all)
	}
	if err := d.KillContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
