package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fnrun/fnrun/test"
)

func TestServeHelpAndBadFlags(t *testing.T) {
	t.Parallel()
	res := fnrunArgs(t, "serve", "--help")
	if res.code != 0 || !strings.HasPrefix(res.stdout, "Usage: fnrun serve") {
		t.Fatalf("serve --help:\n%s", res)
	}
	for _, flag := range []string{"--addr HOST:PORT", "--max-containers N", "--max-queue N", "--freeze-idle DURATION", "--shutdown-timeout DURATION", "--config FILE"} {
		if !strings.Contains(res.stdout, flag) {
			t.Errorf("serve --help does not mention %q", flag)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--max-queue", "0"}, "must be positive"},
		{[]string{"serve", "--log-format", "xml"}, "want text or json"},
		{[]string{"serve", "extra"}, `unexpected argument "extra"`},
		{[]string{"serve", "--driver", "podman"}, `unknown driver "podman"`},
	} {
		res := fnrunArgs(t, tc.args...)
		if res.code != exitUsage {
			t.Errorf("%v: exit %d, want %d", tc.args, res.code, exitUsage)
		}
		oneErrorLine(t, res, tc.want)
	}
}

// TestServeRealDriver runs the binary as an operator would: start fnrun
// serve, deploy the test function with Fn's API, call it, stop it with
// SIGTERM, and find no container of its label tag left.
func TestServeRealDriver(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, d, _ string, _ []string) {
		env := test.Env(t, "FNRUN_FNFUNC_IMAGE")
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		tag := "fnrun-serve-cli-test-" + randomHex(4)
		// ps with the server's own instance id lists what it left behind;
		// another id would remove it first.
		instance := "serve-test-" + randomHex(4)
		state, err := os.MkdirTemp("", "fnsrv")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(state)
		cmd := exec.Command(binary(t), "serve", "--driver", d, "--addr", addr, "--state-dir", state,
			"--label-tag", tag, "--instance", instance, "--log-format", "json", "--shutdown-timeout", "20s")
		cmd.Env = os.Environ()
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		logs := make(chan []string, 1)
		go func() {
			var lines []string
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				lines = append(lines, sc.Text())
			}
			logs <- lines
		}()
		stopped := false
		defer func() {
			if !stopped {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
		}()

		api := "http://" + addr
		deadline := time.Now().Add(60 * time.Second)
		for {
			resp, err := http.Get(api + "/health")
			if err == nil {
				resp.Body.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("fnrun serve did not answer: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		post := func(path, body string) (int, http.Header, string) {
			resp, err := http.Post(api+path, "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, resp.Header, string(b)
		}
		var app, fn struct{ ID string }
		_, _, body := post("/v2/apps", `{"name":"cli"}`)
		_ = json.Unmarshal([]byte(body), &app)
		_, _, body = post("/v2/fns", fmt.Sprintf(`{"app_id":%q,"name":"f","image":%q}`, app.ID, env["FNRUN_FNFUNC_IMAGE"]))
		_ = json.Unmarshal([]byte(body), &fn)
		for i, want := range []string{"cold", "hot"} {
			code, h, body := post("/invoke/"+fn.ID, "cli")
			if code != 200 || body != "hello cli" || h.Get("Fnrun-Start") != want {
				t.Fatalf("call %d: %d %s %v", i, code, body, h)
			}
		}

		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		err = cmd.Wait()
		stopped = true
		lines := <-logs
		if err != nil {
			t.Fatalf("fnrun serve after SIGTERM: %v\n%s", err, strings.Join(lines, "\n"))
		}
		var sawStop bool
		for _, line := range lines {
			var entry map[string]any
			if json.Unmarshal([]byte(line), &entry) != nil {
				t.Errorf("a log line is not JSON: %s", line)
			}
			if entry["msg"] == "stopped; every container removed" {
				sawStop = true
			}
		}
		if !sawStop {
			t.Errorf("no stop line in the log:\n%s", strings.Join(lines, "\n"))
		}
		ps := run(t, cli{args: []string{"ps", "--driver", d, "--label-tag", tag, "--instance", instance}})
		if ps.code != 0 || strings.Count(strings.TrimSpace(ps.stdout), "\n") != 0 {
			t.Fatalf("containers left after SIGTERM:\n%s", ps)
		}
		if entries, _ := os.ReadDir(filepath.Join(state, "iofs")); len(entries) != 0 {
			t.Errorf("socket folders left: %v", entries)
		}
	})
}
