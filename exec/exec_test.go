package exec_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/mock"
	"github.com/fnrun/fnrun/exec"
)

// target is one driver the exec tests run over.
type target struct {
	name  string
	drv   drivers.Driver
	image string
	// leftovers reports what the driver still holds once every command
	// has been waited for.
	leftovers func() int
}

// targets returns the drivers to test: the mock always, the real drivers
// when the test environment is up (see realTargets).
func targets(t *testing.T) []target {
	d, err := mock.New(drivers.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return append([]target{{name: "mock", drv: d, image: "fnrun-test/busybox", leftovers: d.OpenCookies}}, realTargets(t)...)
}

// script returns a Task hook that makes the mock behave like the command.
func script(kv ...string) func(*drivers.Task) {
	return func(task *drivers.Task) {
		task.Ext = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			task.Ext[kv[i]] = kv[i+1]
		}
	}
}

func forEachTarget(t *testing.T, f func(t *testing.T, tg target)) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			f(t, tg)
			if tg.leftovers != nil {
				if n := tg.leftovers(); n != 0 {
					t.Fatalf("%d objects left after Wait", n)
				}
			}
		})
	}
}

// within fails the test if f does not return in d: the point of several
// tests is that nothing hangs.
func within(t *testing.T, d time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("hung for %v", d)
	}
}

func TestOutput(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		cmd := exec.Command(tg.drv, tg.image, "echo", "hello", "world")
		cmd.Task = script(mock.ExtStdout, "hello world\n")
		out, err := cmd.Output()
		if err != nil || string(out) != "hello world\n" {
			t.Fatalf("Output = %q, %v", out, err)
		}
	})
}

// The reference package's known issue: output lost when the command exits
// at once without a trailing newline.
func TestOutputWithoutNewline(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for i := 0; i < 5; i++ {
			cmd := exec.Command(tg.drv, tg.image, "printf", "no-newline")
			cmd.Task = script(mock.ExtStdout, "no-newline")
			out, err := cmd.Output()
			if err != nil || string(out) != "no-newline" {
				t.Fatalf("run %d: Output = %q, %v", i, out, err)
			}
		}
	})
}

func TestExitError(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		cmd := exec.Command(tg.drv, tg.image, "sh", "-c", "echo bad >&2; exit 3")
		cmd.Task = script(mock.ExtStderr, "bad\n", mock.ExtExitCode, "3")
		_, err := cmd.Output()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode != 3 || string(exit.Stderr) != "bad\n" {
			t.Fatalf("Output error = %#v, want *ExitError{3, \"bad\\n\"}", err)
		}
		var drvExit *drivers.ExitError
		if !errors.As(err, &drvExit) || drvExit.ExitCode != 3 {
			t.Fatalf("error does not unwrap to *drivers.ExitError: %v", err)
		}
	})
}

// The other known issue: pipes that hang unless used from goroutines.
func TestStdoutPipeReadThenWait(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		cmd := exec.Command(tg.drv, tg.image, "sh", "-c", "echo one; echo two >&2; printf three")
		cmd.Task = script(mock.ExtStdout, "one\nthree", mock.ExtStderr, "two\n")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		within(t, time.Minute, func() {
			errOut := make(chan []byte)
			go func() { b, _ := io.ReadAll(stderr); errOut <- b }()
			out, err := io.ReadAll(stdout)
			if err != nil || string(out) != "one\nthree" {
				t.Errorf("stdout %q, %v", out, err)
			}
			if b := <-errOut; string(b) != "two\n" {
				t.Errorf("stderr %q", b)
			}
			if err := cmd.Wait(); err != nil {
				t.Errorf("Wait: %v", err)
			}
		})
	})
}

func TestStdinPipe(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		cmd := exec.Command(tg.drv, tg.image, "cat")
		cmd.Task = script(mock.ExtEchoStdin, "true")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		within(t, time.Minute, func() {
			if _, err := io.WriteString(stdin, "through the container"); err != nil {
				t.Errorf("write: %v", err)
			}
			stdin.Close()
			out, _ := io.ReadAll(stdout)
			if string(out) != "through the container" {
				t.Errorf("stdout %q", out)
			}
			if err := cmd.Wait(); err != nil {
				t.Errorf("Wait: %v", err)
			}
		})
	})
}

// A stdin pipe the caller never closes must not keep Wait from returning
// once the command has ended.
func TestUnclosedStdinPipe(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		cmd := exec.Command(tg.drv, tg.image, "echo", "ignored stdin")
		cmd.Task = script(mock.ExtStdout, "ignored stdin\n")
		if _, err := cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		cmd.Stdout = &out
		within(t, time.Minute, func() {
			if err := cmd.Run(); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
		if out.String() != "ignored stdin\n" {
			t.Fatalf("stdout %q", out.String())
		}
	})
}

func TestCombinedOutput(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		cmd := exec.Command(tg.drv, tg.image, "sh", "-c", "echo out; echo err >&2")
		cmd.Task = script(mock.ExtStdout, "out\n", mock.ExtStderr, "err\n")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatal(err)
		}
		if s := string(out); !strings.Contains(s, "out\n") || !strings.Contains(s, "err\n") || len(s) != 8 {
			t.Fatalf("combined output %q", s)
		}
	})
}

func TestKill(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		cmd := exec.Command(tg.drv, tg.image, "sleep", "120")
		cmd.Task = script(mock.ExtHang, "true")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if cmd.ContainerID() == "" {
			t.Fatal("no container id")
		}
		time.AfterFunc(300*time.Millisecond, func() { _ = cmd.Kill() })
		within(t, time.Minute, func() {
			err := cmd.Wait()
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Wait after Kill = %v, want cancelled", err)
			}
		})
	})
}

func TestContextTimeout(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, tg.drv, tg.image, "sleep", "120")
		cmd.Task = script(mock.ExtHang, "true")
		within(t, time.Minute, func() {
			if err := cmd.Run(); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Run = %v, want a deadline error", err)
			}
		})
	})
}

func TestStartFailureLeavesNothing(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		cmd := exec.Command(tg.drv, "Not A Valid::Image", "true")
		if err := cmd.Run(); !errors.Is(err, drivers.ErrInvalidTask) {
			t.Fatalf("Run = %v, want ErrInvalidTask", err)
		}
		if err := cmd.Wait(); err == nil {
			t.Fatal("Wait after a failed Start succeeded")
		}
	})
}

func TestEnvAndDir(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		if tg.name == "mock" {
			t.Skip("the mock runs no command")
		}
		cmd := exec.Command(tg.drv, tg.image, "sh", "-c", `echo "$A $PWD"`)
		cmd.Env = []string{"A=a b"}
		cmd.Dir = "/tmp"
		out, err := cmd.Output()
		if err != nil || string(out) != "a b /tmp\n" {
			t.Fatalf("Output = %q, %v", out, err)
		}
	})
}

// A pipe nobody reads any more holds up neither Kill nor Wait: the command
// ends, and its container is removed.
func TestUnreadStdoutPipe(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		cmd := exec.Command(tg.drv, tg.image, "sh", "-c", "echo first; sleep 0.2; head -c 4000000 /dev/zero; sleep 120")
		cmd.Task = script(mock.ExtStdout, "first\n"+strings.Repeat("x", 4000000), mock.ExtHang, "true")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		first := make([]byte, 6)
		if tg.name != "mock" { // the mock writes nothing before it ends
			if _, err := io.ReadFull(out, first); err != nil {
				t.Fatal(err)
			}
		}
		// Nobody reads any more; the container fills the pipe.
		time.AfterFunc(time.Second, func() { _ = cmd.Kill() })
		within(t, 30*time.Second, func() {
			if err := cmd.Wait(); !errors.Is(err, context.Canceled) {
				t.Errorf("Wait after Kill = %v, want cancelled", err)
			}
		})
	})
}
