package fn

import (
	"context"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/mock" // registers "mock"
	"github.com/fnrun/fnrun/test"
)

// Fn's TestParseImage, with its table: a one-part Docker Hub name is an
// official image under library/, a registry is recognised by a dot, a
// port or "localhost", and the tag defaults to latest. For a digest
// reference fnrun's tag is the digest; Fn's parser drops the digest and
// answers latest, so that a pull by its answer would fetch another image.
func TestParseImage(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for in, want := range map[string][3]string{
		"fnproject/hello":                  {"", "fnproject/hello", "latest"},
		"fnproject/hello:v1":               {"", "fnproject/hello", "v1"},
		"my.registry/hello":                {"my.registry", "hello", "latest"},
		"my.registry/hello:v1":             {"my.registry", "hello", "v1"},
		"mongo":                            {"", "library/mongo", "latest"},
		"mongo:v1":                         {"", "library/mongo", "v1"},
		"quay.com/fnproject/hello":         {"quay.com", "fnproject/hello", "latest"},
		"quay.com:8080/fnproject/hello:v2": {"quay.com:8080", "fnproject/hello", "v2"},
		"localhost.localdomain:5000/samalba/hipache:latest":                   {"localhost.localdomain:5000", "samalba/hipache", "latest"},
		"localhost.localdomain:5000/samalba/hipache/isthisallowedeven:latest": {"localhost.localdomain:5000", "samalba/hipache/isthisallowedeven", "latest"},
		"localhost/hello": {"localhost", "hello", "latest"},
		// Where fnrun differs: the digest is kept.
		"mongo@" + digest:               {"", "library/mongo", digest},
		"quay.com/fn/app:1.0@" + digest: {"quay.com", "fn/app", digest},
	} {
		reg, repo, tag := drivers.ParseImage(in)
		if got := [3]string{reg, repo, tag}; got != want {
			t.Errorf("ParseImage(%q) = %q, want %q", in, got, want)
		}
	}
}

// Fn's mock driver never asks for a pull; fnrun's asks once per image, as
// a real driver does, unless mock.WithImagesPresent makes it behave as
// Fn's. Fn's mock also fails every hundredth Run; fnrun's fails only when
// a task's extensions script it.
func TestMock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type puller interface{ Pulls() int }
	for _, tc := range []struct {
		name  string
		opts  []drivers.Option
		pulls int
	}{
		{"as fnrun's", nil, 1},
		{"as Fn's", []drivers.Option{mock.WithImagesPresent()}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			drv, err := drivers.Open(ctx, mock.Name, drivers.Config{}, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer drv.Close()
			for i := range 100 {
				task := &drivers.Task{ID: "fn-mock-" + randomID(), ImageRef: "fnproject/hello"}
				cookie, err := drv.CreateCookie(ctx, task)
				if err != nil {
					t.Fatal(err)
				}
				pull, err := cookie.ValidateImage(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if want := i == 0 && tc.pulls > 0; pull != want {
					t.Fatalf("call %d: ValidateImage asks for a pull: %v, want %v", i, pull, want)
				}
				_ = cookie.Close(ctx)
				out, err := test.Lifecycle(ctx, drv, &drivers.Task{ID: "fn-mock-" + randomID(), ImageRef: "fnproject/hello"})
				if err != nil {
					t.Fatal(err)
				}
				if out.Result.Status() != drivers.StatusSuccess {
					t.Fatalf("call %d: %s %v", i, out.Result.Status(), out.Result.Error())
				}
			}
			if n := drv.(puller).Pulls(); n != tc.pulls {
				t.Errorf("%d pulls, want %d", n, tc.pulls)
			}
		})
	}
}
