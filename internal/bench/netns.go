package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	gocni "github.com/containerd/go-cni"
	"golang.org/x/sys/unix"
)

// NetNSDir is where the bare containerd side pins the network namespaces
// of its cold calls. A tmpfs: namespaces do not survive a reboot.
const NetNSDir = "/run/fnrun/bench/netns"

// cniNet is the bare side's own CNI: the same configuration the containerd
// driver loads (the first network of the configuration folder), set up on
// a pinned namespace per call, as the driver does for a call without a
// pool.
type cniNet struct {
	cni gocni.CNI
}

// newCNINet loads the CNI configuration of confDir with the plugins of
// binDir, as the driver does.
func newCNINet(confDir, binDir string) (*cniNet, error) {
	c, err := gocni.New(
		gocni.WithPluginConfDir(confDir),
		gocni.WithPluginDir([]string{binDir}),
		gocni.WithInterfacePrefix("eth"))
	if err == nil {
		err = c.Load(gocni.WithDefaultConf)
	}
	if err != nil {
		return nil, fmt.Errorf("CNI configuration in %s: %w", confDir, err)
	}
	if err := os.MkdirAll(NetNSDir, 0o700); err != nil {
		return nil, err
	}
	return &cniNet{cni: c}, nil
}

// attach pins a new namespace named id and sets it up with CNI.
func (n *cniNet) attach(ctx context.Context, id string) (string, error) {
	path := filepath.Join(NetNSDir, id)
	if err := createNetNS(path); err != nil {
		return "", err
	}
	if _, err := n.cni.Setup(ctx, id, path); err != nil {
		_ = n.cni.Remove(context.WithoutCancel(ctx), id, path)
		_ = removeNetNS(path)
		return "", fmt.Errorf("CNI setup: %w", err)
	}
	return path, nil
}

// detach tears the CNI attachment down and unpins the namespace.
func (n *cniNet) detach(ctx context.Context, id, path string) error {
	if err := n.cni.Remove(ctx, id, path); err != nil {
		return fmt.Errorf("CNI teardown: %w", err)
	}
	return removeNetNS(path)
}

// createNetNS makes a network namespace with lo up and pins it at path,
// from a locked OS thread that dies with its goroutine, so no other
// goroutine ever runs in the new namespace.
func createNetNS(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("network namespace file: %w", err)
	}
	_ = f.Close()
	errC := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
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

func removeNetNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unpin network namespace %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
