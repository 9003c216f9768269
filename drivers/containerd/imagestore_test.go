package containerd

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	ctrdimages "github.com/containerd/containerd/images"
	"github.com/containerd/containerd/oci"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/images"
)

const mb = 1 << 20

// makeImage writes, straight into the content store, an image made of the
// base image's layers and one more layer holding sizeMB megabytes of
// random bytes, records it under names (removed at the end of the test)
// and returns its id (the manifest digest).
func makeImage(t *testing.T, in *inspector, base string, sizeMB int, names ...string) string {
	t.Helper()
	ctx, done, err := in.client.WithLease(in.ctx(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	defer done(ctx)
	cs := in.client.ContentStore()
	img, err := in.client.GetImage(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := ctrdimages.Manifest(ctx, cs, img.Target(), img.Platform())
	if err != nil {
		t.Fatal(err)
	}
	p, err := content.ReadBlob(ctx, cs, manifest.Config)
	if err != nil {
		t.Fatal(err)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(p, &cfg); err != nil {
		t.Fatal(err)
	}

	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	if err := tw.WriteHeader(&tar.Header{Name: "fnrun-data", Mode: 0o644, Size: int64(sizeMB * mb), ModTime: time.Now(), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(tw, rand.Reader, int64(sizeMB*mb)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	write := func(mediaType string, b []byte, labels map[string]string) ocispec.Descriptor {
		desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
		if err := content.WriteBlob(ctx, cs, "fnrun-test-"+desc.Digest.String(), bytes.NewReader(b), desc, content.WithLabels(labels)); err != nil {
			t.Fatal(err)
		}
		return desc
	}
	layerDesc := write(ctrdimages.MediaTypeDockerSchema2Layer, layer.Bytes(), nil)

	now := time.Now().UTC()
	cfg.Created = &now
	cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, layerDesc.Digest) // uncompressed: the digest is the diff id
	cfg.History = nil
	p, err = json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgDesc := write(manifest.Config.MediaType, p, nil)

	m := ocispec.Manifest{
		MediaType: ctrdimages.MediaTypeDockerSchema2Manifest,
		Config:    cfgDesc,
		Layers:    append(append([]ocispec.Descriptor(nil), manifest.Layers...), layerDesc),
	}
	m.SchemaVersion = 2
	p, err = json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	gc := map[string]string{"containerd.io/gc.ref.content.config": cfgDesc.Digest.String()}
	for i, l := range m.Layers {
		gc["containerd.io/gc.ref.content.l."+strconv.Itoa(i)] = l.Digest.String()
	}
	target := write(m.MediaType, p, gc)
	for _, n := range names {
		if _, err := in.client.ImageService().Create(ctx, ctrdimages.Image{Name: n, Target: target}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = in.client.ImageService().Delete(in.ctx(context.Background()), n) })
	}
	return target.Digest.String()
}

// listed finds the image id in a listing.
func listed(imgs []images.Image, id string) (images.Image, bool) {
	for _, img := range imgs {
		if img.ID == id {
			return img, true
		}
	}
	return images.Image{}, false
}

// tracked is the cleaner's arithmetic: every Size, plus the largest
// SharedSize once.
func tracked(imgs []images.Image) uint64 {
	var total, shared uint64
	for _, img := range imgs {
		total += img.Size
		shared = max(shared, img.SharedSize)
	}
	return total + shared
}

// foreignContainer creates, with a plain client, a container of image with
// a running task: a container nobody in fnrun made.
func foreignContainer(t *testing.T, in *inspector, image string) {
	t.Helper()
	ctx := in.ctx(context.Background())
	img, err := in.client.GetImage(ctx, image)
	if err != nil {
		t.Fatal(err)
	}
	id := "fnrun-foreign-" + randomID()
	ctr, err := in.client.NewContainer(ctx, id,
		ctrd.WithSnapshotter(DefaultSnapshotter),
		ctrd.WithNewSnapshot(id, img),
		ctrd.WithNewSpec(oci.WithImageConfigArgs(img, []string{"sleep", "300"})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := in.ctx(context.Background())
		if tk, err := ctr.Task(ctx, nil); err == nil {
			_, _ = tk.Delete(ctx, ctrd.WithProcessKill)
		}
		_ = ctr.Delete(ctx, ctrd.WithSnapshotCleanup)
	})
	tk, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Start(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestImageStore checks the store the cleaner works through: ids, names,
// sizes of unique and shared bytes, use by containers, last-use labels,
// removal of every name.
func TestImageStore(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	d := newTestDriver(t, env, drivers.Config{})
	ctx := context.Background()
	prefix := env.registry + "/fnrun/store-" + randomID()
	a, b := prefix+"-a:latest", prefix+"-a:alias"
	id := makeImage(t, in, env.localImage, 3, a, b)
	store := d.ImageStore()
	if _, ok := d.ImageCleaner(); ok {
		t.Error("a cleaner runs without ImageCleanMaxSize")
	}

	imgs, err := store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	img, ok := listed(imgs, id)
	if !ok {
		t.Fatalf("image %s not listed in %+v", id, imgs)
	}
	slices.Sort(img.References)
	if !slices.Equal(img.References, []string{b, a}) {
		t.Errorf("references %q, want both names", img.References)
	}
	if img.Size < 3*mb || img.Size > 4*mb {
		t.Errorf("packed size %d, want the 3 MB layer plus a little", img.Size)
	}
	if img.SharedSize == 0 {
		t.Errorf("no shared size: the base layer is shared with %s", env.localImage)
	}
	if img.InUse || img.Created.IsZero() {
		t.Errorf("image %+v: want unused, with a creation time", img)
	}

	// Unpacked (the driver does it when it finds the image), its snapshot
	// counts too.
	runTask(t, d, &drivers.Task{ID: "fnrun-store-" + randomID(), ImageRef: a, Cmd: "true"}, drivers.StatusSuccess)
	imgs, err = store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	img, _ = listed(imgs, id)
	if img.Size < 6*mb {
		t.Errorf("unpacked size %d, want the layer's blob and snapshot", img.Size)
	}

	// Used by a container, ours or not: listed as such, not removable.
	foreignContainer(t, in, b)
	imgs, err = store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if img, _ = listed(imgs, id); !img.InUse {
		t.Error("image of a running container not in use")
	}
	if err := store.Remove(ctx, id); !errors.Is(err, images.ErrImageInUse) {
		t.Errorf("Remove of an image in use: %v, want ErrImageInUse", err)
	}

	// Last use in a label on every name.
	when := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	if err := store.(images.LastUseStore).SetLastUse(ctx, id, when); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{a, b} {
		rec, err := in.client.ImageService().Get(in.ctx(ctx), n)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Labels[LabelLastUse] != when.Format(time.RFC3339Nano) {
			t.Errorf("%s labels %v", n, rec.Labels)
		}
	}
	imgs, _ = store.List(ctx)
	if img, _ = listed(imgs, id); !img.LastUsed.Equal(when) {
		t.Errorf("last use %v, want %v", img.LastUsed, when)
	}

	// Removal takes every name, and the content with it.
	id2 := makeImage(t, in, env.localImage, 1, prefix+"-b:one", prefix+"-b:two")
	if err := store.Remove(ctx, id2); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{prefix + "-b:one", prefix + "-b:two"} {
		if _, err := in.client.ImageService().Get(in.ctx(ctx), n); !errdefs.IsNotFound(err) {
			t.Errorf("%s after Remove: %v", n, err)
		}
	}
	if _, err := in.client.ContentStore().Info(in.ctx(ctx), digest.Digest(id2)); !errdefs.IsNotFound(err) {
		t.Errorf("manifest after Remove: %v, want collected", err)
	}
	if err := store.Remove(ctx, id2); !errors.Is(err, drivers.ErrImageNotFound) {
		t.Errorf("second Remove: %v, want ErrImageNotFound", err)
	}
	if err := store.(images.LastUseStore).SetLastUse(ctx, id2, when); !errors.Is(err, drivers.ErrImageNotFound) {
		t.Errorf("SetLastUse of a removed image: %v, want ErrImageNotFound", err)
	}
}

// TestImageCleaner: five images of known sizes are used through the driver
// in a known order; a second driver with a small budget removes exactly the
// least recently used idle ones (every name of them), never one a running
// container uses, never an exempt one, never the pool image, and leaves the
// store under the low-water mark. Last uses cross the restart in labels.
func TestImageCleaner(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	ctx := context.Background()
	prefix := env.registry + "/fnrun/clean-" + randomID()
	ref := func(i int) string { return fmt.Sprintf("%s-%d:latest", prefix, i) }
	alias := prefix + "-1:alias"

	// What was there before is exempt, by id, so the test removes nothing
	// of other tests; all but the pool image, which must be spared for
	// being the pool image.
	plain := newTestDriver(t, env, drivers.Config{})
	before, err := plain.ImageStore().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	poolID := ""
	var exempt []string
	for _, img := range before {
		if slices.Contains(img.References, env.localImage) {
			poolID = img.ID
			continue
		}
		exempt = append(exempt, img.ID)
	}
	if poolID == "" {
		t.Fatalf("no %s in the store", env.localImage)
	}

	sizes := []int{3, 1, 2, 4, 5} // MB, images 1 to 5
	ids := make([]string, len(sizes))
	for i, size := range sizes {
		names := []string{ref(i + 1)}
		if i == 0 {
			names = append(names, alias)
		}
		ids[i] = makeImage(t, in, env.localImage, size, names...)
	}

	// Driver A runs them in order 1..5 under a budget it never reaches, so
	// its cleaner records the uses; Close writes them into labels.
	a := newTestDriver(t, env, drivers.Config{ImageCleanMaxSize: 1 << 50})
	for i := range sizes {
		runTask(t, a, &drivers.Task{ID: "fnrun-clean-" + randomID(), ImageRef: ref(i + 1), Cmd: "true"}, drivers.StatusSuccess)
		time.Sleep(10 * time.Millisecond)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	var lastUses []time.Time
	for i := range sizes {
		rec, err := in.client.ImageService().Get(in.ctx(ctx), ref(i+1))
		if err != nil {
			t.Fatal(err)
		}
		lu, err := time.Parse(time.RFC3339Nano, rec.Labels[LabelLastUse])
		if err != nil {
			t.Fatalf("image %d last-use label: %v", i+1, err)
		}
		lastUses = append(lastUses, lu)
	}
	if !slices.IsSortedFunc(lastUses, func(x, y time.Time) int { return x.Compare(y) }) {
		t.Fatalf("last uses %v, want in run order", lastUses)
	}

	// Image 2 is used by a long-running container nobody in fnrun made;
	// image 3 is exempt by name.
	foreignContainer(t, in, ref(2))
	exempt = append(exempt, ref(3))

	// The budget: just under what the store holds, and a low-water mark
	// that removing image 1 alone does not reach and removing images 1 and
	// 4 (the next idle candidate by last use) does.
	now, err := plain.ImageStore().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, ok := listed(now, id); !ok {
			t.Fatalf("image %s not listed", id)
		}
	}
	size := func(i int) uint64 { img, _ := listed(now, ids[i-1]); return img.Size }
	total := tracked(now)
	low := total - size(1) - size(4)/2
	budget := total - 1
	t.Logf("store %d bytes; sizes %d %d %d %d %d; budget %d, low-water %d", total, size(1), size(2), size(3), size(4), size(5), budget, low)

	b := newTestDriver(t, env, drivers.Config{
		ImageCleanMaxSize:    budget,
		ImageCleanExemptTags: joinFields(exempt),
		PreForkPoolSize:      1,
		PreForkImage:         env.localImage,
	}, WithImageCleanerConfig(func(c *images.Config) { c.LowWater = low }))
	cl, ok := b.ImageCleaner()
	if !ok {
		t.Fatal("no cleaner with ImageCleanMaxSize set")
	}
	// The first pass runs as the cleaner starts.
	gone := func(imgs []images.Image, i int) bool { _, ok := listed(imgs, ids[i-1]); return !ok }
	deadline := time.Now().Add(30 * time.Second)
	var after []images.Image
	for {
		if after, err = b.ImageStore().List(ctx); err != nil {
			t.Fatal(err)
		}
		if gone(after, 1) && gone(after, 4) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("images 1 and 4 not removed; store: %+v", after)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, i := range []int{2, 3, 5} {
		if gone(after, i) {
			t.Errorf("image %d removed", i)
		}
	}
	if _, ok := listed(after, poolID); !ok {
		t.Error("the pool image was removed")
	}
	for _, img := range before {
		if _, ok := listed(after, img.ID); !ok {
			t.Errorf("image %v, there before the test, was removed", img.References)
		}
	}
	for _, n := range []string{ref(1), alias, ref(4)} {
		if _, err := in.client.ImageService().Get(in.ctx(ctx), n); !errdefs.IsNotFound(err) {
			t.Errorf("%s: %v, want removed with its image", n, err)
		}
	}
	if got := tracked(after); got > low {
		t.Errorf("store at %d bytes after eviction, above the low-water mark %d", got, low)
	}
	// And no further removal: the next pass finds the store under budget.
	rep, err := cl.CleanOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 0 {
		t.Errorf("second pass removed %+v", rep.Removed)
	}
}

func joinFields(s []string) string {
	var b bytes.Buffer
	for i, f := range s {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(f)
	}
	return b.String()
}
