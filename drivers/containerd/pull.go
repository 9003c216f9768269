package containerd

import (
	"context"
	"net"
	"net/http"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/log"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/dockerconfig"
)

// dockerHubHost is where containerd sends requests for docker.io images, and
// so the host the authorizer asks credentials for.
const dockerHubHost = "registry-1.docker.io"

// pullOnce is one pull of ref, unpacked for the snapshotter, under a
// lease. containerd's resolver logs through the context's logger: it is
// kept on ours instead of the process-wide one.
func (d *daemon) pullOnce(ctx context.Context, ref drivers.Reference, auth *drivers.AuthConfig) (err error) {
	ctx, release, err := d.withLease(ctx, "pull")
	if err != nil {
		return err
	}
	// The image record holds what the pull wrote once it exists. A failed
	// attempt's partial layers (ingests) are only the lease's: a synchronous
	// delete has the daemon collect them before answering, rather than at a
	// later collection that nothing may trigger.
	defer func() { release(err != nil) }()
	ctx = log.WithLogger(ctx, d.log.WithField("image", ref.Normalized))
	_, err = d.client.Pull(ctx, ref.Normalized,
		ctrd.WithPullUnpack,
		ctrd.WithPullSnapshotter(d.opts.snapshotter),
		ctrd.WithResolver(d.resolver(ref, auth)),
		ctrd.WithPullLabels(d.s.Labels("")))
	return pullErr(err, ref.Normalized)
}

// resolver talks to registries as Docker does: plain HTTP for loopback
// registries, TLS elsewhere, and auth's credentials offered to auth's host
// only (the image's registry when auth names none), never to another host.
func (d *daemon) resolver(ref drivers.Reference, auth *drivers.AuthConfig) remotes.Resolver {
	client := &http.Client{Transport: d.http}
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
	authorizer := docker.NewDockerAuthorizer(docker.WithAuthClient(client), docker.WithAuthCreds(creds))
	return docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(
			docker.WithClient(client),
			docker.WithPlainHTTP(docker.MatchLocalhost),
			docker.WithAuthorizer(authorizer)),
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

// newTransport is the driver's own HTTP transport, so Close can drop its
// idle registry connections (and their goroutines).
func newTransport() *http.Transport {
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
