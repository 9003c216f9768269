package dockerstore_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	dockerdriver "github.com/fnrun/fnrun/drivers/docker"
	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/internal/imagetest"
	"github.com/fnrun/fnrun/test"
)

const mib = imagetest.MiB

// driverStore is the store as the docker driver builds it, over its calls
// to the daemon at host: the translation of the daemon's errors into the
// classes of package drivers is the driver's.
func driverStore(ctx context.Context, t *testing.T, host string) images.Store {
	t.Helper()
	d, err := dockerdriver.New(ctx, drivers.Config{Docker: host, ContainerLabelTag: "test-" + imagetest.RandomID()})
	if err != nil {
		t.Fatalf("docker driver: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d.ImageStore()
}

// TestImageStore: the store lists images with their references, their own
// and shared bytes and whether a container uses them, and removes one by
// id with every reference, never one a container uses.
func TestImageStore(t *testing.T) {
	env := test.Env(t, "FNRUN_DOCKER_HOST", "FNRUN_LOCAL_IMAGE")
	localImage := env["FNRUN_LOCAL_IMAGE"]
	bare, err := docker.NewClient(env["FNRUN_DOCKER_HOST"])
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	prefix := "fnrun-store-" + imagetest.RandomID()
	t.Cleanup(func() { imagetest.RemoveDockerImagesUnder(bare, prefix) })
	ref := prefix + "/a:v1"
	imagetest.BuildDockerImage(t, bare, localImage, ref, mib)
	// A second repository makes the daemon refuse a plain removal by id.
	if err := bare.TagImage(ref, docker.TagImageOptions{Repo: prefix + "/b", Tag: "v2"}); err != nil {
		t.Fatal(err)
	}
	img, err := bare.InspectImage(ref)
	if err != nil {
		t.Fatal(err)
	}
	base, err := bare.InspectImage(localImage)
	if err != nil {
		t.Fatal(err)
	}
	s := driverStore(ctx, t, env["FNRUN_DOCKER_HOST"])

	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := imagetest.Find(list, img.ID)
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
	if b, ok := imagetest.Find(list, base.ID); !ok || !b.InUse || b.SharedSize != uint64(base.Size) || b.Size != 0 {
		t.Errorf("base image %+v: want in use (the parent of a build), all of it shared", b)
	}

	// A container, even one never started, keeps the image.
	ctr, err := bare.CreateContainer(docker.CreateContainerOptions{Name: "fnrun-store-user-" + imagetest.RandomID(), Context: ctx,
		Config: &docker.Config{Image: ref, Cmd: []string{"true"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer bare.RemoveContainer(docker.RemoveContainerOptions{ID: ctr.ID, Force: true})
	if list, err = s.List(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := imagetest.Find(list, img.ID); !got.InUse {
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
	if _, err := bare.InspectImage(localImage); err != nil {
		t.Errorf("the base image went with its child: %v", err)
	}
}
