package containerd

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/dockerconfig/dockerconfigtest"
)

// authsConfig is a config.json that logs in to host with user and password.
func authsConfig(host, user, password string) string {
	return `{"auths":{"` + host + `":{"auth":"` + base64.StdEncoding.EncodeToString([]byte(user+":"+password)) + `"}}}`
}

// TestNewInvalidDockerConfig needs no daemon: the file is read before New
// dials.
func TestNewInvalidDockerConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := drivers.Config{Containerd: filepath.Join(t.TempDir(), "no-daemon.sock")}
	for name, path := range map[string]string{
		"missing":   filepath.Join(t.TempDir(), "missing.json"),
		"not JSON":  dockerconfigtest.WriteConfig(t, `{"auths":`),
		"bad auth":  dockerconfigtest.WriteConfig(t, `{"auths":{"quay.io":{"auth":"%%"}}}`),
		"bad store": dockerconfigtest.WriteConfig(t, `{"credsStore":"../sh"}`),
	} {
		d, err := New(ctx, cfg, drivers.WithDockerConfig(path))
		if err == nil {
			_ = d.Close()
		}
		if !errors.Is(err, drivers.ErrInvalidConfig) || errors.Is(err, drivers.ErrDaemonUnavailable) {
			t.Errorf("%s: New = %v, want ErrInvalidConfig", name, err)
		}
	}
}

// TestPullDockerConfig pulls from the htpasswd registry with credentials
// from a config.json only: its auths, its credsStore helper; a wrong
// password there is refused; a task's own credentials come first.
func TestPullDockerConfig(t *testing.T) {
	env := requireEnv(t)
	var logs bytes.Buffer
	var logMu sync.Mutex
	l := logrus.New()
	l.SetLevel(logrus.TraceLevel)
	l.Out = lockedWriter{&logMu, &logs}
	log := logrus.NewEntry(l)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const wrong = "not-the-password-c0nf"
	right := &drivers.AuthConfig{Username: env.authUser, Password: env.authPassword}
	wrongCreds := &drivers.AuthConfig{Username: env.authUser, Password: wrong}

	// pullWith pulls the auth registry's image afresh with a driver of its
	// own reading config, so no pull or cached helper answer is shared.
	pullWith := func(t *testing.T, config string, task *drivers.AuthConfig) error {
		t.Helper()
		d := newTestDriver(t, env, drivers.Config{}, drivers.WithLogger(log), drivers.WithDockerConfig(config))
		removeImageAfter(t, d, env.authImage)
		c, err := d.CreateCookie(ctx, pullTask(env.authImage, task))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		if err := c.PullImage(ctx); err != nil {
			return err
		}
		if need, err := c.ValidateImage(ctx); err != nil || need {
			t.Fatalf("ValidateImage after the pull = %v, %v", need, err)
		}
		return nil
	}
	refused := func(t *testing.T, err error) {
		t.Helper()
		if !errors.Is(err, drivers.ErrUnauthorized) {
			t.Fatalf("PullImage: %v, want ErrUnauthorized", err)
		}
		for _, secret := range []string{env.authPassword, wrong} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error shows a password: %v", err)
			}
		}
	}

	t.Run("environment config.json", func(t *testing.T) {
		if err := pullWith(t, env.dockerConfig, nil); err != nil {
			t.Fatalf("PullImage with the credentials of %s: %v", env.dockerConfig, err)
		}
	})
	t.Run("auths by file name", func(t *testing.T) {
		dir := dockerconfigtest.WriteConfig(t, authsConfig(env.authRegistry, env.authUser, env.authPassword))
		if err := pullWith(t, filepath.Join(dir, "config.json"), nil); err != nil {
			t.Fatalf("PullImage: %v", err)
		}
	})
	t.Run("credsStore helper", func(t *testing.T) {
		fake := dockerconfigtest.NewFakeHelper(t, env.authRegistry)
		fake.Answer(t, env.authUser, env.authPassword)
		config := dockerconfigtest.WriteConfig(t, `{"credsStore":"`+dockerconfigtest.HelperName+`"}`)
		if err := pullWith(t, config, nil); err != nil {
			t.Fatalf("PullImage with the helper's credentials: %v", err)
		}
		if got := fake.Asked(t); len(got) != 1 || got[0] != env.authRegistry {
			t.Errorf("the helper was asked about %v, want %s once", got, env.authRegistry)
		}
		// A helper with nothing stored: an anonymous pull, refused.
		fake.NoAnswer(t)
		refused(t, pullWith(t, config, nil))
	})
	t.Run("missing helper", func(t *testing.T) {
		missing := "fnrun-missing-" + randomID()
		err := pullWith(t, dockerconfigtest.WriteConfig(t, `{"credHelpers":{"`+env.authRegistry+`":"`+missing+`"}}`), nil)
		if !errors.Is(err, drivers.ErrInvalidConfig) || !errors.Is(err, ErrCredentialHelper) || errors.Is(err, drivers.ErrUnauthorized) ||
			!strings.Contains(err.Error(), dockerconfigtest.HelperProgramPrefix+missing) {
			t.Errorf("PullImage: %v, want ErrInvalidConfig and ErrCredentialHelper naming the program", err)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		refused(t, pullWith(t, dockerconfigtest.WriteConfig(t, authsConfig(env.authRegistry, env.authUser, wrong)), nil))
	})
	t.Run("another host's credentials", func(t *testing.T) {
		refused(t, pullWith(t, dockerconfigtest.WriteConfig(t, authsConfig(env.registry, env.authUser, env.authPassword)), nil))
	})
	t.Run("task credentials first", func(t *testing.T) {
		if err := pullWith(t, dockerconfigtest.WriteConfig(t, authsConfig(env.authRegistry, env.authUser, wrong)), right); err != nil {
			t.Fatalf("task's right credentials over the file's wrong ones: %v", err)
		}
		refused(t, pullWith(t, env.dockerConfig, wrongCreds))
	})
	t.Run("task credentials for another host", func(t *testing.T) {
		// Withheld from the image's registry: the file's are used.
		task := &drivers.AuthConfig{Username: env.authUser, Password: wrong, ServerAddress: env.registry}
		if err := pullWith(t, env.dockerConfig, task); err != nil {
			t.Fatalf("PullImage: %v", err)
		}
	})
	t.Run("file and task credentials pull apart", func(t *testing.T) {
		// One driver, concurrent pulls with the file's right credentials
		// and a task's wrong ones: never one shared pull.
		d := newTestDriver(t, env, drivers.Config{}, drivers.WithLogger(log), drivers.WithDockerConfig(env.dockerConfig))
		removeImageAfter(t, d, env.authImage)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, task := range []*drivers.AuthConfig{nil, wrongCreds} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := d.CreateCookie(ctx, pullTask(env.authImage, task))
				if err != nil {
					errs[i] = err
					return
				}
				defer c.Close(ctx)
				errs[i] = c.PullImage(ctx)
			}()
		}
		wg.Wait()
		if errs[0] != nil {
			t.Errorf("with the file's credentials: %v", errs[0])
		}
		if !errors.Is(errs[1], drivers.ErrUnauthorized) {
			t.Errorf("with the task's wrong credentials: %v, want ErrUnauthorized", errs[1])
		}
	})

	logMu.Lock()
	defer logMu.Unlock()
	if logs.Len() == 0 {
		t.Error("no log line at trace level: the check below proves nothing")
	}
	for _, secret := range []string{env.authPassword, wrong} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("logs show a password:\n%s", logs.String())
		}
	}
}

// TestDockerConfigOnlyForItsHost pulls through a proxy that demands basic
// auth: the config.json's credentials for another host never reach it,
// those stored for it do.
func TestDockerConfigOnlyForItsHost(t *testing.T) {
	env := requireEnv(t)
	proxy := newRegistryProxy(t, env.registry, func(p *registryProxy) { p.requireBasic = "alice:s3cret" })
	ref := proxy.host + "/fnrun/busybox:latest"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pull := func(config string) error {
		t.Helper()
		d := newTestDriver(t, env, drivers.Config{}, drivers.WithDockerConfig(dockerconfigtest.WriteConfig(t, config)))
		removeImageAfter(t, d, ref)
		c, err := d.CreateCookie(ctx, pullTask(ref, nil))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		return c.PullImage(ctx)
	}
	// The same login under every other spelling of a registry.
	others := `{"auths":{
		"https://index.docker.io/v1/":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("alice:s3cret")) + `"},
		"127.0.0.1":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("alice:s3cret")) + `"},
		"` + env.registry + `":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("alice:s3cret")) + `"}}}`
	if err := pull(others); !errors.Is(err, drivers.ErrUnauthorized) {
		t.Fatalf("pull with only other hosts' credentials: %v, want ErrUnauthorized", err)
	}
	if a := proxy.auths(); len(a) != 0 {
		t.Fatalf("credentials for other hosts reached this one: %d headers", len(a))
	}
	if err := pull(authsConfig("http://"+proxy.host, "alice", "s3cret")); err != nil {
		t.Fatalf("pull with this host's credentials: %v", err)
	}
	if len(proxy.auths()) == 0 {
		t.Fatal("no credentials reached the registry they are stored for")
	}
}
