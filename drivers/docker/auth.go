package docker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/dockerconfig"
)

// ErrCredentialHelper is wrapped by every failure of a Docker credential
// helper (docker-credential-<name>) named by the config.json's credsStore
// or credHelpers. A helper missing from PATH, or answering outside the
// protocol, also wraps drivers.ErrInvalidConfig.
var ErrCredentialHelper = dockerconfig.ErrCredentialHelper

// credentials returns the credentials to pull ref with: the task's own
// (drivers.Auther) or those of the config.json, and only when they are for
// the exact host of the image. The zero value means an anonymous pull.
func (d *Driver) credentials(ctx context.Context, task drivers.ContainerTask, ref drivers.Reference) (docker.AuthConfiguration, error) {
	conf, err := d.registryAuth.PullCredentials(ctx, task, ref, d.log)
	return dockerAuth(conf), err
}

// configCredentials returns the credentials of the driver's config.json
// for the exact host of ref, for pulls that have no task.
func (d *Driver) configCredentials(ctx context.Context, ref drivers.Reference) (docker.AuthConfiguration, error) {
	conf, err := d.registryAuth.ImageCredentials(ctx, ref)
	return dockerAuth(conf), err
}

// dockerAuth is conf in the form the daemon's X-Registry-Auth takes; nil
// (anonymous) is the zero value, which sends no header.
func dockerAuth(conf *drivers.AuthConfig) docker.AuthConfiguration {
	if conf == nil {
		return docker.AuthConfiguration{}
	}
	return docker.AuthConfiguration{
		Username:      conf.Username,
		Password:      conf.Password,
		IdentityToken: conf.IdentityToken,
		ServerAddress: conf.ServerAddress,
	}
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
