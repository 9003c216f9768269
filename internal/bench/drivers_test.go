package bench

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	_ "github.com/fnrun/fnrun/drivers/docker" // registers "docker"
	"github.com/fnrun/fnrun/test"
)

// BenchmarkDrivers compares every driver with a daemon here with its bare
// client, mode by mode, as `fnrun bench` does and with the same twins:
// b.N calls per client, alternating in rounds. It reports each side's p50
// and the fnrun/bare ratio of the p50s.
//
//	go test -run '^$' -bench Drivers -benchtime 30x ./internal/bench/
func BenchmarkDrivers(b *testing.B) {
	env := test.Env(b, "FNRUN_DOCKER_HOST", "FNRUN_CONTAINERD_ADDRESS", "FNRUN_CONTAINERD_NAMESPACE", "FNRUN_TEST_IMAGE")
	cfg := drivers.Config{
		Docker:              env["FNRUN_DOCKER_HOST"],
		Containerd:          env["FNRUN_CONTAINERD_ADDRESS"],
		ContainerdNamespace: env["FNRUN_CONTAINERD_NAMESPACE"],
		CNIConfDir:          os.Getenv("FNRUN_CNI_CONF"),
		CNIBinDir:           os.Getenv("FNRUN_CNI_BIN"),
		ContainerLabelTag:   "bench-" + randomID(),
	}
	for _, name := range []string{"docker", "containerd"} {
		for _, mode := range []string{Cold, Pooled, Warm} {
			b.Run(name+"/"+mode, func(b *testing.B) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
				defer cancel()
				s := &Session{Driver: name, Config: cfg, Image: env["FNRUN_TEST_IMAGE"],
					Options: Options{N: b.N, Concurrency: 1, Rounds: min(b.N, 3), Warmup: 1}}
				b.ResetTimer()
				res, errs := s.Run(ctx, mode)
				b.StopTimer()
				for _, err := range errs {
					b.Fatal(err)
				}
				var fnrun, bare time.Duration
				for _, r := range res {
					p50 := r.Percentile(50)
					b.ReportMetric(float64(p50)/float64(time.Millisecond), r.Variant.Client+"-p50-ms")
					if r.Variant.Client == Fnrun {
						fnrun = p50
					} else {
						bare = p50
					}
				}
				if fnrun > 0 && bare > 0 {
					b.ReportMetric(float64(fnrun)/float64(bare), "fnrun/bare-p50")
				}
			})
		}
	}
}
