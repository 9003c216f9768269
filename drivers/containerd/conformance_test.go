package containerd

import (
	"context"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/test"
)

// TestConformance runs the suite every driver passes against the real
// containerd, with the environment's CNI network. Each harness gets its
// own label tag, so Leftovers sees only what that driver made: containers,
// tasks, snapshots, leases, network namespaces and CNI address leases.
func TestConformance(t *testing.T) {
	env := requireEnv(t)
	// Made before the suite starts counting goroutines, and outliving every
	// driver it builds.
	in := newInspector(t, env)
	test.Run(t, conformanceFactory(env, in, nil))
}

// TestConformancePooled runs the suite again with the pre-fork pool on:
// two holders of the local test image, filled before the suite starts.
// While a driver is open its holders (container, task, view snapshot,
// namespace, address lease) are not leftovers, but everything else still
// is; once it is closed, nothing may remain, holders included.
func TestConformancePooled(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	test.Run(t, conformanceFactory(env, in, func(cfg *drivers.Config) {
		cfg.PreForkPoolSize = 2
		cfg.PreForkImage = env.localImage
	}))
}

func conformanceFactory(env testEnv, in *inspector, modify func(*drivers.Config)) test.Factory {
	return func(t *testing.T, cfg drivers.Config) *test.Harness {
		cfg.Containerd = env.address
		cfg.ContainerdNamespace = env.namespace
		cfg.ContainerLabelTag = "conformance-" + randomID()
		cfg.CNIConfDir, cfg.CNIBinDir = env.cniConf, env.cniBin
		if modify != nil {
			modify(&cfg)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d, err := New(ctx, cfg, drivers.WithLogger(testLogger(t)))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		t.Cleanup(func() { _ = d.Close() })
		if p := d.Pool(); p != nil {
			if err := p.Ready(ctx); err != nil {
				t.Fatalf("pool not ready: %v (%+v)", err, p.Stats())
			}
		}
		tag := cfg.ContainerLabelTag
		return &test.Harness{
			Driver:       d,
			Image:        env.localImage,
			PullImage:    env.pullImage,
			MissingImage: env.registry + "/fnrun/does-not-exist:latest",
			RemoveImage:  d.RemoveImage,
			Leftovers: func(ctx context.Context) ([]string, error) {
				return in.allLeftovers(ctx, env, tag, !d.Closed())
			},
			MainPID: func(ctx context.Context, id string) (int, error) {
				ctx = in.ctx(ctx)
				ctr, err := in.client.LoadContainer(ctx, id)
				if err != nil {
					return 0, err
				}
				task, err := ctr.Task(ctx, nil)
				if err != nil {
					return 0, err
				}
				return int(task.Pid()), nil
			},
		}
	}
}

// allLeftovers lists what a driver of tag made and has not removed:
// containers, tasks, snapshots, leases, network namespaces and address
// leases. With liveHolders, the holders of a running pool, and what
// belongs to them, are not counted.
func (in *inspector) allLeftovers(ctx context.Context, env testEnv, tag string, liveHolders bool) ([]string, error) {
	left, err := in.leftovers(ctx, tag)
	if err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	if liveHolders {
		holders, err := in.client.Containers(in.ctx(ctx), labelFilter(LabelTag, "==", tag)+","+labelFilter(drivers.LabelRole, "==", drivers.RoleHolder))
		if err != nil {
			return nil, err
		}
		skip := map[string]bool{}
		for _, h := range holders {
			skip["container "+h.ID()], skip["task "+h.ID()], skip["snapshot "+h.ID()] = true, true, true
			labels, err := h.Labels(in.ctx(ctx))
			if err != nil {
				continue // removed since the listing
			}
			if p := labels[LabelNetNS]; p != "" {
				keep[p] = true
			}
		}
		kept := left[:0]
		for _, l := range left {
			if !skip[l] {
				kept = append(kept, l)
			}
		}
		left = kept
	}
	nets, err := in.netLeftovers(env, tag, keep)
	if err != nil {
		return nil, err
	}
	return append(left, nets...), nil
}
