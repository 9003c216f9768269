package fn

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/test"
)

// Fn's TestRunnerDocker: a task without a command runs the image's own.
// Fn's image (busybox) runs sh, which ends at once without input; here
// the image's command says something, so that it is seen to run.
func TestRunnerImageCommand(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, r *rig) {
		reg := newRegistry(t, r.env["FNRUN_REGISTRY"], "", "")
		ref := reg.derive(t, "fnrun/fn-cmd-"+randomID(), "v1", imageSpec{cmd: []string{"sh", "-c", "echo from the image command"}})
		t.Cleanup(func() { r.removeImage(ref) })
		drv := r.open(t, drivers.Config{})
		ctx := testContext(t, time.Minute)
		task := r.task("cmd", "")
		task.ImageRef = ref
		out := run(t, ctx, drv, task)
		wantSuccess(t, out)
		if out.Stdout != "from the image command\n" {
			t.Errorf("stdout %q, want the image command's", out.Stdout)
		}
	})
}

// Fn's TestRunnerDockerStdout: a command's output reaches the task's
// stdout writer; and (the older TestRunnerDockerStdin) the task's input
// reaches the command.
func TestRunnerStdout(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, r *rig) {
		drv := r.open(t, drivers.Config{})
		ctx := testContext(t, time.Minute)
		out := run(t, ctx, drv, r.task("stdout", "echo hello"))
		wantSuccess(t, out)
		if out.Stdout != "hello\n" {
			t.Errorf("stdout %q, want %q", out.Stdout, "hello\n")
		}
		task := r.task("stdin", "cat")
		task.Stdin = strings.NewReader(`{"echoContent": "italian parsley"}`)
		out = run(t, ctx, drv, task)
		wantSuccess(t, out)
		if out.Stdout != `{"echoContent": "italian parsley"}` {
			t.Errorf("stdout %q, want the input back", out.Stdout)
		}
	})
}

// Fn's TestRunnerDockerNetworks: with DockerNetworks "a b", two containers
// get one network each. Fn reads its cookies' network ids; here the
// daemon says what network mode each container got. Docker only: the
// containerd driver gives containers a CNI network.
func TestRunnerDockerNetworks(t *testing.T) {
	t.Parallel()
	r := newRig(t, rtDocker)
	bare := r.docker()
	var names []string
	for range 2 {
		name := "fn-net-" + randomID()
		nw, err := bare.CreateNetwork(docker.CreateNetworkOptions{Name: name, Driver: "bridge"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := bare.RemoveNetwork(nw.ID); err != nil {
				t.Errorf("remove network %s: %v", name, err)
			}
		})
		names = append(names, name)
	}
	drv := r.open(t, drivers.Config{DockerNetworks: strings.Join(names, " ")})
	ctx := testContext(t, time.Minute)
	tally := map[string]int{}
	for range 2 {
		task := r.task("net", "true")
		prepared(t, ctx, drv, task)
		ctr, err := bare.InspectContainerWithContext(task.ID, ctx)
		if err != nil {
			t.Fatal(err)
		}
		tally[ctr.HostConfig.NetworkMode]++
	}
	for _, n := range names {
		if tally[n] != 1 {
			t.Errorf("network use %v, want one container on each of %v", tally, names)
			break
		}
	}
}

// Fn's TestRunnerDockerVersion: a daemon older than ServerVersion is
// refused. Fn exits the process (logrus.Fatal); fnrun's Open returns an
// error wrapping ErrInvalidConfig. Docker only: containerd has no such
// setting.
func TestRunnerDockerServerVersion(t *testing.T) {
	t.Parallel()
	r := newRig(t, rtDocker)
	r.open(t, drivers.Config{ServerVersion: "1.0.0"})
	drv, err := r.tryOpen(t, drivers.Config{ServerVersion: "9999.0.0"})
	if !errors.Is(err, drivers.ErrInvalidConfig) || drv != nil {
		t.Fatalf("Open with a daemon older than ServerVersion: %v, %v; want a nil driver and ErrInvalidConfig", drv, err)
	}
}

// Fn's TestRunnerDockerNoNetwork: a task with DisableNet gets no network.
// Fn checks Docker's network mode "none"; here the container itself shows
// it has nothing but the loopback interface, on both runtimes, and Docker
// also reports "none".
func TestRunnerNoNetwork(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, r *rig) {
		drv := r.open(t, drivers.Config{})
		ctx := testContext(t, time.Minute)
		task := r.task("nonet", "ls /sys/class/net")
		task.NoNetwork = true
		var stdout test.SyncBuffer
		task.Stdout = &stdout
		cookie := prepared(t, ctx, drv, task)
		if r.name == rtDocker {
			ctr, err := r.docker().InspectContainerWithContext(task.ID, ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ctr.HostConfig.NetworkMode != "none" {
				t.Errorf("network mode %q, want none", ctr.HostConfig.NetworkMode)
			}
		}
		wait, err := cookie.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if res := wait.Wait(ctx); res.Status() != drivers.StatusSuccess {
			t.Fatalf("status %s: %v", res.Status(), res.Error())
		}
		if got := strings.Fields(stdout.String()); len(got) != 1 || got[0] != "lo" {
			t.Errorf("interfaces %q, want only lo", got)
		}
	})
}

// Fn's TestRunnerDockerInvalidSyslog: a syslog endpoint that cannot be
// reached fails Run. Fn answers its own "Syslog Unavailable" error; fnrun
// wraps ErrSyslogUnavailable, on every driver, before the container
// starts, and leaves nothing behind.
func TestRunnerSyslogUnavailable(t *testing.T) {
	t.Parallel()
	eachRuntime(t, func(t *testing.T, r *rig) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close() // connections to it are refused from now on
		drv := r.open(t, drivers.Config{})
		ctx := testContext(t, time.Minute)
		task := r.task("syslog", "echo hi")
		task.Logging = drivers.LoggerConfig{URL: "tcp://" + addr}
		cookie := prepared(t, ctx, drv, task)
		if _, err := cookie.Run(ctx); !errors.Is(err, drivers.ErrSyslogUnavailable) {
			t.Errorf("Run with an unreachable syslog: %v, want ErrSyslogUnavailable", err)
		}
		if err := cookie.Close(ctx); err != nil {
			t.Fatal(err)
		}
	})
}
