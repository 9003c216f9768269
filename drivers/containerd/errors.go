package containerd

import (
	"fmt"

	"github.com/containerd/containerd/errdefs"

	"github.com/fnrun/fnrun/internal/ctrderr"
	"github.com/fnrun/fnrun/internal/dockerconfig"
)

// ErrCredentialHelper is wrapped by every failure of a Docker credential
// helper (docker-credential-<name>) that the config.json of
// WithDockerConfig names. A helper missing from PATH, or answering outside
// the protocol, also wraps drivers.ErrInvalidConfig. It is the docker
// driver's ErrCredentialHelper, so one errors.Is serves both.
var ErrCredentialHelper = dockerconfig.ErrCredentialHelper

// daemonErr translates a containerd error at the boundary (see
// ctrderr.Wrap, which the image store shares).
func daemonErr(err error, msg string) error { return ctrderr.Wrap(err, msg) }

// notFoundErr translates err, turning containerd's not-found class into
// class (ErrImageNotFound for images, ErrContainerGone for containers).
func notFoundErr(err error, class error, msg string) error {
	if err != nil && errdefs.IsNotFound(err) {
		return fmt.Errorf("%s: %w: %w", msg, class, err)
	}
	return daemonErr(err, msg)
}

func isUnavailable(err error) bool { return ctrderr.Unavailable(err) }
