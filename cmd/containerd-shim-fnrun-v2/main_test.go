package main

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want invocation
		ok   bool
	}{
		{"delete as containerd 1.6 runs it",
			[]string{"-namespace", "fnrun", "-address", "/run/c.sock", "-publish-binary", "/usr/bin/containerd", "-id", "c1", "-bundle", "/b/c1", "delete"},
			invocation{"fnrun", "c1", "delete", "/run/c.sock", "/usr/bin/containerd"}, true},
		{"flags with = and a debug boolean",
			[]string{"--namespace=ns", "-debug", "-id=c2", "start"},
			invocation{namespace: "ns", id: "c2", action: "start"}, true},
		{"no action", []string{"-namespace", "ns", "-id", "c"}, invocation{namespace: "ns", id: "c"}, false},
		{"a flag without its value", []string{"delete", "-id"}, invocation{action: "delete"}, false},
		{"two actions", []string{"-id", "c", "delete", "start"}, invocation{id: "c", action: "delete"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parse(tt.args)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("parse(%q) = %+v, %v; want %+v, %v", tt.args, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// bundle makes a task's bundle in a temporary folder, as containerd does,
// with the given files, and runs the test in it: containerd runs the shim
// there.
func bundle(t *testing.T, id string, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	return dir
}

// TestAnswerDeleteDeleted: the delete is answered here only when runc has
// no state for the container under the root the task's options name.
func TestAnswerDeleteDeleted(t *testing.T) {
	root := t.TempDir()
	bundle(t, "c1", map[string]string{"options.json": `{"root":"` + root + `"}`})
	inv := invocation{namespace: "ns", id: "c1", action: "delete"}
	now := time.Now()

	if _, ok := answer(inv, now); !ok {
		t.Fatal("runc has no state: the delete was not answered")
	}
	if err := os.MkdirAll(filepath.Join(root, "ns", "c1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, ok := answer(inv, now); ok {
		t.Fatal("runc still has the container (its shim died): the runc shim must delete it")
	}
	for _, inv := range []invocation{
		{namespace: "ns", id: "c2", action: "delete"}, // not this bundle
		{id: "c1", action: "delete"},
		{namespace: "ns", id: "c1", action: "state"},
	} {
		if _, ok := answer(inv, now); ok {
			t.Errorf("answer(%+v) = true", inv)
		}
	}
	if err := os.WriteFile("options.json", []byte(`{`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, ok := answer(invocation{namespace: "other", id: "c1", action: "delete"}, now); ok {
		t.Fatal("unreadable options: the delete must be left to the runc shim")
	}
}

// TestAnswerStart: a task of a group whose shim listens gets that shim's
// address, written to the bundle as the runc shim writes it; any other
// task is left to the runc shim, which starts a shim.
func TestAnswerStart(t *testing.T) {
	shimSockets = t.TempDir()
	t.Cleanup(func() { shimSockets = "/run/containerd/s" })
	const containerd = "/run/fnrun-test/containerd.sock"
	sum := sha256.Sum256([]byte(filepath.Join(containerd, "ns", "holder")))
	socket := filepath.Join(shimSockets, hex.EncodeToString(sum[:]))
	inv := invocation{namespace: "ns", id: "c1", action: "start", address: containerd}
	grouped := `{"annotations":{"io.containerd.runc.v2.group":"holder"}}`

	dir := bundle(t, "c1", map[string]string{"config.json": grouped})
	if _, ok := answer(inv, time.Now()); ok {
		t.Fatal("no shim listens for the group: the start must be left to the runc shim")
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	out, ok := answer(inv, time.Now())
	if want := "unix://" + socket; !ok || string(out) != want {
		t.Fatalf("answer = %q, %v; want %q, true", out, ok, want)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "address")); err != nil || string(got) != "unix://"+socket {
		t.Fatalf("address file: %q, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".address")); !os.IsNotExist(err) {
		t.Fatalf("the temporary address file is left: %v", err)
	}

	for name, config := range map[string]string{
		"no group":        `{"annotations":{}}`,
		"its own group":   `{"annotations":{"io.containerd.runc.v2.group":"c1"}}`,
		"another group":   `{"annotations":{"io.kubernetes.cri.sandbox-id":"other"}}`,
		"unreadable spec": `{`,
	} {
		bundle(t, "c1", map[string]string{"config.json": config})
		if _, ok := answer(inv, time.Now()); ok {
			t.Errorf("%s: the start was answered", name)
		}
	}
}

func TestAnswerDelete(t *testing.T) {
	bundle := t.TempDir()
	now := time.Unix(1700000000, 5)
	for _, tt := range []struct {
		pidFile string
		want    uint32
	}{{"4242\n", 4242}, {"", 0}} {
		if tt.pidFile != "" {
			if err := os.WriteFile(filepath.Join(bundle, "init.pid"), []byte(tt.pidFile), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		out, err := answerDelete(bundle, now)
		if err != nil {
			t.Fatal(err)
		}
		var resp taskapi.DeleteResponse
		if err := proto.Unmarshal(out, &resp); err != nil {
			t.Fatal(err)
		}
		if resp.Pid != tt.want || resp.ExitStatus != 137 || !resp.ExitedAt.AsTime().Equal(now) {
			t.Errorf("pid file %q: answer %+v; want pid %d, status 137, exited at %v", tt.pidFile, &resp, tt.want, now)
		}
		os.Remove(filepath.Join(bundle, "init.pid"))
	}
}

// TestUnmountRecursive mounts a tmpfs on a root filesystem's place, one
// inside it, and one on a sibling whose name shares the prefix: the first
// two go, the sibling stays. It needs root.
func TestUnmountRecursive(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs as root; mounting needs it")
		}
		t.Skip("needs root")
	}
	dir := t.TempDir()
	rootfs, inner, sibling := filepath.Join(dir, "rootfs"), filepath.Join(dir, "rootfs", "in"), filepath.Join(dir, "rootfs2")
	for _, p := range []string{rootfs, sibling} {
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", p, "tmpfs", 0, ""); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = unix.Unmount(sibling, 0); _ = unix.Unmount(inner, 0); _ = unix.Unmount(rootfs, 0) })
	if err := os.Mkdir(inner, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", inner, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}

	if err := unmountRecursive(rootfs); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{rootfs: false, inner: false, sibling: true} {
		if got := mounted(t, p); got != want {
			t.Errorf("%s mounted: %v; want %v", p, got, want)
		}
	}
	if err := unmountRecursive(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("nothing mounted: %v", err)
	}
}

func mounted(t *testing.T, path string) bool {
	ok, err := mountinfo.Mounted(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return ok
}

// TestFindRuncShim: the runc shim is looked for on the PATH, then beside
// containerd's binary, as containerd looks for shims.
func TestFindRuncShim(t *testing.T) {
	onPath, beside := t.TempDir(), t.TempDir()
	t.Setenv("PATH", onPath)
	containerd := filepath.Join(beside, "containerd")
	if _, err := findRuncShim(containerd); err == nil {
		t.Fatal("found a runc shim where there is none")
	}
	for _, dir := range []string{beside, onPath} {
		if err := os.WriteFile(filepath.Join(dir, runcShim), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		want := filepath.Join(dir, runcShim)
		if got, err := findRuncShim(containerd); err != nil || got != want {
			t.Fatalf("findRuncShim = %q, %v; want %q", got, err, want)
		}
	}
}
