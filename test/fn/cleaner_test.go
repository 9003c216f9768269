package fn

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/images"
)

// Fn's image cleaner tests (TestImageCleaner1 and 2, TestImageCacherBasic1
// to 4) run against a mocked Docker client. Here the images are real, in
// each runtime's store, of known sizes, and the cleaner is fnrun's own
// policy over the driver's own store (images.Provider), confined to this
// test's images: the daemons are shared with other tests, whose images a
// budget this small would evict.
//
// Four images, each its own layer of random bytes over the busybox they
// share: "exempt" (ImageCleanExemptTags), img1, img2 and img3, used in
// that order. With img2 busy (two holders), a budget just under what they
// hold and a low-water mark that removing img1 alone does not reach, one
// pass removes img1 then img3, least recently used first, and keeps the
// exempt and the busy one; img2 becomes a candidate once both holders
// have released it. Through the driver's own cleaner, a cookie keeps its
// image busy from ValidateImage to Close, and ImageCleanExemptTags
// exempts.
func TestImageCleaner(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, r *rig) {
		reg := newRegistry(t, r.env["FNRUN_REGISTRY"], "", "")
		repo := "fnrun/fn-clean-" + randomID()
		names := []string{"exempt", "img1", "img2", "img3"}
		refs := map[string]string{}
		for i, name := range names {
			refs[name] = reg.derive(t, repo+"/"+name, "v1", imageSpec{layerSize: (i + 1) * 128 << 10})
		}
		t.Cleanup(func() {
			for _, ref := range refs {
				r.removeImage(ref)
			}
		})
		// The driver's own cleaner has a budget nothing reaches: it only
		// shows what a cookie does to an image's busy count.
		drv := r.open(t, drivers.Config{ImageCleanMaxSize: 1 << 50, ImageCleanExemptTags: refs["exempt"]})
		ctx := testContext(t, 2*time.Minute)
		for _, name := range names {
			pullWith(t, ctx, r, drv, refs[name])
		}

		// A cookie holds its image busy from ValidateImage to Close (Fn's
		// TestImageCleaner2, through the driver's cleaner).
		own, _ := drv.(images.Provider).ImageCleaner()
		cookie := newCookie(t, ctx, drv, r.imageTask("busy", refs["img2"]))
		if _, err := cookie.ValidateImage(ctx); err != nil {
			t.Fatal(err)
		}
		// A pass lists the store: the pulls above are seen.
		if _, err := own.CleanOnce(ctx, images.DryRun()); err != nil {
			t.Fatal(err)
		}
		if info, ok := tracked(own.Snapshot(), refs["img2"]); !ok || info.Uses != 1 || info.Evictable() {
			t.Errorf("image of a validated cookie: %+v (tracked %v), want busy", info, ok)
		}
		if err := cookie.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if info, _ := tracked(own.Snapshot(), refs["img2"]); info.Uses != 0 || !info.Evictable() {
			t.Errorf("image of a closed cookie: %+v, want idle", info)
		}
		if info, _ := tracked(own.Snapshot(), refs["exempt"]); !info.Exempt {
			t.Errorf("image named by ImageCleanExemptTags: %+v, want exempt", info)
		}

		// The eviction, by fnrun's cleaner over the driver's store.
		prefix := reg.host + "/" + repo + "/"
		store := onlyUnder{Store: drv.(images.Provider).ImageStore(), prefix: prefix}
		list, err := store.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		size := map[string]uint64{}
		var total, shared uint64
		for _, img := range list {
			total += img.Size
			shared = max(shared, img.SharedSize)
			for name, ref := range refs {
				if hasRef(img.References, ref) {
					size[name] = img.Size
				}
			}
		}
		if len(list) != len(names) || len(size) != len(names) {
			t.Fatalf("store lists %d images under %s (%v), want %d", len(list), prefix, size, len(names))
		}
		total += shared
		low := total - size["img1"] - size["img3"]/2
		cl, err := images.New(store, images.Config{MaxSize: total - 1, LowWater: low, Exempt: []string{refs["exempt"]}, Driver: r.name},
			images.WithLogger(discardLogger()))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if _, err := cl.CleanOnce(ctx, images.DryRun()); err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			cl.Use(refs[name])()
			time.Sleep(5 * time.Millisecond)
		}
		// Two holders of img2 (Fn's TestImageCacherBasic3: busy with a
		// count of two).
		release, release2 := cl.Use(refs["img2"]), cl.Use(refs["img2"])
		rep, err := cl.CleanOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var removed []string
		for _, img := range rep.Removed {
			for name, ref := range refs {
				if hasRef(img.References, ref) {
					removed = append(removed, name)
				}
			}
		}
		if !slices.Equal(removed, []string{"img1", "img3"}) || len(rep.Failed) != 0 {
			t.Fatalf("removed %v (failed %v), want img1 then img3: the idle ones, least recently used first", removed, rep.Failed)
		}
		for _, name := range names {
			pull := needsPull(t, ctx, r, drv, refs[name])
			if want := name == "img1" || name == "img3"; pull != want {
				t.Errorf("%s: needs a pull %v after the pass, want %v", name, pull, want)
			}
		}
		if info, _ := tracked(cl.Snapshot(), refs["img2"]); info.Evictable() {
			t.Errorf("busy img2 %+v is a candidate", info)
		}
		release()
		if info, _ := tracked(cl.Snapshot(), refs["img2"]); info.Uses != 1 || info.Evictable() {
			t.Errorf("img2 %+v with one holder left, want still busy", info)
		}
		release2()
		if info, _ := tracked(cl.Snapshot(), refs["img2"]); !info.Evictable() {
			t.Errorf("released img2 %+v is no candidate", info)
		}
		if info, _ := tracked(cl.Snapshot(), refs["exempt"]); !info.Exempt || info.Evictable() {
			t.Errorf("exempt image %+v", info)
		}
		// Under the low-water mark now: the next pass removes nothing.
		if rep, err := cl.CleanOnce(ctx); err != nil || len(rep.Removed) != 0 {
			t.Errorf("second pass: %v, removed %d", err, len(rep.Removed))
		}
	})
}

// onlyUnder is a store that shows only the images with a reference under
// prefix.
type onlyUnder struct {
	images.Store
	prefix string
}

func (s onlyUnder) List(ctx context.Context) ([]images.Image, error) {
	list, err := s.Store.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []images.Image
	for _, img := range list {
		if slices.ContainsFunc(img.References, func(ref string) bool {
			n, err := drivers.NormalizeImage(ref)
			return err == nil && strings.HasPrefix(n.Normalized, s.prefix)
		}) {
			out = append(out, img)
		}
	}
	return out, nil
}

// hasRef reports whether one of refs names the same image as ref.
func hasRef(refs []string, ref string) bool {
	return slices.ContainsFunc(refs, func(s string) bool { return sameRef(s, ref) })
}

// sameRef reports whether two references name the same image.
func sameRef(a, b string) bool {
	na, errA := drivers.NormalizeImage(a)
	nb, errB := drivers.NormalizeImage(b)
	return errA == nil && errB == nil && na.Normalized == nb.Normalized
}

// pullWith pulls ref through a cookie of drv.
func pullWith(t *testing.T, ctx context.Context, r *rig, drv drivers.Driver, ref string) {
	t.Helper()
	cookie := newCookie(t, ctx, drv, r.imageTask("pull", ref))
	defer cookie.Close(context.Background())
	pull, err := cookie.ValidateImage(ctx)
	if err == nil && pull {
		err = cookie.PullImage(ctx)
	}
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
}

// needsPull says whether a cookie of ref on drv asks for a pull.
func needsPull(t *testing.T, ctx context.Context, r *rig, drv drivers.Driver, ref string) bool {
	t.Helper()
	cookie := newCookie(t, ctx, drv, r.imageTask("check", ref))
	defer cookie.Close(context.Background())
	pull, err := cookie.ValidateImage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return pull
}
