package lifecycle

import (
	"fmt"
	"math"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/syslog"
)

// Task is a checked task as a Runtime sees it: the caller's task with what
// CheckTask derived from it.
type Task struct {
	drivers.ContainerTask
	// Args is the command split with drivers.SplitCommand; nil runs the
	// image's.
	Args []string
	// Ref is the validated, normalised image reference.
	Ref drivers.Reference
	// Env holds "KEY=value" entries sorted by key.
	Env []string
	// Syslog is where the output also goes; nil means nowhere.
	Syslog *SyslogTarget
}

// validID is the set of names Docker accepts for a container; containerd
// accepts a superset.
var validID = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

// Limits outside these cannot start a container on any runtime we drive:
// the kernel refuses them when the container starts, far from the caller.
const (
	minMemoryBytes = 6 << 20 // Docker refuses less than 6 MiB
	minMilliCPUs   = 10      // a 1ms CFS quota per 100ms period
	maxMilliCPUs   = 1 << 20 // about a thousand CPUs, far below the kernel's CFS quota bound
	maxPIDs        = 1 << 22 // PID_MAX_LIMIT: pids.max accepts nothing larger
	maxMegabytes   = math.MaxInt64 >> 20
)

// maxOpenFiles is the kernel's fs.nr_open, the ceiling of RLIMIT_NOFILE;
// setting more fails with EPERM when the container starts.
var maxOpenFiles = sync.OnceValue(func() uint64 {
	b, err := os.ReadFile("/proc/sys/fs/nr_open")
	if err != nil {
		return 1 << 20 // the kernel's default
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n == 0 {
		return 1 << 20
	}
	return n
})

// CheckTask validates everything about a task that can be checked without
// a daemon; every driver calls it before its first daemon call.
func CheckTask(task drivers.ContainerTask) (*Task, error) {
	if task == nil {
		return nil, drivers.InvalidTaskf("nil task")
	}
	id := task.Id()
	if !validID.MatchString(id) {
		return nil, drivers.InvalidTaskf("task id %q is not a valid container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128 characters)", id)
	}
	ref, err := drivers.NormalizeImage(task.Image())
	if err != nil {
		return nil, fmt.Errorf("task %s: %w", id, err)
	}
	checked := &Task{ContainerTask: task, Ref: ref}
	if cmd := task.Command(); strings.TrimSpace(cmd) != "" {
		if checked.Args, err = drivers.SplitCommand(cmd); err != nil {
			return nil, fmt.Errorf("task %s: %w", id, err)
		}
	}
	if checked.Env, err = checkEnv(task.EnvVars()); err != nil {
		return nil, fmt.Errorf("task %s: %w", id, err)
	}
	if err := checkLimits(task); err != nil {
		return nil, fmt.Errorf("task %s: %w", id, err)
	}
	if err := checkMounts(task); err != nil {
		return nil, fmt.Errorf("task %s: %w", id, err)
	}
	if dir := task.WorkDir(); dir != "" && (!path.IsAbs(dir) || strings.ContainsRune(dir, 0)) {
		return nil, drivers.InvalidTaskf("task %s: work dir %q is not an absolute path", id, dir)
	}
	for _, arg := range checked.Args {
		if strings.ContainsRune(arg, 0) {
			return nil, drivers.InvalidTaskf("task %s: command argument %q contains NUL", id, arg)
		}
	}
	if checked.Syslog, err = CheckLogger(task.LoggerConfig()); err != nil {
		return nil, fmt.Errorf("task %s: %w", id, err)
	}
	return checked, nil
}

func checkEnv(env map[string]string) ([]string, error) {
	keys := make([]string, 0, len(env))
	for k, v := range env {
		switch {
		case k == "":
			return nil, drivers.InvalidTaskf("empty environment variable name")
		case strings.ContainsAny(k, "=\x00"):
			return nil, drivers.InvalidTaskf("environment variable name %q contains '=' or NUL", k)
		case strings.ContainsRune(v, 0):
			return nil, drivers.InvalidTaskf("environment variable %q has a NUL in its value", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + "=" + env[k]
	}
	return out, nil
}

func checkLimits(task drivers.ContainerTask) error {
	if m := task.Memory(); m != 0 && (m < minMemoryBytes || m > math.MaxInt64) {
		return drivers.InvalidTaskf("memory limit %d bytes is outside [%d, %d]", m, minMemoryBytes, int64(math.MaxInt64))
	}
	if c := task.CPUs(); c != 0 && (c < minMilliCPUs || c > maxMilliCPUs) {
		return drivers.InvalidTaskf("CPU limit %d milli-CPUs is outside [%d, %d]", c, minMilliCPUs, maxMilliCPUs)
	}
	if p := task.PIDs(); p > maxPIDs {
		return drivers.InvalidTaskf("pids limit %d is above the kernel's %d", p, maxPIDs)
	}
	if s := task.FsSize(); s > maxMegabytes {
		return drivers.InvalidTaskf("filesystem size %d MB is too large", s)
	}
	if s := task.TmpFsSize(); s > maxMegabytes {
		return drivers.InvalidTaskf("tmpfs size %d MB is too large", s)
	}
	for _, l := range []struct {
		name string
		v    *uint64
	}{
		{"open files", task.OpenFiles()},
		{"locked memory", task.LockedMemory()},
		{"pending signals", task.PendingSignals()},
		{"message queue", task.MessageQueue()},
	} {
		if l.v != nil && *l.v > math.MaxInt64 {
			return drivers.InvalidTaskf("%s limit %d is too large", l.name, *l.v)
		}
	}
	if n := task.OpenFiles(); n != nil && *n == 0 {
		return drivers.InvalidTaskf("open files limit 0 leaves the process unable to start")
	}
	if n := task.OpenFiles(); n != nil && *n > maxOpenFiles() {
		return drivers.InvalidTaskf("open files limit %d is above the kernel's fs.nr_open %d", *n, maxOpenFiles())
	}
	return nil
}

func checkMounts(task drivers.ContainerTask) error {
	for _, v := range task.Volumes() {
		host, ctr := v[0], v[1]
		if !path.IsAbs(host) || !path.IsAbs(ctr) {
			return drivers.InvalidTaskf("volume %q:%q: both paths must be absolute", host, ctr)
		}
		if strings.ContainsAny(host+ctr, ":\x00,") {
			return drivers.InvalidTaskf("volume %q:%q: paths must not contain ':', ',' or NUL", host, ctr)
		}
		if _, err := os.Stat(host); err != nil {
			return drivers.InvalidTaskf("volume %q:%q: host path: %v", host, ctr, err)
		}
	}
	if src, dst := task.UDSDockerPath(), task.UDSDockerDest(); src != "" || dst != "" {
		if !path.IsAbs(src) || !path.IsAbs(dst) {
			return drivers.InvalidTaskf("unix socket mount %q:%q: both paths must be absolute", src, dst)
		}
	}
	return nil
}

// SyslogTarget is where a task's output is sent, as CheckLogger derives it
// from the task's LoggerConfig: named here so that runtimes outside this
// module (SyslogSender) can name it too.
type SyslogTarget = syslog.Target

// CheckLogger validates a task's log configuration. It returns nil and no
// error when the task sends its output nowhere.
func CheckLogger(lc drivers.LoggerConfig) (*SyslogTarget, error) { return syslog.Parse(lc) }
