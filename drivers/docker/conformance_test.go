package docker

import (
	"context"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/test"
)

// conformanceHarness is the test.Factory of the docker driver.
func conformanceHarness(t *testing.T, cfg drivers.Config) *test.Harness {
	return newHarness(t, cfg, false, "")
}

// pooledHarness is the test.Factory of the docker driver with a pre-fork
// pool of two holders, full before the suite starts.
func pooledHarness(t *testing.T, cfg drivers.Config) *test.Harness {
	return newHarness(t, cfg, true, "")
}

// newHarness builds the driver on endpoint, the test daemon when empty.
func newHarness(t *testing.T, cfg drivers.Config, pooled bool, endpoint string, opts ...Option) *test.Harness {
	e := needEnv(t)
	tag := "conformance-" + randomID()
	cfg.Docker = e.host
	if endpoint != "" {
		cfg.Docker = endpoint
	}
	cfg.ContainerLabelTag = tag
	if pooled {
		cfg.PreForkPoolSize = 2
		cfg.PreForkImage = e.image
	}
	d, err := New(context.Background(), cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if pooled {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := d.Pool().Ready(ctx)
		cancel()
		if err != nil {
			_ = d.Close()
			t.Fatalf("pool not ready: %v", err)
		}
	}
	bare := e.bare(t)
	t.Cleanup(func() {
		// The suite has closed the driver by now: nothing of it may be
		// left, holders included. Close is idempotent: this one only
		// matters after a case that failed before closing it.
		_ = d.Close()
		if left, err := tagged(context.Background(), bare, tag); err != nil || len(left) > 0 {
			t.Errorf("left after the driver closed: %v (%v)", left, err)
		}
		removeTagged(t, e, tag)
	})
	return &test.Harness{
		Driver:       d,
		Image:        e.localImage,
		PullImage:    e.pullImage,
		MissingImage: e.registry + "/fnrun/does-not-exist:latest",
		RemoveImage: func(_ context.Context, ref string) error {
			return removeImage(bare, ref)
		},
		// While the driver runs, its running holders are expected:
		// leftovers are the calls and holders that are not running (a
		// dead or retired holder not removed). Once it is closed, anything
		// at all is a leftover.
		Leftovers: func(ctx context.Context) ([]string, error) {
			if d.Closed() {
				return tagged(ctx, bare, tag)
			}
			return leftoversWhileRunning(ctx, bare, tag)
		},
		MainPID: func(ctx context.Context, id string) (int, error) {
			c, err := bare.InspectContainerWithOptions(docker.InspectContainerOptions{ID: id, Context: ctx})
			if err != nil {
				return 0, err
			}
			return c.State.Pid, nil
		},
	}
}

// leftoversWhileRunning lists the containers carrying tag but running
// holders.
func leftoversWhileRunning(ctx context.Context, c *docker.Client, tag string) ([]string, error) {
	list, err := c.ListContainers(docker.ListContainersOptions{All: true, Context: ctx, Filters: map[string][]string{"label": {LabelTag + "=" + tag}}})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ctr := range list {
		role := ctr.Labels[drivers.LabelRole]
		if role == drivers.RoleHolder && ctr.State == "running" {
			continue
		}
		out = append(out, role+" "+ctr.ID[:12]+" ("+ctr.State+")")
	}
	return out, nil
}

func TestConformance(t *testing.T) {
	needEnv(t)
	test.Run(t, conformanceHarness)
}

// TestConformancePooled runs the suite again with the pool on: calls join
// holders (or fall back when the six concurrent calls outnumber them), and
// the suite's checks that nothing is left once the driver is closed cover
// the holders too.
func TestConformancePooled(t *testing.T) {
	needEnv(t)
	test.Run(t, pooledHarness)
}
