package docker

import (
	"context"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/lifecycle"
)

// BenchmarkPool times a cold call running `true` three ways in the same
// run: through the driver without a pool (the default bridge network, a
// namespace and a veth per call), through the driver with a pool (joining
// a warm holder), and with bare go-dockerclient calls joining a holder of
// the same image (`container:<id>`) with the same create options. Each
// iteration runs all three, in an order that rotates, so that the drift of
// a shared host's load falls on all of them alike. It reports the p50 of
// each and the ratios pooled/bridge (target at most 0.5) and
// pooled-driver/bare-pooled (target at most 1.10).
func BenchmarkPool(b *testing.B) {
	e := needEnv(b)
	ctx := context.Background()
	plain := newDriver(b, drivers.Config{})
	pooled := newPooledDriver(b, drivers.Config{PreForkPoolSize: 1})

	// The bare path: the pooled driver's own create options, joining a
	// holder the benchmark starts like the pool does.
	proto, err := pooled.CreateCookie(ctx, &drivers.Task{ID: "fnrun-bench-proto", ImageRef: e.localImage, Cmd: "true"})
	if err != nil {
		b.Fatal(err)
	}
	opts := *proto.ContainerOptions().(*docker.CreateContainerOptions)
	_ = proto.Close(ctx)
	hs := pooled.Settings().PreFork
	holder := pooled.d.holderOptions(lifecycle.CreateSpec{Labels: pooled.Settings().Labels(drivers.RoleHolder), Holder: &hs})
	bare := bareBenchClient(b, e.host)
	holder.Name, holder.Context = "fnrun-bench-holder-"+randomID(), ctx
	hctr, err := bare.CreateContainer(holder)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = bare.RemoveContainer(docker.RemoveContainerOptions{ID: hctr.ID, Force: true})
	})
	if err := bare.StartContainer(hctr.ID, nil); err != nil {
		b.Fatal(err)
	}
	host := *opts.HostConfig
	host.NetworkMode = "container:" + hctr.ID
	opts.HostConfig = &host

	variants := []struct {
		name string
		run  func() error
	}{
		{"bridge", func() error { return driverLifecycle(ctx, plain, e.localImage, "fnrun-bench-p-"+randomID()) }},
		{"pooled", func() error { return driverLifecycle(ctx, pooled, e.localImage, "fnrun-bench-d-"+randomID()) }},
		{"bare-pooled", func() error { return bareLifecycle(ctx, bare, opts, "fnrun-bench-b-"+randomID()) }},
	}
	// One warm-up of each, untimed: the first calls pay for connections.
	for _, v := range variants {
		if err := v.run(); err != nil {
			b.Fatalf("%s: %v", v.name, err)
		}
	}
	lat := make([][]time.Duration, len(variants))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range variants {
			j := (i + k) % len(variants)
			start := time.Now()
			if err := variants[j].run(); err != nil {
				b.Fatalf("%s: %v", variants[j].name, err)
			}
			lat[j] = append(lat[j], time.Since(start))
		}
	}
	b.StopTimer()
	if st, _ := pooled.PoolStats(); st.Misses != 0 {
		b.Errorf("the pooled driver missed %d times: not every pooled run joined a holder", st.Misses)
	}
	bridge, pool, barePool := p50(lat[0]), p50(lat[1]), p50(lat[2])
	b.ReportMetric(ms(bridge), "bridge-p50-ms")
	b.ReportMetric(ms(pool), "pooled-p50-ms")
	b.ReportMetric(ms(barePool), "bare-pooled-p50-ms")
	if bridge > 0 && barePool > 0 {
		r1, r2 := float64(pool)/float64(bridge), float64(pool)/float64(barePool)
		b.ReportMetric(r1, "pooled/bridge")
		b.ReportMetric(r2, "pooled/bare-pooled")
		b.Logf("p50 over %d alternating samples each: bridge %.1fms, pooled %.1fms, bare pooled %.1fms; pooled/bridge %.3f (target <= 0.5), pooled/bare-pooled %.3f (target <= 1.10)",
			len(lat[0]), ms(bridge), ms(pool), ms(barePool), r1, r2)
	}
}
