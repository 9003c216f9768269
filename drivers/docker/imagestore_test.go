package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
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
)

const mib = 1 << 20

// buildImage builds, with the daemon's classic builder, an image of the
// local test image plus one layer holding size random bytes, tagged ref.
func buildImage(t *testing.T, e testEnv, ref string, size int) {
	t.Helper()
	blob := make([]byte, size)
	if _, err := rand.Read(blob); err != nil {
		t.Fatal(err)
	}
	var ctxTar bytes.Buffer
	tw := tar.NewWriter(&ctxTar)
	for _, f := range []struct {
		name string
		data []byte
	}{{"Dockerfile", []byte("FROM " + e.localImage + "\nCOPY blob /blob\n")}, {"blob", blob}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: time.Unix(1704067200, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := e.bare(t).BuildImage(docker.BuildImageOptions{Name: ref, InputStream: &ctxTar, OutputStream: &out, RmTmpContainer: true, ForceRmTmpContainer: true})
	if err == nil {
		err = streamError(out.String())
	}
	if err != nil {
		t.Fatalf("build %s: %v\n%s", ref, err, out.String())
	}
}

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

// removeImagesUnder removes every image with a reference starting with
// prefix from the test daemon.
func removeImagesUnder(t testing.TB, bare *docker.Client, prefix string) {
	list, err := bare.ListImages(docker.ListImagesOptions{})
	if err != nil {
		return
	}
	for _, img := range list {
		for _, r := range append(img.RepoTags, img.RepoDigests...) {
			if strings.HasPrefix(r, prefix) {
				_ = bare.RemoveImageExtended(img.ID, docker.RemoveImageOptions{Force: true})
				break
			}
		}
	}
}

func findImage(list []images.Image, id string) (images.Image, bool) {
	for _, im := range list {
		if im.ID == id {
			return im, true
		}
	}
	return images.Image{}, false
}

// TestImageStore: the store lists images with their references, their own
// and shared bytes and whether a container uses them, and removes one by
// id with every reference, never one a container uses.
func TestImageStore(t *testing.T) {
	e := needEnv(t)
	bare := e.bare(t)
	d := newDriver(t, drivers.Config{})
	ctx := testCtx(t, 2*time.Minute)
	prefix := "fnrun-store-" + randomID()
	t.Cleanup(func() { removeImagesUnder(t, bare, prefix) })
	ref := prefix + "/a:v1"
	buildImage(t, e, ref, mib)
	// A second repository makes the daemon refuse a plain removal by id.
	if err := bare.TagImage(ref, docker.TagImageOptions{Repo: prefix + "/b", Tag: "v2"}); err != nil {
		t.Fatal(err)
	}
	img, err := bare.InspectImage(ref)
	if err != nil {
		t.Fatal(err)
	}
	base, err := bare.InspectImage(e.localImage)
	if err != nil {
		t.Fatal(err)
	}
	s := d.ImageStore()

	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := findImage(list, img.ID)
	if !ok {
		t.Fatalf("image %s not listed", img.ID)
	}
	slices.Sort(got.References)
	if want := []string{ref, prefix + "/b:v2"}; !slices.Equal(got.References, want) {
		t.Errorf("references %v, want %v", got.References, want)
	}
	// Its own bytes are the blob's layer; the base's layer is shared.
	if got.Size < mib || got.Size > mib+64<<10 || got.SharedSize != uint64(base.Size) {
		t.Errorf("size %d shared %d, want about %d and exactly %d", got.Size, got.SharedSize, mib, base.Size)
	}
	if got.InUse || got.Created.IsZero() {
		t.Errorf("in use %v created %v", got.InUse, got.Created)
	}
	if b, ok := findImage(list, base.ID); !ok || !b.InUse || b.SharedSize != uint64(base.Size) || b.Size != 0 {
		t.Errorf("base image %+v: want in use (the parent of a build), all of it shared", b)
	}

	// A container, even one never started, keeps the image.
	ctr, err := bare.CreateContainer(docker.CreateContainerOptions{Name: "fnrun-store-user-" + randomID(), Context: ctx,
		Config: &docker.Config{Image: ref, Cmd: []string{"true"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer bare.RemoveContainer(docker.RemoveContainerOptions{ID: ctr.ID, Force: true})
	if list, err = s.List(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := findImage(list, img.ID); !got.InUse {
		t.Error("an image a container uses is not in use")
	}
	if err := s.Remove(ctx, img.ID); !errors.Is(err, images.ErrImageInUse) {
		t.Fatalf("Remove of an image in use: %v, want ErrImageInUse", err)
	}
	for _, r := range []string{ref, prefix + "/b:v2"} {
		if _, err := bare.InspectImage(r); err != nil {
			t.Errorf("refused removal touched %s: %v", r, err)
		}
	}
	if err := bare.RemoveContainer(docker.RemoveContainerOptions{ID: ctr.ID, Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, img.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	for _, r := range []string{ref, prefix + "/b:v2", img.ID} {
		if _, err := bare.InspectImage(r); !errors.Is(err, docker.ErrNoSuchImage) {
			t.Errorf("%s after Remove: %v", r, err)
		}
	}
	if err := s.Remove(ctx, img.ID); !errors.Is(err, drivers.ErrImageNotFound) {
		t.Errorf("second Remove: %v, want ErrImageNotFound", err)
	}
	if _, err := bare.InspectImage(e.localImage); err != nil {
		t.Errorf("the base image went with its child: %v", err)
	}
}

// TestLayerSizes checks how sizes are split without the daemon's help.
func TestLayerSizes(t *testing.T) {
	for _, c := range []struct {
		name  string
		n     int
		hist  []int64
		total int64
		want  []int64
	}{
		{"one entry per layer", 2, []int64{5, 0}, 5, []int64{5, 0}},
		{"empty entries", 2, []int64{5, 0, 7, 0}, 12, []int64{5, 7}},
		{"zero-size layer among empty entries", 3, []int64{5, 0, 7, 0}, 12, nil},
		{"sizes do not add up", 2, []int64{5, 7}, 13, nil},
	} {
		if got := layerSizes(c.n, c.hist, c.total); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	sum := sha256.Sum256([]byte("sha256:a sha256:b"))
	if c := chainIDs([]string{"sha256:a", "sha256:b"}); !slices.Equal(c, []string{"sha256:a", "sha256:" + hex.EncodeToString(sum[:])}) {
		t.Errorf("chain ids %v", c)
	}
}

// TestBuildImages: shared layers are counted as shared, an image whose
// layers are unknown reports its whole size, and the daemon's own split
// wins when it gives one.
func TestBuildImages(t *testing.T) {
	list := []apiImage{
		{ID: "a", Size: 10, SharedSize: -1},
		{ID: "b", Size: 13, SharedSize: -1},
		{ID: "c", Size: 20, SharedSize: -1, ParentID: "a"},
	}
	layers := map[string]layerInfo{
		"a": {chains: []string{"base", "a1"}, sizes: []int64{4, 6}},
		"b": {chains: []string{"base", "b1"}, sizes: []int64{4, 9}},
		"c": {chains: []string{"base", "a1", "c1"}}, // sizes unknown
	}
	got := buildImages(list, map[string]bool{"a": true}, layers, false)
	want := map[string][2]uint64{"a": {0, 10}, "b": {9, 4}, "c": {20, 0}}
	for _, im := range got {
		if w := want[im.ID]; im.Size != w[0] || im.SharedSize != w[1] {
			t.Errorf("%s: size %d shared %d, want %v", im.ID, im.Size, im.SharedSize, w)
		}
	}
	if !got[0].InUse || got[1].InUse {
		t.Errorf("in use: %v %v", got[0].InUse, got[1].InUse)
	}
	delete(layers, "b") // vanished during the listing
	if got := buildImages(list, nil, layers, false); len(got) != 2 {
		t.Errorf("%d images with one vanished, want 2", len(got))
	}
	daemon := []apiImage{{ID: "a", Size: 10, SharedSize: 4, RepoTags: []string{"<none>:<none>"}}}
	if got := buildImages(daemon, nil, nil, true); got[0].Size != 6 || got[0].SharedSize != 4 || len(got[0].References) != 0 {
		t.Errorf("daemon split: %+v", got[0])
	}
}

func TestExtraReferences(t *testing.T) {
	for _, c := range []struct {
		refs []string
		want []string
	}{
		{nil, nil},
		{[]string{"a:1"}, nil},
		{[]string{"a:1", "a@sha256:" + strings.Repeat("1", 64)}, nil},
		{[]string{"b:1", "a:1"}, []string{"b:1"}},
		{[]string{"a:2", "a:1", "a@sha256:" + strings.Repeat("1", 64), "b@sha256:" + strings.Repeat("2", 64)},
			[]string{"a:2", "b@sha256:" + strings.Repeat("2", 64)}},
	} {
		if got := extraReferences(c.refs); !slices.Equal(got, c.want) {
			t.Errorf("extraReferences(%v) = %v, want %v", c.refs, got, c.want)
		}
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
	t.Cleanup(func() { removeImagesUnder(t, bare, repo) })
	ref := func(name string) string { return repo + "/" + name + ":v1" }
	sizes := map[string]int{"pool": 1, "exempt": 2, "img1": 3, "img2": 4, "img3": 5, "img4": 6}
	for name, n := range sizes {
		buildImage(t, e, ref(name), n*mib)
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
	budget := uint64(base.Size) + 16*mib
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
	var sum uint64
	list, err := d.ImageStore().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var shared uint64
	for _, im := range list {
		sum += im.Size
		shared = max(shared, im.SharedSize)
	}
	if sum+shared > snap.LowWater || len(list) != 4 {
		t.Errorf("store holds %d images, %d bytes, low-water mark %d", len(list), sum+shared, snap.LowWater)
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
