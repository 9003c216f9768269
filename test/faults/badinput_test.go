package faults

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/distribution/reference"

	"github.com/fnrun/fnrun/drivers"
	ctrdriver "github.com/fnrun/fnrun/drivers/containerd"
	dockerdriver "github.com/fnrun/fnrun/drivers/docker"
	"github.com/fnrun/fnrun/test"
)

// Kernel bounds that no setting can pass on any Linux host: the largest pid
// limit (PID_MAX_LIMIT, 4M on 64-bit), the largest RLIMIT_NOFILE (fs.nr_open
// cannot exceed INT_MAX rounded down), and the largest CFS quota
// (2^44-1 microseconds) over the drivers' 100ms period, in milli-CPUs.
const (
	kernelMaxPIDs     = 1 << 22
	kernelMaxNoFile   = math.MaxInt32
	kernelMaxMilliCPU = ((1 << 44) - 1) / 100000 * 1000
)

func u64(v uint64) *uint64 { return &v }

// badInputs are tasks no runtime can run as given. Each must fail
// CreateCookie with drivers.ErrInvalidTask before any daemon call.
var badInputs = []struct {
	name   string
	modify func(*drivers.Task)
}{
	// Image references.
	{"image: upper case and double colon", func(t *drivers.Task) { t.ImageRef = "UPPER/Case::tag" }},
	{"image: empty", func(t *drivers.Task) { t.ImageRef = "" }},
	{"image: blanks", func(t *drivers.Task) { t.ImageRef = "   " }},
	{"image: space in tag", func(t *drivers.Task) { t.ImageRef = "busybox:tag with space" }},
	{"image: short digest", func(t *drivers.Task) { t.ImageRef = "busybox@sha256:123" }},
	{"image: leading dash", func(t *drivers.Task) { t.ImageRef = "-busybox" }},
	{"image: registry only", func(t *drivers.Task) { t.ImageRef = "127.0.0.1:5000/" }},
	{"image: empty tag", func(t *drivers.Task) { t.ImageRef = "busybox:" }},
	{"image: empty digest", func(t *drivers.Task) { t.ImageRef = "busybox@" }},
	{"image: tag only", func(t *drivers.Task) { t.ImageRef = ":latest" }},
	{"image: double slash", func(t *drivers.Task) { t.ImageRef = "a//b" }},
	{"image: NUL", func(t *drivers.Task) { t.ImageRef = "busy\x00box" }},
	{"image: newline", func(t *drivers.Task) { t.ImageRef = "busybox:latest\n" }},
	{"image: URL", func(t *drivers.Task) { t.ImageRef = "http://127.0.0.1:5000/busybox" }},
	{"image: 129-character tag", func(t *drivers.Task) { t.ImageRef = "busybox:" + strings.Repeat("t", 129) }},
	{"image: 300-character name", func(t *drivers.Task) { t.ImageRef = strings.Repeat("a", 300) }},
	// Ids that are no container name.
	{"id: empty", func(t *drivers.Task) { t.ID = "" }},
	{"id: slash and space", func(t *drivers.Task) { t.ID = "no spaces/allowed" }},
	{"id: leading dash", func(t *drivers.Task) { t.ID = "-dash" }},
	{"id: leading dot", func(t *drivers.Task) { t.ID = ".dot" }},
	{"id: 129 characters", func(t *drivers.Task) { t.ID = strings.Repeat("a", 129) }},
	{"id: non-ASCII", func(t *drivers.Task) { t.ID = "ünïcode" }},
	{"id: colon", func(t *drivers.Task) { t.ID = "a:b" }},
	{"id: NUL", func(t *drivers.Task) { t.ID = "a\x00b" }},
	{"id: path", func(t *drivers.Task) { t.ID = "../etc" }},
	{"id: newline", func(t *drivers.Task) { t.ID = "a\nb" }},
	// Environment.
	{"env: name with =", func(t *drivers.Task) { t.Env = map[string]string{"A=B": "c"} }},
	{"env: empty name", func(t *drivers.Task) { t.Env = map[string]string{"": "x"} }},
	{"env: = as name", func(t *drivers.Task) { t.Env = map[string]string{"=": "x"} }},
	{"env: NUL in name", func(t *drivers.Task) { t.Env = map[string]string{"A\x00B": "x"} }},
	{"env: NUL in value", func(t *drivers.Task) { t.Env = map[string]string{"A": "b\x00c"} }},
	// Commands.
	{"cmd: unterminated double quote", func(t *drivers.Task) { t.Cmd = `echo "unterminated` }},
	{"cmd: unterminated single quote", func(t *drivers.Task) { t.Cmd = `echo 'x` }},
	{"cmd: mismatched quotes", func(t *drivers.Task) { t.Cmd = `sh -c "a'` }},
	{"cmd: lone trailing backslash", func(t *drivers.Task) { t.Cmd = `echo \` }},
	{"cmd: NUL in an argument", func(t *drivers.Task) { t.Cmd = "echo a\x00b" }},
	// Limits: below what a runtime can start, or negative as int64.
	{"memory: 1 byte", func(t *drivers.Task) { t.MemoryBytes = 1 }},
	{"memory: just under 6 MiB", func(t *drivers.Task) { t.MemoryBytes = 6<<20 - 1 }},
	{"memory: 2^63 (negative as int64)", func(t *drivers.Task) { t.MemoryBytes = 1 << 63 }},
	{"memory: max uint64", func(t *drivers.Task) { t.MemoryBytes = math.MaxUint64 }},
	{"cpus: 1 milli-CPU", func(t *drivers.Task) { t.MilliCPUs = 1 }},
	{"cpus: 2^63", func(t *drivers.Task) { t.MilliCPUs = 1 << 63 }},
	{"pids: 2^63", func(t *drivers.Task) { t.MaxPIDs = 1 << 63 }},
	{"fs size: max uint64", func(t *drivers.Task) { t.FsSizeMB = math.MaxUint64 }},
	{"tmpfs size: 2^63 MB", func(t *drivers.Task) { t.TmpFsSizeMB = 1 << 63 }},
	{"ulimit nofile: 0", func(t *drivers.Task) { t.MaxOpenFiles = u64(0) }},
	{"ulimit nofile: 2^63", func(t *drivers.Task) { t.MaxOpenFiles = u64(1 << 63) }},
	{"ulimit memlock: 2^63", func(t *drivers.Task) { t.MaxLockedMemory = u64(1 << 63) }},
	{"ulimit sigpending: max uint64", func(t *drivers.Task) { t.MaxPendingSignals = u64(math.MaxUint64) }},
	{"ulimit msgqueue: 2^63", func(t *drivers.Task) { t.MaxMessageQueue = u64(1 << 63) }},
	// Limits that fit an int64 but no kernel accepts.
	{"pids: 2^40 (kernel max 2^22)", func(t *drivers.Task) { t.MaxPIDs = 1 << 40 }},
	{"ulimit nofile: 2^40 (above any fs.nr_open)", func(t *drivers.Task) { t.MaxOpenFiles = u64(1 << 40) }},
	{"cpus: 2^40 milli-CPUs (CFS quota above the kernel's max)", func(t *drivers.Task) { t.MilliCPUs = 1 << 40 }},
	// Volumes and folders.
	{"volume: relative host path", func(t *drivers.Task) { t.Mounts = [][2]string{{"rel/path", "/data"}} }},
	{"volume: relative container path", func(t *drivers.Task) { t.Mounts = [][2]string{{"/tmp", "data"}} }},
	{"volume: missing host path", func(t *drivers.Task) { t.Mounts = [][2]string{{"/does/not/exist/fnf", "/data"}} }},
	{"volume: colon in host path", func(t *drivers.Task) { t.Mounts = [][2]string{{"/tmp:ro", "/data"}} }},
	{"volume: comma in container path", func(t *drivers.Task) { t.Mounts = [][2]string{{"/tmp", "/da,ta"}} }},
	{"volume: NUL", func(t *drivers.Task) { t.Mounts = [][2]string{{"/tmp\x00", "/data"}} }},
	{"volume: empty paths", func(t *drivers.Task) { t.Mounts = [][2]string{{"", ""}} }},
	{"unix socket mount: relative source", func(t *drivers.Task) { t.UDSHost, t.UDSDest = "rel", "/run/fn" }},
	{"unix socket mount: no destination", func(t *drivers.Task) { t.UDSHost = "/tmp" }},
	{"work dir: relative", func(t *drivers.Task) { t.Dir = "tmp" }},
	{"work dir: NUL", func(t *drivers.Task) { t.Dir = "/tmp\x00x" }},
}

// TestBadInput gives each bad task to each driver, through a socket proxy
// in front of its private daemon that counts the bytes the driver sends:
// CreateCookie must fail with ErrInvalidTask and not one byte may reach the
// daemon. A bad task a driver accepts is then run to the end to report how
// it fails late, and must leave nothing behind.
func TestBadInput(t *testing.T) {
	forEach(t, func(t *testing.T, tg *target) {
		address := tg.e.ctrAddress
		if tg.name == "docker" {
			address = tg.e.dockerSock
		}
		proxy := newSockProxy(t, address)
		tag := "faults-bad-" + randomID()
		o := driverOpts{tag: tag, address: proxy.address()}
		if tg.name == "docker" {
			o.address = proxy.url()
		}
		drv := tg.mustDriver(t, o)
		quiet(proxy)
		before := proxy.sent.Load()
		ctx := testCtx(t, 5*time.Minute)

		var accepted []string
		for _, bc := range badInputs {
			t.Run(bc.name, func(t *testing.T) {
				task := tg.task("bad", "true")
				bc.modify(task)
				c, err := drv.CreateCookie(ctx, task)
				if c != nil {
					_ = c.Close(ctx)
				}
				if !errors.Is(err, drivers.ErrInvalidTask) {
					accepted = append(accepted, bc.name)
					t.Errorf("CreateCookie: %v; want ErrInvalidTask", err)
				}
			})
		}
		if sent := proxy.sent.Load() - before; sent != 0 {
			t.Errorf("%d bytes reached the daemon while the bad tasks were refused: a daemon call was made", sent)
		}

		// Run what was wrongly accepted, to say how it fails late.
		for _, bc := range badInputs {
			if !contains(accepted, bc.name) {
				continue
			}
			task := tg.task("bad-late", "true")
			bc.modify(task)
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			out, err := test.Lifecycle(rctx, drv, task)
			cancel()
			if err != nil {
				t.Logf("accepted %q fails late: %s: %v", bc.name, classOf(err), err)
			} else {
				t.Logf("accepted %q runs: status %s, %s: %v", bc.name, out.Result.Status(), classOf(out.Result.Error()), out.Result.Error())
			}
		}
		tg.waitNoLeftovers(t, tag, 10*time.Second)
	})
}

// quiet waits until the proxy has carried no client byte for a while: the
// driver's start-up calls are over.
func quiet(p *sockProxy) {
	last, since := p.sent.Load(), time.Now()
	deadline := time.Now().Add(30 * time.Second)
	// The leak reaper's calls follow each other at the daemon's pace: 2 s
	// without a byte means they are over, even on a slow daemon.
	for time.Now().Before(deadline) && time.Since(since) < 2*time.Second {
		time.Sleep(50 * time.Millisecond)
		if n := p.sent.Load(); n != last {
			last, since = n, time.Now()
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// validID is the container names Docker accepts.
var validID = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

// FuzzCreateCookie feeds random tasks to CreateCookie of both drivers. Not
// one byte may reach a daemon, and a task a driver accepts must be valid
// by rules written independently of the drivers (the Docker reference
// grammar, the container name pattern, the kernel's bounds...).
//
//	go test -run '^$' -fuzz FuzzCreateCookie -fuzztime 60s ./test/faults/
func FuzzCreateCookie(f *testing.F) {
	vals := test.Env(f, "FNRUN_DOCKER_HOST", "FNRUN_CONTAINERD_ADDRESS")
	names, drvs, proxies := fuzzDrivers(f, vals)
	f.Add("call-1", "busybox", "echo 'a b'", "KEY", "value", uint64(64<<20), uint64(500), uint64(64), uint64(1024), "/tmp", "/data", "/tmp")
	f.Add("call-2", "127.0.0.1:5000/fnrun/busybox:latest", "", "", "", uint64(0), uint64(0), uint64(0), uint64(0), "", "", "")
	f.Add("bad id", "UPPER/Case::tag", `echo "x`, "A=B", "c\x00", uint64(1), uint64(1), uint64(1<<63), uint64(1<<63), "rel", "data", "tmp")
	f.Add("x", "busybox@sha256:"+strings.Repeat("a", 64), "sh -c 'exit 3'", "PATH", "/bin", uint64(6<<20), uint64(10), uint64(1<<22), uint64(1<<20), "/does/not/exist", "/d", "/")
	f.Fuzz(func(t *testing.T, id, image, cmd, envKey, envVal string, mem, cpus, pids, nofile uint64, volHost, volCtr, dir string) {
		task := &drivers.Task{ID: id, ImageRef: image, Cmd: cmd, MemoryBytes: mem, MilliCPUs: cpus, MaxPIDs: pids, Dir: dir}
		if envKey != "" || envVal != "" {
			task.Env = map[string]string{envKey: envVal}
		}
		if nofile != 0 {
			task.MaxOpenFiles = u64(nofile - 1) // 1 means 0: a zero limit is worth trying
		}
		if volHost != "" || volCtr != "" {
			task.Mounts = [][2]string{{volHost, volCtr}}
		}
		valid := fuzzValid(task)
		for i, drv := range drvs {
			before := proxies[i].sent.Load()
			c, err := drv.CreateCookie(context.Background(), task)
			if c != nil {
				_ = c.Close(context.Background())
			}
			if sent := proxies[i].sent.Load() - before; sent != 0 {
				t.Errorf("%s: CreateCookie and Close of an unused cookie sent %d bytes to the daemon", names[i], sent)
			}
			switch {
			case err == nil && valid != "":
				t.Errorf("%s accepted an invalid task (%s): %s", names[i], valid, describe(task))
			case err != nil && !errors.Is(err, drivers.ErrInvalidTask):
				t.Errorf("%s refused a task with %v, not ErrInvalidTask", names[i], err)
			}
		}
	})
}

// fuzzValid says why task is invalid by the contract's rules, or "".
func fuzzValid(task *drivers.Task) string {
	switch {
	case !validID.MatchString(task.ID):
		return "id is no container name"
	case strings.TrimSpace(task.ImageRef) != task.ImageRef || task.ImageRef == "":
		return "image reference blank or padded"
	}
	if _, err := reference.ParseNormalizedNamed(task.ImageRef); err != nil {
		return "image reference: " + err.Error()
	}
	if strings.ContainsRune(task.Cmd, 0) {
		return "NUL in the command"
	}
	for k, v := range task.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return "environment variable name or value"
		}
	}
	switch m := task.MemoryBytes; {
	case m != 0 && m < 6<<20, m > math.MaxInt64:
		return "memory limit"
	}
	switch c := task.MilliCPUs; {
	case c != 0 && c < 10, c > kernelMaxMilliCPU:
		return "CPU limit"
	}
	if task.MaxPIDs > kernelMaxPIDs {
		return "pids limit above the kernel's"
	}
	if n := task.MaxOpenFiles; n != nil && (*n == 0 || *n > kernelMaxNoFile) {
		return "open files limit"
	}
	for _, m := range task.Mounts {
		if !path.IsAbs(m[0]) || !path.IsAbs(m[1]) || strings.ContainsAny(m[0]+m[1], ":,\x00") {
			return "volume paths"
		}
		if _, err := os.Stat(m[0]); err != nil {
			return "volume host path missing"
		}
	}
	if task.Dir != "" && (!path.IsAbs(task.Dir) || strings.ContainsRune(task.Dir, 0)) {
		return "work dir"
	}
	return ""
}

// fuzzDrivers are both drivers on the shared daemons, through counting
// proxies, with no label tag (so no reaper) and a containerd namespace of
// their own: they make their start-up calls (ping, info, version, the OOM
// event subscription) and, as the fuzz target proves, no other.
func fuzzDrivers(f *testing.F, vals map[string]string) ([]string, []drivers.Driver, []*sockProxy) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	host := vals["FNRUN_DOCKER_HOST"]
	if !strings.HasPrefix(host, "unix://") {
		f.Skipf("FNRUN_DOCKER_HOST %s is not a unix socket", host)
	}
	dp := newSockProxy(f, strings.TrimPrefix(host, "unix://"))
	dd, err := dockerdriver.New(ctx, drivers.Config{Docker: dp.url()}, drivers.WithLogger(testLogger()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = dd.Close() })
	cp := newSockProxy(f, vals["FNRUN_CONTAINERD_ADDRESS"])
	cd, err := ctrdriver.New(ctx, drivers.Config{Containerd: cp.address(), ContainerdNamespace: "fnfaults-fuzz"}, drivers.WithLogger(testLogger()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = cd.Close() })
	quiet(dp)
	quiet(cp)
	return []string{"docker", "containerd"}, []drivers.Driver{dd, cd}, []*sockProxy{dp, cp}
}

// describe prints the fields a fuzzed task sets.
func describe(t *drivers.Task) string {
	nofile := "unset"
	if t.MaxOpenFiles != nil {
		nofile = strconv.FormatUint(*t.MaxOpenFiles, 10)
	}
	return fmt.Sprintf("id %q image %q cmd %q env %q memory %d milli-CPUs %d pids %d nofile %s mounts %q dir %q",
		t.ID, t.ImageRef, t.Cmd, t.Env, t.MemoryBytes, t.MilliCPUs, t.MaxPIDs, nofile, t.Mounts, t.Dir)
}
