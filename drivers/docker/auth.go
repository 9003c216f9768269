package docker

import (
	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/dockerconfig"
)

// ErrCredentialHelper is wrapped by every failure of a Docker credential
// helper (docker-credential-<name>) named by the config.json's credsStore
// or credHelpers. A helper missing from PATH, or answering outside the
// protocol, also wraps drivers.ErrInvalidConfig.
var ErrCredentialHelper = dockerconfig.ErrCredentialHelper

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
