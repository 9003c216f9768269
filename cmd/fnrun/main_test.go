package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// The CLI tests run the built binary, as a user does: its flags, output,
// exit status and effects on the real daemons.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binary builds the command once per test process.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "fnrun-cli-test-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "fnrun")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// cli describes one invocation of the binary.
type cli struct {
	args    []string
	stdin   io.Reader
	env     []string // added to (and overriding) the test's environment
	timeout time.Duration
}

type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs the binary and returns its exit code and output.
func run(t *testing.T, c cli) result {
	t.Helper()
	timeout := c.timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), c.args...)
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Stdin = c.stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		t.Fatalf("fnrun %s: did not end within %v\n%s", strings.Join(c.args, " "), timeout, res)
	case errorsAs(err, &exit):
		res.code = exit.ExitCode()
	default:
		t.Fatalf("fnrun %s: %v", strings.Join(c.args, " "), err)
	}
	return res
}

func errorsAs(err error, target **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	if ok {
		*target = e
	}
	return ok
}

// fnrunArgs runs the binary with args and no input.
func fnrunArgs(t *testing.T, args ...string) result {
	t.Helper()
	return run(t, cli{args: args})
}

// withoutProgress is stderr without the plain progress lines fnrun prints
// when stderr is not a terminal ("fnrun: pulling IMAGE").
func withoutProgress(stderr string) string {
	var keep []string
	for _, l := range strings.SplitAfter(stderr, "\n") {
		if !strings.HasPrefix(l, "fnrun: pulling ") && l != "" {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

// oneErrorLine checks that stderr, progress aside, is exactly one line
// starting with "fnrun: " and mentioning want.
func oneErrorLine(t *testing.T, res result, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(withoutProgress(res.stderr), "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "fnrun: ") {
		t.Errorf("stderr is not one 'fnrun: ' line:\n%s", res)
	}
	if !strings.Contains(res.stderr, want) {
		t.Errorf("stderr does not mention %q:\n%s", want, res)
	}
}

// regexpLine reports whether a line of out matches the regular expression
// pattern.
func regexpLine(out, pattern string) bool {
	re := regexp.MustCompile("(?m)^" + pattern)
	return re.MatchString(out)
}
