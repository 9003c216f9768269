package containerd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/log"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/dockerconfig"
	"github.com/fnrun/fnrun/stats"
)

// dockerHubHost is where containerd sends requests for docker.io images, and
// so the host the authorizer asks credentials for.
const dockerHubHost = "registry-1.docker.io"

// pull makes ref present and unpacked. Concurrent pulls of the same
// reference with the same credentials share one daemon pull, run under the
// driver's own context and the retry policy; each caller's ctx bounds only
// its own wait, so a caller giving up does not fail the others.
func (d *Driver) pull(ctx context.Context, ref drivers.Reference, auth *drivers.AuthConfig) error {
	key := pullKey(ref.Normalized, auth)
	done := make(chan error, 1)
	if !d.spawn(func() {
		_, err := d.pulls.Do(key, func() (interface{}, error) {
			return nil, d.sharedPull(ref, auth)
		})
		done <- err
	}) {
		return fmt.Errorf("pull %s: containerd driver: %w", ref.Normalized, drivers.ErrClosed)
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("pull %s: %w", ref.Normalized, ctx.Err())
	}
}

func (d *Driver) sharedPull(ref drivers.Reference, auth *drivers.AuthConfig) error {
	ctx, cancel := context.WithTimeout(d.bg, d.opts.pullTimeout)
	defer cancel()
	// containerd's resolver logs through the context's logger; keep it on
	// ours instead of the process-wide one.
	ctx = log.WithLogger(ctx, d.log.WithField("image", ref.Normalized))
	start := time.Now()
	policy, checker := d.retryPolicy()
	attempt := 0
	err := drivers.Retry(ctx, policy, checker, func(ctx context.Context) error {
		attempt++
		err := d.pullOnce(ctx, ref, auth)
		if err != nil {
			d.log.WithError(err).WithFields(map[string]interface{}{"image": ref.Normalized, "attempt": attempt}).Info("pull failed")
		}
		return err
	})
	stats.RecordPull(ctx, DriverName, start, err)
	return err
}

func (d *Driver) pullOnce(ctx context.Context, ref drivers.Reference, auth *drivers.AuthConfig) (err error) {
	ctx, release, err := d.withLease(ctx, "pull")
	if err != nil {
		return err
	}
	// The image record holds what the pull wrote once it exists; the
	// lease only covered the time in between. A failed attempt's partial
	// layers (ingests) are only the lease's: with the delete synchronous,
	// the daemon collects them before answering, rather than at a later
	// collection that nothing may trigger.
	defer func() { release(err != nil) }()
	start := time.Now()
	_, err = d.client.Pull(ctx, ref.Normalized,
		ctrd.WithPullUnpack,
		ctrd.WithPullSnapshotter(d.opts.snapshotter),
		ctrd.WithResolver(d.resolver(ref, auth)),
		ctrd.WithPullLabels(d.Labels()))
	stats.RecordDaemonCall(ctx, DriverName, "Pull", start, err)
	return pullErr(err, ref.Normalized)
}

// resolver talks to registries as Docker does: plain HTTP for loopback
// registries, TLS elsewhere, and auth's credentials offered to auth's host
// only (the image's registry when auth names none), never to another host.
func (d *Driver) resolver(ref drivers.Reference, auth *drivers.AuthConfig) remotes.Resolver {
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
// containerd sends requests to, which is what the authorizer is asked about:
// Docker Hub's images, and its config.json key, live on another host than
// the one references name.
func registryHost(addr string) string {
	host := dockerconfig.RegistryHost(addr)
	if host == "docker.io" {
		return dockerHubHost
	}
	return host
}

// pullKey identifies a shared pull. Credentials are part of it, hashed:
// a caller must never ride on a pull made with another's login.
func pullKey(ref string, auth *drivers.AuthConfig) string {
	if auth == nil {
		return ref
	}
	h := sha256.New()
	for _, s := range []string{auth.ServerAddress, auth.Username, auth.Password, auth.IdentityToken} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return ref + "\x00" + hex.EncodeToString(h.Sum(nil))
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
