package docker

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
)

// BenchmarkCookieLifecycle times the whole life of a cookie running `true`
// (validate, create, attach, start, wait, remove) through the driver, and
// the same daemon steps done with bare go-dockerclient calls and the same
// create options.
//
// The host is shared and its load drifts over seconds, which skews two
// sub-benchmarks run one after the other. So each iteration of either
// sub-benchmark also runs the other life cycle, untimed, just before its
// own: both kinds are sampled alternately under the same conditions. Each
// sub-benchmark reports the p50 of its own timed runs; bare also reports
// the driver/bare ratio of the p50s over every sample of both (target: at
// most 1.10).
func BenchmarkCookieLifecycle(b *testing.B) {
	e := needEnv(b)
	d := newDriver(b, drivers.Config{})
	ctx := context.Background()

	// The bare steps use the options the driver would send, so that both
	// sides ask the daemon for the same container.
	proto, err := d.CreateCookie(ctx, &drivers.Task{ID: "fnrun-bench-proto", ImageRef: e.localImage, Cmd: "true"})
	if err != nil {
		b.Fatal(err)
	}
	opts := *proto.ContainerOptions().(*docker.CreateContainerOptions)
	_ = proto.Close(ctx)
	bare := bareBenchClient(b, e.host)

	runDriver := func() error {
		return driverLifecycle(ctx, d, e.localImage, "fnrun-bench-d-"+randomID())
	}
	runBare := func() error {
		return bareLifecycle(ctx, bare, opts, "fnrun-bench-b-"+randomID())
	}
	// samples of the last invocation of each sub-benchmark, timed and companion
	var driverLat, bareLat [2][]time.Duration
	measure := func(b *testing.B, own, companion func() error) (ownLat, companionLat []time.Duration) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			start := time.Now()
			if err := companion(); err != nil {
				b.Fatal(err)
			}
			companionLat = append(companionLat, time.Since(start))
			b.StartTimer()
			start = time.Now()
			if err := own(); err != nil {
				b.Fatal(err)
			}
			ownLat = append(ownLat, time.Since(start))
		}
		b.ReportMetric(ms(p50(ownLat)), "p50-ms")
		return ownLat, companionLat
	}
	b.Run("driver", func(b *testing.B) {
		driverLat[0], bareLat[0] = measure(b, runDriver, runBare)
	})
	b.Run("bare", func(b *testing.B) {
		bareLat[1], driverLat[1] = measure(b, runBare, runDriver)
		dp, bp := p50(append(driverLat[0], driverLat[1]...)), p50(append(bareLat[0], bareLat[1]...))
		if dp > 0 && bp > 0 {
			ratio := float64(dp) / float64(bp)
			b.ReportMetric(ratio, "driver/bare-p50")
			b.Logf("p50 over %d alternating samples each: driver %.1fms, bare %.1fms, ratio driver/bare %.3f (target <= 1.10)",
				len(driverLat[0])+len(driverLat[1]), ms(dp), ms(bp), ratio)
		}
	})
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func driverLifecycle(ctx context.Context, d *Driver, image, id string) error {
	c, err := d.CreateCookie(ctx, &drivers.Task{ID: id, ImageRef: image, Cmd: "true"})
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

// bareBenchClient is a go-dockerclient client with a keep-alive connection
// pool like the driver's, so that the comparison is of the steps, not of
// go-dockerclient's default of one connection per call.
func bareBenchClient(b *testing.B, endpoint string) *docker.Client {
	c, err := docker.NewClient(endpoint)
	if err != nil {
		b.Fatal(err)
	}
	sock := strings.TrimPrefix(endpoint, "unix://")
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
		MaxIdleConnsPerHost: 100,
	}
	c.HTTPClient = &http.Client{Transport: tr}
	b.Cleanup(tr.CloseIdleConnections)
	return c
}

func bareLifecycle(ctx context.Context, c *docker.Client, opts docker.CreateContainerOptions, name string) error {
	if _, err := c.InspectImage(opts.Config.Image); err != nil {
		return err
	}
	opts.Name, opts.Context = name, ctx
	ctr, err := c.CreateContainer(opts)
	if err != nil {
		return err
	}
	defer c.RemoveContainer(docker.RemoveContainerOptions{ID: ctr.ID, Force: true, RemoveVolumes: true, Context: ctx})
	success := make(chan struct{})
	cw, err := c.AttachToContainerNonBlocking(docker.AttachToContainerOptions{
		Container: ctr.ID, OutputStream: io.Discard, ErrorStream: io.Discard,
		Stream: true, Stdout: true, Stderr: true, Success: success,
	})
	if err != nil {
		return err
	}
	<-success
	success <- struct{}{}
	if err := c.StartContainerWithContext(ctr.ID, nil, ctx); err != nil {
		return err
	}
	code, err := c.WaitContainerWithContext(ctr.ID, ctx)
	if err != nil {
		return err
	}
	if err := cw.Wait(); err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("exit %d", code)
	}
	return c.RemoveContainer(docker.RemoveContainerOptions{ID: ctr.ID, Force: true, RemoveVolumes: true, Context: ctx})
}

func p50(lat []time.Duration) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), lat...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
