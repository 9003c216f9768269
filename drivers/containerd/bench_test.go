package containerd

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/fnrun/fnrun/drivers"
	dockerdrv "github.com/fnrun/fnrun/drivers/docker"
)

// BenchmarkCookieLifecycle times the whole life of a cookie running `true`
// (validate, create, run, wait, close) through the driver, next to the same
// daemon steps done with bare containerd client calls and the spec the
// driver generated (NewContainer, NewTask, Wait, Start, wait for the exit,
// delete task and container). Each sub-benchmark reports its p50; bare
// also reports the driver/bare ratio of the p50s (target: at most 1.10).
// A third sub-benchmark, docker, runs the same life cycle through the
// docker driver against the environment's dockerd, so the two drivers are
// compared side by side in one run (skipped when there is no dockerd).
// The containerd tasks ask for no network (loopback only), so the figures
// are the container life cycle alone; BenchmarkPool measures networking.
// Use a fixed count for stable figures: -benchtime=50x.
func BenchmarkCookieLifecycle(b *testing.B) {
	env := requireEnv(b)
	d := newTestDriver(b, env, drivers.Config{})
	ctx := d.d.nsCtx(context.Background())

	spec := prototypeSpec(b, d, env.localImage, true)

	var driverP50 time.Duration
	b.Run("driver", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			id := fmt.Sprintf("fnrun-bench-d-%s-%d", randomID(), i)
			start := time.Now()
			if err := driverLifecycle(ctx, d, env.localImage, id, true); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		driverP50 = p50(lat)
		b.ReportMetric(ms(driverP50), "p50-ms")
	})

	b.Run("bare", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			id := fmt.Sprintf("fnrun-bench-b-%s-%d", randomID(), i)
			start := time.Now()
			if err := bareLifecycle(ctx, d, env.localImage, spec, id); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		bareP50 := p50(lat)
		b.ReportMetric(ms(bareP50), "p50-ms")
		if driverP50 > 0 && bareP50 > 0 {
			ratio := float64(driverP50) / float64(bareP50)
			b.ReportMetric(ratio, "driver/bare-p50")
			if b.N > 1 { // the N=1 probe run is all warm-up
				b.Logf("p50 driver %v, bare %v, ratio driver/bare %.3f (target <= 1.10)", driverP50, bareP50, ratio)
			}
		}
	})

	// paired alternates one driver and one bare life cycle per iteration,
	// so both see the same machine load: on a shared machine it is the
	// figure to trust when the sequential ones drift apart.
	b.Run("paired", func(b *testing.B) {
		dl := make([]time.Duration, 0, b.N)
		bl := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			start := time.Now()
			if err := driverLifecycle(ctx, d, env.localImage, fmt.Sprintf("fnrun-bench-pd-%s-%d", randomID(), i), true); err != nil {
				b.Fatal(err)
			}
			dl = append(dl, time.Since(start))
			start = time.Now()
			if err := bareLifecycle(ctx, d, env.localImage, spec, fmt.Sprintf("fnrun-bench-pb-%s-%d", randomID(), i)); err != nil {
				b.Fatal(err)
			}
			bl = append(bl, time.Since(start))
		}
		dp, bp := p50(dl), p50(bl)
		ratio := float64(dp) / float64(bp)
		b.ReportMetric(ms(dp), "driver-p50-ms")
		b.ReportMetric(ms(bp), "bare-p50-ms")
		b.ReportMetric(ratio, "driver/bare-p50")
		if b.N > 1 {
			b.Logf("paired: p50 driver %v, bare %v, ratio driver/bare %.3f (target <= 1.10)", dp, bp, ratio)
		}
	})

	b.Run("docker", func(b *testing.B) {
		dd := dockerDriver(b)
		image := getenv("FNRUN_LOCAL_IMAGE", "fnrun-test/busybox:latest")
		lat := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			id := fmt.Sprintf("fnrun-bench-k-%s-%d", randomID(), i)
			start := time.Now()
			if err := driverLifecycle(ctx, dd, image, id, false); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		dockerP50 := p50(lat)
		b.ReportMetric(ms(dockerP50), "p50-ms")
		if driverP50 > 0 && dockerP50 > 0 {
			b.ReportMetric(float64(driverP50)/float64(dockerP50), "containerd/docker-p50")
			if b.N > 1 {
				b.Logf("p50 containerd driver %v, docker driver %v", driverP50, dockerP50)
			}
		}
	})
}

// dockerDriver is the docker driver on the environment's dockerd, or a
// skip when there is none.
func dockerDriver(b *testing.B) drivers.Driver {
	host := os.Getenv("FNRUN_DOCKER_HOST")
	if host == "" {
		b.Skip("FNRUN_DOCKER_HOST not set: no docker side-by-side figure")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dd, err := dockerdrv.New(ctx, drivers.Config{Docker: host, ContainerLabelTag: "bench-" + randomID()})
	if err != nil {
		b.Skipf("no docker driver on %s: %v", host, err)
	}
	b.Cleanup(func() { _ = dd.Close() })
	return dd
}

// driverLifecycle runs `true` through a whole cookie life cycle; noNet
// asks for no network (a fresh namespace with loopback only).
func driverLifecycle(ctx context.Context, d drivers.Driver, image, id string, noNet bool) error {
	var out syncBuf
	c, err := d.CreateCookie(ctx, &drivers.Task{ID: id, ImageRef: image, Cmd: "true", Stdout: &out, Stderr: &out, NoNetwork: noNet})
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	if need, err := c.ValidateImage(ctx); err != nil || need {
		return fmt.Errorf("validate: %v, %v", need, err)
	}
	if err := c.CreateContainer(ctx); err != nil {
		return err
	}
	w, err := c.Run(ctx)
	if err != nil {
		return err
	}
	if res := w.Wait(ctx); res.Status() != drivers.StatusSuccess {
		return fmt.Errorf("status %s: %v", res.Status(), res.Error())
	}
	return c.Close(ctx)
}

// prototypeSpec is the spec the driver generates for the benchmark's task.
func prototypeSpec(b testing.TB, d *Driver, image string, noNet bool) *oci.Spec {
	ctx := d.d.nsCtx(context.Background())
	id := "fnrun-bench-proto-" + randomID()
	c, err := d.CreateCookie(ctx, &drivers.Task{ID: id, ImageRef: image, Cmd: "true", NoNetwork: noNet})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(ctx)
	if err := c.CreateContainer(ctx); err != nil {
		b.Fatal(err)
	}
	ctr, err := d.Client().LoadContainer(ctx, id)
	if err != nil {
		b.Fatal(err)
	}
	spec, err := ctr.Spec(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return spec
}

// bareLifecycle does with plain client calls (of d's client) what the
// driver does for one cookie: find the image, write the /etc files (with
// the driver's own helper: the same work), create the container on a new
// snapshot with the same spec (its own cgroup, host name and /etc files),
// create the task with FIFO streams, wait, start, wait for the exit and
// the output, delete both and the files.
func bareLifecycle(ctx context.Context, d *Driver, image string, proto *oci.Spec, id string) (err error) {
	client := d.Client()
	img, err := client.GetImage(ctx, image)
	if err != nil {
		return err
	}
	spec := *proto
	linux := *proto.Linux
	linux.CgroupsPath = "/" + d.Namespace() + "/" + id
	spec.Linux = &linux
	spec.Hostname = id
	etcDir, err := d.d.writeEtcFiles(id, id, netInfo{})
	if err != nil {
		return err
	}
	defer os.RemoveAll(etcDir)
	spec.Mounts = slices.DeleteFunc(slices.Clone(proto.Mounts), func(m specs.Mount) bool {
		return slices.Contains(etcFileNames, strings.TrimPrefix(m.Destination, "/etc/"))
	})
	if err := withEtcFiles(etcDir)(ctx, nil, nil, &spec); err != nil {
		return err
	}
	ctr, err := client.NewContainer(ctx, id,
		ctrd.WithSnapshotter(DefaultSnapshotter),
		ctrd.WithNewSnapshot(id, img),
		ctrd.WithSpec(&spec),
		ctrd.WithRuntime(DefaultRuntime, nil))
	if err != nil {
		return err
	}
	defer func() {
		if err != nil { // clean up a failed iteration only: not timed otherwise
			if t, terr := ctr.Task(ctx, nil); terr == nil {
				_, _ = t.Delete(ctx, ctrd.WithProcessKill)
			}
			_ = ctr.Delete(ctx, ctrd.WithSnapshotCleanup)
		}
	}()
	var out, errOut bytes.Buffer // one each: the two copies run concurrently
	task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &out, &errOut)))
	if err != nil {
		return err
	}
	statusC, err := task.Wait(ctx)
	if err != nil {
		return err
	}
	if err := task.Start(ctx); err != nil {
		return err
	}
	st := <-statusC
	task.IO().Wait()
	if code := st.ExitCode(); code != 0 || st.Error() != nil {
		return fmt.Errorf("exit %d: %v", code, st.Error())
	}
	if _, err := task.Delete(ctx); err != nil {
		return err
	}
	return ctr.Delete(ctx, ctrd.WithSnapshotCleanup)
}

func p50(lat []time.Duration) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), lat...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkPool times a trivial call (`true`, the whole cookie life cycle)
// three ways, alternating one of each per iteration so that all three see
// the same machine load:
//
//   - fresh: the driver without the pool, each container in a namespace of
//     its own with a fresh CNI network (set up and torn down per call);
//   - pooled: the driver with the pre-fork pool, joining a holder's
//     namespace;
//   - bare: bare containerd client calls (as in BenchmarkCookieLifecycle)
//     with the pooled driver's spec, joining a holder leased from the
//     pool outside the timed section.
//
// It reports each p50 and the ratios pooled/fresh (target: below 1) and
// pooled/bare (target: at most 1.10). Use a fixed count: -benchtime=30x.
func BenchmarkPool(b *testing.B) {
	env := requireEnv(b)
	fresh := newTestDriver(b, env, drivers.Config{})
	pooled := poolDriver(b, env, drivers.Config{PreForkPoolSize: 2})
	if fresh.d.cni == nil {
		b.Fatal("no CNI network: the fresh variant would not build one")
	}
	ctx := pooled.d.nsCtx(context.Background())
	spec := prototypeSpec(b, pooled, env.localImage, false)
	missesBefore := pooled.Pool().Stats().Misses

	var fl, pl, bl []time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := driverLifecycle(ctx, fresh, env.localImage, fmt.Sprintf("fnrun-bench-f-%s-%d", randomID(), i), false); err != nil {
			b.Fatal(err)
		}
		fl = append(fl, time.Since(start))

		start = time.Now()
		if err := driverLifecycle(ctx, pooled, env.localImage, fmt.Sprintf("fnrun-bench-p-%s-%d", randomID(), i), false); err != nil {
			b.Fatal(err)
		}
		pl = append(pl, time.Since(start))

		lease, ok := pooled.Pool().Lease(ctx)
		if !ok {
			b.Fatal("no free holder for the bare variant")
		}
		joined := withNetNS(spec, lease.Holder().NetNSPath)
		start = time.Now()
		err := bareLifecycle(ctx, pooled, env.localImage, joined, fmt.Sprintf("fnrun-bench-b-%s-%d", randomID(), i))
		bl = append(bl, time.Since(start))
		lease.Release()
		if err != nil {
			b.Fatal(err)
		}
	}
	if s := pooled.Pool().Stats(); s.Misses != missesBefore {
		b.Fatalf("pooled variant missed the pool %d times: it measured fresh networks too", s.Misses-missesBefore)
	}
	fp, pp, bp := p50(fl), p50(pl), p50(bl)
	b.ReportMetric(ms(fp), "fresh-p50-ms")
	b.ReportMetric(ms(pp), "pooled-p50-ms")
	b.ReportMetric(ms(bp), "bare-p50-ms")
	b.ReportMetric(float64(pp)/float64(fp), "pooled/fresh-p50")
	b.ReportMetric(float64(pp)/float64(bp), "pooled/bare-p50")
	if b.N > 1 { // the N=1 probe run is all warm-up
		b.Logf("p50 over %d calls each: fresh CNI %v, pooled driver %v, bare pooled %v; pooled/fresh %.3f (target < 1), pooled/bare %.3f (target <= 1.10)",
			b.N, fp, pp, bp, float64(pp)/float64(fp), float64(pp)/float64(bp))
	}
}

// withNetNS copies spec with its network namespace set to path.
func withNetNS(spec *oci.Spec, path string) *oci.Spec {
	s := *spec
	linux := *spec.Linux
	linux.Namespaces = append([]specs.LinuxNamespace(nil), spec.Linux.Namespaces...)
	for i := range linux.Namespaces {
		if linux.Namespaces[i].Type == specs.NetworkNamespace {
			linux.Namespaces[i].Path = path
		}
	}
	s.Linux = &linux
	return &s
}
