package fn

import (
	"context"
	"errors"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/remotes/docker"
	dockerclient "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
)

// Fn's TestRunnerDockerCleanCase1 to 4: a driver starting with a label
// tag removes the containers other instances with that tag left (a
// crashed agent's), running or dead, and leaves alone those of another
// tag and its own instance's. The containers are made with the bare
// client, as a crashed instance would have left them: fnrun's labels and
// nothing else of the driver.
func TestStartupCleanup(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, r *rig) {
		tag, me, crashed := "fn-reap-"+randomID(), "fn-me-"+randomID(), "fn-crashed-"+randomID()
		r.ensureImage(t)
		otherTag := r.leftover(t, "fn-other-tag", tag+"-other", crashed, true)
		mine := r.leftover(t, "fn-mine", tag, me, true)
		// The reaper goes through the containers oldest first, and Docker
		// dates them to the second: the two it must remove come a second
		// later, so once they are gone it has been past the others.
		time.Sleep(1100 * time.Millisecond)
		running := r.leftover(t, "fn-running", tag, crashed, true)
		dead := r.leftover(t, "fn-dead", tag, crashed, false)

		drv := r.open(t, drivers.Config{ContainerLabelTag: tag, InstanceId: me})
		waitFor(t, 30*time.Second, "another instance's running and dead containers removed", func() bool {
			return !r.exists(t, running) && !r.exists(t, dead)
		})
		if !r.exists(t, otherTag) {
			t.Error("case 1: the container of another label tag was removed")
		}
		if !r.exists(t, mine) {
			t.Error("case 2: the container of the driver's own instance was removed")
		}

		lister := drv.(drivers.ContainerLister)
		ctx := testContext(t, time.Minute)
		list, err := lister.Containers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].Name != mine || list[0].Instance != me || list[0].State != drivers.StateRunning {
			t.Fatalf("Containers() = %+v, want only %s, running, of instance %s", list, mine, me)
		}
		// KillContainer only touches containers of the driver's tag.
		if err := lister.KillContainer(ctx, otherTag); !errors.Is(err, drivers.ErrContainerGone) {
			t.Errorf("KillContainer of another tag's container: %v, want ErrContainerGone", err)
		}
		if !r.exists(t, otherTag) {
			t.Error("KillContainer removed a container of another tag")
		}
		if err := lister.KillContainer(ctx, mine); err != nil {
			t.Fatalf("KillContainer of its own: %v", err)
		}
		if r.exists(t, mine) {
			t.Error("KillContainer left its container")
		}
	})
}

// ensureImage makes the rig's busybox present in its store, with the bare
// client.
func (r *rig) ensureImage(t *testing.T) {
	t.Helper()
	ctx, cancel := withTimeout()
	defer cancel()
	ref, err := drivers.NormalizeImage(r.image())
	if err != nil {
		t.Fatal(err)
	}
	switch r.name {
	case rtDocker:
		if err := r.docker().PullImage(dockerclient.PullImageOptions{Repository: ref.Name(), Tag: ref.Tag, Context: ctx}, dockerclient.AuthConfiguration{}); err != nil {
			t.Fatal(err)
		}
	case rtContainerd:
		c := r.containerd()
		if _, err := c.GetImage(r.nsCtx(ctx), ref.Normalized); err == nil {
			return
		}
		resolver := docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost))})
		if _, err := c.Pull(r.nsCtx(ctx), ref.Normalized, ctrd.WithPullUnpack, ctrd.WithResolver(resolver)); err != nil {
			t.Fatal(err)
		}
	}
}

// leftover makes, with the bare client, a container of the rig's busybox
// labelled as fnrun labels a call of tag and instance, running or exited,
// and returns its name. The test's end removes it if it is still there.
func (r *rig) leftover(t *testing.T, name, tag, instance string, running bool) string {
	t.Helper()
	ctx, cancel := withTimeout()
	defer cancel()
	name += "-" + randomID()
	labels := map[string]string{
		drivers.LabelLibrary:  drivers.LibraryName,
		drivers.LabelDriver:   r.name,
		drivers.LabelTag:      tag,
		drivers.LabelInstance: instance,
		drivers.LabelRole:     drivers.RoleCall,
	}
	switch r.name {
	case rtDocker:
		c := r.docker()
		ctr, err := c.CreateContainer(dockerclient.CreateContainerOptions{
			Name:       name,
			Config:     &dockerclient.Config{Image: r.image(), Cmd: []string{"sleep", "300"}, Labels: labels},
			HostConfig: &dockerclient.HostConfig{Init: true, LogConfig: dockerclient.LogConfig{Type: "none"}},
			Context:    ctx,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = c.RemoveContainer(dockerclient.RemoveContainerOptions{ID: ctr.ID, Force: true, RemoveVolumes: true})
		})
		if err := c.StartContainerWithContext(ctr.ID, nil, ctx); err != nil {
			t.Fatal(err)
		}
		if !running {
			if err := c.KillContainer(dockerclient.KillContainerOptions{ID: ctr.ID, Context: ctx}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.WaitContainerWithContext(ctr.ID, ctx); err != nil {
				t.Fatal(err)
			}
		}
	case rtContainerd:
		c := r.containerd()
		nctx := r.nsCtx(ctx)
		ref, _ := drivers.NormalizeImage(r.image())
		img, err := c.GetImage(nctx, ref.Normalized)
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"sleep", "300"}
		if !running {
			args = []string{"true"}
		}
		ctr, err := c.NewContainer(nctx, name,
			ctrd.WithSnapshotter("overlayfs"),
			ctrd.WithNewSnapshot(name, img),
			ctrd.WithNewSpec(oci.WithImageConfigArgs(img, args)),
			ctrd.WithContainerLabels(labels))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx := r.nsCtx(context.Background())
			if tk, err := ctr.Task(ctx, nil); err == nil {
				_, _ = tk.Delete(ctx, ctrd.WithProcessKill)
			}
			if err := ctr.Delete(ctx, ctrd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
				t.Logf("remove %s: %v", name, err)
			}
		})
		tk, err := ctr.NewTask(nctx, cio.NullIO)
		if err != nil {
			t.Fatal(err)
		}
		exited, err := tk.Wait(nctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := tk.Start(nctx); err != nil {
			t.Fatal(err)
		}
		if !running {
			<-exited
		}
	}
	return name
}
