package containerd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/remotes/docker"
	remoteerrors "github.com/containerd/containerd/remotes/errors"

	"github.com/fnrun/fnrun/drivers"
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

// pullErr translates a pull failure into the classes of package drivers.
// Registry errors carry the request URL, never the credentials (they travel
// in headers).
func pullErr(err error, ref string) error {
	msg := fmt.Sprintf("pull %s", ref)
	var status remoteerrors.ErrUnexpectedStatus
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", msg, err)
	case errors.Is(err, docker.ErrInvalidAuthorization), errdefs.IsUnauthorized(err), errdefs.IsPermissionDenied(err):
		return fmt.Errorf("%s: %w: %w", msg, drivers.ErrUnauthorized, err)
	case errors.As(err, &status) && (status.StatusCode == 401 || status.StatusCode == 403):
		return fmt.Errorf("%s: %w: %v", msg, drivers.ErrUnauthorized, status.Status)
	case errors.As(err, &status) && status.StatusCode == 404:
		return fmt.Errorf("%s: %w: %v", msg, drivers.ErrImageNotFound, status.Status)
	case errdefs.IsNotFound(err):
		return fmt.Errorf("%s: %w: %w", msg, drivers.ErrImageNotFound, err)
	case errors.As(err, &status) && status.StatusCode >= 500:
		return fmt.Errorf("%s: %w: %v", msg, drivers.ErrRegistryUnavailable, status.Status)
	case isRegistryDown(err):
		return fmt.Errorf("%s: %w: %w", msg, drivers.ErrRegistryUnavailable, err)
	}
	return daemonErr(err, msg)
}

// isRegistryDown recognises a registry that refused or cut the connection.
// The client talks to the registry itself, so these are its own network
// errors, not the daemon's.
func isRegistryDown(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true
	}
	m := strings.ToLower(err.Error())
	for _, s := range []string{"connection refused", "connection reset", "unexpected eof", ": eof", "broken pipe", "no such host"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}
