package containerd

import (
	"context"
	"slices"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/leases"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/snapshots"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"

	"github.com/fnrun/fnrun/drivers"
)

// leftover makes, with a plain client, what a crashed instance leaves: a
// container with labels, its snapshot and, when running, a live task.
func leftover(t *testing.T, in *inspector, image, id string, labels map[string]string, running bool) {
	t.Helper()
	ctx := in.ctx(context.Background())
	img, err := in.client.GetImage(ctx, image)
	if err != nil {
		t.Fatal(err)
	}
	ctr, err := in.client.NewContainer(ctx, id,
		ctrd.WithSnapshotter(DefaultSnapshotter),
		ctrd.WithNewSnapshot(id, img, snapshots.WithLabels(labels)),
		ctrd.WithNewSpec(oci.WithImageConfigArgs(img, []string{"sleep", "300"})),
		ctrd.WithContainerLabels(labels))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // whatever the reaper must not touch
		ctx := in.ctx(context.Background())
		if tk, err := ctr.Task(ctx, nil); err == nil {
			_, _ = tk.Delete(ctx, ctrd.WithProcessKill)
		}
		_ = ctr.Delete(ctx, ctrd.WithSnapshotCleanup)
	})
	if !running {
		return
	}
	tk, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Start(ctx); err != nil {
		t.Fatal(err)
	}
}

func labelsFor(tag, instance string) map[string]string {
	return map[string]string{LabelLibrary: "fnrun", LabelDriver: DriverName, LabelTag: tag, LabelInstance: instance}
}

func exists(t *testing.T, in *inspector, id string) bool {
	t.Helper()
	_, err := in.client.LoadContainer(in.ctx(context.Background()), id)
	if err != nil && !errdefs.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

// TestLeakRemovalAtStart: a new instance removes the containers (running or
// not, with their tasks and snapshots), orphan snapshots and leases that
// other instances with its tag left, and touches nothing else.
func TestLeakRemovalAtStart(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	tag := "reap-" + randomID()
	ctx := in.ctx(context.Background())

	running := "fnrun-leak-run-" + randomID()
	created := "fnrun-leak-new-" + randomID()
	mine := "fnrun-leak-mine-" + randomID()
	otherTag := "fnrun-leak-other-" + randomID()
	unlabelled := "fnrun-leak-bare-" + randomID()
	leftover(t, in, env.localImage, running, labelsFor(tag, "crashed"), true)
	leftover(t, in, env.localImage, created, labelsFor(tag, "crashed"), false)
	leftover(t, in, env.localImage, mine, labelsFor(tag, "me"), false)
	leftover(t, in, env.localImage, otherTag, labelsFor("other-"+tag, "crashed"), false)
	leftover(t, in, env.localImage, unlabelled, map[string]string{}, false)

	// A snapshot prepared by a crashed instance that never made its
	// container, and a lease it never deleted.
	img, err := in.client.GetImage(ctx, env.localImage)
	if err != nil {
		t.Fatal(err)
	}
	diffs, err := img.RootFS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sn := in.client.SnapshotService(DefaultSnapshotter)
	orphan := "fnrun-leak-snap-" + randomID()
	if _, err := sn.Prepare(ctx, orphan, chainID(diffs), snapshots.WithLabels(labelsFor(tag, "crashed"))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sn.Remove(ctx, orphan) })
	lease, err := in.client.LeasesService().Create(ctx, leases.WithRandomID(), leases.WithLabels(labelsFor(tag, "crashed")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.client.LeasesService().Delete(ctx, lease) })

	newTestDriver(t, env, drivers.Config{ContainerLabelTag: tag, InstanceId: "me"})

	deadline := time.Now().Add(30 * time.Second)
	for {
		left, err := in.leftovers(context.Background(), tag)
		if err != nil {
			t.Fatal(err)
		}
		gone := !slices.Contains(left, "container "+running) && !slices.Contains(left, "container "+created) &&
			!slices.Contains(left, "snapshot "+orphan) && !slices.Contains(left, "lease "+lease.ID)
		if gone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leftovers of the crashed instance remain: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, id := range []string{mine, otherTag, unlabelled} {
		if !exists(t, in, id) {
			t.Errorf("container %s (not a leftover of this tag) was removed", id)
		}
	}
	for _, id := range []string{running, created} {
		if _, err := sn.Stat(ctx, id); !errdefs.IsNotFound(err) {
			t.Errorf("snapshot of %s: %v, want removed with its container", id, err)
		}
	}
}

func chainID(diffs []digest.Digest) string { return identity.ChainID(diffs).String() }
