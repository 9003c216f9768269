package faults

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/oci"
	docker "github.com/fsouza/go-dockerclient"
	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/images"
	"github.com/fnrun/fnrun/test"
)

// daemonSockets are the paths where a Docker or containerd socket usually
// is, plus every socket of the shared and private environments.
func daemonSockets(e *privateEnv) []string {
	list := []string{
		"/var/run/docker.sock", "/run/docker.sock",
		"/run/containerd/containerd.sock", "/var/run/containerd/containerd.sock",
		"/run/containerd/containerd.sock.ttrpc", "/run/docker/containerd/containerd.sock",
		"/run/user/0/docker.sock",
		strings.TrimPrefix(e.shared["FNRUN_DOCKER_HOST"], "unix://"),
		e.shared["FNRUN_CONTAINERD_ADDRESS"], e.shared["FNRUN_CONTAINERD_ADDRESS"] + ".ttrpc",
		e.dockerSock, e.ctrAddress, e.ctrAddress + ".ttrpc",
		filepath.Join(filepath.Dir(e.dockerSock), "x", "containerd", "containerd.sock"),
	}
	if st := e.shared["FNRUN_STATE"]; st != "" {
		list = append(list, filepath.Join(st, "docker-exec", "containerd", "containerd.sock"))
	}
	return list
}

// TestSecurityFromInside checks from inside a default container: a non-root
// user, no effective (or ambient) capability, NoNewPrivs, no daemon socket
// anywhere in its filesystem, /proc/sys mounted read-only and not writable,
// and no way to remount the root.
func TestSecurityFromInside(t *testing.T) {
	forEach(t, func(t *testing.T, tg *target) {
		tag := "faults-sec-" + randomID()
		drv := tg.mustDriver(t, driverOpts{tag: tag})
		socks := daemonSockets(tg.e)
		script := `sh -c '
echo "UID $(id -u)"
echo "GID $(id -g)"
grep -E "^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):" /proc/self/status
for s in ` + strings.Join(socks, " ") + `; do
  if [ -S "$s" ]; then echo "SOCKET $s"; elif [ -e "$s" ]; then echo "EXISTS $s"; fi
done
find / \( -path /proc -o -path /sys \) -prune -o -type s -print 2>/dev/null | sed "s/^/FOUND /"
awk "\$2==\"/proc/sys\" {print \"PROCSYS \" \$4}" /proc/mounts
if echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null; then echo PROCSYS-WRITABLE; else echo PROCSYS-WRITE-DENIED; fi
if mount -o remount,rw / 2>/dev/null; then echo REMOUNT-OK; else echo REMOUNT-DENIED; fi
true'`
		out := mustRun(t, testCtx(t, time.Minute), drv, tg.task("sec", script))
		wantSuccess(t, out)
		got := map[string][]string{}
		for _, line := range strings.Split(strings.TrimSpace(out.Stdout), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			k := strings.TrimSuffix(f[0], ":")
			got[k] = append(got[k], strings.Join(f[1:], " "))
		}
		t.Logf("%s container sees:\n%s", tg.name, out.Stdout)
		one := func(k string) string {
			if len(got[k]) != 1 {
				return ""
			}
			return got[k][0]
		}
		if u := one("UID"); u == "" || u == "0" {
			t.Errorf("uid %q, want non-root (1000)", u)
		}
		if g := one("GID"); g == "" || g == "0" {
			t.Errorf("gid %q, want non-root (1000)", g)
		}
		for _, k := range []string{"CapEff", "CapPrm", "CapAmb"} {
			if v := one(k); v == "" || strings.Trim(v, "0") != "" {
				t.Errorf("%s %q, want all zero", k, v)
			}
		}
		if v := one("NoNewPrivs"); v != "1" {
			t.Errorf("NoNewPrivs %q, want 1", v)
		}
		for _, k := range []string{"SOCKET", "EXISTS", "FOUND"} {
			if len(got[k]) > 0 {
				t.Errorf("daemon socket reachable from inside (%s): %v", k, got[k])
			}
		}
		if v := one("PROCSYS"); !strings.HasPrefix(v, "ro") {
			t.Errorf("/proc/sys mount options %q, want read-only", v)
		}
		if len(got["PROCSYS-WRITE-DENIED"]) == 0 && len(got["PROCSYS-WRITABLE"]) > 0 {
			t.Errorf("/proc/sys is writable from inside")
		}
		if _, ok := got["REMOUNT-DENIED"]; !ok {
			t.Errorf("the root could be remounted read-write from inside")
		}
		if out.Stderr != "" {
			t.Logf("stderr: %s", out.Stderr)
		}
		tg.waitNoLeftovers(t, tag, 10*time.Second)
	})
}

// TestSecurityReadOnlyRoot checks EnableReadOnlyRootFs from inside: the
// root is mounted read-only (even where the user owns a folder of the
// image), cannot be remounted, and /tmp stays writable.
func TestSecurityReadOnlyRoot(t *testing.T) {
	forEach(t, func(t *testing.T, tg *target) {
		tag := "faults-ro-" + randomID()
		drv := tg.mustDriver(t, driverOpts{tag: tag, readOnly: true})
		script := `sh -c '
awk "\$2==\"/\" {print \"ROOTOPTS \" \$4}" /proc/mounts
if touch /home/fnrun/x 2>/dev/null; then echo HOME-WRITABLE; else echo HOME-DENIED; fi
if touch /x 2>/dev/null; then echo ROOT-WRITABLE; else echo ROOT-DENIED; fi
if mount -o remount,rw / 2>/dev/null; then echo REMOUNT-OK; else echo REMOUNT-DENIED; fi
if touch /tmp/y; then echo TMP-WRITABLE; fi'`
		out := mustRun(t, testCtx(t, time.Minute), drv, tg.task("ro", script))
		wantSuccess(t, out)
		t.Logf("%s read-only container sees:\n%s", tg.name, out.Stdout)
		s := out.Stdout
		if !regexp.MustCompile(`(?m)^ROOTOPTS ro[,$]`).MatchString(s) {
			t.Errorf("root mount options are not read-only")
		}
		for _, want := range []string{"HOME-DENIED", "ROOT-DENIED", "REMOUNT-DENIED", "TMP-WRITABLE"} {
			if !strings.Contains(s, want) {
				t.Errorf("want %s", want)
			}
		}
		// The same write succeeds on a writable root: the check above is
		// the mount's doing, not the file's permissions.
		rw := tg.mustDriver(t, driverOpts{tag: tag})
		out = mustRun(t, testCtx(t, time.Minute), rw, tg.task("rw", `sh -c 'touch /home/fnrun/x && echo HOME-WRITABLE'`))
		if !strings.Contains(out.Stdout, "HOME-WRITABLE") {
			t.Errorf("control: /home/fnrun is not writable on a writable root either (%q %q): the read-only check proves nothing", out.Stdout, out.Stderr)
		}
		tg.waitNoLeftovers(t, tag, 10*time.Second)
	})
}

// TestSecurityForkBomb runs a fork bomb under a pids limit: the number of
// processes in the container's cgroup, sampled from the host, never passes
// the limit, the host can still start processes, the run ends when its
// deadline comes, and no process of it survives.
func TestSecurityForkBomb(t *testing.T) {
	const limit = 64
	forEach(t, func(t *testing.T, tg *target) {
		tag := "faults-bomb-" + randomID()
		drv := tg.mustDriver(t, driverOpts{tag: tag})
		ctx := testCtx(t, 2*time.Minute)
		// Every bomb process forks copies of itself forever: the
		// population grows until the limit holds it (a shell that cannot
		// fork exits, and another takes its place). The main process
		// becomes a sleep, so the container runs until its deadline. Half
		// a CPU keeps the host usable whatever happens.
		task := tg.task("bomb", `sh -c 'bomb() { while :; do bomb & done; }; bomb & exec sleep 60'`)
		task.MaxPIDs = limit
		task.MilliCPUs = 500
		var stderr test.SyncBuffer
		task.Stderr = &stderr
		c, err := drv.CreateCookie(ctx, task)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		if err := test.Prepare(ctx, c); err != nil {
			t.Fatal(err)
		}
		id := tg.containerID(t, task.ID)
		// The run's deadline, set once a slow create cannot use it up.
		ctx, cancel := context.WithTimeout(ctx, 7*time.Second)
		defer cancel()
		w, err := c.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The population swings fast (shells that cannot fork exit, and the
		// bomb may die out): sample often.
		peak, samples, hostWorst := 0, 0, time.Duration(0)
		deadline := time.Now().Add(4 * time.Second)
		lastHost := time.Time{}
		for time.Now().Before(deadline) {
			if n, ok := tg.pidsCurrent(id); ok {
				samples++
				if n > peak {
					peak = n
				}
			}
			if time.Since(lastHost) > 100*time.Millisecond {
				if d := timed(func() { _ = exec.Command("true").Run() }); d > hostWorst {
					hostWorst = d
				}
				lastHost = time.Now()
			}
			time.Sleep(2 * time.Millisecond)
		}
		res := w.Wait(ctx)
		closeTook := timed(func() {
			if err := c.Close(context.Background()); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		t.Logf("%s: fork bomb under pids limit %d: peak %d processes over %d samples, %d forks refused (\"can't fork\" lines), slowest host fork+exec %v; run ended %s (%v); Close took %v",
			tg.name, limit, peak, samples, strings.Count(stderr.String(), "can't fork"), hostWorst.Round(time.Millisecond), res.Status(), res.Error(), closeTook.Round(time.Millisecond))
		if samples == 0 {
			t.Errorf("could not read the container's pids.current")
		}
		if peak > limit {
			t.Errorf("%d processes in the container, above the limit %d", peak, limit)
		}
		refused := strings.Contains(stderr.String(), "can't fork")
		if peak < limit/2 && !refused {
			t.Errorf("the bomb peaked at %d processes and no fork was refused: it never pressed on the limit %d, the check proves nothing (stderr %q)", peak, limit, tail(stderr.String(), 300))
		}
		if hostWorst > 2*time.Second {
			t.Errorf("the host took %v to start a process during the bomb", hostWorst)
		}
		if res.Status() == drivers.StatusSuccess {
			t.Errorf("a fork bomb ended in success")
		}
		deadline = time.Now().Add(10 * time.Second)
		for {
			left := procsInCgroupOf(id)
			if left == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%d processes of the bomb survive its container", left)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		tg.waitNoLeftovers(t, tag, 10*time.Second)
	})
}

// TestSecurityMemoryLimit checks from inside that the memory limit is set,
// and that a process growing past it is killed by the kernel's OOM killer
// (StatusKilled wrapping ErrOutOfMemory) instead of growing.
func TestSecurityMemoryLimit(t *testing.T) {
	const limit = 32 << 20
	forEach(t, func(t *testing.T, tg *target) {
		tag := "faults-mem-" + randomID()
		drv := tg.mustDriver(t, driverOpts{tag: tag})
		task := tg.task("mem", `sh -c 'cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; a=x; while true; do a="$a$a"; done'`)
		task.MemoryBytes = limit
		out := mustRun(t, testCtx(t, 2*time.Minute), drv, task)
		t.Logf("%s: memory hog under a %d MiB limit: status %s (%v), limit seen inside %q", tg.name, limit>>20, out.Result.Status(), out.Result.Error(), strings.TrimSpace(out.Stdout))
		if got := strings.TrimSpace(strings.SplitN(out.Stdout, "\n", 2)[0]); got != strconv.Itoa(limit) {
			t.Errorf("memory limit seen inside %q, want %d", got, limit)
		}
		if out.Result.Status() != drivers.StatusKilled || !errors.Is(out.Result.Error(), drivers.ErrOutOfMemory) {
			t.Errorf("memory hog: %s %v; want killed, ErrOutOfMemory", out.Result.Status(), out.Result.Error())
		}
		tg.waitNoLeftovers(t, tag, 10*time.Second)
	})
}

// containerID is the runtime's id of the container named name.
func (tg *target) containerID(t testing.TB, name string) string {
	t.Helper()
	if tg.name != "docker" {
		return name
	}
	ctr, err := tg.dc.InspectContainerWithOptions(docker.InspectContainerOptions{ID: name})
	if err != nil {
		t.Fatalf("inspect %s: %v", name, err)
	}
	return ctr.ID
}

// pidsCurrent reads the container's pids.current from the host (cgroup v1
// or v2).
func (tg *target) pidsCurrent(id string) (int, bool) {
	parent := tg.e.ctrNS
	if tg.name == "docker" {
		parent = strings.TrimPrefix(tg.e.dockerCgrp, "/")
	}
	for _, p := range []string{
		filepath.Join("/sys/fs/cgroup/pids", parent, id, "pids.current"),
		filepath.Join("/sys/fs/cgroup", parent, id, "pids.current"),
	} {
		if b, err := os.ReadFile(p); err == nil {
			n, err := strconv.Atoi(strings.TrimSpace(string(b)))
			return n, err == nil
		}
	}
	return 0, false
}

// procsInCgroupOf counts the host's processes whose cgroup names id.
func procsInCgroupOf(id string) int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if err == nil && bytes.Contains(b, []byte("/"+id)) && procState(atoi(e.Name())) != "Z" {
			n++
		}
	}
	return n
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// foreign is a container the test made with the daemon's own API, using
// the test image.
type foreign struct {
	name   string
	labels map[string]string
}

// TestReaperSparesForeignContainers makes running containers of the test
// image that the library does not own (no labels; our tag and another
// instance but no library label; another library's label with our tag)
// and one it does own (a canary from another instance with the same tag).
// A new driver with that tag must reap the canary and leave every other
// running; a cleaner run, where the driver offers one, must not touch them
// or their image.
func TestReaperSparesForeignContainers(t *testing.T) {
	forEach(t, func(t *testing.T, tg *target) {
		ctx := testCtx(t, 3*time.Minute)
		tag := "faults-foreign-" + randomID()
		base := "fnf-foreign-" + randomID()[:6]
		list := []foreign{
			{base + "-nolabels", nil},
			{base + "-nolibrary", map[string]string{drivers.LabelTag: tag, drivers.LabelInstance: "other"}},
			{base + "-otherlib", map[string]string{drivers.LabelLibrary: "not-fnrun", drivers.LabelTag: tag, drivers.LabelInstance: "other"}},
		}
		canary := foreign{base + "-canary", map[string]string{
			drivers.LabelLibrary: drivers.LibraryName, drivers.LabelDriver: tg.name, drivers.LabelTag: tag, drivers.LabelInstance: "crashed-instance",
		}}
		for _, f := range append(list, canary) {
			tg.startForeign(t, ctx, f)
		}

		drv := tg.mustDriver(t, driverOpts{tag: tag})
		deadline := time.Now().Add(60 * time.Second)
		for tg.foreignExists(ctx, canary.name) {
			if time.Now().After(deadline) {
				t.Fatalf("the reaper did not remove the canary (a container of another instance with the same tag) within 60s")
			}
			time.Sleep(200 * time.Millisecond)
		}
		// The reaper is done with the list it took; give it a moment more.
		time.Sleep(time.Second)
		for _, f := range list {
			if !tg.foreignRunning(ctx, f.name) {
				t.Errorf("the leak reaper stopped or removed %s (labels %v), which the library does not own", f.name, f.labels)
			}
		}

		// A cleaner run, if the driver offers one.
		p, ok := drv.(images.Provider)
		if !ok {
			t.Logf("%s driver does not implement images.Provider yet: cleaner part not run", tg.name)
			return
		}
		store := p.ImageStore()
		imgs, err := store.List(ctx)
		if err != nil {
			t.Fatalf("image store List: %v", err)
		}
		for _, img := range imgs {
			for _, r := range img.References {
				if strings.Contains(r, "fnrun-test/busybox") && !img.InUse {
					t.Errorf("image %v is used by running foreign containers but the store says not in use", img.References)
				}
			}
		}
		cl, err := images.New(store, images.Config{MaxSize: 1, Driver: tg.name})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		rep, err := cl.CleanOnce(ctx)
		t.Logf("cleaner pass with a 1-byte budget: %v (%v)", rep, err)
		for _, f := range list {
			if !tg.foreignRunning(ctx, f.name) {
				t.Errorf("the cleaner stopped or removed %s", f.name)
			}
		}
		if has, _ := tg.hasImage(ctx, tg.image); !has {
			t.Errorf("the cleaner removed %s, used by running containers", tg.image)
		}
	})
}

// startForeign starts a `sleep 300` container of the test image with the
// daemon's own API; the test's cleanup removes it.
func (tg *target) startForeign(t testing.TB, ctx context.Context, f foreign) {
	t.Helper()
	if tg.name == "docker" {
		ctr, err := tg.dc.CreateContainer(docker.CreateContainerOptions{
			Name:       f.name,
			Config:     &docker.Config{Image: tg.image, Cmd: []string{"sleep", "300"}, Labels: f.labels},
			HostConfig: &docker.HostConfig{NetworkMode: "none"},
			Context:    ctx,
		})
		if err != nil {
			t.Fatalf("create %s: %v", f.name, err)
		}
		t.Cleanup(func() {
			_ = tg.dc.RemoveContainer(docker.RemoveContainerOptions{ID: ctr.ID, Force: true, RemoveVolumes: true})
		})
		if err := tg.dc.StartContainerWithContext(ctr.ID, nil, ctx); err != nil {
			t.Fatalf("start %s: %v", f.name, err)
		}
		return
	}
	nctx := tg.nsCtx(ctx)
	img, err := tg.cc.GetImage(nctx, tg.e.ctrLocalRef)
	if err != nil {
		t.Fatal(err)
	}
	ctr, err := tg.cc.NewContainer(nctx, f.name,
		ctrd.WithNewSnapshot(f.name, img),
		ctrd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("sleep", "300")),
		ctrd.WithContainerLabels(f.labels))
	if err != nil {
		t.Fatalf("create %s: %v", f.name, err)
	}
	t.Cleanup(func() {
		c := tg.nsCtx(context.Background())
		if task, err := ctr.Task(c, nil); err == nil {
			_, _ = task.Delete(c, ctrd.WithProcessKill)
		}
		_ = ctr.Delete(c, ctrd.WithSnapshotCleanup)
	})
	task, err := ctr.NewTask(nctx, cio.NullIO)
	if err != nil {
		t.Fatalf("task of %s: %v", f.name, err)
	}
	if err := task.Start(nctx); err != nil {
		t.Fatalf("start %s: %v", f.name, err)
	}
}

func (tg *target) foreignExists(ctx context.Context, name string) bool {
	if tg.name == "docker" {
		_, err := tg.dc.InspectContainerWithOptions(docker.InspectContainerOptions{ID: name, Context: ctx})
		return err == nil
	}
	_, err := tg.cc.LoadContainer(tg.nsCtx(ctx), name)
	return err == nil
}

func (tg *target) foreignRunning(ctx context.Context, name string) bool {
	if tg.name == "docker" {
		c, err := tg.dc.InspectContainerWithOptions(docker.InspectContainerOptions{ID: name, Context: ctx})
		return err == nil && c.State.Running
	}
	nctx := tg.nsCtx(ctx)
	c, err := tg.cc.LoadContainer(nctx, name)
	if err != nil {
		return false
	}
	task, err := c.Task(nctx, nil)
	if err != nil {
		return false
	}
	st, err := task.Status(nctx)
	return err == nil && st.Status == ctrd.Running
}

// TestCredentialsNeverLogged pulls from the authenticated registry with
// wrong, then right, credentials, with the driver's logger and the global
// logrus logger both at Trace level and captured. Neither password may
// appear in a log line or an error, in clear or base64-encoded (Basic
// auth, Docker's X-Registry-Auth).
func TestCredentialsNeverLogged(t *testing.T) {
	forEach(t, func(t *testing.T, tg *target) {
		vals := tg.e.shared
		ref := vals["FNRUN_AUTH_TEST_IMAGE"]
		t.Cleanup(func() { _ = tg.removeImage(context.Background(), ref) })
		_ = tg.removeImage(context.Background(), ref)

		var driverLog, globalLog test.SyncBuffer
		l := logrus.New()
		l.SetLevel(logrus.TraceLevel)
		l.Out = &driverLog
		std := logrus.StandardLogger()
		oldOut, oldLevel := std.Out, std.GetLevel()
		std.SetOutput(&globalLog)
		std.SetLevel(logrus.TraceLevel)
		t.Cleanup(func() { std.SetOutput(oldOut); std.SetLevel(oldLevel) })

		tag := "faults-cred-" + randomID()
		drv := tg.mustDriver(t, driverOpts{tag: tag, log: logrus.NewEntry(l)})
		ctx := testCtx(t, 2*time.Minute)
		wrong := "wrong-" + randomID()
		secrets := []string{wrong, vals["FNRUN_AUTH_PASSWORD"]}
		var errs []string

		for _, pw := range secrets {
			task := tg.task("cred", "true")
			task.ImageRef = ref
			task.Credentials = &drivers.AuthConfig{Username: vals["FNRUN_AUTH_USER"], Password: pw, ServerAddress: vals["FNRUN_AUTH_REGISTRY"]}
			c, err := drv.CreateCookie(ctx, task)
			if err != nil {
				t.Fatal(err)
			}
			err = c.PullImage(ctx)
			if err != nil {
				errs = append(errs, err.Error(), fmt.Sprintf("%+v %#v", err, err))
			}
			if pw == wrong {
				if !errors.Is(err, drivers.ErrUnauthorized) {
					t.Errorf("pull with a wrong password: %v; want ErrUnauthorized", err)
				}
			} else if err != nil {
				t.Errorf("pull with the right password: %v", err)
			} else {
				if err := c.CreateContainer(ctx); err != nil {
					t.Fatal(err)
				}
				w, err := c.Run(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if res := w.Wait(ctx); res.Status() != drivers.StatusSuccess {
					t.Errorf("run of the pulled image: %s %v", res.Status(), res.Error())
				}
			}
			if err := c.Close(ctx); err != nil {
				errs = append(errs, err.Error())
			}
			errs = append(errs, fmt.Sprintf("%v %+v", task.Credentials, task.Credentials))
		}
		all := driverLog.String() + "\n" + globalLog.String() + "\n" + strings.Join(errs, "\n")
		lines := strings.Count(driverLog.String(), "\n") + strings.Count(globalLog.String(), "\n")
		t.Logf("%s: captured %d log lines at Trace level (driver %d bytes, global %d bytes) and %d error strings", tg.name, lines, len(driverLog.String()), len(globalLog.String()), len(errs))
		if lines == 0 {
			t.Errorf("nothing was logged at Trace level: the check proves nothing")
		}
		for _, s := range secrets {
			if where := leaks(all, vals["FNRUN_AUTH_USER"], s); where != "" {
				t.Errorf("a password leaked: %s", where)
			}
		}
		tg.waitNoLeftovers(t, tag, 10*time.Second)
	})
}

// leaks looks for password in text: in clear, in Basic auth, and inside any
// base64 token (std, URL, padded or not).
func leaks(text, user, password string) string {
	if i := strings.Index(text, password); i >= 0 {
		return "in clear: ..." + snippet(text, i) + "..."
	}
	basic := user + ":" + password
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if e := enc.EncodeToString([]byte(basic)); strings.Contains(text, e) {
			return "as Basic auth " + e
		}
	}
	tokens := regexp.MustCompile(`[A-Za-z0-9+/_=-]{16,}`).FindAllString(text, -1)
	sort.Strings(tokens)
	for _, tok := range tokens {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			if b, err := enc.DecodeString(strings.TrimRight(tok, "=")); err == nil && bytes.Contains(b, []byte(password)) {
				return "base64-encoded in " + tok
			}
			if b, err := enc.DecodeString(tok); err == nil && bytes.Contains(b, []byte(password)) {
				return "base64-encoded in " + tok
			}
		}
	}
	return ""
}

func snippet(s string, i int) string {
	lo, hi := i-60, i+60
	if lo < 0 {
		lo = 0
	}
	if hi > len(s) {
		hi = len(s)
	}
	return s[lo:hi]
}

// tail is the last n bytes of s.
func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
