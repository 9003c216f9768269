package docker

import (
	"context"
	"testing"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/test"
)

// conformanceHarness is the test.Factory of the docker driver.
func conformanceHarness(t *testing.T, cfg drivers.Config) *test.Harness {
	e := needEnv(t)
	tag := "conformance-" + randomID()
	cfg.Docker = e.host
	cfg.ContainerLabelTag = tag
	d, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	bare := e.bare(t)
	t.Cleanup(func() { removeTagged(t, e, tag) })
	return &test.Harness{
		Driver:       d,
		Image:        e.localImage,
		PullImage:    e.image,
		MissingImage: e.registry + "/fnrun/does-not-exist:latest",
		RemoveImage: func(_ context.Context, ref string) error {
			return removeImage(bare, ref)
		},
		Leftovers: func(ctx context.Context) ([]string, error) {
			return tagged(ctx, bare, tag)
		},
	}
}

func TestConformance(t *testing.T) {
	needEnv(t)
	test.Run(t, conformanceHarness)
}
