package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fnrun/fnrun/drivers"
)

// A container's cgroup files, as runc and the kernel write them for the
// limits testLimits sets, seen from inside the container.
var (
	// v2LimitsTree: the cgroup2 mount of a container in a cgroup namespace
	// of its own, its cgroup at the root.
	v2LimitsTree = map[string]string{
		"cgroup.controllers": "cpu io memory pids\n",
		"cgroup.freeze":      "0\n",
		"memory.max":         "67108864\n",
		"memory.swap.max":    "0\n",
		"pids.max":           "50\n",
		"cpu.max":            "50000 100000\n",
	}
	// v1LimitsTree: the v1 hierarchies runc mounts, each at the
	// container's own cgroup; memory+swap equal to memory.
	v1LimitsTree = map[string]string{
		"memory/memory.limit_in_bytes":       "67108864\n",
		"memory/memory.memsw.limit_in_bytes": "67108864\n",
		"pids/pids.max":                      "50\n",
		"cpu/cpu.cfs_quota_us":               "50000\n",
		"cpu/cpu.cfs_period_us":              "100000\n",
		"freezer/freezer.state":              "THAWED\n",
	}
)

// runLimitsScript runs limitsScript with this host's sh over a cgroup tree
// in a temporary folder (files; "" leaves a file out), and /proc/self/cgroup
// reading as procCgroup, and parses what it prints.
func runLimitsScript(t *testing.T, files map[string]string, procCgroup string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	cg := filepath.Join(dir, "cgroup")
	for name, content := range files {
		if content == "" {
			continue
		}
		p := filepath.Join(cg, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	proc := filepath.Join(dir, "proc-self-cgroup")
	if err := os.WriteFile(proc, []byte(procCgroup), 0o644); err != nil {
		t.Fatal(err)
	}
	args, err := drivers.SplitCommand(limitsScript)
	if err != nil {
		t.Fatal(err)
	}
	if len(args) != 3 || args[0] != "sh" || args[1] != "-c" {
		t.Fatalf("limitsScript is %q, want sh -c SCRIPT", args)
	}
	script := strings.NewReplacer("/sys/fs/cgroup", cg, "/proc/self/cgroup", proc).Replace(args[2])
	out, err := exec.Command("sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("script: %v\n%s", err, out)
	}
	return parseLimits(string(out))
}

func withFiles(tree map[string]string, changes map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range tree {
		out[k] = v
	}
	for k, v := range changes {
		out[k] = v
	}
	return out
}

// TestLimitsScriptHierarchies runs the suite's limit checks over the cgroup
// files of a v2 and of a v1 container: the same checks hold on both, and
// fail where a limit, the freezer or the cgroup namespace is missing.
func TestLimitsScriptHierarchies(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh on this host")
	}
	for _, tc := range []struct {
		name       string
		files      map[string]string
		procCgroup string
		hierarchy  string
		problems   []string // substrings, one per expected problem
	}{
		{"v2", v2LimitsTree, "0::/\n", "v2", nil},
		{"v2 without swap accounting", withFiles(v2LimitsTree, map[string]string{"memory.swap.max": ""}), "0::/\n", "v2", nil},
		{"v2 in the host's cgroup namespace", v2LimitsTree, "0::/fnrun/call-1\n", "v2", []string{"cgroup namespace"}},
		// The host's root cgroup, as a container without a cgroup
		// namespace mounts it: no limit files at the root.
		{"v2 host tree", map[string]string{"cgroup.controllers": "cpu io memory pids\n"}, "0::/fnrun/call-1\n", "v2",
			[]string{"cgroup namespace", "memory limit", "pids limit", "cpu quota", "freezer"}},
		{"v2 swap allowed", withFiles(v2LimitsTree, map[string]string{"memory.swap.max": "max\n"}), "0::/\n", "v2", []string{"swap"}},
		{"v2 frozen", withFiles(v2LimitsTree, map[string]string{"cgroup.freeze": "1\n"}), "0::/\n", "v2", []string{"freezer"}},
		{"v1", v1LimitsTree, "", "v1", nil},
		{"v1 without swap accounting", withFiles(v1LimitsTree, map[string]string{"memory/memory.memsw.limit_in_bytes": ""}), "", "v1", nil},
		{"v1 without freezer", withFiles(v1LimitsTree, map[string]string{"freezer/freezer.state": ""}), "", "v1", []string{"freezer"}},
		{"v1 cpu unlimited", withFiles(v1LimitsTree, map[string]string{"cpu/cpu.cfs_quota_us": "-1\n"}), "", "v1", []string{"cpu quota"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := runLimitsScript(t, tc.files, tc.procCgroup)
			if got["hierarchy"] != tc.hierarchy {
				t.Fatalf("read as %q, want %s: %v", got["hierarchy"], tc.hierarchy, got)
			}
			problems := cgroupLimitProblems(got)
			if len(problems) != len(tc.problems) {
				t.Fatalf("problems %q, want %d about %q (read %v)", problems, len(tc.problems), tc.problems, got)
			}
			for i, want := range tc.problems {
				if !strings.Contains(problems[i], want) {
					t.Errorf("problem %q, want one about %s", problems[i], want)
				}
			}
		})
	}
}
