package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3"
)

// hybridMountinfo is the cgroup part of the mount table of a hybrid host
// (this development machine's).
const hybridMountinfo = `30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:30 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 30 0:33 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

// writeTree writes files (path: content) under a new temporary folder.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// byName indexes check results by name; each name appears once here.
func byName(t *testing.T, results []checkResult) map[string]checkResult {
	t.Helper()
	out := map[string]checkResult{}
	for _, r := range results {
		if _, dup := out[r.name]; dup {
			t.Fatalf("two results named %s: %+v", r.name, results)
		}
		out[r.name] = r
	}
	return out
}

func wantCheck(t *testing.T, results map[string]checkResult, name string, status checkStatus, detail ...string) {
	t.Helper()
	r, ok := results[name]
	if !ok {
		t.Errorf("no %s check in %+v", name, results)
		return
	}
	if r.status != status {
		t.Errorf("%s: %s (%s), want %s", name, r.status, r.detail, status)
	}
	for _, d := range detail {
		if !strings.Contains(r.detail+" "+r.fix, d) {
			t.Errorf("%s: %q (fix %q) does not say %q", name, r.detail, r.fix, d)
		}
	}
	if (status == checkFail || status == checkWarn) && r.fix == "" {
		t.Errorf("%s: %s without a fix", name, status)
	}
}

// TestDoctorCgroupV2 checks a v2 file tree: the unified mode, the
// controllers, the v2 freezer and cgroup namespaces.
func TestDoctorCgroupV2(t *testing.T) {
	root := writeTree(t, map[string]string{
		"cgroup.controllers":                "cpuset cpu io memory hugetlb pids rdma misc\n",
		"system.slice/cgroup.freeze":        "0\n",
		"system.slice/cgroup.controllers":   "cpu memory pids\n",
		"proc-self-ns/cgroup":               "",
		"init.scope/cgroup.procs":           "1\n",
		"system.slice/containerd.service/x": "",
	})
	h := cgroupHost{root: root, mode: cgroups.Unified, cgroupNS: filepath.Join(root, "proc-self-ns", "cgroup")}
	got := byName(t, h.check())
	wantCheck(t, got, "cgroups", checkOK, "v2 (unified)", "cpu", "memory", "pids")
	wantCheck(t, got, "freezer", checkOK, "cgroup.freeze")
	wantCheck(t, got, "cgroupns", checkOK, "cgroup namespace of its own")
}

// TestDoctorCgroupV2Broken: a v2 host without the pids controller, without
// the v2 freezer (Linux before 5.2) and without cgroup namespaces fails
// the three checks, each saying what to fix.
func TestDoctorCgroupV2Broken(t *testing.T) {
	root := writeTree(t, map[string]string{
		"cgroup.controllers":              "cpu io memory\n",
		"system.slice/cgroup.controllers": "cpu memory\n",
	})
	h := cgroupHost{root: root, mode: cgroups.Unified, cgroupNS: filepath.Join(root, "no-such-file")}
	got := byName(t, h.check())
	wantCheck(t, got, "cgroups", checkFail, "v2 (unified)", "missing controllers pids", "cgroup_disable=")
	wantCheck(t, got, "freezer", checkFail, "5.2")
	wantCheck(t, got, "cgroupns", checkFail, "no cgroup namespaces", "4.6")

	// No cgroup.controllers at all: said, not guessed.
	h.root = t.TempDir()
	wantCheck(t, byName(t, h.check()), "cgroups", checkFail, "v2 (unified), but")
}

// TestDoctorCgroupHybrid: a hybrid host is reported as such and checked
// as v1, from the mount table; it needs no cgroup namespace check.
func TestDoctorCgroupHybrid(t *testing.T) {
	root := writeTree(t, map[string]string{"mountinfo": hybridMountinfo})
	h := cgroupHost{root: "/sys/fs/cgroup", mode: cgroups.Hybrid, mountinfo: filepath.Join(root, "mountinfo")}
	got := byName(t, h.check())
	wantCheck(t, got, "cgroups", checkOK, "hybrid", "limits on the v1 hierarchies", "v2 at /sys/fs/cgroup/unified")
	wantCheck(t, got, "freezer", checkOK, "v1 freezer")
	if _, ok := got["cgroupns"]; ok {
		t.Errorf("a cgroupns check on a hybrid host: %+v", got["cgroupns"])
	}
}

// TestDoctorCgroupV1Broken: a v1 host without the pids and freezer
// hierarchies fails both checks with the mounts to make.
func TestDoctorCgroupV1Broken(t *testing.T) {
	var lines []string
	for _, l := range strings.Split(hybridMountinfo, "\n") {
		if !strings.Contains(l, "rw,pids") && !strings.Contains(l, "rw,freezer") && !strings.Contains(l, "cgroup2") {
			lines = append(lines, l)
		}
	}
	root := writeTree(t, map[string]string{"mountinfo": strings.Join(lines, "\n")})
	h := cgroupHost{root: "/sys/fs/cgroup", mode: cgroups.Legacy, mountinfo: filepath.Join(root, "mountinfo")}
	got := byName(t, h.check())
	wantCheck(t, got, "cgroups", checkFail, "v1;", "missing controllers pids")
	wantCheck(t, got, "freezer", checkFail, "mount -t cgroup -o freezer")
}

// TestDoctorNoCgroups: no cgroup file system at all.
func TestDoctorNoCgroups(t *testing.T) {
	h := cgroupHost{root: "/nonexistent", mode: cgroups.Unavailable}
	wantCheck(t, byName(t, h.check()), "cgroups", checkFail, "no cgroup file system")
}
