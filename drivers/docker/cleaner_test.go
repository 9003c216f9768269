package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/internal/imagetest"
)

// pushAndForget pushes ref to the loopback registry and removes it from the
// daemon, so that the driver has to pull it.
func pushAndForget(t *testing.T, e testEnv, ref string) {
	t.Helper()
	bare := e.bare(t)
	name, tag, _ := strings.Cut(strings.TrimPrefix(ref, e.registry+"/"), ":")
	var out bytes.Buffer
	if err := bare.PushImage(docker.PushImageOptions{Name: e.registry + "/" + name, Tag: tag, OutputStream: &out},
		docker.AuthConfiguration{ServerAddress: e.registry}); err != nil {
		t.Fatalf("push %s: %v\n%s", ref, err, out.String())
	}
	t.Cleanup(func() { deleteFromRegistry(t, e.registry, name, tag) })
	if err := bare.RemoveImageExtended(ref, docker.RemoveImageOptions{Force: true}); err != nil {
		t.Fatalf("remove %s: %v", ref, err)
	}
}

// onlyPrefix is an images.Store that shows the cleaner only the images
// with a reference under prefix: the test daemon is shared, and a cleaner
// under test must not evict other tests' images.
type onlyPrefix struct {
	images.Store
	prefix string
}

func (s onlyPrefix) List(ctx context.Context) ([]images.Image, error) {
	all, err := s.Store.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []images.Image
	for _, im := range all {
		if slices.ContainsFunc(im.References, func(r string) bool { return strings.HasPrefix(r, s.prefix) }) {
			out = append(out, im)
		}
	}
	return out, nil
}

// withStoreWrap sets options.wrapStore, the tests' own option, passed
// like the package's other options of its own.
func withStoreWrap(f func(images.Store) images.Store) Option {
	return drivers.WithExtra(option(func(o *options) { o.wrapStore = f }))
}

// TestImageCleaner: images of known sizes pulled and run through the
// driver; when the store passes the budget the cleaner removes exactly the
// least recently used idle ones, down under the low-water mark, never a
// busy one, an exempt one or the pool's.
func TestImageCleaner(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)
	repo := e.registry + "/fnrun-clean-" + randomID()
	t.Cleanup(func() { imagetest.RemoveDockerImagesUnder(bare, repo) })
	ref := func(name string) string { return repo + "/" + name + ":v1" }
	sizes := map[string]int{"pool": 1, "exempt": 2, "img1": 3, "img2": 4, "img3": 5, "img4": 6}
	for name, n := range sizes {
		imagetest.BuildDockerImage(t, bare, e.localImage, ref(name), n*imagetest.MiB)
		pushAndForget(t, e, ref(name))
	}
	base, err := bare.InspectImage(e.localImage)
	if err != nil {
		t.Fatal(err)
	}
	// Tracked: the shared base once plus each image's own layer. With all
	// six the store holds base+21 MiB; the budget of base+16 MiB is first
	// passed by img4, and the low-water mark (90%) is reached by removing
	// img1 and img3, img2 being busy: base+20 MiB after img1 is still
	// above it, base+15 MiB after img3 below.
	budget := uint64(base.Size) + 16*imagetest.MiB
	stateDir := t.TempDir()
	d := newPooledDriver(t, drivers.Config{
		PreForkImage:         ref("pool"),
		ImageCleanMaxSize:    budget,
		ImageCleanExemptTags: ref("exempt"),
		ImageCleanStateDir:   stateDir,
	}, withStoreWrap(func(s images.Store) images.Store { return onlyPrefix{s, repo} }))
	cl, ok := d.ImageCleaner()
	if !ok {
		t.Fatal("no cleaner")
	}
	ctx := testCtx(t, 3*time.Minute)
	run := func(name string) {
		t.Helper()
		if res := runTask(ctx, t, d, &drivers.Task{ID: "fnrun-clean-" + name + "-" + randomID(), ImageRef: ref(name), Cmd: "true"}); res.Status() != drivers.StatusSuccess {
			t.Fatalf("%s: %s %v", name, res.Status(), res.Error())
		}
	}
	run("exempt")
	run("img1")
	busy, w := startCall(t, d, ref("img2"), "sleep 120")
	run("img3")
	// Nothing may go yet: the store is under budget.
	if _, err := cl.CleanOnce(ctx); err != nil {
		t.Fatal(err)
	}
	for name := range sizes {
		if name == "img4" {
			continue
		}
		if _, err := bare.InspectImage(ref(name)); err != nil {
			t.Fatalf("%s removed under budget: %v", name, err)
		}
	}
	run("img4") // its pull kicks the cleaner

	gone := func(name string) bool {
		_, err := bare.InspectImage(ref(name))
		return errors.Is(err, docker.ErrNoSuchImage)
	}
	// The cleaner updates its count once the daemon has answered the
	// removal: wait for both.
	waitFor(t, 30*time.Second, "img1 and img3 evicted", func() bool {
		s := cl.Snapshot()
		return gone("img1") && gone("img3") && s.TrackedBytes <= s.LowWater
	})
	for _, name := range []string{"pool", "exempt", "img2", "img4"} {
		if gone(name) {
			t.Errorf("%s was removed", name)
		}
	}
	snap := cl.Snapshot()
	if snap.TrackedBytes > snap.LowWater || snap.TrackedBytes > budget {
		t.Errorf("tracked %d bytes, low-water mark %d, budget %d", snap.TrackedBytes, snap.LowWater, budget)
	}
	list, err := d.ImageStore().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if held := imagetest.Tracked(list); held > snap.LowWater || len(list) != 4 {
		t.Errorf("store holds %d images, %d bytes, low-water mark %d", len(list), held, snap.LowWater)
	}
	for _, im := range snap.Images {
		isPool := slices.ContainsFunc(im.References, func(r string) bool { return strings.Contains(r, "/pool:") })
		isExempt := slices.ContainsFunc(im.References, func(r string) bool { return strings.Contains(r, "/exempt:") })
		if (isPool || isExempt) && !im.Exempt {
			t.Errorf("%v not exempt", im.References)
		}
	}

	// The busy image goes idle with its call; the state file keeps the
	// last uses.
	_ = busy.Close(ctx)
	w.Wait(ctx)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(stateDir, "last-use.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		LastUse map[string]time.Time `json:"last_use"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	img2, _ := bare.InspectImage(ref("img2"))
	if img2 == nil || st.LastUse[img2.ID].IsZero() {
		t.Errorf("state file lacks img2's last use: %s", raw)
	}
}
