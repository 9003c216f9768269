package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
)

// testEnv is the real environment that test/env/up.sh starts, read from
// the FNRUN_* variables (source /var/tmp/fnrun-env/env).
type testEnv struct {
	host         string // FNRUN_DOCKER_HOST
	registry     string // FNRUN_REGISTRY, plain HTTP
	authRegistry string // FNRUN_AUTH_REGISTRY, htpasswd
	authUser     string
	authPassword string
	image        string // FNRUN_TEST_IMAGE, in the registry
	pullImage    string // FNRUN_PULL_TEST_IMAGE, in the registry, removed and pulled by the suite
	authImage    string // FNRUN_AUTH_TEST_IMAGE
	localImage   string // FNRUN_LOCAL_IMAGE, loaded into the daemon
	imageTar     string // FNRUN_IMAGE_TAR
	dockerConfig string // FNRUN_DOCKER_CONFIG
}

var (
	envOnce sync.Once
	envVal  testEnv
	envErr  error
)

// needEnv returns the environment, or skips the test when there is no
// daemon; with CI=true a missing daemon fails the test instead, so CI can
// never pass without running these tests.
func needEnv(t testing.TB) testEnv {
	t.Helper()
	envOnce.Do(func() {
		envVal = testEnv{
			host:         os.Getenv("FNRUN_DOCKER_HOST"),
			registry:     os.Getenv("FNRUN_REGISTRY"),
			authRegistry: os.Getenv("FNRUN_AUTH_REGISTRY"),
			authUser:     os.Getenv("FNRUN_AUTH_USER"),
			authPassword: os.Getenv("FNRUN_AUTH_PASSWORD"),
			image:        os.Getenv("FNRUN_TEST_IMAGE"),
			pullImage:    os.Getenv("FNRUN_PULL_TEST_IMAGE"),
			authImage:    os.Getenv("FNRUN_AUTH_TEST_IMAGE"),
			localImage:   os.Getenv("FNRUN_LOCAL_IMAGE"),
			imageTar:     os.Getenv("FNRUN_IMAGE_TAR"),
			dockerConfig: os.Getenv("FNRUN_DOCKER_CONFIG"),
		}
		if envVal.host == "" {
			envErr = errors.New("FNRUN_DOCKER_HOST is not set (source /var/tmp/fnrun-env/env after test/env/up.sh)")
			return
		}
		c, err := docker.NewClient(envVal.host)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = c.PingWithContext(ctx)
			cancel()
		}
		if err != nil {
			envErr = errors.New("docker daemon at " + envVal.host + " does not answer: " + err.Error())
		}
	})
	if envErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and the test environment is missing: %v", envErr)
		}
		t.Skipf("no test environment: %v", envErr)
	}
	return envVal
}

// bare returns a plain go-dockerclient client on the test daemon, for
// setting up and checking what the driver did.
func (e testEnv) bare(t testing.TB) *docker.Client {
	t.Helper()
	c, err := docker.NewClient(e.host)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newDriver builds a driver on the test daemon with a label tag of its
// own; the test's cleanup closes it.
func newDriver(t testing.TB, cfg drivers.Config, opts ...Option) *Driver {
	t.Helper()
	e := needEnv(t)
	if cfg.Docker == "" {
		cfg.Docker = e.host
	}
	if cfg.ContainerLabelTag == "" {
		cfg.ContainerLabelTag = "test-" + randomID()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := New(ctx, cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		_ = d.Close()
		removeTagged(t, e, cfg.ContainerLabelTag)
	})
	return d
}

// removeTagged removes what a test left behind, so that a failed test
// does not leak containers into the next.
func removeTagged(t testing.TB, e testEnv, tag string) {
	c := e.bare(t)
	list, err := c.ListContainers(docker.ListContainersOptions{All: true, Filters: map[string][]string{"label": {LabelTag + "=" + tag}}})
	if err != nil {
		return
	}
	for _, ctr := range list {
		_ = c.RemoveContainer(docker.RemoveContainerOptions{ID: ctr.ID, Force: true, RemoveVolumes: true})
	}
}

// tagged lists the containers carrying tag.
func tagged(ctx context.Context, c *docker.Client, tag string) ([]string, error) {
	list, err := c.ListContainers(docker.ListContainersOptions{All: true, Context: ctx, Filters: map[string][]string{"label": {LabelTag + "=" + tag}}})
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(list))
	for _, ctr := range list {
		out = append(out, strings.Join(ctr.Names, ",")+" ("+ctr.State+")")
	}
	return out, nil
}

// removeImage removes an image from the test daemon; a missing one is fine.
func removeImage(c *docker.Client, ref string) error {
	err := c.RemoveImageExtended(ref, docker.RemoveImageOptions{Force: true})
	if errors.Is(err, docker.ErrNoSuchImage) {
		return nil
	}
	return err
}

// randomID is a short random hex string, to keep the names of a test's
// containers, images and label tags its own on the shared daemon.
func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// networkMode is the network mode the daemon recorded for a container (by
// id or name): "container:<holder id>" for a call that joined a pool
// holder.
func networkMode(t testing.TB, bare *docker.Client, idOrName string) string {
	t.Helper()
	ctr, err := bare.InspectContainer(idOrName)
	if err != nil {
		t.Fatal(err)
	}
	return ctr.HostConfig.NetworkMode
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// runTask runs task through the whole cookie life cycle.
func runTask(ctx context.Context, t testing.TB, d *Driver, task *drivers.Task) drivers.RunResult {
	t.Helper()
	c, err := d.CreateCookie(ctx, task)
	if err != nil {
		t.Fatalf("CreateCookie: %v", err)
	}
	defer c.Close(context.Background())
	if need, err := c.ValidateImage(ctx); err != nil {
		t.Fatalf("ValidateImage: %v", err)
	} else if need {
		if err := c.PullImage(ctx); err != nil {
			t.Fatalf("PullImage: %v", err)
		}
	}
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	res := w.Wait(ctx)
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return res
}
