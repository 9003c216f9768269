package docker

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/lifecycle"
	"github.com/fnrun/fnrun/internal/dockerconfig/dockerconfigtest"
	"github.com/fnrun/fnrun/test"
)

// TestCredentialsForTheDaemon: what the config.json and the task give
// reaches the daemon's X-Registry-Auth form unchanged, for the image's host
// only; anonymous is the zero value, which sends no header. The lookup
// itself is tested in internal/dockerconfig; the settings are the ones New
// builds (lifecycle.Configure with WithDockerConfig), and the life cycle
// hands what they give to daemon.Pull, which sends dockerAuth of it.
func TestCredentialsForTheDaemon(t *testing.T) {
	config := dockerconfigtest.WriteConfig(t, `{"auths":{
		"https://index.docker.io/v1/":{"auth":"`+base64.StdEncoding.EncodeToString([]byte("hub:pw"))+`"},
		"quay.io":{"identitytoken":"tok"}}}`)
	var logs test.LogCapture
	s, err := lifecycle.Configure(driverName, drivers.Config{}, []drivers.Option{drivers.WithDockerConfig(config), drivers.WithLogger(logs.Entry())})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for image, want := range map[string]docker.AuthConfiguration{
		"busybox":            {Username: "hub", Password: "pw", ServerAddress: "docker.io"},
		"quay.io/fn/app":     {IdentityToken: "tok", ServerAddress: "quay.io"},
		"example.com/fn/app": {},
	} {
		ref, err := drivers.NormalizeImage(image)
		if err != nil {
			t.Fatal(err)
		}
		// What a cookie's pull sends.
		conf, err := s.Credentials.PullCredentials(ctx, &drivers.Task{}, ref, s.Logger)
		if got := dockerAuth(conf); err != nil || got != want {
			t.Errorf("%s: %q at %q (%v), want %q at %q", image, got.Username, got.ServerAddress, err, want.Username, want.ServerAddress)
		}
		// What the pool's pull of its image sends, without a task.
		conf, err = s.Credentials.ImageCredentials(ctx, ref)
		if got := dockerAuth(conf); err != nil || got != want {
			t.Errorf("%s without a task: %q at %q (%v)", image, got.Username, got.ServerAddress, err)
		}
	}
	task := &drivers.Task{Credentials: &drivers.AuthConfig{Username: "task", Password: "p", ServerAddress: "https://index.docker.io/v1/"}}
	ref, err := drivers.NormalizeImage("busybox")
	if err != nil {
		t.Fatal(err)
	}
	conf, err := s.Credentials.PullCredentials(ctx, task, ref, s.Logger)
	if got := dockerAuth(conf); err != nil || got != (docker.AuthConfiguration{Username: "task", Password: "p", ServerAddress: "docker.io"}) {
		t.Errorf("task credentials: %q at %q (%v)", got.Username, got.ServerAddress, err)
	}
	// No config.json at all.
	none, err := lifecycle.Configure(driverName, drivers.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	conf, err = none.Credentials.PullCredentials(ctx, &drivers.Task{}, ref, none.Logger)
	if got := dockerAuth(conf); err != nil || conf != nil || got != (docker.AuthConfiguration{}) {
		t.Errorf("without a config: %q (%v), want anonymous", got.Username, err)
	}
	// That anonymous pulls share one key (credentialKey before) is the
	// life cycle's now: TestPullDedupe checks it end to end, its
	// concurrent anonymous pulls making one daemon pull.
}

// TestPullCredentialHelper pulls from the htpasswd registry with the
// credentials of the fake helper, named by credsStore and by credHelpers.
func TestPullCredentialHelper(t *testing.T) {
	e := needEnv(t)
	if e.authImage == "" || e.authPassword == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and FNRUN_AUTH_TEST_IMAGE or FNRUN_AUTH_PASSWORD unset")
		}
		t.Skip("FNRUN_AUTH_TEST_IMAGE or FNRUN_AUTH_PASSWORD unset")
	}
	fake := dockerconfigtest.NewFakeHelper(t, e.authRegistry)
	ctx := testCtx(t, 3*time.Minute)
	bare := e.bare(t)
	t.Cleanup(func() { _ = removeImage(bare, e.authImage) })
	wrong := "wrong-" + randomID()
	fresh := func(t *testing.T) {
		t.Helper()
		if err := removeImage(bare, e.authImage); err != nil {
			t.Fatal(err)
		}
	}
	secretFree := func(t *testing.T, what string, err error, log *test.LogCapture) {
		t.Helper()
		for _, secret := range []string{e.authPassword, wrong} {
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("%s: the error %q holds a password", what, err)
			}
			if strings.Contains(log.String(), secret) {
				t.Errorf("%s: a password appears in the logs:\n%s", what, log.String())
			}
		}
	}

	for _, tc := range []struct {
		name   string
		config string
		// otherHostAsked: whether the helper hears of the plain registry's
		// host when an image from there is pulled.
		otherHostAsked bool
	}{
		{"credsStore", `{"credsStore":"` + dockerconfigtest.HelperName + `"}`, true},
		{"credHelpers", `{"credHelpers":{"` + e.authRegistry + `":"` + dockerconfigtest.HelperName + `"}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			config := dockerconfigtest.WriteConfig(t, tc.config)
			var log test.LogCapture
			fake.Forget(t)
			fake.Answer(t, e.authUser, e.authPassword)

			d := newDriver(t, drivers.Config{}, drivers.WithLogger(log.Entry()), drivers.WithDockerConfig(config))
			fresh(t)
			res := runTask(ctx, t, d, &drivers.Task{ID: "fnrun-helper-" + randomID(), ImageRef: e.authImage, Cmd: "true"})
			if res.Status() != drivers.StatusSuccess {
				t.Fatalf("run of %s with the helper's credentials: %s (%v)", e.authImage, res.Status(), res.Error())
			}
			if got := fake.Asked(t); len(got) != 1 || got[0] != e.authRegistry {
				t.Fatalf("the helper was asked about %v, want %s once", got, e.authRegistry)
			}

			// An image of the plain registry: with credsStore the helper is
			// asked about that host (and has nothing); with credHelpers for
			// the auth registry only, it is not run. Either way it never
			// hears of one host while pulling from another.
			if err := pullWith(ctx, d, &drivers.Task{ID: "fnrun-helper-other-" + randomID(), ImageRef: e.image}); err != nil {
				t.Fatalf("pull of %s: %v", e.image, err)
			}
			want := []string{e.authRegistry}
			if tc.otherHostAsked {
				want = append(want, e.registry)
			}
			if got := fake.Asked(t); strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("the helper was asked about %v, want %v", got, want)
			}

			// Wrong credentials from the helper: the registry refuses them.
			fake.Answer(t, e.authUser, wrong)
			withWrong := newDriver(t, drivers.Config{}, drivers.WithLogger(log.Entry()), drivers.WithDockerConfig(config))
			fresh(t)
			err := pullWith(ctx, withWrong, &drivers.Task{ID: "fnrun-helper-wrong-" + randomID(), ImageRef: e.authImage})
			if !errors.Is(err, drivers.ErrUnauthorized) || errors.Is(err, drivers.ErrInvalidConfig) {
				t.Errorf("wrong credentials from the helper: %v, want ErrUnauthorized", err)
			}
			secretFree(t, "wrong credentials", err, &log)

			// Nothing stored for the host: an anonymous pull, refused.
			fake.NoAnswer(t)
			anonymous := newDriver(t, drivers.Config{}, drivers.WithLogger(log.Entry()), drivers.WithDockerConfig(config))
			err = pullWith(ctx, anonymous, &drivers.Task{ID: "fnrun-helper-anon-" + randomID(), ImageRef: e.authImage})
			if !errors.Is(err, drivers.ErrUnauthorized) || errors.Is(err, ErrCredentialHelper) {
				t.Errorf("helper without credentials: %v, want an anonymous pull refused", err)
			}
			secretFree(t, "run", nil, &log)
		})
	}

	t.Run("missing helper", func(t *testing.T) {
		var log test.LogCapture
		missing := "fnrun-missing-" + randomID()
		d := newDriver(t, drivers.Config{}, drivers.WithLogger(log.Entry()),
			drivers.WithDockerConfig(dockerconfigtest.WriteConfig(t, `{"credHelpers":{"`+e.authRegistry+`":"`+missing+`"}}`)))
		fresh(t)
		c, err := d.CreateCookie(ctx, &drivers.Task{ID: "fnrun-helper-missing-" + randomID(), ImageRef: e.authImage})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		if need, err := c.ValidateImage(ctx); err != nil || !need {
			t.Fatalf("ValidateImage = %v, %v; want a pull needed", need, err)
		}
		err = c.PullImage(ctx)
		if !errors.Is(err, drivers.ErrInvalidConfig) || errors.Is(err, drivers.ErrUnauthorized) || !strings.Contains(err.Error(), dockerconfigtest.HelperProgramPrefix+missing) {
			t.Errorf("missing helper: %v, want ErrInvalidConfig naming %s", err, dockerconfigtest.HelperProgramPrefix+missing)
		}
	})
}
