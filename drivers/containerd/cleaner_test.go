package containerd

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/containerd/containerd/errdefs"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/internal/imagetest"
)

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
	if _, ok := plain.ImageCleaner(); ok {
		t.Error("a cleaner runs without ImageCleanMaxSize")
	}
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
		ids[i] = imagetest.MakeContainerdImage(t, in.client, in.ns, env.localImage, size, names...)
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
	imagetest.ForeignContainer(t, in.client, in.ns, DefaultSnapshotter, ref(2))
	exempt = append(exempt, ref(3))

	// The budget: just under what the store holds, and a low-water mark
	// that removing image 1 alone does not reach and removing images 1 and
	// 4 (the next idle candidate by last use) does.
	now, err := plain.ImageStore().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, ok := imagetest.Find(now, id); !ok {
			t.Fatalf("image %s not listed", id)
		}
	}
	size := func(i int) uint64 { img, _ := imagetest.Find(now, ids[i-1]); return img.Size }
	// Driver A unpacked image 1 with its snapshotter: the driver's store
	// counts that snapshot beside the 3 MiB layer's blob.
	if size(1) < 6*imagetest.MiB {
		t.Errorf("image 1: size %d, want the layer's blob and its snapshot", size(1))
	}
	total := imagetest.Tracked(now)
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
	gone := func(imgs []images.Image, i int) bool { _, ok := imagetest.Find(imgs, ids[i-1]); return !ok }
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
	if _, ok := imagetest.Find(after, poolID); !ok {
		t.Error("the pool image was removed")
	}
	for _, img := range before {
		if _, ok := imagetest.Find(after, img.ID); !ok {
			t.Errorf("image %v, there before the test, was removed", img.References)
		}
	}
	for _, n := range []string{ref(1), alias, ref(4)} {
		if _, err := in.client.ImageService().Get(in.ctx(ctx), n); !errdefs.IsNotFound(err) {
			t.Errorf("%s: %v, want removed with its image", n, err)
		}
	}
	if got := imagetest.Tracked(after); got > low {
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
