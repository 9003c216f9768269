package containerd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
)

func TestFindRuntime(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PATH", dir)
	if got := findRuntime(); got != DefaultRuntime {
		t.Errorf("no %s on the PATH: runtime %s, want %s", FnrunShim, got, DefaultRuntime)
	}
	if err := os.WriteFile(filepath.Join(dir, FnrunShim), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := findRuntime(); got != FnrunRuntime {
		t.Errorf("%s on the PATH: runtime %s, want %s", FnrunShim, got, FnrunRuntime)
	}
	if _, err := New(context.Background(), drivers.Config{Containerd: filepath.Join(dir, "none.sock")}, WithRuntime("")); !errors.Is(err, drivers.ErrInvalidConfig) {
		t.Errorf("WithRuntime(\"\"): %v, want ErrInvalidConfig", err)
	}
}

// runcRoot is where containerd's runc shim keeps runc's state (its
// default, which the driver does not change).
const runcRoot = "/run/containerd/runc"

// TestShims runs calls with containerd's runc shim and with fnrun's (which
// `make up` installs), cold and pooled, and one whose shim is killed while
// it runs: each call ends, and nothing of it is left, neither in runc's
// state nor in containerd's bundles. A killed shim is what fnrun's shim
// must not answer itself: containerd's clean-up after it runs the runc
// shim's delete, which kills the container.
func TestShims(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	bundles := filepath.Join(getenv("FNRUN_STATE", "/var/tmp/fnrun-env"), "containerd", "state", "io.containerd.runtime.v2.task", env.namespace)
	for _, runtime := range []string{DefaultRuntime, FnrunRuntime} {
		t.Run(runtime, func(t *testing.T) {
			d := poolDriver(t, env, drivers.Config{PreForkPoolSize: 1}, WithRuntime(runtime))
			dirs := func(id string) []string {
				return []string{filepath.Join(runcRoot, env.namespace, id), filepath.Join(bundles, id)}
			}
			cleaned := func(id string) bool {
				for _, dir := range dirs(id) {
					if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
						return false
					}
				}
				return true
			}
			gone := func(id string) {
				t.Helper()
				for _, dir := range dirs(id) {
					if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("%s is left after Close: %v", dir, err)
					}
				}
			}
			for _, net := range []bool{false, true} { // a cold call, a pooled one
				task := &drivers.Task{ID: "fnrun-shim-" + randomID(), ImageRef: env.localImage, Cmd: "true", NoNetwork: !net}
				ctx := context.Background()
				c, err := d.CreateCookie(ctx, task)
				if err != nil {
					t.Fatal(err)
				}
				if err := c.CreateContainer(ctx); err != nil {
					t.Fatal(err)
				}
				ctr, err := in.client.LoadContainer(in.ctx(ctx), task.ID)
				if err != nil {
					t.Fatal(err)
				}
				if info, err := ctr.Info(in.ctx(ctx)); err != nil || info.Runtime.Name != runtime {
					t.Fatalf("container runtime %q, %v; want %s", info.Runtime.Name, err, runtime)
				}
				w, err := c.Run(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if res := w.Wait(ctx); res.Status() != drivers.StatusSuccess {
					t.Fatalf("pooled %v: %s, %v", net, res.Status(), res.Error())
				}
				if err := c.Close(ctx); err != nil {
					t.Fatal(err)
				}
				gone(task.ID)
			}

			// No network: a shim of its own, not the holder's.
			c, w, id := startSleeperID(t, d, env, func(task *drivers.Task) { task.NoNetwork = true })
			pid := loadTask(t, in, id).Pid()
			shim := shimOf(t, in, id)
			if shim == shimOf(t, in, oneHolder(t, d).ID) {
				t.Fatalf("the sleeper runs in the holder's shim %d", shim)
			}
			if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if res := w.Wait(ctx); ctx.Err() != nil || res.Status() == drivers.StatusSuccess {
				t.Fatalf("after its shim's kill: %s, %v (wait %v)", res.Status(), res.Error(), ctx.Err())
			}
			if err := c.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			// Reaped by the shim's parent (the host's init or a subreaper)
			// soon, but dead already.
			if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !zombie(stat) {
				t.Fatalf("the container's process %d outlived its shim and Close: %s", pid, stat)
			}
			// Its runc state and bundle are containerd's to remove, in its
			// clean-up after the dead shim.
			deadline := time.Now().Add(10 * time.Second)
			for !cleaned(id) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			gone(id)
		})
	}
}

// zombie reports whether /proc/PID/stat content stat is a process that has
// ended and waits to be reaped.
func zombie(stat []byte) bool {
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	return len(fields) > 0 && fields[0] == "Z"
}
