package docker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
)

// loadDockerConfig reads the "auths" of a Docker config.json (path is the
// file or its folder), keyed by bare registry host.
func loadDockerConfig(path string) (map[string]docker.AuthConfiguration, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "config.json")
	}
	confs, err := docker.NewAuthConfigurationsFromFile(path)
	if err != nil {
		// The error never holds the file's content, only its name.
		return nil, fmt.Errorf("docker driver: registry credentials %s: %w: %v", path, drivers.ErrInvalidConfig, err)
	}
	out := make(map[string]docker.AuthConfiguration, len(confs.Configs))
	for key, conf := range confs.Configs {
		host := registryHost(key)
		if host == "" {
			continue
		}
		conf.ServerAddress = host
		out[host] = conf
	}
	return out, nil
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
