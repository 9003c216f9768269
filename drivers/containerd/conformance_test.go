package containerd

import (
	"context"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/test"
)

// TestConformance runs the suite every driver passes against the real
// containerd. Each harness gets its own label tag, so Leftovers sees only
// what that driver made.
func TestConformance(t *testing.T) {
	env := requireEnv(t)
	// Made before the suite starts counting goroutines, and outliving every
	// driver it builds.
	in := newInspector(t, env)
	test.Run(t, func(t *testing.T, cfg drivers.Config) *test.Harness {
		cfg.Containerd = env.address
		cfg.ContainerdNamespace = env.namespace
		cfg.ContainerLabelTag = "conformance-" + randomID()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d, err := New(ctx, cfg, WithLogger(testLogger(t)))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		t.Cleanup(func() { _ = d.Close() })
		tag := cfg.ContainerLabelTag
		return &test.Harness{
			Driver:       d,
			Image:        env.localImage,
			PullImage:    env.testImage,
			MissingImage: env.registry + "/fnrun/does-not-exist:latest",
			RemoveImage:  d.RemoveImage,
			Leftovers: func(ctx context.Context) ([]string, error) {
				return in.leftovers(ctx, tag)
			},
		}
	})
}
