// Package dockerconfig reads registry credentials from a Docker config.json
// as the docker CLI does (auths, credsStore, credHelpers), so that every
// driver honours the logins people already have, whatever the runtime.
// Credentials are only ever handed out for the exact registry host they
// were stored for.
package dockerconfig

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	docker "github.com/fsouza/go-dockerclient"
	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/logs"
)

// DockerHubServerURL is the key of Docker Hub's credentials in config.json
// and what helpers are asked about for it, since `docker login` stores
// them there.
const DockerHubServerURL = "https://index.docker.io/v1/"

// Config is a loaded config.json. A nil *Config holds no credentials.
type Config struct {
	auths   map[string]drivers.AuthConfig // keyed by RegistryHost
	helpers *credentialHelpers            // nil when the file names none
}

// authEntry is one entry of "auths" (or of a legacy .dockercfg).
type authEntry struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
}

// Load reads a Docker config.json; path is the file or its folder (as
// DOCKER_CONFIG is). The credential helpers it names are run only when a
// pull needs them, each bounded by helperTimeout (none when zero) and
// logging through log. Every error wraps drivers.ErrInvalidConfig and names
// the file, never its content.
func Load(path string, helperTimeout time.Duration, log *logrus.Entry) (*Config, error) {
	if log == nil {
		log = logs.Discard()
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "config.json")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("registry credentials %s: %w: %v", path, drivers.ErrInvalidConfig, err)
	}
	return Parse(data, path, helperTimeout, log)
}

// Parse reads the content of a config.json (or a legacy .dockercfg); source
// names it in errors, which never quote the content.
func Parse(data []byte, source string, helperTimeout time.Duration, log *logrus.Entry) (*Config, error) {
	if log == nil {
		log = logs.Discard()
	}
	invalid := func(err error) error {
		return fmt.Errorf("registry credentials %s: %w: %v", source, drivers.ErrInvalidConfig, err)
	}
	var file struct {
		Auths       map[string]json.RawMessage `json:"auths"`
		CredsStore  string                     `json:"credsStore"`
		CredHelpers map[string]string          `json:"credHelpers"`
	}
	// The decoder's message may quote the file, which holds secrets.
	if err := json.Unmarshal(data, &file); err != nil {
		return nil, invalid(errors.New("not a JSON object of auths, credsStore and credHelpers"))
	}
	entries := file.Auths
	if entries == nil && file.CredsStore == "" && len(file.CredHelpers) == 0 {
		// The legacy .dockercfg format: registries at the top level.
		if err := json.Unmarshal(data, &entries); err != nil {
			return nil, invalid(errors.New("not a JSON object"))
		}
	}
	auths, err := parseAuths(entries, file.Auths != nil)
	if err != nil {
		return nil, invalid(err)
	}
	helpers, err := newCredentialHelpers(file.CredsStore, file.CredHelpers, helperTimeout, log)
	if err != nil {
		return nil, fmt.Errorf("registry credentials %s: %w", source, err)
	}
	return &Config{auths: auths, helpers: helpers}, nil
}

// EnvAuth is the environment variable Fn's agent reads registry
// credentials from: the JSON of a config.json (or of its auths).
const EnvAuth = "FN_DOCKER_AUTH"

// FromEnvironment reads the credentials a driver has without being told, as
// Fn's docker driver does: FN_DOCKER_AUTH when set, else the user's Docker
// config (DOCKER_CONFIG, else ~/.docker/config.json) when there is one. It
// returns nil, nil when there is neither.
func FromEnvironment(helperTimeout time.Duration, log *logrus.Entry) (*Config, error) {
	if v := os.Getenv(EnvAuth); v != "" {
		return Parse([]byte(v), EnvAuth, helperTimeout, log)
	}
	dir := os.Getenv("DOCKER_CONFIG")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, nil
		}
		dir = filepath.Join(home, ".docker")
	}
	path := filepath.Join(dir, "config.json")
	if _, err := os.Stat(path); err != nil {
		return nil, nil
	}
	return Load(path, helperTimeout, log)
}

// parseAuths decodes the entries of "auths", keyed by RegistryHost.
// Entries without credentials (what `docker login` leaves beside a
// credsStore) are skipped. In a legacy file (strict false) values that are
// not objects are other settings, not registries.
func parseAuths(entries map[string]json.RawMessage, strict bool) (map[string]drivers.AuthConfig, error) {
	out := make(map[string]drivers.AuthConfig, len(entries))
	keys := make(map[string]string, len(entries)) // host -> the key it came from
	for key, raw := range entries {
		var e authEntry
		if err := json.Unmarshal(raw, &e); err != nil {
			if !strict {
				continue
			}
			return nil, fmt.Errorf("auths[%q]: not an object of auth, username, password and identitytoken", key)
		}
		conf, err := e.credentials()
		if err != nil {
			return nil, fmt.Errorf("auths[%q]: %w", key, err)
		}
		host := RegistryHost(key)
		if host == "" || conf == (drivers.AuthConfig{}) {
			continue
		}
		if prev, ok := keys[host]; ok && !preferKey(host, key, prev) {
			continue
		}
		conf.ServerAddress = host
		out[host] = conf
		keys[host] = key
	}
	return out, nil
}

// credentials decodes the entry as the docker CLI does: "auth" is
// base64("user:password") and wins over username and password; an
// identity token replaces the password.
func (e authEntry) credentials() (drivers.AuthConfig, error) {
	conf := drivers.AuthConfig{Username: e.Username, Password: e.Password}
	if e.Auth != "" {
		decoded, err := base64.StdEncoding.DecodeString(e.Auth)
		if err != nil {
			decoded, err = base64.RawStdEncoding.DecodeString(e.Auth)
		}
		if err != nil {
			return drivers.AuthConfig{}, errors.New("auth is not base64")
		}
		user, password, ok := strings.Cut(string(decoded), ":")
		if !ok {
			return drivers.AuthConfig{}, errors.New("auth is not base64 of user:password")
		}
		conf.Username, conf.Password = user, password
	}
	if e.IdentityToken != "" {
		conf.Password = ""
		conf.IdentityToken = e.IdentityToken
	}
	return conf, nil
}

// preferKey settles two spellings of one host ("quay.io",
// "https://quay.io"): the one the docker CLI itself would look up wins,
// else the first in order, so that the choice never depends on map
// iteration.
func preferKey(host, key, prev string) bool {
	if prev == defaultServerURL(host) {
		return false
	}
	return key == defaultServerURL(host) || key < prev
}

// RegistryHost turns a config.json key or a server address
// ("https://index.docker.io/v1/", "http://127.0.0.1:5001", "quay.io") into
// the bare, lower-cased host that image references name; every Docker Hub
// spelling becomes "docker.io".
func RegistryHost(addr string) string {
	h := strings.TrimSpace(addr)
	if i := strings.Index(h, "://"); i >= 0 {
		h = h[i+3:]
	}
	if i := strings.IndexByte(h, '/'); i >= 0 {
		h = h[:i]
	}
	h = strings.ToLower(h)
	switch h {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return h
}

// defaultServerURL is the server address the docker CLI asks a helper
// about, and looks up in auths first, for a registry host.
func defaultServerURL(host string) string {
	if host == "docker.io" {
		return DockerHubServerURL
	}
	return host
}

// PullCredentials returns the credentials to pull ref with: the task's own
// (drivers.Auther) when they are for the image's host, else those of the
// config.json for that exact host, so that a registry never sees another's
// secrets. nil means an anonymous pull. The ServerAddress of the result is
// the RegistryHost of ref.
func (c *Config) PullCredentials(ctx context.Context, task drivers.ContainerTask, ref drivers.Reference, log *logrus.Entry) (*drivers.AuthConfig, error) {
	host := RegistryHost(ref.Domain)
	if conf, ok, err := taskCredentials(ctx, task); ok {
		if err != nil {
			return nil, fmt.Errorf("credentials for %s: %w", ref.Familiar, err)
		}
		if conf != nil {
			// No server address means "for this task's image".
			if conf.ServerAddress == "" || RegistryHost(conf.ServerAddress) == host {
				return &drivers.AuthConfig{
					Username:      conf.Username,
					Password:      conf.Password,
					IdentityToken: conf.IdentityToken,
					ServerAddress: host,
				}, nil
			}
			if log == nil {
				log = logs.Discard()
			}
			log.WithFields(logrus.Fields{"image": ref.Familiar, "credentials_for": RegistryHost(conf.ServerAddress)}).
				Warn("task credentials are for another registry; not sending them")
		}
	}
	return c.ImageCredentials(ctx, ref)
}

// FnDockerAuther is how a task of Fn's agent gives its registry
// credentials (go-dockerclient's type), asked after drivers.Auther. As Fn's
// driver does, it is asked about the task's image as the task names it
// (ContainerTask.Image), not a normalised form.
type FnDockerAuther interface {
	DockerAuth(ctx context.Context, image string) (*docker.AuthConfiguration, error)
}

// taskCredentials asks the task for its credentials: drivers.Auther first,
// then Fn's DockerAuth. ok is false when the task offers neither.
func taskCredentials(ctx context.Context, task drivers.ContainerTask) (_ *drivers.AuthConfig, ok bool, _ error) {
	if a, ok := task.(drivers.Auther); ok {
		if conf, err := a.Auth(ctx); err != nil || conf != nil {
			return conf, true, err
		}
	}
	a, ok := task.(FnDockerAuther)
	if !ok {
		return nil, false, nil
	}
	conf, err := a.DockerAuth(ctx, task.Image())
	if err != nil || conf == nil {
		return nil, true, err
	}
	return &drivers.AuthConfig{Username: conf.Username, Password: conf.Password,
		IdentityToken: conf.IdentityToken, ServerAddress: conf.ServerAddress}, true, nil
}

// ImageCredentials returns the config.json's credentials for the exact
// host of ref, with the docker CLI's precedence: the host's credHelpers
// entry, then credsStore, then the plain auths. A helper with nothing for
// the host means an anonymous pull (nil), not a fallback to auths.
func (c *Config) ImageCredentials(ctx context.Context, ref drivers.Reference) (*drivers.AuthConfig, error) {
	if c == nil {
		return nil, nil
	}
	host := RegistryHost(ref.Domain)
	conf, fromHelper, err := c.helpers.credentials(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", ref.Familiar, err)
	}
	if fromHelper {
		if conf == (drivers.AuthConfig{}) {
			return nil, nil
		}
		return &conf, nil
	}
	if conf, ok := c.auths[host]; ok {
		return &conf, nil
	}
	return nil, nil
}
