package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fnrun/fnrun/test"
)

// The tests below run the binary against the real daemons of the test
// environment (make up). Without it they skip; with CI=true they fail.

// realDriver is one driver under test with the environment it needs.
type realDriver struct {
	name string
	env  []string // variables the driver needs
}

var realDriverEnvs = []realDriver{
	{"docker", []string{"FNRUN_DOCKER_HOST", "FNRUN_TEST_IMAGE"}},
	{"containerd", []string{"FNRUN_CONTAINERD_ADDRESS", "FNRUN_TEST_IMAGE"}},
}

// forEachDriver runs f as a parallel subtest per real driver, with the
// test image and a label tag of the test's own.
func forEachDriver(t *testing.T, f func(t *testing.T, d string, image string, tagEnv []string)) {
	for _, rd := range realDriverEnvs {
		t.Run(rd.name, func(t *testing.T) {
			t.Parallel()
			env := test.Env(t, rd.env...)
			f(t, rd.name, env["FNRUN_TEST_IMAGE"], labelTagEnv())
		})
	}
}

// labelTagEnv gives an invocation a label tag no other test uses.
func labelTagEnv() []string {
	return []string{"FNRUN_LABEL_TAG=fnrun-cli-test-" + randomHex(4)}
}

func TestRunRealDrivers(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, d, image string, tag []string) {
		runIt := func(t *testing.T, c cli) result {
			t.Helper()
			c.args = append([]string{"run", "--driver", d}, c.args...)
			c.env = append(c.env, tag...)
			return run(t, c)
		}
		t.Run("output and quoting", func(t *testing.T) {
			t.Parallel()
			res := runIt(t, cli{args: []string{"--no-network", image, "--", "echo", "hello", "a  b", "it's"}})
			if res.code != 0 || res.stdout != "hello a  b it's\n" || withoutProgress(res.stderr) != "" {
				t.Fatalf("want the words echoed as given:\n%s", res)
			}
		})
		t.Run("exit code", func(t *testing.T) {
			t.Parallel()
			res := runIt(t, cli{args: []string{"--no-network", image, "--", "sh", "-c", "echo out; echo err >&2; exit 3"}})
			if res.code != 3 || res.stdout != "out\n" || withoutProgress(res.stderr) != "err\n" {
				t.Fatalf("want exit 3 with out/err on their streams:\n%s", res)
			}
		})
		t.Run("stdin", func(t *testing.T) {
			t.Parallel()
			in := "line 1\nline 2 without newline"
			res := runIt(t, cli{args: []string{"--no-network", image, "--", "cat"}, stdin: strings.NewReader(in)})
			if res.code != 0 || res.stdout != in {
				t.Fatalf("want stdin through cat:\n%s", res)
			}
		})
		t.Run("env and workdir", func(t *testing.T) {
			t.Parallel()
			res := runIt(t, cli{
				args: []string{"--no-network", "-e", "GREETING=hello there", "--env", "FROM_FNRUN", "-w", "/tmp", image, "--", "sh", "-c", `echo "$GREETING|$FROM_FNRUN|$(pwd)"`},
				env:  []string{"FROM_FNRUN=copied"},
			})
			if res.code != 0 || res.stdout != "hello there|copied|/tmp\n" {
				t.Fatalf("want env and workdir in the container:\n%s", res)
			}
		})
		t.Run("limits in the cgroup", func(t *testing.T) {
			t.Parallel()
			script := `cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes
cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max
cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us
ulimit -n
grep " /tmp " /proc/mounts`
			res := runIt(t, cli{args: []string{"--no-network", "--memory", "64m", "--pids", "32", "--cpus", "0.5", "--nofile", "123", "--tmpfs-size", "16m", image, "--", "sh", "-c", script}})
			lines := strings.Split(res.stdout, "\n")
			if res.code != 0 || len(lines) < 5 {
				t.Fatalf("limits script failed:\n%s", res)
			}
			for i, want := range []string{"67108864", "32", "50000", "123", "size=16384k"} {
				if !strings.Contains(lines[i], want) {
					t.Errorf("line %d = %q, want %q in it:\n%s", i, lines[i], want, res)
				}
			}
		})
		t.Run("volume", func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			// The container runs as an unprivileged user: let it read.
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "f"), []byte("from the host"), 0o644); err != nil {
				t.Fatal(err)
			}
			res := runIt(t, cli{args: []string{"--no-network", "--volume", dir + ":/data", image, "--", "cat", "/data/f"}})
			if res.code != 0 || res.stdout != "from the host" {
				t.Fatalf("want the host file through the volume:\n%s", res)
			}
		})
		t.Run("read-only root", func(t *testing.T) {
			t.Parallel()
			res := runIt(t, cli{args: []string{"--no-network", "--read-only", image, "--", "sh", "-c", "touch /tmp/ok && ! touch /nope 2>/dev/null && echo ro"}})
			if res.code != 0 || res.stdout != "ro\n" {
				t.Fatalf("want a read-only root with a writable /tmp:\n%s", res)
			}
		})
		t.Run("network", func(t *testing.T) {
			t.Parallel()
			with := runIt(t, cli{args: []string{image, "--", "cat", "/proc/net/dev"}})
			without := runIt(t, cli{args: []string{"--network=false", image, "--", "cat", "/proc/net/dev"}})
			if with.code != 0 || without.code != 0 {
				t.Fatalf("runs failed:\n%s\n%s", with, without)
			}
			if !strings.Contains(with.stdout, "eth0") {
				t.Errorf("no eth0 with a network:\n%s", with)
			}
			if strings.Contains(without.stdout, "eth0") {
				t.Errorf("eth0 with --network=false:\n%s", without)
			}
		})
		t.Run("timeout", func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			res := runIt(t, cli{args: []string{"--no-network", "--timeout", "1s", image, "--", "sleep", "30"}})
			if res.code != exitTimeout {
				t.Errorf("exit %d, want %d:\n%s", res.code, exitTimeout, res)
			}
			oneErrorLine(t, res, "timed out after 1s")
			if took := time.Since(start); took > 15*time.Second {
				t.Errorf("a 1s timeout took %v", took)
			}
		})
		t.Run("verbose", func(t *testing.T) {
			t.Parallel()
			res := runIt(t, cli{args: []string{"-v", "--no-network", "--memory", "32m", image, "--", "sleep", "5"}})
			if res.code != 0 {
				t.Fatalf("run failed:\n%s", res)
			}
			for _, want := range []string{"driver " + d, "status success, exit code 0", "timings: connect", "validate", "create", "run", "close", "total", "stats: ", "samples", "memory peak"} {
				if !strings.Contains(res.stderr, want) {
					t.Errorf("-v does not print %q:\n%s", want, res)
				}
			}
		})
		t.Run("missing image", func(t *testing.T) {
			t.Parallel()
			reg := os.Getenv("FNRUN_REGISTRY")
			if reg == "" {
				t.Skip("FNRUN_REGISTRY not set")
			}
			res := runIt(t, cli{args: []string{reg + "/fnrun/no-such-image:" + randomHex(3), "--", "true"}})
			if res.code != exitRunError {
				t.Errorf("exit %d, want %d:\n%s", res.code, exitRunError, res)
			}
			oneErrorLine(t, res, "image not found")
		})
	})
}

func TestPsAndKill(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, d, image string, tag []string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		name := "fnrun-cli-test-" + randomHex(4)
		bg := exec.CommandContext(ctx, binary(t), "run", "--driver", d, "--no-network", "--name", name, image, "--", "sleep", "60")
		bg.Env = append(os.Environ(), tag...)
		var bgErr bytes.Buffer
		bg.Stderr = &bgErr
		if err := bg.Start(); err != nil {
			t.Fatal(err)
		}
		bgDone := make(chan error, 1)
		go func() { bgDone <- bg.Wait() }()
		defer func() {
			_ = bg.Process.Kill()
			<-bgDone
		}()

		// The container appears in ps, running.
		var id string
		deadline := time.Now().Add(60 * time.Second)
		for id == "" {
			res := run(t, cli{args: []string{"ps", "--driver", d}, env: tag})
			if res.code != 0 {
				t.Fatalf("ps failed:\n%s", res)
			}
			id = findRow(res.stdout, d, "running")
			if id == "" && time.Now().After(deadline) {
				t.Fatalf("no running container in ps after 60s:\n%s", res)
			}
			if id == "" {
				time.Sleep(200 * time.Millisecond)
			} else if !strings.HasPrefix(strings.Split(res.stdout, "\n")[0], "DRIVER") || !strings.Contains(res.stdout, "call") {
				t.Errorf("ps output lacks its header or the call role:\n%s", res)
			}
		}
		if d == "containerd" && id != name {
			t.Errorf("containerd id %q, want the name %q", id, name)
		}
		// ps --all shows it too; another label tag does not.
		if res := run(t, cli{args: []string{"ps", "--all"}, env: tag}); res.code != 0 || !strings.Contains(res.stdout, id) {
			t.Errorf("ps --all does not list %s:\n%s", id, res)
		}
		if res := run(t, cli{args: []string{"ps", "--driver", d}, env: labelTagEnv()}); strings.Contains(res.stdout, id) {
			t.Errorf("ps with another label tag lists %s:\n%s", id, res)
		}

		// kill ends it: the background run ends at once, not after 60s.
		res := run(t, cli{args: []string{"kill", id}, env: tag})
		if res.code != 0 || strings.TrimSpace(res.stdout) != id {
			t.Fatalf("kill failed:\n%s", res)
		}
		select {
		case err := <-bgDone:
			bgDone <- err
			if err == nil {
				t.Errorf("the killed run exited 0; stderr: %s", bgErr.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the run did not end within 30s of its kill")
		}
		if res := run(t, cli{args: []string{"ps", "--driver", d}, env: tag}); strings.Contains(res.stdout, id) {
			t.Errorf("ps still lists %s after kill:\n%s", id, res)
		}
		// Killing it again: not found, one line, non-zero.
		res = run(t, cli{args: []string{"kill", "--driver", d, id}, env: tag})
		if res.code == 0 {
			t.Errorf("a second kill succeeded:\n%s", res)
		}
		oneErrorLine(t, res, "no container")
	})
}

// findRow returns the id of the first row of driver d in state.
func findRow(out, d, state string) string {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 4 && f[0] == d && f[3] == state {
			return f[1]
		}
	}
	return ""
}

func TestImages(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, d, image string, tag []string) {
		// The test image is present after one run.
		if res := run(t, cli{args: []string{"run", "--driver", d, "--no-network", image, "--", "true"}, env: tag}); res.code != 0 {
			t.Fatalf("run failed:\n%s", res)
		}
		repo := strings.TrimSuffix(image, ":latest")
		res := run(t, cli{args: []string{"images", "--driver", d}, env: tag})
		if res.code != 0 || !strings.Contains(res.stdout, repo) || !strings.HasPrefix(res.stdout, "IMAGE") {
			t.Fatalf("images does not list %s:\n%s", repo, res)
		}
		for _, col := range []string{"SIZE", "SHARED", "LAST USE", "BUSY", "EXEMPT"} {
			if !strings.Contains(res.stdout, col) {
				t.Errorf("no %s column:\n%s", col, res)
			}
		}

		// A dry run over a small budget (the exempt image must fit in it)
		// lists what it would remove and
		// removes nothing; the exempt image is never listed.
		res = run(t, cli{args: []string{"images", "clean", "--driver", d, "--max-size", "3m", "--dry-run", "--exempt", image}, env: tag})
		if res.code != 0 || !strings.Contains(res.stdout, "would remove") {
			t.Fatalf("dry run failed:\n%s", res)
		}
		for _, line := range strings.Split(res.stdout, "\n") {
			if strings.HasPrefix(line, repo+" ") || strings.HasPrefix(line, repo+":") {
				t.Errorf("the exempt image is listed for removal: %q\n%s", line, res)
			}
		}
		after := run(t, cli{args: []string{"images", "--driver", d}, env: tag})
		if !strings.Contains(after.stdout, repo) {
			t.Errorf("the image is gone after a dry run:\n%s", after)
		}
		// A budget nothing exceeds removes nothing, for real.
		res = run(t, cli{args: []string{"images", "clean", "--driver", d, "--max-size", "1t"}, env: tag})
		if res.code != 0 || !strings.Contains(res.stdout, "removed 0 image(s)") {
			t.Errorf("clean under budget:\n%s", res)
		}
	})
}

func TestPool(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, d, image string, tag []string) {
		res := run(t, cli{args: []string{"pool", "--driver", d, "--size", "2", "--image", image}, env: tag})
		if res.code != 0 || !strings.Contains(res.stdout, "pool ready on "+d) {
			t.Fatalf("pool failed:\n%s", res)
		}
		var row []string
		for _, line := range strings.Split(res.stdout, "\n") {
			if f := strings.Fields(line); len(f) == 9 && f[0] == d {
				row = f
			}
		}
		// DRIVER FREE LEASED STARTING SIZE MISSES REPLACEMENTS DEATHS FAILURES
		if row == nil || row[1] != "2" || row[2] != "0" || row[3] != "0" || row[4] != "2" {
			t.Errorf("want 2 free holders of 2:\n%s", res)
		}
		// The holders are gone once fnrun pool exits.
		ps := run(t, cli{args: []string{"ps", "--driver", d}, env: tag})
		if strings.Contains(ps.stdout, "holder") {
			t.Errorf("holders left after fnrun pool:\n%s", ps)
		}
	})
}

func TestDoctor(t *testing.T) {
	t.Parallel()
	test.Env(t, "FNRUN_DOCKER_HOST", "FNRUN_CONTAINERD_ADDRESS", "FNRUN_REGISTRY")
	res := fnrunArgs(t, "doctor")
	if res.code != 0 {
		t.Errorf("doctor fails in the test environment:\n%s", res)
	}
	for _, want := range []string{"ok    docker", "ok    containerd", "ok    cgroups", "ok    freezer", "ok    registry", "ok    cni"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("doctor does not say %q:\n%s", want, res)
		}
	}

	// An unreachable daemon fails, with what to fix.
	res = fnrunArgs(t, "doctor", "--driver", "docker", "--docker-host", "unix:///nonexistent/docker.sock", "--registry", "127.0.0.1:1")
	if res.code != exitFailure {
		t.Errorf("exit %d, want %d:\n%s", res.code, exitFailure, res)
	}
	for _, want := range []string{"FAIL  docker", "FAIL  registry", "fix: start dockerd", "required check(s) failed"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("doctor does not say %q:\n%s", want, res)
		}
	}
}

func TestBenchQuick(t *testing.T) {
	t.Parallel()
	test.Env(t, "FNRUN_DOCKER_HOST", "FNRUN_CONTAINERD_ADDRESS", "FNRUN_TEST_IMAGE")
	png := filepath.Join(t.TempDir(), "bench.png")
	res := run(t, cli{args: []string{"bench", "--all", "--quick", "--png", png}, env: labelTagEnv(), timeout: 3 * time.Minute})
	if res.code != 0 {
		t.Fatalf("bench failed:\n%s", res)
	}
	if !regexpLine(res.stdout, "DRIVER +MODE +CLIENT +CALLS +CONC +P50 +RESULT .* P50/BARE +P50/MIN +RESULT/RUNC +NOTE") {
		t.Errorf("no table header:\n%s", res)
	}
	for _, mode := range []string{"cold", "pooled"} {
		for _, client := range []string{"minimal", "runc"} {
			if !regexpLine(res.stdout, fmt.Sprintf("containerd +%s +%s +3 +1 ", mode, client)) {
				t.Errorf("no row containerd %s %s:\n%s", mode, client, res)
			}
		}
	}
	for _, d := range []string{"docker", "containerd"} {
		for _, mode := range []string{"cold", "pooled", "warm"} {
			for _, client := range []string{"fnrun", "bare"} {
				if !regexpLine(res.stdout, fmt.Sprintf("%s +%s +%s +3 +1 ", d, mode, client)) {
					t.Errorf("no row %s %s %s with 3 calls at concurrency 1:\n%s", d, mode, client, res)
				}
			}
		}
	}
	for _, want := range []string{"machine: ", "docker: Docker Engine", "containerd: ", "pool misses 0", "warm:   a hot container"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("bench output lacks %q:\n%s", want, res)
		}
	}
	data, err := os.ReadFile(png)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")) || len(data) < 1000 {
		t.Errorf("%s is not a PNG (%d bytes)", png, len(data))
	}
}

// SIGINT to fnrun run ends the container, removes it and exits 130.
func TestRunInterrupted(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, d, image string, tag []string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		bg := exec.CommandContext(ctx, binary(t), "run", "--driver", d, "--no-network", image, "--", "sleep", "60")
		bg.Env = append(os.Environ(), tag...)
		var stderr bytes.Buffer
		bg.Stderr = &stderr
		if err := bg.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			res := run(t, cli{args: []string{"ps", "--driver", d}, env: tag})
			if findRow(res.stdout, d, "running") != "" {
				break
			}
			if time.Now().After(deadline) {
				_ = bg.Process.Kill()
				_ = bg.Wait()
				t.Fatalf("the container never ran:\n%s", res)
			}
			time.Sleep(200 * time.Millisecond)
		}
		start := time.Now()
		if err := bg.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		err := bg.Wait()
		var exit *exec.ExitError
		if !errorsAs(err, &exit) || exit.ExitCode() != 130 {
			t.Errorf("exit: %v, want 130; stderr: %s", err, stderr.String())
		}
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("the interrupted run took %v to end", took)
		}
		if !strings.Contains(stderr.String(), "cancelled") {
			t.Errorf("stderr does not say the call was cancelled: %s", stderr.String())
		}
		if res := run(t, cli{args: []string{"ps", "--driver", d}, env: tag}); strings.Count(res.stdout, "\n") != 1 {
			t.Errorf("containers left after the interrupted run:\n%s", res)
		}
	})
}

// The --config file configures the driver; the environment and flags
// override it.
func TestConfigFileReal(t *testing.T) {
	t.Parallel()
	env := test.Env(t, "FNRUN_DOCKER_HOST", "FNRUN_TEST_IMAGE")
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	bad := filepath.Join(dir, "bad.json")
	write := func(path, docker string) {
		data := fmt.Sprintf(`{"docker": %q, "container_label_tag": "fnrun-cli-test-%s"}`, docker, randomHex(4))
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(good, env["FNRUN_DOCKER_HOST"])
	write(bad, "unix:///nonexistent/docker.sock")
	noEnv := []string{"FNRUN_DOCKER_HOST=", "DOCKER_HOST="}
	args := func(extra ...string) []string {
		return append(append([]string{"run"}, extra...), "--no-network", env["FNRUN_TEST_IMAGE"], "--", "echo", "ok")
	}
	if res := run(t, cli{args: args("--config", good), env: noEnv}); res.code != 0 || res.stdout != "ok\n" {
		t.Errorf("the file's docker endpoint is not used:\n%s", res)
	}
	if res := run(t, cli{args: args("--config", bad), env: noEnv}); res.code != exitRunError || !strings.Contains(res.stderr, "/nonexistent/docker.sock") {
		t.Errorf("the file's bad endpoint is not used:\n%s", res)
	}
	if res := run(t, cli{args: args("--config", bad)}); res.code != 0 {
		t.Errorf("FNRUN_DOCKER_HOST does not override the file:\n%s", res)
	}
	if res := run(t, cli{args: args("--config", bad, "--docker-host", env["FNRUN_DOCKER_HOST"]), env: noEnv}); res.code != 0 {
		t.Errorf("--docker-host does not override the file:\n%s", res)
	}
	if res := run(t, cli{args: args("--config", good), env: []string{"FNRUN_DOCKER_HOST=", "FNRUN_CONFIG=" + bad}}); res.code != 0 {
		t.Errorf("--config does not override FNRUN_CONFIG:\n%s", res)
	}
}
