package fn

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/dockerconfig/dockerconfigtest"
)

// authEnv are the variables of the loopback registry that asks for a
// login.
var authEnv = []string{"FNRUN_AUTH_REGISTRY", "FNRUN_AUTH_TEST_IMAGE", "FNRUN_AUTH_USER", "FNRUN_AUTH_PASSWORD"}

// credentialsEnv sets the environment a driver reads registry credentials
// from when opened: FN_DOCKER_AUTH, else DOCKER_CONFIG's config.json,
// else HOME's .docker/config.json. Empty values mean unset; the config
// files are written when their content is not empty.
func credentialsEnv(t *testing.T, fnDockerAuth, dockerConfig, homeConfig string) {
	t.Helper()
	t.Setenv("FN_DOCKER_AUTH", fnDockerAuth)
	dir := ""
	if dockerConfig != "" {
		dir = dockerconfigtest.WriteConfig(t, dockerConfig)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	home := t.TempDir()
	if homeConfig != "" {
		// HOME's .docker is a folder of its own, holding config.json.
		if err := os.Symlink(dockerconfigtest.WriteConfig(t, homeConfig), filepath.Join(home, ".docker")); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("HOME", home)
}

// rigsOf makes a rig of every runtime, with the extra variables the test
// needs.
func rigsOf(t *testing.T, extra ...string) map[string]*rig {
	t.Helper()
	rigs := map[string]*rig{}
	for _, name := range runtimes {
		rigs[name] = newRig(t, name, extra...)
	}
	return rigs
}

// openAll opens the driver of every rig.
func openAll(t *testing.T, rigs map[string]*rig) map[string]drivers.Driver {
	t.Helper()
	drvs := map[string]drivers.Driver{}
	for _, name := range runtimes {
		drvs[name] = rigs[name].open(t, drivers.Config{})
	}
	return drvs
}

// authRegistry is the loopback registry that asks for a login, with its
// credentials.
func authRegistry(t *testing.T, rigs map[string]*rig) *registry {
	e := rigs[rtDocker].env
	return newRegistry(t, e["FNRUN_AUTH_REGISTRY"], e["FNRUN_AUTH_USER"], e["FNRUN_AUTH_PASSWORD"])
}

// Fn's driver reads registry credentials at start from FN_DOCKER_AUTH (the
// JSON of a config.json's auths), else from the user's Docker config
// (DOCKER_CONFIG, else ~/.docker). fnrun does too, and offers them to the
// image's exact registry host only: another spelling of the same
// registry, the host without its port, or (Fn's registry_test.go) a
// parent domain get nothing. Each case pulls an image of its own from the
// loopback registry that asks for a login, on both runtimes.
//
// The environment is process-wide: the cases set it and open their
// drivers one after the other, not in parallel.
func TestCredentialsFromEnvironment(t *testing.T) {
	rigs := rigsOf(t, authEnv...)
	reg := authRegistry(t, rigs)
	host, user, password := reg.host, reg.user, reg.password
	entry := func(key string) string {
		return fmt.Sprintf(`{%q:{"username":%q,"password":%q}}`, key, user, password)
	}
	configJSON := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, base64.StdEncoding.EncodeToString([]byte(user+":"+password)))

	for _, tc := range []struct {
		name                             string
		fnDockerAuth, dockerConfig, home string
		ok                               bool
	}{
		{name: "FN_DOCKER_AUTH", fnDockerAuth: entry(host), ok: true},
		{name: "FN_DOCKER_AUTH as a whole config.json", fnDockerAuth: configJSON, ok: true},
		{name: "FN_DOCKER_AUTH keyed by URL", fnDockerAuth: entry("http://" + host + "/v2/"), ok: true},
		{name: "DOCKER_CONFIG", dockerConfig: configJSON, ok: true},
		{name: "HOME", home: configJSON, ok: true},
		{name: "FN_DOCKER_AUTH first", fnDockerAuth: entry("127.0.0.1:1"), home: configJSON, ok: false},
		{name: "another spelling of the host", fnDockerAuth: entry("localhost:" + portOf(host)), ok: false},
		{name: "the host without its port", fnDockerAuth: entry(hostOf(host)), ok: false},
		{name: "none", ok: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			credentialsEnv(t, tc.fnDockerAuth, tc.dockerConfig, tc.home)
			drvs := openAll(t, rigs)
			ref := reg.derive(t, "fnrun/fn-auth-"+randomID(), "v1", imageSpec{})
			var wg sync.WaitGroup
			for _, name := range runtimes {
				r := rigs[name]
				t.Cleanup(func() { r.removeImage(ref) })
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := pullErr(drvs[name], ref)
					switch {
					case tc.ok && err != nil:
						t.Errorf("%s: pull with the credentials: %v", name, err)
					case !tc.ok && !errors.Is(err, drivers.ErrUnauthorized):
						t.Errorf("%s: pull: %v, want ErrUnauthorized (no credentials offered)", name, err)
					}
				}()
			}
			wg.Wait()
		})
	}
}

// Fn logs an FN_DOCKER_AUTH it cannot read and goes on without
// credentials; fnrun refuses to open, with an error that does not quote
// the secret.
func TestCredentialsMalformed(t *testing.T) {
	rigs := rigsOf(t)
	const secret = "fnrun-not-a-secret-really"
	credentialsEnv(t, `{"127.0.0.1:5001":{"password":"`+secret+`"`, "", "")
	for _, name := range runtimes {
		drv, err := rigs[name].tryOpen(t, drivers.Config{})
		if !errors.Is(err, drivers.ErrInvalidConfig) || drv != nil {
			t.Errorf("%s: Open with a malformed FN_DOCKER_AUTH: %v, %v; want ErrInvalidConfig", name, drv, err)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error quotes FN_DOCKER_AUTH: %v", name, err)
		}
	}
}

// pullErr pulls ref through a cookie of drv and returns the error.
func pullErr(drv drivers.Driver, ref string) error {
	return pullTask(drv, &drivers.Task{ID: "fn-auth-" + randomID(), ImageRef: ref, Cmd: "true"})
}

func pullTask(drv drivers.Driver, task drivers.ContainerTask) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cookie, err := drv.CreateCookie(ctx, task)
	if err != nil {
		return err
	}
	defer cookie.Close(context.Background())
	pull, err := cookie.ValidateImage(ctx)
	if err != nil {
		return err
	}
	if !pull {
		return errors.New("the image is there already: no pull to test")
	}
	return cookie.PullImage(ctx)
}

func hostOf(hostport string) string {
	h, _, _ := net.SplitHostPort(hostport)
	return h
}

func portOf(hostport string) string {
	_, p, _ := net.SplitHostPort(hostport)
	return p
}

// fnTask is a task of Fn's agent: it gives its registry credentials in
// go-dockerclient's type, through Fn's docker.Auther method DockerAuth.
type fnTask struct {
	*drivers.Task
	auth *docker.AuthConfiguration
	err  error

	mu    sync.Mutex
	asked []string // the images DockerAuth was asked about
}

func (f *fnTask) DockerAuth(_ context.Context, image string) (*docker.AuthConfiguration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, image)
	return f.auth, f.err
}

// Fn's Auther: a task implementing DockerAuth(ctx, image) has its
// credentials used for its image, asked about the image as the task names
// it. fnrun's own drivers.Auther comes first; and, unlike Fn, credentials
// a task gives for another registry are not sent to this one.
func TestDockerAuthTask(t *testing.T) {
	rigs := rigsOf(t, authEnv...)
	credentialsEnv(t, "", "", "") // no credentials but the task's
	reg := authRegistry(t, rigs)
	host, user, password := reg.host, reg.user, reg.password
	drvs := openAll(t, rigs)
	refused := errors.New("no credentials for this image")
	right := &docker.AuthConfiguration{Username: user, Password: password, ServerAddress: host}

	for _, name := range runtimes {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r, drv := rigs[name], drvs[name]
			for _, tc := range []struct {
				name  string
				task  func(ref string) *fnTask
				check func(t *testing.T, task *fnTask, err error)
			}{
				{"its credentials", func(ref string) *fnTask {
					return &fnTask{Task: &drivers.Task{ImageRef: ref}, auth: right}
				}, func(t *testing.T, task *fnTask, err error) {
					if err != nil {
						t.Fatalf("pull: %v", err)
					}
					if len(task.asked) != 1 || task.asked[0] != task.ImageRef {
						t.Errorf("DockerAuth asked about %q, want once about the task's image %q", task.asked, task.ImageRef)
					}
				}},
				{"no server address", func(ref string) *fnTask {
					return &fnTask{Task: &drivers.Task{ImageRef: ref}, auth: &docker.AuthConfiguration{Username: user, Password: password}}
				}, wantPulled},
				{"a wrong password", func(ref string) *fnTask {
					return &fnTask{Task: &drivers.Task{ImageRef: ref}, auth: &docker.AuthConfiguration{Username: user, Password: "wrong", ServerAddress: host}}
				}, wantErr(drivers.ErrUnauthorized)},
				{"its error", func(ref string) *fnTask {
					return &fnTask{Task: &drivers.Task{ImageRef: ref}, err: refused}
				}, wantErr(refused)},
				{"another registry's", func(ref string) *fnTask {
					other := *right
					other.ServerAddress = r.env["FNRUN_REGISTRY"]
					return &fnTask{Task: &drivers.Task{ImageRef: ref}, auth: &other}
				}, wantErr(drivers.ErrUnauthorized)},
				{"drivers.Auther first", func(ref string) *fnTask {
					return &fnTask{Task: &drivers.Task{ImageRef: ref, Credentials: &drivers.AuthConfig{Username: user, Password: password}},
						auth: &docker.AuthConfiguration{Username: user, Password: "wrong"}}
				}, func(t *testing.T, task *fnTask, err error) {
					wantPulled(t, task, err)
					if len(task.asked) != 0 {
						t.Errorf("DockerAuth asked about %q although drivers.Auther answered", task.asked)
					}
				}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					// Without a tag: the task's own spelling is what
					// DockerAuth is asked about.
					ref := reg.derive(t, "fnrun/fn-dockerauth-"+randomID(), "latest", imageSpec{})
					ref = ref[:len(ref)-len(":latest")]
					t.Cleanup(func() { r.removeImage(ref) })
					task := tc.task(ref)
					task.ID, task.Cmd = "fn-dockerauth-"+randomID(), "true"
					tc.check(t, task, pullTask(drv, task))
				})
			}
		})
	}
}

func wantPulled(t *testing.T, _ *fnTask, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
}

func wantErr(want error) func(t *testing.T, _ *fnTask, err error) {
	return func(t *testing.T, _ *fnTask, err error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Fatalf("pull: %v, want %v", err, want)
		}
	}
}
