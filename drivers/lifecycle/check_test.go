package lifecycle

import (
	"errors"
	"strings"
	"testing"

	"github.com/fnrun/fnrun/drivers"
)

func TestCheckTask(t *testing.T) {
	valid := func() *drivers.Task { return &drivers.Task{ID: "ok-1", ImageRef: "busybox", Cmd: `sh -c 'echo "a b"'`} }
	checked, err := CheckTask(valid())
	if err != nil {
		t.Fatal(err)
	}
	if len(checked.Args) != 3 || checked.Args[2] != `echo "a b"` || checked.Ref.Normalized != "docker.io/library/busybox:latest" {
		t.Fatalf("checked %+v", checked)
	}
	huge := uint64(1 << 63)
	zero := uint64(0)
	for _, tc := range []struct {
		name   string
		modify func(*drivers.Task)
	}{
		{"bad id", func(t *drivers.Task) { t.ID = "a b" }},
		{"long id", func(t *drivers.Task) { t.ID = strings.Repeat("a", 200) }},
		{"bad image", func(t *drivers.Task) { t.ImageRef = "Bad::Image" }},
		{"unbalanced", func(t *drivers.Task) { t.Cmd = `echo 'x` }},
		{"empty env name", func(t *drivers.Task) { t.Env = map[string]string{"": "x"} }},
		{"env name =", func(t *drivers.Task) { t.Env = map[string]string{"a=b": "x"} }},
		{"env NUL", func(t *drivers.Task) { t.Env = map[string]string{"a\x00": "x"} }},
		{"tiny memory", func(t *drivers.Task) { t.MemoryBytes = 1024 }},
		{"huge memory", func(t *drivers.Task) { t.MemoryBytes = 1 << 63 }},
		{"tiny cpu", func(t *drivers.Task) { t.MilliCPUs = 1 }},
		{"huge pids", func(t *drivers.Task) { t.MaxPIDs = 1 << 63 }},
		{"pids above PID_MAX_LIMIT", func(t *drivers.Task) { t.MaxPIDs = 1 << 40 }},
		{"absurd cpus", func(t *drivers.Task) { t.MilliCPUs = 1 << 40 }},
		{"open files above nr_open", func(t *drivers.Task) { n := uint64(1 << 40); t.MaxOpenFiles = &n }},
		{"NUL in command", func(t *drivers.Task) { t.Cmd = "echo a\x00b" }},
		{"NUL in work dir", func(t *drivers.Task) { t.Dir = "/tmp/a\x00b" }},
		{"huge tmpfs", func(t *drivers.Task) { t.TmpFsSizeMB = 1 << 50 }},
		{"huge rlimit", func(t *drivers.Task) { t.MaxLockedMemory = &huge }},
		{"zero open files", func(t *drivers.Task) { t.MaxOpenFiles = &zero }},
		{"relative volume", func(t *drivers.Task) { t.Mounts = [][2]string{{"a", "/b"}} }},
		{"volume with colon", func(t *drivers.Task) { t.Mounts = [][2]string{{"/tmp", "/b:ro"}} }},
		{"missing volume", func(t *drivers.Task) { t.Mounts = [][2]string{{"/nonexistent/fnrun", "/b"}} }},
		{"relative uds", func(t *drivers.Task) { t.UDSHost, t.UDSDest = "x", "/y" }},
		{"relative workdir", func(t *drivers.Task) { t.Dir = "x" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			task := valid()
			tc.modify(task)
			if _, err := CheckTask(task); !errors.Is(err, drivers.ErrInvalidTask) {
				t.Fatalf("CheckTask = %v, want ErrInvalidTask", err)
			}
		})
	}
}

// TestCheckTaskLogger: a bad log URL fails CheckTask, so every driver
// refuses it before its first daemon call; a good one is handed on.
func TestCheckTaskLogger(t *testing.T) {
	task := &drivers.Task{ID: "log-1", ImageRef: "busybox", Logging: drivers.LoggerConfig{URL: "ftp://logs.example"}}
	if _, err := CheckTask(task); !errors.Is(err, drivers.ErrInvalidTask) {
		t.Fatalf("CheckTask = %v, want drivers.ErrInvalidTask", err)
	}
	task.Logging.URL = "tcp://logs.example:601"
	checked, err := CheckTask(task)
	if err != nil {
		t.Fatal(err)
	}
	if checked.Syslog == nil || checked.Syslog.URL() != "tcp://logs.example:601" {
		t.Fatalf("Syslog = %+v", checked.Syslog)
	}
}
