// Package registry is how the containerd driver reaches image registries
// as Docker does: plain HTTP for loopback registries and TLS elsewhere,
// credentials offered to one host only, and a pull's failures in the classes
// of package drivers. containerd's client talks to registries itself, so
// what dockerd decides for the docker driver is decided here.
package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/remotes"
	remotedocker "github.com/containerd/containerd/remotes/docker"
	remoteerrors "github.com/containerd/containerd/remotes/errors"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/ctrderr"
	"github.com/fnrun/fnrun/internal/dockerconfig"
)

// dockerHubHost is where containerd sends requests for docker.io images, and
// so the host the authorizer asks credentials for.
const dockerHubHost = "registry-1.docker.io"

// Resolver talks to registries as Docker does: plain HTTP for loopback
// registries, TLS elsewhere, and auth's credentials offered to auth's host
// only (the image's registry when auth names none), never to another host.
func Resolver(transport http.RoundTripper, ref drivers.Reference, auth *drivers.AuthConfig) remotes.Resolver {
	client := &http.Client{Transport: transport}
	authHost := credentialsHost(ref, auth)
	creds := func(host string) (string, string, error) {
		if auth == nil || host != authHost {
			return "", "", nil
		}
		if auth.IdentityToken != "" {
			return "", auth.IdentityToken, nil // containerd's form of a refresh token
		}
		return auth.Username, auth.Password, nil
	}
	authorizer := remotedocker.NewDockerAuthorizer(remotedocker.WithAuthClient(client), remotedocker.WithAuthCreds(creds))
	return remotedocker.NewResolver(remotedocker.ResolverOptions{
		Hosts: remotedocker.ConfigureDefaultRegistries(
			remotedocker.WithClient(client),
			remotedocker.WithPlainHTTP(remotedocker.MatchLocalhost),
			remotedocker.WithAuthorizer(authorizer)),
	})
}

// credentialsHost is the one host auth is offered to, as the authorizer
// names it: the host auth names, else the image's registry; "" for none.
func credentialsHost(ref drivers.Reference, auth *drivers.AuthConfig) string {
	if auth == nil {
		return ""
	}
	if host := registryHost(auth.ServerAddress); host != "" {
		return host
	}
	return registryHost(ref.Domain)
}

// registryHost reduces a server address as people write it
// ("https://index.docker.io/v1/", "127.0.0.1:5001", "docker.io") to the host
// containerd sends requests to: Docker Hub's images, and its config.json
// key, live on another host than the one references name.
func registryHost(addr string) string {
	host := dockerconfig.RegistryHost(addr)
	if host == "docker.io" {
		return dockerHubHost
	}
	return host
}

// NewTransport is an HTTP transport for registries that its owner can
// close, so that its idle connections (and their goroutines) end with it.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          10,
		IdleConnTimeout:       30 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: 5 * time.Second,
	}
}

// PullError translates a pull failure into the classes of package drivers.
// Registry errors carry the request URL, never the credentials (they travel
// in headers).
func PullError(err error, ref string) error {
	msg := fmt.Sprintf("pull %s", ref)
	var status remoteerrors.ErrUnexpectedStatus
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", msg, err)
	case errors.Is(err, remotedocker.ErrInvalidAuthorization), errdefs.IsUnauthorized(err), errdefs.IsPermissionDenied(err):
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
	return ctrderr.Wrap(err, msg)
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
