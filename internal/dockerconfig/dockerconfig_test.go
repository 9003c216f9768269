package dockerconfig

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/dockerconfig/dockerconfigtest"
	"github.com/fnrun/fnrun/internal/logs"
	"github.com/fnrun/fnrun/test"
)

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustRef(t testing.TB, image string) drivers.Reference {
	t.Helper()
	r, err := drivers.NormalizeImage(image)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func basic(user, password string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
}

func TestParseHelperAnswer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer string
		want   drivers.AuthConfig
		bad    bool
	}{
		{"password", `{"ServerURL":"127.0.0.1:5001","Username":"fnrun","Secret":"s3cret"}`, drivers.AuthConfig{Username: "fnrun", Password: "s3cret"}, false},
		{"trailing newline", "{\"Username\":\"u\",\"Secret\":\"p\"}\n", drivers.AuthConfig{Username: "u", Password: "p"}, false},
		{"identity token", `{"ServerURL":"https://index.docker.io/v1/","Username":"<token>","Secret":"tok"}`, drivers.AuthConfig{IdentityToken: "tok"}, false},
		{"no secret is anonymous", `{"ServerURL":"quay.io","Username":"u","Secret":""}`, drivers.AuthConfig{}, false},
		{"empty object", `{}`, drivers.AuthConfig{}, false},
		{"unknown fields ignored", `{"Username":"u","Secret":"p","Extra":1}`, drivers.AuthConfig{Username: "u", Password: "p"}, false},
		{"not JSON", `s3cret-in-plain-text`, drivers.AuthConfig{}, true},
		{"empty", ``, drivers.AuthConfig{}, true},
		{"two documents", `{"Username":"u","Secret":"p"} {"Username":"v","Secret":"q"}`, drivers.AuthConfig{}, true},
		{"wrong type", `{"Username":"u","Secret":42}`, drivers.AuthConfig{}, true},
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
				t.Fatalf("parseHelperAnswer(%q) = %v, %v; want %v", tc.answer, &got, err, &tc.want)
			}
		})
	}
}

// TestLoadHelpers: which helper, asked about which server address, each
// host gets, with the docker CLI's precedence.
func TestLoadHelpers(t *testing.T) {
	userPW := basic("user", "pw")
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
			name:   "credsStore with the empty entries docker login leaves",
			config: `{"auths":{"https://index.docker.io/v1/":{},"quay.io":{}},"credsStore":"desktop"}`,
			hosts:  map[string]want{"docker.io": {"desktop", "https://index.docker.io/v1/"}},
		},
		{
			name: "credHelpers before credsStore before auths",
			config: `{"auths":{"example.com":{"auth":"` + userPW + `"},"plain.io":{"auth":"` + userPW + `"}},
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
			config: `{"auths":{"https://index.docker.io/v1/":{"auth":"` + userPW + `"}}}`,
			hosts:  map[string]want{"docker.io": {"", ""}},
			auths:  []string{"docker.io"},
		},
		{
			name:   "legacy dockercfg",
			config: `{"example.com":{"auth":"` + userPW + `","email":"x@example.com"}}`,
			hosts:  map[string]want{"example.com": {"", ""}},
			auths:  []string{"example.com"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(dockerconfigtest.WriteConfig(t, tc.config), time.Second, logs.Discard())
			if err != nil {
				t.Fatal(err)
			}
			for host, w := range tc.hosts {
				name, serverURL, ok := c.helpers.helperFor(host)
				if ok != (w.helper != "") || name != w.helper || (ok && serverURL != w.serverURL) {
					t.Errorf("%s: helper %q asked about %q (%v), want %q about %q", host, name, serverURL, ok, w.helper, w.serverURL)
				}
			}
			if len(c.auths) != len(tc.auths) {
				t.Errorf("auths for %d hosts, want %v", len(c.auths), tc.auths)
			}
			for _, host := range tc.auths {
				if a := c.auths[host]; a.Username != "user" || a.Password != "pw" || a.ServerAddress != host {
					t.Errorf("auths[%s] = user %q at %q", host, a.Username, a.ServerAddress)
				}
			}
		})
	}
}

// TestLoadAuths: the forms of an "auths" entry, as the docker CLI reads
// them.
func TestLoadAuths(t *testing.T) {
	for _, tc := range []struct {
		name  string
		entry string
		want  drivers.AuthConfig
	}{
		{"auth", `{"auth":"` + basic("u", "p:with:colons") + `"}`, drivers.AuthConfig{Username: "u", Password: "p:with:colons"}},
		{"unpadded auth", `{"auth":"` + strings.TrimRight(base64.StdEncoding.EncodeToString([]byte("u:pw")), "=") + `"}`, drivers.AuthConfig{Username: "u", Password: "pw"}},
		{"username and password", `{"username":"u","password":"pw"}`, drivers.AuthConfig{Username: "u", Password: "pw"}},
		{"auth wins over username", `{"auth":"` + basic("u", "pw") + `","username":"other","password":"x"}`, drivers.AuthConfig{Username: "u", Password: "pw"}},
		{"identity token replaces the password", `{"auth":"` + basic("u", "pw") + `","identitytoken":"tok"}`, drivers.AuthConfig{Username: "u", IdentityToken: "tok"}},
		{"identity token alone", `{"identitytoken":"tok"}`, drivers.AuthConfig{IdentityToken: "tok"}},
		{"email ignored", `{"auth":"` + basic("u", "pw") + `","email":"u@example.com"}`, drivers.AuthConfig{Username: "u", Password: "pw"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(dockerconfigtest.WriteConfig(t, `{"auths":{"https://Registry.Example.com/v2/":`+tc.entry+`}}`), time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			tc.want.ServerAddress = "registry.example.com"
			got, err := c.ImageCredentials(context.Background(), mustRef(t, "registry.example.com/fn/app"))
			if err != nil || got == nil || *got != tc.want {
				t.Errorf("credentials %v, %v; want %v", got, err, &tc.want)
			}
		})
	}

	// Two spellings of one host: the CLI's own key wins whatever the map
	// order.
	for range 20 {
		c, err := Load(dockerconfigtest.WriteConfig(t, `{"auths":{
			"https://index.docker.io/v1/":{"auth":"`+basic("cli", "pw")+`"},
			"docker.io":{"auth":"`+basic("short", "pw")+`"},
			"registry-1.docker.io":{"auth":"`+basic("long", "pw")+`"}}}`), time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.auths["docker.io"].Username; got != "cli" {
			t.Fatalf("Docker Hub credentials of %q, want those under %s", got, DockerHubServerURL)
		}
	}

	// Other settings of a legacy-looking file are not registries.
	c, err := Load(dockerconfigtest.WriteConfig(t, `{"psFormat":"table","example.com":{"auth":"`+basic("u", "pw")+`"}}`), time.Second, nil)
	if err != nil || len(c.auths) != 1 || c.auths["example.com"].Username != "u" {
		t.Errorf("legacy file with other settings: %v", err)
	}
}

// TestLoadInvalid: a file that cannot be used fails with ErrInvalidConfig,
// naming the file and never quoting its secrets.
func TestLoadInvalid(t *testing.T) {
	for _, bad := range []string{
		`{"credsStore":"../../bin/sh"}`,
		`{"credHelpers":{"quay.io":"a/b"}}`,
		`{"credsStore":" pass"}`,
		`{"credsStore":5}`,
		`not json s3cret`,
		`{"auths":{"quay.io":{"auth":"%%s3cret%%"}}}`,
		`{"auths":{"quay.io":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("s3cret-no-colon")) + `"}}}`,
		`{"auths":{"quay.io":"s3cret"}}`,
		`{"auths":{"quay.io":{"password":42}}}`,
		`[]`,
	} {
		dir := dockerconfigtest.WriteConfig(t, bad)
		_, err := Load(dir, time.Second, nil)
		if !errors.Is(err, drivers.ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", bad, err)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), filepath.Join(dir, "config.json")) {
			t.Errorf("%s: the error %q quotes the file or does not name it", bad, err)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.json"), time.Second, nil); !errors.Is(err, drivers.ErrInvalidConfig) {
		t.Errorf("missing file: %v, want ErrInvalidConfig", err)
	}
	// The path may name the file itself.
	dir := dockerconfigtest.WriteConfig(t, `{"auths":{"quay.io":{"auth":"`+basic("u", "pw")+`"}}}`)
	if c, err := Load(filepath.Join(dir, "config.json"), time.Second, nil); err != nil || c.auths["quay.io"].Username != "u" {
		t.Errorf("config.json by its file name: %v", err)
	}
}

// TestCredentialHelperLookup runs the helper protocol against the fake
// helper.
func TestCredentialHelperLookup(t *testing.T) {
	const host = "registry.test:5001"
	fake := dockerconfigtest.NewFakeHelper(t, host)
	var log test.LogCapture
	load := func(config string, timeout time.Duration) *Config {
		t.Helper()
		c, err := Load(dockerconfigtest.WriteConfig(t, config), timeout, log.Entry())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := testCtx(t, time.Minute)
	anonymous := func(what string, conf *drivers.AuthConfig, err error) {
		t.Helper()
		if err != nil || conf != nil {
			t.Errorf("%s: %v, %v; want anonymous", what, conf, err)
		}
	}

	fake.Answer(t, "fnrun", "s3cret-pw")
	c := load(`{"credsStore":"fnrun-test","auths":{"`+host+`":{"auth":"`+basic("file", "pw")+`"}}}`, 5*time.Second)
	conf, err := c.PullCredentials(ctx, &drivers.Task{}, mustRef(t, host+"/fn/app:1"), log.Entry())
	if err != nil || conf == nil || conf.Username != "fnrun" || conf.Password != "s3cret-pw" || conf.ServerAddress != host {
		t.Fatalf("from the helper: %v, %v", conf, err)
	}
	if _, err := c.PullCredentials(ctx, &drivers.Task{}, mustRef(t, host+"/fn/other"), log.Entry()); err != nil {
		t.Fatal(err)
	}
	if got := fake.Asked(t); len(got) != 1 || got[0] != host {
		t.Errorf("two pulls from %s within the cache period asked the helper %v, want once", host, got)
	}

	// Another host: the helper is asked about that host, says it has
	// nothing, and the pull is anonymous.
	fake.Forget(t)
	conf, err = c.PullCredentials(ctx, &drivers.Task{}, mustRef(t, "quay.io/fn/app"), log.Entry())
	anonymous("quay.io", conf, err)
	conf, err = c.PullCredentials(ctx, &drivers.Task{}, mustRef(t, "busybox"), log.Entry())
	anonymous("docker.io", conf, err)
	if got := fake.Asked(t); strings.Join(got, " ") != "quay.io https://index.docker.io/v1/" {
		t.Errorf("the helper was asked about %v, want quay.io then Docker Hub's server URL", got)
	}

	// The task's own credentials come first: the helper is not run.
	fake.Forget(t)
	task := &drivers.Task{Credentials: &drivers.AuthConfig{Username: "task", Password: "pw"}}
	if conf, err := c.PullCredentials(ctx, task, mustRef(t, "quay.io/fn/app"), log.Entry()); err != nil || conf == nil || conf.Username != "task" || conf.ServerAddress != "quay.io" {
		t.Errorf("task credentials: %v, %v", conf, err)
	}
	if got := fake.Asked(t); len(got) != 0 {
		t.Errorf("the helper was asked about %v although the task had credentials", got)
	}

	// A helper with nothing for its own host means anonymous, not the
	// plain auths of the same file (as in the docker CLI).
	fake.NoAnswer(t)
	c = load(`{"credHelpers":{"`+host+`":"fnrun-test"},"auths":{"`+host+`":{"auth":"`+basic("file", "pw")+`"}}}`, 5*time.Second)
	conf, err = c.PullCredentials(ctx, &drivers.Task{}, mustRef(t, host+"/fn/app"), log.Entry())
	anonymous("not found", conf, err)

	// An identity token.
	fake.Answer(t, "<token>", "id-token")
	c = load(`{"credHelpers":{"`+host+`":"fnrun-test"}}`, 5*time.Second)
	if conf, err := c.PullCredentials(ctx, &drivers.Task{}, mustRef(t, host+"/fn/app"), log.Entry()); err != nil || conf == nil || conf.IdentityToken != "id-token" || conf.Username != "" || conf.Password != "" {
		t.Errorf("identity token: %v, %v", conf, err)
	}

	// credHelpers for one host only: the helper never hears of another.
	fake.Forget(t)
	conf, err = c.PullCredentials(ctx, &drivers.Task{}, mustRef(t, "quay.io/fn/app"), log.Entry())
	anonymous("quay.io without a helper", conf, err)
	if got := fake.Asked(t); len(got) != 0 {
		t.Errorf("the helper of %s was asked about %v", host, got)
	}

	// A failing helper: the pull fails; what it printed (which could be a
	// secret) is in neither the error nor the logs.
	fake.Fail(t, "leaked-s3cret")
	c = load(`{"credsStore":"fnrun-test"}`, 5*time.Second)
	_, err = c.PullCredentials(ctx, &drivers.Task{}, mustRef(t, host+"/fn/app"), log.Entry())
	if !errors.Is(err, ErrCredentialHelper) || errors.Is(err, drivers.ErrInvalidConfig) || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("failing helper: %v, want ErrCredentialHelper with its exit status", err)
	}
	fake.StopFailing(t)

	// A helper missing from PATH is a configuration error.
	missing := "fnrun-missing-" + strings.ReplaceAll(t.Name(), "/", "-")
	c = load(`{"credsStore":"`+missing+`"}`, 5*time.Second)
	_, err = c.PullCredentials(ctx, &drivers.Task{}, mustRef(t, host+"/fn/app"), log.Entry())
	if !errors.Is(err, drivers.ErrInvalidConfig) || !errors.Is(err, ErrCredentialHelper) || !strings.Contains(err.Error(), "docker-credential-"+missing) {
		t.Errorf("missing helper: %v, want ErrInvalidConfig naming the program", err)
	}

	// Garbage on stdout with exit 0 is a configuration error too.
	fake.AnswerRaw(t, []byte("s3cret-garbage"))
	c = load(`{"credsStore":"fnrun-test"}`, 5*time.Second)
	_, err = c.PullCredentials(ctx, &drivers.Task{}, mustRef(t, host+"/fn/app"), log.Entry())
	if !errors.Is(err, drivers.ErrInvalidConfig) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("garbage answer: %v, want ErrInvalidConfig", err)
	}

	// A helper that hangs is ended by the timeout.
	dockerconfigtest.InstallHelper(t, "fnrun-hang", "#!/bin/sh\nexec sleep 60\n")
	c = load(`{"credsStore":"fnrun-hang"}`, 200*time.Millisecond)
	start := time.Now()
	_, err = c.PullCredentials(ctx, &drivers.Task{}, mustRef(t, host+"/fn/app"), log.Entry())
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

// TestCredentialHelperSharedRun: concurrent lookups for one host run the
// helper once; a caller that gives up does not fail the others.
func TestCredentialHelperSharedRun(t *testing.T) {
	const host = "registry.test:5001"
	state := t.TempDir()
	dockerconfigtest.InstallHelper(t, "fnrun-slow", `#!/bin/sh
cat >/dev/null
echo run >> '`+state+`/runs'
sleep 0.3
echo '{"Username":"u","Secret":"pw"}'
`)
	c, err := Load(dockerconfigtest.WriteConfig(t, `{"credsStore":"fnrun-slow"}`), 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, time.Minute)
	ref := mustRef(t, host+"/fn/app")
	impatient, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			callCtx := ctx
			if i == 0 {
				callCtx = impatient
			}
			conf, err := c.ImageCredentials(callCtx, ref)
			if err == nil && (conf == nil || conf.Username != "u") {
				err = errors.New("wrong credentials")
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	if !errors.Is(errs[0], context.DeadlineExceeded) {
		t.Errorf("impatient caller: %v, want its own deadline", errs[0])
	}
	for i, err := range errs[1:] {
		if err != nil {
			t.Errorf("caller %d: %v", i+1, err)
		}
	}
	runs, err := os.ReadFile(filepath.Join(state, "runs"))
	if err != nil {
		t.Fatal(err)
	}
	// The impatient caller's run may be abandoned and started again once.
	if n := strings.Count(string(runs), "run"); n > 2 {
		t.Errorf("%d helper runs for one host, want at most 2", n)
	}
}

// TestCredentialsExactHost: config.json credentials apply to their exact
// host only: no parent-domain or prefix matching.
func TestCredentialsExactHost(t *testing.T) {
	c := &Config{auths: map[string]drivers.AuthConfig{
		"example.com":     {Username: "u1", Password: "p1", ServerAddress: "example.com"},
		"docker.io":       {Username: "hub", Password: "p2", ServerAddress: "docker.io"},
		"127.0.0.1:5001":  {Username: "local", Password: "p3", ServerAddress: "127.0.0.1:5001"},
		"registry.io:443": {Username: "port", Password: "p4", ServerAddress: "registry.io:443"},
	}}
	for image, user := range map[string]string{
		"example.com/fn/app":              "u1",
		"registry.example.com/fn/app":     "",
		"example.com.evil.io/fn/app":      "",
		"busybox":                         "hub",
		"docker.io/library/busybox":       "hub",
		"127.0.0.1:5001/fnrun/busybox":    "local",
		"127.0.0.1:5000/fnrun/busybox":    "",
		"registry.io/fn/app":              "",
		"registry.io:443/fn/app":          "port",
		"localhost:5001/fnrun/busybox:v1": "",
	} {
		conf, err := c.PullCredentials(context.Background(), &drivers.Task{}, mustRef(t, image), nil)
		got := ""
		if conf != nil {
			got = conf.Username
		}
		if err != nil || got != user {
			t.Errorf("%s: credentials of %q (%v), want %q", image, got, err, user)
		}
	}
	// No config at all: anonymous.
	var none *Config
	if conf, err := none.PullCredentials(context.Background(), &drivers.Task{}, mustRef(t, "busybox"), nil); conf != nil || err != nil {
		t.Errorf("nil config: %v, %v", conf, err)
	}
}

// TestTaskCredentialsForAnotherHost: a task's credentials naming another
// registry are withheld, logged, and the config.json's are used instead.
func TestTaskCredentialsForAnotherHost(t *testing.T) {
	c := &Config{auths: map[string]drivers.AuthConfig{
		"quay.io": {Username: "file", Password: "p", ServerAddress: "quay.io"},
	}}
	var log test.LogCapture
	task := &drivers.Task{Credentials: &drivers.AuthConfig{Username: "task", Password: "s3cret", ServerAddress: "https://ghcr.io"}}
	conf, err := c.PullCredentials(context.Background(), task, mustRef(t, "quay.io/fn/app"), log.Entry())
	if err != nil || conf == nil || conf.Username != "file" {
		t.Errorf("credentials %v, %v; want the config.json's", conf, err)
	}
	if !strings.Contains(log.String(), "another registry") || strings.Contains(log.String(), "s3cret") {
		t.Errorf("log:\n%s", log.String())
	}
	// Task credentials for the image's registry under another spelling.
	task.Credentials.ServerAddress = "https://Quay.io/v2/"
	if conf, err := c.PullCredentials(context.Background(), task, mustRef(t, "quay.io/fn/app"), log.Entry()); err != nil || conf == nil || conf.Username != "task" {
		t.Errorf("credentials %v, %v; want the task's", conf, err)
	}
	// An Auther that fails fails the pull.
	failing := errors.New("vault sealed")
	if _, err := c.PullCredentials(context.Background(), failingAuther{&drivers.Task{}, failing}, mustRef(t, "quay.io/fn/app"), nil); !errors.Is(err, failing) {
		t.Errorf("failing Auther: %v", err)
	}
}

// failingAuther is a task whose credential source fails.
type failingAuther struct {
	*drivers.Task
	err error
}

func (f failingAuther) Auth(context.Context) (*drivers.AuthConfig, error) { return nil, f.err }

func TestRegistryHost(t *testing.T) {
	for addr, host := range map[string]string{
		"":                             "",
		"https://index.docker.io/v1/":  "docker.io",
		"docker.io":                    "docker.io",
		"registry-1.docker.io":         "docker.io",
		"registry.hub.docker.com":      "docker.io",
		"http://127.0.0.1:5001":        "127.0.0.1:5001",
		"http://127.0.0.1:5001/v2/":    "127.0.0.1:5001",
		"Quay.IO":                      "quay.io",
		" quay.io ":                    "quay.io",
		"https://registry.io:443/path": "registry.io:443",
	} {
		if got := RegistryHost(addr); got != host {
			t.Errorf("RegistryHost(%q) = %q, want %q", addr, got, host)
		}
	}
}

// TestFromEnvironment: FN_DOCKER_AUTH first, as Fn's agent reads it, then
// the user's Docker config; neither means no credentials.
func TestFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("DOCKER_CONFIG", "")
	t.Setenv(EnvAuth, "")
	ref := mustRef(t, "127.0.0.1:5001/fn/app")
	user := func(c *Config) string {
		conf, err := c.PullCredentials(context.Background(), &drivers.Task{}, ref, nil)
		if err != nil {
			t.Fatal(err)
		}
		if conf == nil {
			return ""
		}
		return conf.Username
	}
	if c, err := FromEnvironment(time.Second, nil); err != nil || c != nil {
		t.Fatalf("nothing set: %v, %v", c, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, ".docker"), 0o700); err != nil {
		t.Fatal(err)
	}
	file := `{"auths":{"127.0.0.1:5001":{"auth":"` + basic("file", "p") + `"}}}`
	if err := os.WriteFile(filepath.Join(dir, ".docker", "config.json"), []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := FromEnvironment(time.Second, nil)
	if err != nil || user(c) != "file" {
		t.Fatalf("~/.docker/config.json: %v, user %q", err, user(c))
	}
	// Fn's form: the auths section alone, keyed by registry.
	t.Setenv(EnvAuth, `{"127.0.0.1:5001":{"username":"env","password":"p"}}`)
	c, err = FromEnvironment(time.Second, nil)
	if err != nil || user(c) != "env" {
		t.Fatalf("FN_DOCKER_AUTH: %v, user %q", err, user(c))
	}
	t.Setenv(EnvAuth, `{"127.0.0.1:5001":`)
	if _, err := FromEnvironment(time.Second, nil); !errors.Is(err, drivers.ErrInvalidConfig) || strings.Contains(err.Error(), "5001") {
		t.Fatalf("a bad FN_DOCKER_AUTH: %v, want ErrInvalidConfig without its content", err)
	}
}

// fnTask is a task of Fn's agent: its credentials come in go-dockerclient's
// type.
type fnTask struct {
	drivers.Task
	auth *docker.AuthConfiguration
}

func (f *fnTask) DockerAuth(context.Context, string) (*docker.AuthConfiguration, error) {
	return f.auth, nil
}

func TestFnTaskCredentials(t *testing.T) {
	c := &Config{auths: map[string]drivers.AuthConfig{"quay.io": {Username: "file", Password: "p"}}}
	ref := mustRef(t, "quay.io/fn/app")
	for _, tc := range []struct {
		auth *docker.AuthConfiguration
		want string
	}{
		{&docker.AuthConfiguration{Username: "fn", Password: "p", ServerAddress: "quay.io"}, "fn"},
		{&docker.AuthConfiguration{Username: "fn", Password: "p"}, "fn"},
		{&docker.AuthConfiguration{Username: "other", Password: "p", ServerAddress: "docker.io"}, "file"},
		{nil, "file"},
	} {
		conf, err := c.PullCredentials(context.Background(), &fnTask{auth: tc.auth}, ref, nil)
		if err != nil || conf == nil || conf.Username != tc.want {
			t.Errorf("DockerAuth %+v: %+v, %v; want %s's", tc.auth, conf, err, tc.want)
		}
	}
}
