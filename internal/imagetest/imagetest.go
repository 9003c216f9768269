// Package imagetest holds what the image stores' tests (images/dockerstore,
// images/containerdstore) and the drivers' image cleaner tests share:
// images of known sizes made in each runtime's store, a container nobody in
// fnrun made, and the cleaner's arithmetic over a listing.
package imagetest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/content"
	ctrdimages "github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	docker "github.com/fsouza/go-dockerclient"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/internal/dockerconn"
)

// MiB is a mebibyte, the unit of the images' sizes.
const MiB = 1 << 20

// Find finds the image id in a listing.
func Find(list []images.Image, id string) (images.Image, bool) {
	for _, im := range list {
		if im.ID == id {
			return im, true
		}
	}
	return images.Image{}, false
}

// Tracked is the cleaner's arithmetic: every Size, plus the largest
// SharedSize once.
func Tracked(list []images.Image) uint64 {
	var total, shared uint64
	for _, im := range list {
		total += im.Size
		shared = max(shared, im.SharedSize)
	}
	return total + shared
}

// BuildDockerImage builds, with the daemon's classic builder, an image of
// base plus one layer holding size random bytes, tagged ref.
func BuildDockerImage(t testing.TB, c *docker.Client, base, ref string, size int) {
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
	}{{"Dockerfile", []byte("FROM " + base + "\nCOPY blob /blob\n")}, {"blob", blob}} {
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
	err := c.BuildImage(docker.BuildImageOptions{Name: ref, InputStream: &ctxTar, OutputStream: &out, RmTmpContainer: true, ForceRmTmpContainer: true})
	if err == nil {
		// The daemon reports a failed build inside the stream, with a
		// success status.
		err = dockerconn.StreamError(out.String())
	}
	if err != nil {
		t.Fatalf("build %s: %v\n%s", ref, err, out.String())
	}
}

// RemoveDockerImagesUnder removes every image with a reference starting
// with prefix from the daemon.
func RemoveDockerImagesUnder(c *docker.Client, prefix string) {
	list, err := c.ListImages(docker.ListImagesOptions{})
	if err != nil {
		return
	}
	for _, img := range list {
		for _, r := range append(img.RepoTags, img.RepoDigests...) {
			if strings.HasPrefix(r, prefix) {
				_ = c.RemoveImageExtended(img.ID, docker.RemoveImageOptions{Force: true})
				break
			}
		}
	}
}

// MakeContainerdImage writes, straight into the content store of
// namespace, an image made of the base image's layers and one more layer
// holding sizeMiB mebibytes of random bytes, records it under names
// (removed at the end of the test) and returns its id (the manifest
// digest).
func MakeContainerdImage(t testing.TB, client *ctrd.Client, namespace, base string, sizeMiB int, names ...string) string {
	t.Helper()
	ctx, done, err := client.WithLease(namespaces.WithNamespace(context.Background(), namespace))
	if err != nil {
		t.Fatal(err)
	}
	defer done(ctx)
	cs := client.ContentStore()
	img, err := client.GetImage(ctx, base)
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
	if err := tw.WriteHeader(&tar.Header{Name: "fnrun-data", Mode: 0o644, Size: int64(sizeMiB * MiB), ModTime: time.Now(), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(tw, rand.Reader, int64(sizeMiB*MiB)); err != nil {
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
		if _, err := client.ImageService().Create(ctx, ctrdimages.Image{Name: n, Target: target}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = client.ImageService().Delete(namespaces.WithNamespace(context.Background(), namespace), n)
		})
	}
	return target.Digest.String()
}

// ForeignContainer creates, with a plain client, a container of image
// (unpacked into snapshotter first if need be) with a running task: a
// container nobody in fnrun made. The test's cleanup removes it.
func ForeignContainer(t testing.TB, client *ctrd.Client, namespace, snapshotter, image string) {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), namespace)
	img, err := client.GetImage(ctx, image)
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Unpack(ctx, snapshotter); err != nil {
		t.Fatal(err)
	}
	id := "fnrun-foreign-" + RandomID()
	ctr, err := client.NewContainer(ctx, id,
		ctrd.WithSnapshotter(snapshotter),
		ctrd.WithNewSnapshot(id, img),
		ctrd.WithNewSpec(oci.WithImageConfigArgs(img, []string{"sleep", "300"})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := namespaces.WithNamespace(context.Background(), namespace)
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

// RandomID is a fresh hex id for names the stores' tests make.
func RandomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
