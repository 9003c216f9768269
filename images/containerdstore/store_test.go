package containerdstore

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/opencontainers/go-digest"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/lifecycle"
	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/internal/imagetest"
	"github.com/fnrun/fnrun/test"
)

// snapshotter is the one the test daemon unpacks images into.
const snapshotter = "overlayfs"

// newClient is a client of the test daemon, closed at the end of the test.
func newClient(t *testing.T, address, namespace string) *ctrd.Client {
	t.Helper()
	c, err := ctrd.New(address, ctrd.WithTimeout(5*time.Second), ctrd.WithDefaultNamespace(namespace))
	if err != nil {
		t.Fatalf("containerd at %s: %v", address, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestImageStore checks the store the cleaner works through: ids, names,
// sizes of unique and shared bytes, use by containers, last-use labels,
// removal of every name.
func TestImageStore(t *testing.T) {
	env := test.Env(t, "FNRUN_CONTAINERD_ADDRESS", "FNRUN_CONTAINERD_NAMESPACE", "FNRUN_CONTAINERD_LOCAL_IMAGE", "FNRUN_REGISTRY")
	ns, localImage := env["FNRUN_CONTAINERD_NAMESPACE"], env["FNRUN_CONTAINERD_LOCAL_IMAGE"]
	client := newClient(t, env["FNRUN_CONTAINERD_ADDRESS"], ns)
	var removed []digest.Digest
	store := New(client, ns, snapshotter, lifecycle.Caller{Driver: "containerd", Timeout: 30 * time.Second},
		WithRemoveTimeout(time.Minute), WithOnRemove(func(d digest.Digest) { removed = append(removed, d) }))
	ctx := context.Background()
	nsCtx := namespaces.WithNamespace(ctx, ns)
	prefix := env["FNRUN_REGISTRY"] + "/fnrun/store-" + imagetest.RandomID()
	a, b := prefix+"-a:latest", prefix+"-a:alias"
	id := imagetest.MakeContainerdImage(t, client, ns, localImage, 3, a, b)

	imgs, err := store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	img, ok := imagetest.Find(imgs, id)
	if !ok {
		t.Fatalf("image %s not listed in %+v", id, imgs)
	}
	slices.Sort(img.References)
	if !slices.Equal(img.References, []string{b, a}) {
		t.Errorf("references %q, want both names", img.References)
	}
	if img.Size < 3*imagetest.MiB || img.Size > 4*imagetest.MiB {
		t.Errorf("packed size %d, want the 3 MB layer plus a little", img.Size)
	}
	if img.SharedSize == 0 {
		t.Errorf("no shared size: the base layer is shared with %s", localImage)
	}
	if img.InUse || img.Created.IsZero() {
		t.Errorf("image %+v: want unused, with a creation time", img)
	}

	// Unpacked (the driver does it when it finds the image), its snapshot
	// counts too.
	rec, err := client.GetImage(nsCtx, a)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Unpack(nsCtx, snapshotter); err != nil {
		t.Fatal(err)
	}
	imgs, err = store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	img, _ = imagetest.Find(imgs, id)
	if img.Size < 6*imagetest.MiB {
		t.Errorf("unpacked size %d, want the layer's blob and snapshot", img.Size)
	}

	// Used by a container, ours or not: listed as such, not removable.
	imagetest.ForeignContainer(t, client, ns, snapshotter, b)
	imgs, err = store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if img, _ = imagetest.Find(imgs, id); !img.InUse {
		t.Error("image of a running container not in use")
	}
	if err := store.Remove(ctx, id); !errors.Is(err, images.ErrImageInUse) {
		t.Errorf("Remove of an image in use: %v, want ErrImageInUse", err)
	}

	// Last use in a label on every name.
	when := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	if err := store.SetLastUse(ctx, id, when); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{a, b} {
		rec, err := client.ImageService().Get(nsCtx, n)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Labels[LabelLastUse] != when.Format(time.RFC3339Nano) {
			t.Errorf("%s labels %v", n, rec.Labels)
		}
	}
	imgs, _ = store.List(ctx)
	if img, _ = imagetest.Find(imgs, id); !img.LastUsed.Equal(when) {
		t.Errorf("last use %v, want %v", img.LastUsed, when)
	}

	// Removal takes every name, and the content with it.
	id2 := imagetest.MakeContainerdImage(t, client, ns, localImage, 1, prefix+"-b:one", prefix+"-b:two")
	if err := store.Remove(ctx, id2); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []digest.Digest{digest.Digest(id2)}) {
		t.Errorf("told of the removal of %v, want %s", removed, id2)
	}
	for _, n := range []string{prefix + "-b:one", prefix + "-b:two"} {
		if _, err := client.ImageService().Get(nsCtx, n); !errdefs.IsNotFound(err) {
			t.Errorf("%s after Remove: %v", n, err)
		}
	}
	if _, err := client.ContentStore().Info(nsCtx, digest.Digest(id2)); !errdefs.IsNotFound(err) {
		t.Errorf("manifest after Remove: %v, want collected", err)
	}
	if err := store.Remove(ctx, id2); !errors.Is(err, drivers.ErrImageNotFound) {
		t.Errorf("second Remove: %v, want ErrImageNotFound", err)
	}
	if err := store.SetLastUse(ctx, id2, when); !errors.Is(err, drivers.ErrImageNotFound) {
		t.Errorf("SetLastUse of a removed image: %v, want ErrImageNotFound", err)
	}
}
