package exec_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/containerd"
	"github.com/fnrun/fnrun/drivers/docker"
	"github.com/fnrun/fnrun/test"
)

// realTargets returns the docker and containerd drivers over the real test
// environment. Without it the tests run on the mock alone, unless CI=true.
func realTargets(t *testing.T) []target {
	if testing.Short() && os.Getenv("CI") != "true" {
		return nil
	}
	env := test.Env(t, "FNRUN_DOCKER_HOST", "FNRUN_CONTAINERD_ADDRESS", "FNRUN_CONTAINERD_NAMESPACE", "FNRUN_TEST_IMAGE")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := drivers.Config{
		Docker:              env["FNRUN_DOCKER_HOST"],
		Containerd:          env["FNRUN_CONTAINERD_ADDRESS"],
		ContainerdNamespace: env["FNRUN_CONTAINERD_NAMESPACE"],
		CNIConfDir:          os.Getenv("FNRUN_CNI_CONF"),
		CNIBinDir:           os.Getenv("FNRUN_CNI_BIN"),
		ContainerLabelTag:   "exec-test",
	}
	dd, err := docker.New(ctx, cfg)
	if err != nil {
		t.Fatalf("docker driver: %v", err)
	}
	t.Cleanup(func() { dd.Close() })
	cd, err := containerd.New(ctx, cfg)
	if err != nil {
		t.Fatalf("containerd driver: %v", err)
	}
	t.Cleanup(func() { cd.Close() })
	image := env["FNRUN_TEST_IMAGE"]
	return []target{
		{name: "docker", drv: dd, image: image, leftovers: managedContainers(t, dd)},
		{name: "containerd", drv: cd, image: image, leftovers: managedContainers(t, cd)},
	}
}

// managedContainers counts the containers the driver still manages, when
// it can list them.
func managedContainers(t *testing.T, drv drivers.Driver) func() int {
	lister, ok := drv.(drivers.ContainerLister)
	if !ok {
		return nil
	}
	return func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		list, err := lister.Containers(ctx)
		if err != nil {
			t.Errorf("listing containers: %v", err)
			return -1
		}
		n := 0
		for _, c := range list {
			if c.Role != drivers.RoleHolder {
				n++
			}
		}
		return n
	}
}
