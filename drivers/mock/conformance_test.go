package mock_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/mock"
	"github.com/fnrun/fnrun/test"
)

func newHarness(t *testing.T, cfg drivers.Config) *test.Harness {
	d, err := mock.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &test.Harness{
		Driver:       d,
		Image:        "fnrun-test/busybox",
		PullImage:    "127.0.0.1:5000/fnrun/busybox:latest",
		MissingImage: "127.0.0.1:5000/fnrun/does-not-exist:latest",
		RemoveImage: func(_ context.Context, ref string) error {
			d.RemoveImage(ref)
			return nil
		},
		Leftovers: func(context.Context) ([]string, error) {
			if n := d.OpenCookies(); n > 0 {
				return []string{fmt.Sprintf("%d open cookies", n)}, nil
			}
			return nil, nil
		},
	}
}

func TestConformance(t *testing.T) {
	test.Run(t, newHarness)
}
