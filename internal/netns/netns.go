// Package netns creates, pins and removes named network namespaces: a
// namespace made before its container exists, so CNI can set it up and an
// OCI spec can name it by path. It is kept alive by a bind mount of its
// nsfs file onto an empty file, the way ip-netns and containerd's CRI
// plugin do it.
package netns

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Create makes a new network namespace with its loopback interface up
// and pins it at path, which must not exist. The namespace is created on a
// locked OS thread that is never unlocked: the thread ends with its
// goroutine, so no other goroutine of the process ever runs in the new
// namespace, and the caller's thread is untouched.
func Create(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("network namespace file: %w", err)
	}
	_ = f.Close()
	errC := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errC <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("unshare network namespace: %w", err)
			}
			if err := loopbackUp(); err != nil {
				return fmt.Errorf("loopback up: %w", err)
			}
			src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
			if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("pin network namespace at %s: %w", path, err)
			}
			return nil
		}()
	}()
	if err := <-errC; err != nil {
		_ = os.Remove(path)
		return err
	}
	return nil
}

// loopbackUp sets lo up in the calling thread's network namespace. A
// namespace made by unshare has it down, and runc only brings it up in the
// namespaces it creates itself, not in one it joins by path; doing it here
// spares a CNI loopback plugin call per container.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// Remove unpins the namespace at path and removes the file. The
// namespace itself lives on while a process is still in it. A path that is
// already gone, or no longer a mount, is not an error.
func Remove(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unpin network namespace %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove network namespace file: %w", err)
	}
	return nil
}

// IsPinned reports whether path is a pinned network namespace (an nsfs
// file).
func IsPinned(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}
