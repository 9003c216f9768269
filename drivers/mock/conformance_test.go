package mock_test

import (
	"context"
	"fmt"
	"strconv"
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
			left := d.ContainerNames()
			if n := d.OpenCookies(); n > 0 {
				left = append(left, fmt.Sprintf("%d open cookies", n))
			}
			return left, nil
		},
		Script: script,
	}
}

// script turns the suite's description of a command into the mock's
// extensions.
func script(task *drivers.Task, s test.Script) {
	ext := map[string]string{}
	set := func(k string, on bool, v string) {
		if on {
			ext[k] = v
		}
	}
	set(mock.ExtStdout, s.Stdout != "", s.Stdout)
	set(mock.ExtStderr, s.Stderr != "", s.Stderr)
	set(mock.ExtExitCode, s.ExitCode != 0, strconv.Itoa(s.ExitCode))
	set(mock.ExtDelay, s.Delay > 0, s.Delay.String())
	set(mock.ExtHang, s.Hang, "true")
	set(mock.ExtEchoStdin, s.EchoStdin, "true")
	set(mock.ExtOOM, s.OOM, "true")
	set(mock.ExtChildOOM, s.ChildOOM, "true")
	set(mock.ExtImageMissing, s.ImageMissing, "true")
	task.Ext = ext
}

func TestConformance(t *testing.T) {
	test.Run(t, newHarness)
}
