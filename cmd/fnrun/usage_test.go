package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// These tests need no daemon: they check what fnrun says before it
// connects to anything.

func TestHelpOfEverySubcommand(t *testing.T) {
	t.Parallel()
	cases := map[string][]string{
		"":             {"--help"},
		"run":          {"run", "--help"},
		"ps":           {"ps", "--help"},
		"kill":         {"kill", "-h"},
		"images":       {"images", "--help"},
		"images clean": {"images", "clean", "--help"},
		"pool":         {"pool", "--help"},
		"doctor":       {"doctor", "--help"},
		"bench":        {"bench", "--help"},
		"help run":     {"help", "run"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res := fnrunArgs(t, args...)
			if res.code != 0 || res.stderr != "" {
				t.Fatalf("want exit 0 and no stderr:\n%s", res)
			}
			want := "Usage: fnrun"
			if name != "" {
				want = "Usage: fnrun " + strings.TrimPrefix(name, "help ")
			}
			if !strings.HasPrefix(res.stdout, want) {
				t.Errorf("stdout does not start with %q:\n%s", want, res)
			}
			if name != "" && name != "help run" && !strings.Contains(res.stdout, "--config FILE") {
				t.Errorf("the configuration flags are not listed:\n%s", res)
			}
		})
	}
	// The flags a user looks for are documented.
	res := fnrunArgs(t, "run", "--help")
	for _, flag := range []string{"--memory SIZE", "--cpus CPUS", "--pids N", "--timeout DURATION", "-e, --env K=V", "-w, --workdir DIR",
		"--volume HOST:CONTAINER", "--read-only", "--tmpfs-size SIZE", "--network", "--no-network", "--nofile N", "-v, --verbose", "-i, --interactive",
		"124", "137", "125"} {
		if !strings.Contains(res.stdout, flag) {
			t.Errorf("run --help does not mention %q", flag)
		}
	}
}

func TestBadInputIsOneLineAndNonZero(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	badConfig := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(badConfig, []byte(`{"dockre": "unix:///x"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", nil, exitUsage, "Usage"},
		{"unknown command", []string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{"run without image", []string{"run"}, exitRunError, "an IMAGE is required"},
		{"run unknown flag", []string{"run", "--nope", "busybox"}, exitRunError, "flag provided but not defined: -nope"},
		{"run bad memory", []string{"run", "--memory", "lots", "busybox"}, exitRunError, `invalid size "lots"`},
		{"run bad cpus", []string{"run", "--cpus", "-1", "busybox"}, exitRunError, "--cpus"},
		{"run bad env", []string{"run", "-e", "=x", "busybox"}, exitRunError, "want K=V"},
		{"run bad volume", []string{"run", "--volume", "/a", "busybox"}, exitRunError, "HOST:CONTAINER"},
		{"run bad tmpfs", []string{"run", "--tmpfs-size", "1000", "busybox"}, exitRunError, "whole number of MiB"},
		{"run bad image", []string{"run", "UPPER/case::x"}, exitRunError, "invalid task"},
		{"run unknown driver", []string{"run", "--driver", "podman", "busybox"}, exitRunError, `unknown driver "podman"`},
		{"run missing config", []string{"run", "--config", filepath.Join(dir, "none.json"), "busybox"}, exitRunError, "config file"},
		{"run config typo", []string{"run", "--config", badConfig, "busybox"}, exitRunError, `unknown field "dockre"`},
		{"ps driver and all", []string{"ps", "--all", "--driver", "docker"}, exitUsage, "exclude each other"},
		{"ps argument", []string{"ps", "extra"}, exitUsage, `unexpected argument "extra"`},
		{"kill nothing", []string{"kill"}, exitUsage, "container ID is required"},
		{"images clean no budget", []string{"images", "clean", "--driver", "mock"}, exitUsage, "--max-size is required"},
		{"images clean bad size", []string{"images", "clean", "--max-size", "big"}, exitUsage, `invalid size "big"`},
		{"pool bad size", []string{"pool", "--size", "-1"}, exitUsage, "--size"},
		{"bench bad n", []string{"bench", "--n", "0"}, exitUsage, "--n must be positive"},
		{"bench bad mode", []string{"bench", "--modes", "hot"}, exitUsage, `unknown mode "hot"`},
		{"bench log level", []string{"bench", "--log-level", "loud", "--driver", "mock"}, exitFailure, `log level "loud"`},
		{"doctor bad timeout", []string{"doctor", "--timeout", "-1s"}, exitUsage, "--timeout must be positive"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			res := fnrunArgs(t, c.args...)
			if res.code != c.code {
				t.Errorf("exit %d, want %d:\n%s", res.code, c.code, res)
			}
			if c.name == "no command" {
				if !strings.Contains(res.stderr, c.want) {
					t.Errorf("no usage on stderr:\n%s", res)
				}
				return
			}
			oneErrorLine(t, res, c.want)
		})
	}
}

// The mock driver runs nothing, but every exit path of fnrun run can be
// scripted with its task extensions.
func TestRunOnTheMock(t *testing.T) {
	t.Parallel()
	t.Run("output", func(t *testing.T) {
		t.Parallel()
		res := fnrunArgs(t, "run", "--driver", "mock", "--ext", "mock.stdout=hello\n", "--ext", "mock.stderr=warning\n", "busybox")
		if res.code != 0 || res.stdout != "hello\n" || withoutProgress(res.stderr) != "warning\n" {
			t.Fatalf("want hello on stdout and warning on stderr:\n%s", res)
		}
	})
	t.Run("exit code", func(t *testing.T) {
		t.Parallel()
		res := fnrunArgs(t, "run", "--driver", "mock", "--ext", "mock.exit_code=3", "busybox")
		if res.code != 3 || withoutProgress(res.stderr) != "" {
			t.Fatalf("want exit 3 and no stderr:\n%s", res)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		t.Parallel()
		res := run(t, cli{args: []string{"run", "--driver", "mock", "--ext", "mock.echo_stdin=true", "busybox"}, stdin: strings.NewReader("piped\n")})
		if res.code != 0 || res.stdout != "piped\n" {
			t.Fatalf("want the input echoed:\n%s", res)
		}
	})
	t.Run("out of memory", func(t *testing.T) {
		t.Parallel()
		res := fnrunArgs(t, "run", "--driver", "mock", "--ext", "mock.oom=true", "busybox")
		if res.code != exitOOM {
			t.Errorf("exit %d, want %d:\n%s", res.code, exitOOM, res)
		}
		oneErrorLine(t, res, "out of memory")
	})
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		res := fnrunArgs(t, "run", "--driver", "mock", "--ext", "mock.hang=true", "--timeout", "200ms", "busybox")
		if res.code != exitTimeout {
			t.Errorf("exit %d, want %d:\n%s", res.code, exitTimeout, res)
		}
		oneErrorLine(t, res, "timed out after 200ms")
	})
	t.Run("missing image", func(t *testing.T) {
		t.Parallel()
		res := fnrunArgs(t, "run", "--driver", "mock", "--ext", "mock.image_missing=true", "busybox")
		if res.code != exitRunError {
			t.Errorf("exit %d, want %d:\n%s", res.code, exitRunError, res)
		}
		if !strings.Contains(res.stderr, "image not found") {
			t.Errorf("stderr does not say the image is missing:\n%s", res)
		}
	})
	t.Run("verbose", func(t *testing.T) {
		t.Parallel()
		res := fnrunArgs(t, "run", "-v", "--driver", "mock", "--ext", "mock.delay=10ms", "busybox")
		for _, want := range []string{"status success, exit code 0", "timings: connect", "validate", "pull", "create", "run", "close", "total", "stats:"} {
			if !strings.Contains(res.stderr, want) {
				t.Errorf("-v does not print %q:\n%s", want, res)
			}
		}
	})
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "fnrun.json")
	if err := os.WriteFile(file, []byte(`{"docker": "unix:///file.sock", "containerd": "/file.sock",
		"containerd_namespace": "file-ns", "cni_conf_dir": "/file/conf", "pre_fork_pool_size": 3}`), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"FNRUN_DOCKER_HOST":        "unix:///env.sock",
		"DOCKER_HOST":              "unix:///docker-host.sock",
		"FNRUN_CONTAINERD_ADDRESS": "/env.sock",
		"FNRUN_CONFIG":             file,
	}
	getenv := func(k string) string { return env[k] }

	fs := newFlagSet("test", "", "")
	cf := addConfigFlags(fs)
	if err := fs.Parse([]string{"--containerd-address", "/flag.sock"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := cf.load(getenv)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %q, want %q", what, got, want)
		}
	}
	check("flag over env", cfg.Containerd, "/flag.sock")
	check("FNRUN_ env over DOCKER_HOST and the file", cfg.Docker, "unix:///env.sock")
	check("file over default", cfg.ContainerdNamespace, "file-ns")
	check("file", cfg.CNIConfDir, "/file/conf")
	check("default label tag", cfg.ContainerLabelTag, defaultLabelTag)
	check("default instance", cfg.InstanceId, defaultInstance)
	if cfg.PreForkPoolSize != 3 {
		t.Errorf("pre_fork_pool_size from the file = %d, want 3", cfg.PreForkPoolSize)
	}

	delete(env, "FNRUN_DOCKER_HOST")
	cfg, _ = cf.load(getenv)
	check("DOCKER_HOST over the file", cfg.Docker, "unix:///docker-host.sock")

	fs = newFlagSet("test", "", "")
	cf = addConfigFlags(fs)
	if err := fs.Parse([]string{"--config", filepath.Join(dir, "missing.json")}); err != nil {
		t.Fatal(err)
	}
	if _, err := cf.load(getenv); err == nil {
		t.Error("a --config file that does not exist is not an error")
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]uint64{"0": 0, "512": 512, "512b": 512, "1k": 1024, "64m": 64 << 20, "64M": 64 << 20, "64MB": 64 << 20,
		"64MiB": 64 << 20, "1.5g": 3 << 29, "2t": 2 << 40}
	for in, want := range good {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "m", "ib", "-1m", "1x", "lots", "1e400"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
	cpus := map[string]uint64{"0.5": 500, "2": 2000, "0.001": 1}
	for in, want := range cpus {
		if got, err := parseCPUs(in); err != nil || got != want {
			t.Errorf("parseCPUs(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "-1", "0.0001", "x"} {
		if _, err := parseCPUs(in); err == nil {
			t.Errorf("parseCPUs(%q): want an error", in)
		}
	}
	if got := formatSize(64 << 20); got != "64MiB" {
		t.Errorf("formatSize(64MiB) = %q", got)
	}
}

// The mock needs no daemon: a bench over it checks the table, the notes
// and the chart without one.
func TestBenchOnTheMock(t *testing.T) {
	t.Parallel()
	png := filepath.Join(t.TempDir(), "mock.png")
	res := fnrunArgs(t, "bench", "--driver", "mock", "--quick", "--png", png)
	if res.code != 0 {
		t.Fatalf("bench failed:\n%s", res)
	}
	// The mock runs a pre-fork pool like the real drivers (its holders
	// are simulated), but no command, so no warm call.
	for _, want := range []string{`DRIVER\s+MODE\s+CLIENT\s+CALLS\s+CONC`, `mock\s+cold\s+fnrun\s+3\s+1`, `mock\s+pooled\s+fnrun\s+3\s+1`,
		"note: mock warm: skipped", "chart: " + regexp.QuoteMeta(png)} {
		if !regexp.MustCompile(want).MatchString(res.stdout) {
			t.Errorf("bench output lacks %q:\n%s", want, res)
		}
	}
	if data, err := os.ReadFile(png); err != nil || !strings.HasPrefix(string(data), "\x89PNG") {
		t.Errorf("no PNG at %s: %v", png, err)
	}
}
