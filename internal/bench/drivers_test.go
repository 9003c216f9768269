package bench

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	_ "github.com/fnrun/fnrun/drivers/docker" // registers "docker"
	"github.com/fnrun/fnrun/pool"
	"github.com/fnrun/fnrun/test"
)

// benchConfig is the configuration of the daemons `make up` started, with
// a label tag of the benchmark's own, and the test image.
func benchConfig(b *testing.B) (drivers.Config, string) {
	env := test.Env(b, "FNRUN_DOCKER_HOST", "FNRUN_CONTAINERD_ADDRESS", "FNRUN_CONTAINERD_NAMESPACE", "FNRUN_TEST_IMAGE")
	return drivers.Config{
		Docker:              env["FNRUN_DOCKER_HOST"],
		Containerd:          env["FNRUN_CONTAINERD_ADDRESS"],
		ContainerdNamespace: env["FNRUN_CONTAINERD_NAMESPACE"],
		CNIConfDir:          os.Getenv("FNRUN_CNI_CONF"),
		CNIBinDir:           os.Getenv("FNRUN_CNI_BIN"),
		ContainerLabelTag:   "bench-" + randomID(),
	}, env["FNRUN_TEST_IMAGE"]
}

// BenchmarkDrivers compares every driver with a daemon here with its bare
// client, mode by mode, as `fnrun bench` does and with the same twins:
// b.N calls per client, alternating in rounds. It reports each side's p50
// and the ratios of fnrun's p50 to the bare, minimal and runc ones.
//
//	go test -run '^$' -bench Drivers -benchtime 30x ./internal/bench/
func BenchmarkDrivers(b *testing.B) {
	cfg, image := benchConfig(b)
	for _, name := range []string{"docker", "containerd"} {
		for _, mode := range []string{Cold, Pooled, Warm} {
			b.Run(name+"/"+mode, func(b *testing.B) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
				defer cancel()
				s := &Session{Driver: name, Config: cfg, Image: image,
					Options: Options{N: b.N, Concurrency: 1, Rounds: min(b.N, 3), Warmup: 1}}
				b.ResetTimer()
				res, errs := s.Run(ctx, mode)
				b.StopTimer()
				for _, err := range errs {
					b.Fatal(err)
				}
				p50 := map[string]time.Duration{}
				for _, r := range res {
					p50[r.Variant.Client] = r.Percentile(50)
					b.ReportMetric(float64(p50[r.Variant.Client])/float64(time.Millisecond), r.Variant.Client+"-p50-ms")
				}
				for _, twin := range []string{Bare, Minimal, Runc} {
					if p50[Fnrun] > 0 && p50[twin] > 0 {
						b.ReportMetric(float64(p50[Fnrun])/float64(p50[twin]), "fnrun/"+twin+"-p50")
					}
				}
			})
		}
	}
}

// BenchmarkNoNetPool compares calls of tasks with DisableNet with and
// without holders of no network to join (PreForkNoNetPoolSize), call by
// call alternating, on every driver with a daemon here.
//
//	go test -run '^$' -bench NoNetPool -benchtime 30x ./internal/bench/
func BenchmarkNoNetPool(b *testing.B) {
	cfg, image := benchConfig(b)
	for _, name := range []string{"docker", "containerd"} {
		b.Run(name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
			defer cancel()
			plain, err := drivers.Open(ctx, name, cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer plain.Close()
			pcfg := cfg
			pcfg.PreForkNoNetPoolSize, pcfg.PreForkImage = 1, image
			// A label tag is one agent's: a second instance with the same
			// tag would reap the first's containers, namespaces and folders
			// as a crashed predecessor's.
			pcfg.ContainerLabelTag = "bench-" + randomID()
			pooled, err := drivers.Open(ctx, name, pcfg)
			if err != nil {
				b.Fatal(err)
			}
			defer pooled.Close()
			np := pooled.(interface{ NoNetPool() *pool.Pool }).NoNetPool()
			if err := np.Ready(ctx); err != nil {
				b.Fatal(err)
			}
			call := func(d drivers.Driver) time.Duration {
				start := time.Now()
				task := &drivers.Task{ID: callID("nn"), ImageRef: image, Cmd: TrivialCommand, NoNetwork: true}
				if err := Lifecycle(ctx, d, task); err != nil {
					b.Fatal(err)
				}
				return time.Since(start)
			}
			call(plain) // warm-up
			call(pooled)
			misses := np.Stats().Misses
			var without, with []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				without = append(without, call(plain))
				with = append(with, call(pooled))
			}
			b.StopTimer()
			w, p := percentile(without, 50), percentile(with, 50)
			b.ReportMetric(float64(w)/float64(time.Millisecond), "without-p50-ms")
			b.ReportMetric(float64(p)/float64(time.Millisecond), "pooled-p50-ms")
			b.ReportMetric(float64(p)/float64(w), "pooled/without-p50")
			b.ReportMetric(float64(np.Stats().Misses-misses), "misses")
		})
	}
}
