// Command demo runs one function call through every registered fnrun
// driver and prints how it went: status, output and the time each step of
// the cookie life cycle took. `make demo` runs it against the real daemons
// that `make up` starts.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fnrun/fnrun/drivers"
	_ "github.com/fnrun/fnrun/drivers/containerd" // registers "containerd"
	_ "github.com/fnrun/fnrun/drivers/docker"     // registers "docker"
	"github.com/fnrun/fnrun/drivers/mock"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := drivers.Config{
		Docker:              os.Getenv("FNRUN_DOCKER_HOST"),
		Containerd:          os.Getenv("FNRUN_CONTAINERD_ADDRESS"),
		ContainerdNamespace: os.Getenv("FNRUN_CONTAINERD_NAMESPACE"),
		CNIConfDir:          os.Getenv("FNRUN_CNI_CONF"),
		CNIBinDir:           os.Getenv("FNRUN_CNI_BIN"),
		ContainerLabelTag:   "fnrun-demo",
		InstanceId:          fmt.Sprintf("demo-%d", os.Getpid()),
	}
	image := os.Getenv("FNRUN_TEST_IMAGE")
	if image == "" {
		return errors.New("FNRUN_TEST_IMAGE is not set: run `make demo`, which starts the test environment first")
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DRIVER\tSTATUS\tOUTPUT\tVALIDATE\tPULL\tCREATE\tRUN\tCLOSE\tTOTAL")
	failed := false
	for _, name := range drivers.Drivers() {
		line, err := callThrough(name, cfg, image)
		if err != nil {
			failed = true
			fmt.Fprintf(tw, "%s\tfailed\t%v\n", name, err)
			continue
		}
		fmt.Fprintln(tw, line)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if failed {
		return errors.New("at least one driver failed")
	}
	return nil
}

// callThrough runs one call through the driver registered as name, the way
// an agent does, and returns a table row.
func callThrough(name string, cfg drivers.Config, image string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	drv, err := drivers.New(name, cfg)
	if err != nil {
		return "", err
	}
	defer drv.Close()

	var stdout bytes.Buffer
	greeting := "hello from " + name
	task := &drivers.Task{
		ID:          fmt.Sprintf("fnrun-demo-%s-%d", name, time.Now().UnixNano()),
		ImageRef:    image,
		Cmd:         "echo " + drivers.QuoteCommand([]string{greeting}),
		Stdout:      &stdout,
		MemoryBytes: 64 << 20,
		MilliCPUs:   500,
		MaxPIDs:     32,
		// The mock runs nothing; its script stands in for the command.
		Ext: map[string]string{mock.ExtStdout: greeting + "\n"},
	}
	cookie, err := drv.CreateCookie(ctx, task)
	if err != nil {
		return "", err
	}
	defer cookie.Close(context.Background())

	var steps [5]time.Duration
	start := time.Now()
	timed := func(i int, f func() error) error {
		t := time.Now()
		err := f()
		steps[i] = time.Since(t)
		return err
	}
	var needsPull bool
	if err := timed(0, func() (err error) { needsPull, err = cookie.ValidateImage(ctx); return err }); err != nil {
		return "", err
	}
	if needsPull {
		if err := timed(1, func() error { return cookie.PullImage(ctx) }); err != nil {
			return "", err
		}
	}
	if err := timed(2, func() error { return cookie.CreateContainer(ctx) }); err != nil {
		return "", err
	}
	var res drivers.RunResult
	if err := timed(3, func() error {
		wait, err := cookie.Run(ctx)
		if err != nil {
			return err
		}
		res = wait.Wait(ctx)
		return nil
	}); err != nil {
		return "", err
	}
	if err := timed(4, func() error { return cookie.Close(ctx) }); err != nil {
		return "", err
	}
	total := time.Since(start)
	if res.Error() != nil {
		return "", fmt.Errorf("%s: %w", res.Status(), res.Error())
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }
	pull := "-"
	if needsPull {
		pull = ms(steps[1])
	}
	return strings.Join([]string{name, res.Status(), fmt.Sprintf("%q", stdout.String()),
		ms(steps[0]), pull, ms(steps[2]), ms(steps[3]), ms(steps[4]), ms(total)}, "\t"), nil
}
