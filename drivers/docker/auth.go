package docker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
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
)

// loadDockerConfig reads a Docker config.json (path is the file or its
// folder): the "auths", keyed by bare registry host, and the credential
// helpers of "credsStore" and "credHelpers", which are run only when a pull
// needs them, each bounded by helperTimeout.
func loadDockerConfig(path string, helperTimeout time.Duration, log *logrus.Entry) (map[string]docker.AuthConfiguration, *credentialHelpers, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "config.json")
	}
	// Errors name the file, never its content.
	invalid := func(err error) error {
		return fmt.Errorf("docker driver: registry credentials %s: %w: %v", path, drivers.ErrInvalidConfig, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, invalid(err)
	}
	var file struct {
		Auths       map[string]json.RawMessage `json:"auths"`
		CredsStore  string                     `json:"credsStore"`
		CredHelpers map[string]string          `json:"credHelpers"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		return nil, nil, invalid(errors.New("not a JSON object of auths, credsStore and credHelpers"))
	}
	out := map[string]docker.AuthConfiguration{}
	// go-dockerclient takes a file without "auths" for the legacy
	// .dockercfg format, which a file with only helpers is not.
	if len(file.Auths) > 0 || (file.CredsStore == "" && len(file.CredHelpers) == 0) {
		confs, err := docker.NewAuthConfigurations(bytes.NewReader(data))
		if err != nil {
			return nil, nil, invalid(err)
		}
		for key, conf := range confs.Configs {
			host := registryHost(key)
			if host == "" {
				continue
			}
			conf.ServerAddress = host
			out[host] = conf
		}
	}
	helpers, err := newCredentialHelpers(file.CredsStore, file.CredHelpers, helperTimeout, log)
	if err != nil {
		return nil, nil, fmt.Errorf("docker driver: registry credentials %s: %w", path, err)
	}
	return out, helpers, nil
}

// registryHost turns a config.json key or a server address
// ("https://index.docker.io/v1/", "http://127.0.0.1:5001", "quay.io") into
// the bare host that image references name, lower-cased.
func registryHost(addr string) string {
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

// credentials returns the credentials to pull ref with: the task's own
// (drivers.Auther) or those of the config.json, and only when they are for
// the exact host of the image, so that a registry never sees another's
// secrets. The zero value means an anonymous pull.
func (d *Driver) credentials(ctx context.Context, task drivers.ContainerTask, ref drivers.Reference) (docker.AuthConfiguration, error) {
	host := registryHost(ref.Domain)
	if a, ok := task.(drivers.Auther); ok {
		conf, err := a.Auth(ctx)
		if err != nil {
			return docker.AuthConfiguration{}, fmt.Errorf("credentials for %s: %w", ref.Familiar, err)
		}
		if conf != nil {
			// No server address means "for this task's image".
			if conf.ServerAddress == "" || registryHost(conf.ServerAddress) == host {
				return docker.AuthConfiguration{
					Username:      conf.Username,
					Password:      conf.Password,
					IdentityToken: conf.IdentityToken,
					ServerAddress: host,
				}, nil
			}
			d.log.WithFields(map[string]any{"image": ref.Familiar, "credentials_for": registryHost(conf.ServerAddress)}).
				Warn("task credentials are for another registry; not sending them")
		}
	}
	return d.configCredentials(ctx, ref)
}

// configCredentials returns the credentials of the driver's config.json for
// the exact host of ref, with the docker CLI's precedence: the host's
// credHelpers entry, then credsStore, then the plain auths. A helper with
// nothing for the host means an anonymous pull, not a fallback to auths.
func (d *Driver) configCredentials(ctx context.Context, ref drivers.Reference) (docker.AuthConfiguration, error) {
	host := registryHost(ref.Domain)
	conf, fromHelper, err := d.helpers.credentials(ctx, host)
	if err != nil {
		return docker.AuthConfiguration{}, fmt.Errorf("credentials for %s: %w", ref.Familiar, err)
	}
	if fromHelper {
		return conf, nil
	}
	if conf, ok := d.auths[host]; ok {
		return conf, nil
	}
	return docker.AuthConfiguration{}, nil
}

// credentialKey identifies credentials in the pull dedupe key without
// keeping the secret itself.
func credentialKey(conf docker.AuthConfiguration) string {
	if conf == (docker.AuthConfiguration{}) {
		return "anonymous"
	}
	sum := sha256.Sum256([]byte(conf.ServerAddress + "\x00" + conf.Username + "\x00" + conf.Password + "\x00" + conf.IdentityToken + "\x00" + conf.RegistryToken))
	return hex.EncodeToString(sum[:16])
}
