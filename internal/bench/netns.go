package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	gocni "github.com/containerd/go-cni"

	"github.com/fnrun/fnrun/internal/netns"
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
	if err := netns.Create(path); err != nil {
		return "", err
	}
	if _, err := n.cni.Setup(ctx, id, path); err != nil {
		_ = n.cni.Remove(context.WithoutCancel(ctx), id, path)
		_ = netns.Remove(path)
		return "", fmt.Errorf("CNI setup: %w", err)
	}
	return path, nil
}

// detach tears the CNI attachment down and unpins the namespace.
func (n *cniNet) detach(ctx context.Context, id, path string) error {
	if err := n.cni.Remove(ctx, id, path); err != nil {
		return fmt.Errorf("CNI teardown: %w", err)
	}
	return netns.Remove(path)
}
