package docker

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/logs"
)

func TestParseHelperAnswer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer string
		want   docker.AuthConfiguration
		bad    bool
	}{
		{"password", `{"ServerURL":"127.0.0.1:5001","Username":"fnrun","Secret":"s3cret"}`, docker.AuthConfiguration{Username: "fnrun", Password: "s3cret"}, false},
		{"trailing newline", "{\"Username\":\"u\",\"Secret\":\"p\"}\n", docker.AuthConfiguration{Username: "u", Password: "p"}, false},
		{"identity token", `{"ServerURL":"https://index.docker.io/v1/","Username":"<token>","Secret":"tok"}`, docker.AuthConfiguration{IdentityToken: "tok"}, false},
		{"no secret is anonymous", `{"ServerURL":"quay.io","Username":"u","Secret":""}`, docker.AuthConfiguration{}, false},
		{"empty object", `{}`, docker.AuthConfiguration{}, false},
		{"unknown fields ignored", `{"Username":"u","Secret":"p","Extra":1}`, docker.AuthConfiguration{Username: "u", Password: "p"}, false},
		{"not JSON", `s3cret-in-plain-text`, docker.AuthConfiguration{}, true},
		{"empty", ``, docker.AuthConfiguration{}, true},
		{"two documents", `{"Username":"u","Secret":"p"} {"Username":"v","Secret":"q"}`, docker.AuthConfiguration{}, true},
		{"wrong type", `{"Username":"u","Secret":42}`, docker.AuthConfiguration{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseHelperAnswer([]byte(tc.answer))
			if tc.bad {
				if err == nil {
					t.Fatalf("accepted %q as %+v", tc.answer, got)
				}
				if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "42") {
					t.Errorf("the error %q quotes the answer", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseHelperAnswer(%q) = %+v, %v; want %+v", tc.answer, got, err, tc.want)
			}
		})
	}
}

// writeDockerConfig writes a config.json into a folder of its own and
// returns the folder.
func writeDockerConfig(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestLoadDockerConfigHelpers: which helper, asked about which server
// address, each host gets, with the docker CLI's precedence.
func TestLoadDockerConfigHelpers(t *testing.T) {
	basic := base64.StdEncoding.EncodeToString([]byte("user:pw"))
	type want struct {
		helper, serverURL string // helper "" means the plain auths
	}
	for _, tc := range []struct {
		name   string
		config string
		hosts  map[string]want
		auths  []string
	}{
		{
			name:   "credsStore only",
			config: `{"credsStore":"pass"}`,
			hosts: map[string]want{
				"quay.io":        {"pass", "quay.io"},
				"docker.io":      {"pass", "https://index.docker.io/v1/"},
				"127.0.0.1:5001": {"pass", "127.0.0.1:5001"},
			},
		},
		{
			name:   "credsStore with empty auths",
			config: `{"auths":{},"credsStore":"desktop"}`,
			hosts:  map[string]want{"ghcr.io": {"desktop", "ghcr.io"}},
		},
		{
			name: "credHelpers before credsStore before auths",
			config: `{"auths":{"example.com":{"auth":"` + basic + `"},"plain.io":{"auth":"` + basic + `"}},
				"credsStore":"pass",
				"credHelpers":{"127.0.0.1:5001":"fnrun-test","https://Quay.io":"ecr-login","plain.io":""}}`,
			hosts: map[string]want{
				"127.0.0.1:5001": {"fnrun-test", "127.0.0.1:5001"},
				"quay.io":        {"ecr-login", "https://Quay.io"},
				"example.com":    {"pass", "example.com"},
				"plain.io":       {"", ""}, // an empty helper keeps the host on auths
			},
			auths: []string{"example.com", "plain.io"},
		},
		{
			name:   "the CLI's own spelling wins",
			config: `{"credHelpers":{"https://quay.io/v1/":"b","quay.io":"a","http://quay.io":"c"}}`,
			hosts:  map[string]want{"quay.io": {"a", "quay.io"}, "docker.io": {"", ""}},
		},
		{
			name:   "auths only",
			config: `{"auths":{"https://index.docker.io/v1/":{"auth":"` + basic + `"}}}`,
			hosts:  map[string]want{"docker.io": {"", ""}},
			auths:  []string{"docker.io"},
		},
		{
			name:   "legacy dockercfg",
			config: `{"example.com":{"auth":"` + basic + `","email":"x@example.com"}}`,
			hosts:  map[string]want{"example.com": {"", ""}},
			auths:  []string{"example.com"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			auths, helpers, err := loadDockerConfig(writeDockerConfig(t, tc.config), time.Second, logs.Discard())
			if err != nil {
				t.Fatal(err)
			}
			for host, w := range tc.hosts {
				name, serverURL, ok := helpers.helperFor(host)
				if ok != (w.helper != "") || name != w.helper || (ok && serverURL != w.serverURL) {
					t.Errorf("%s: helper %q asked about %q (%v), want %q about %q", host, name, serverURL, ok, w.helper, w.serverURL)
				}
			}
			if len(auths) != len(tc.auths) {
				t.Errorf("auths for %d hosts, want %v", len(auths), tc.auths)
			}
			for _, host := range tc.auths {
				if c := auths[host]; c.Username != "user" || c.Password != "pw" {
					t.Errorf("auths[%s] = user %q", host, c.Username)
				}
			}
		})
	}

	for _, bad := range []string{
		`{"credsStore":"../../bin/sh"}`,
		`{"credHelpers":{"quay.io":"a/b"}}`,
		`{"credsStore":" pass"}`,
		`{"credsStore":5}`,
		`not json`,
	} {
		_, _, err := loadDockerConfig(writeDockerConfig(t, bad), time.Second, logs.Discard())
		if !errors.Is(err, drivers.ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", bad, err)
		}
	}
}

// fakeHelper is docker-credential-fnrun-test, first on PATH. It records
// every server address it is asked about, answers the credentials of
// answer.json for its one host, "credentials not found in native keychain"
// (exit 1) for any other host or when there is no answer.json, and with a
// file "fail" prints that file on both outputs and exits 3.
type fakeHelper struct {
	dir string
}

const fakeHelperName = "fnrun-test"

func newFakeHelper(t *testing.T, host string) *fakeHelper {
	t.Helper()
	bin := t.TempDir()
	state := t.TempDir()
	script := `#!/bin/sh
D='` + state + `'
[ "$1" = get ] || exit 2
server=$(cat)
printf '%s\n' "$server" >> "$D/asked"
if [ -f "$D/fail" ]; then cat "$D/fail" >&2; cat "$D/fail"; exit 3; fi
if [ "$server" = '` + host + `' ] && [ -f "$D/answer.json" ]; then cat "$D/answer.json"; exit 0; fi
echo "credentials not found in native keychain"
exit 1
`
	if err := os.WriteFile(filepath.Join(bin, credentialHelperPrefix+fakeHelperName), []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	return &fakeHelper{dir: state}
}

func (f *fakeHelper) answer(t *testing.T, user, secret string) {
	t.Helper()
	b, err := json.Marshal(helperAnswer{ServerURL: "ignored", Username: user, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	f.write(t, "answer.json", b)
}

func (f *fakeHelper) write(t *testing.T, name string, content []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.dir, name), content, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (f *fakeHelper) remove(t *testing.T, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(f.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}

// asked lists the server addresses the helper was asked about, in order.
func (f *fakeHelper) asked(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "asked"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

func (f *fakeHelper) forget(t *testing.T) { f.remove(t, "asked") }

// TestCredentialHelperLookup runs the helper protocol against the fake
// helper, without a daemon.
func TestCredentialHelperLookup(t *testing.T) {
	const host = "registry.test:5001"
	fake := newFakeHelper(t, host)
	ref := func(image string) drivers.Reference {
		r, err := drivers.NormalizeImage(image)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	driverWith := func(config string, log *logCapture) *Driver {
		auths, helpers, err := loadDockerConfig(writeDockerConfig(t, config), 5*time.Second, log.entry())
		if err != nil {
			t.Fatal(err)
		}
		return &Driver{log: log.entry(), auths: auths, helpers: helpers}
	}
	ctx := testCtx(t, time.Minute)
	var log logCapture

	fake.answer(t, "fnrun", "s3cret-pw")
	d := driverWith(`{"credsStore":"fnrun-test","auths":{"`+host+`":{"auth":"`+base64.StdEncoding.EncodeToString([]byte("file:pw"))+`"}}}`, &log)
	conf, err := d.credentials(ctx, &drivers.Task{}, ref(host+"/fn/app:1"))
	if err != nil || conf.Username != "fnrun" || conf.Password != "s3cret-pw" || conf.ServerAddress != host {
		t.Fatalf("from the helper: %+v, %v", conf.Username, err)
	}
	if _, err := d.credentials(ctx, &drivers.Task{}, ref(host+"/fn/other")); err != nil {
		t.Fatal(err)
	}
	if got := fake.asked(t); len(got) != 1 || got[0] != host {
		t.Errorf("two pulls from %s within the cache period asked the helper %v, want once", host, got)
	}

	// Another host: the helper is asked about that host, says it has
	// nothing, and the pull is anonymous.
	fake.forget(t)
	conf, err = d.credentials(ctx, &drivers.Task{}, ref("quay.io/fn/app"))
	if err != nil || conf != (docker.AuthConfiguration{}) {
		t.Errorf("quay.io: %q, %v; want anonymous", conf.Username, err)
	}
	conf, err = d.credentials(ctx, &drivers.Task{}, ref("busybox"))
	if err != nil || conf != (docker.AuthConfiguration{}) {
		t.Errorf("docker.io: %q, %v; want anonymous", conf.Username, err)
	}
	if got := fake.asked(t); strings.Join(got, " ") != "quay.io https://index.docker.io/v1/" {
		t.Errorf("the helper was asked about %v, want quay.io then Docker Hub's server URL", got)
	}

	// The task's own credentials come first: the helper is not run.
	fake.forget(t)
	task := &drivers.Task{Credentials: &drivers.AuthConfig{Username: "task", Password: "pw"}}
	if conf, err := d.credentials(ctx, task, ref("quay.io/fn/app")); err != nil || conf.Username != "task" {
		t.Errorf("task credentials: %q, %v", conf.Username, err)
	}
	if got := fake.asked(t); len(got) != 0 {
		t.Errorf("the helper was asked about %v although the task had credentials", got)
	}

	// A helper with nothing for its own host means anonymous, not the
	// plain auths of the same file (as in the docker CLI).
	fake.remove(t, "answer.json")
	d = driverWith(`{"credHelpers":{"`+host+`":"fnrun-test"},"auths":{"`+host+`":{"auth":"`+base64.StdEncoding.EncodeToString([]byte("file:pw"))+`"}}}`, &log)
	if conf, err := d.credentials(ctx, &drivers.Task{}, ref(host+"/fn/app")); err != nil || conf != (docker.AuthConfiguration{}) {
		t.Errorf("not found: %q, %v; want anonymous", conf.Username, err)
	}

	// An identity token.
	fake.answer(t, "<token>", "id-token")
	d = driverWith(`{"credHelpers":{"`+host+`":"fnrun-test"}}`, &log)
	if conf, err := d.credentials(ctx, &drivers.Task{}, ref(host+"/fn/app")); err != nil || conf.IdentityToken != "id-token" || conf.Username != "" || conf.Password != "" {
		t.Errorf("identity token: %+v, %v", conf.Username, err)
	}

	// credHelpers for one host only: the helper never hears of another.
	fake.forget(t)
	if conf, err := d.credentials(ctx, &drivers.Task{}, ref("quay.io/fn/app")); err != nil || conf != (docker.AuthConfiguration{}) {
		t.Errorf("quay.io without a helper: %q, %v", conf.Username, err)
	}
	if got := fake.asked(t); len(got) != 0 {
		t.Errorf("the helper of %s was asked about %v", host, got)
	}

	// A failing helper: the pull fails; what it printed (which could be a
	// secret) is in neither the error nor the logs.
	fake.write(t, "fail", []byte("leaked-s3cret"))
	d = driverWith(`{"credsStore":"fnrun-test"}`, &log)
	_, err = d.credentials(ctx, &drivers.Task{}, ref(host+"/fn/app"))
	if !errors.Is(err, ErrCredentialHelper) || errors.Is(err, drivers.ErrInvalidConfig) || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("failing helper: %v, want ErrCredentialHelper with its exit status", err)
	}
	fake.remove(t, "fail")

	// A helper missing from PATH is a configuration error.
	d = driverWith(`{"credsStore":"fnrun-missing-`+randomID()+`"}`, &log)
	_, err = d.credentials(ctx, &drivers.Task{}, ref(host+"/fn/app"))
	if !errors.Is(err, drivers.ErrInvalidConfig) || !errors.Is(err, ErrCredentialHelper) || !strings.Contains(err.Error(), "docker-credential-fnrun-missing-") {
		t.Errorf("missing helper: %v, want ErrInvalidConfig naming the program", err)
	}

	// Garbage on stdout with exit 0 is a configuration error too.
	fake.write(t, "answer.json", []byte("s3cret-garbage"))
	d = driverWith(`{"credsStore":"fnrun-test"}`, &log)
	_, err = d.credentials(ctx, &drivers.Task{}, ref(host+"/fn/app"))
	if !errors.Is(err, drivers.ErrInvalidConfig) {
		t.Errorf("garbage answer: %v, want ErrInvalidConfig", err)
	}

	// A helper that hangs is ended by the context.
	hang := filepath.Join(t.TempDir(), credentialHelperPrefix+"fnrun-hang")
	if err := os.WriteFile(hang, []byte("#!/bin/sh\nexec sleep 60\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", filepath.Dir(hang)+string(os.PathListSeparator)+os.Getenv("PATH"))
	auths, helpers, err := loadDockerConfig(writeDockerConfig(t, `{"credsStore":"fnrun-hang"}`), 200*time.Millisecond, log.entry())
	if err != nil {
		t.Fatal(err)
	}
	d = &Driver{log: log.entry(), auths: auths, helpers: helpers}
	start := time.Now()
	_, err = d.credentials(ctx, &drivers.Task{}, ref(host+"/fn/app"))
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrCredentialHelper) {
		t.Errorf("hanging helper: %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a helper timing out after 200ms held the pull %v", took)
	}

	for _, secret := range []string{"s3cret", "id-token", "leaked"} {
		if strings.Contains(log.String(), secret) {
			t.Errorf("%q appears in the logs:\n%s", secret, log.String())
		}
	}
	if !strings.Contains(log.String(), "docker-credential-fnrun-test") || !strings.Contains(log.String(), "exit_status=3") {
		t.Errorf("the failing helper's name and exit status were not logged:\n%s", log.String())
	}
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
	fake := newFakeHelper(t, e.authRegistry)
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
	secretFree := func(t *testing.T, what string, err error, log *logCapture) {
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
		{"credsStore", `{"credsStore":"` + fakeHelperName + `"}`, true},
		{"credHelpers", `{"credHelpers":{"` + e.authRegistry + `":"` + fakeHelperName + `"}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			config := writeDockerConfig(t, tc.config)
			var log logCapture
			fake.forget(t)
			fake.answer(t, e.authUser, e.authPassword)

			d := newDriver(t, drivers.Config{}, WithLogger(log.entry()), WithDockerConfig(config))
			fresh(t)
			res := runTask(ctx, t, d, &drivers.Task{ID: "fnrun-helper-" + randomID(), ImageRef: e.authImage, Cmd: "true"})
			if res.Status() != drivers.StatusSuccess {
				t.Fatalf("run of %s with the helper's credentials: %s (%v)", e.authImage, res.Status(), res.Error())
			}
			if got := fake.asked(t); len(got) != 1 || got[0] != e.authRegistry {
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
			if got := fake.asked(t); strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("the helper was asked about %v, want %v", got, want)
			}

			// Wrong credentials from the helper: the registry refuses them.
			fake.answer(t, e.authUser, wrong)
			withWrong := newDriver(t, drivers.Config{}, WithLogger(log.entry()), WithDockerConfig(config))
			fresh(t)
			err := pullWith(ctx, withWrong, &drivers.Task{ID: "fnrun-helper-wrong-" + randomID(), ImageRef: e.authImage})
			if !errors.Is(err, drivers.ErrUnauthorized) || errors.Is(err, drivers.ErrInvalidConfig) {
				t.Errorf("wrong credentials from the helper: %v, want ErrUnauthorized", err)
			}
			secretFree(t, "wrong credentials", err, &log)

			// Nothing stored for the host: an anonymous pull, refused.
			fake.remove(t, "answer.json")
			anonymous := newDriver(t, drivers.Config{}, WithLogger(log.entry()), WithDockerConfig(config))
			err = pullWith(ctx, anonymous, &drivers.Task{ID: "fnrun-helper-anon-" + randomID(), ImageRef: e.authImage})
			if !errors.Is(err, drivers.ErrUnauthorized) || errors.Is(err, ErrCredentialHelper) {
				t.Errorf("helper without credentials: %v, want an anonymous pull refused", err)
			}
			secretFree(t, "run", nil, &log)
		})
	}

	t.Run("missing helper", func(t *testing.T) {
		var log logCapture
		missing := "fnrun-missing-" + randomID()
		d := newDriver(t, drivers.Config{}, WithLogger(log.entry()),
			WithDockerConfig(writeDockerConfig(t, `{"credHelpers":{"`+e.authRegistry+`":"`+missing+`"}}`)))
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
		if !errors.Is(err, drivers.ErrInvalidConfig) || errors.Is(err, drivers.ErrUnauthorized) || !strings.Contains(err.Error(), credentialHelperPrefix+missing) {
			t.Errorf("missing helper: %v, want ErrInvalidConfig naming %s", err, credentialHelperPrefix+missing)
		}
	})
}
