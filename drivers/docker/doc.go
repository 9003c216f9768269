// Package docker is the fnrun driver over the Docker Engine API, built on
// github.com/fsouza/go-dockerclient. It registers itself as "docker"; New
// builds one without the registry:
//
//	drv, err := docker.New(ctx, drivers.Config{Docker: "unix:///run/docker.sock"},
//		docker.WithLogger(log), docker.WithDockerConfig("/etc/fnrun/docker"))
//
// One cookie is one container named after the task's id. The driver maps
// every ContainerTask knob to the container's Config and HostConfig (see
// Cookie.ContainerOptions), runs containers unprivileged by default (user
// 1000:1000, no capabilities, no-new-privileges), attaches to the output
// before starting so nothing is lost, reports how the container ended from
// the daemon's own state (an OOM kill is never guessed from exit code 137),
// and removes the container with its volumes when the cookie is closed.
//
// Every daemon call is bounded by its caller's context and by a default
// timeout per operation, so a daemon that stops answering gives
// drivers.ErrDaemonUnavailable instead of a hung caller. Errors are the
// classes of the drivers package (ErrImageNotFound, ErrUnauthorized,
// ErrContainerGone, ...), wrapping go-dockerclient's own typed errors.
//
// A tcp:// endpoint is reached over TLS as the docker CLI reaches it, when
// DOCKER_TLS_VERIFY is set or WithTLS is given: the daemon must verify
// against ca.pem of DOCKER_CERT_PATH (default ~/.docker), and cert.pem and
// key.pem identify the client. Every connection, attach included, is TLS
// then; a refused or unverifiable handshake is drivers.ErrDaemonUnavailable
// with a message that says which.
//
// Pulls of one image with the same credentials are collapsed into one
// daemon pull, retried with the driver's backoff policy; each caller's
// context bounds only its own wait. Registry credentials come from the task
// (drivers.Auther) or from a Docker config.json (WithDockerConfig), are sent
// only for the exact registry host they name, and are never logged. The
// credential helpers of that config.json (credsStore, credHelpers) are run
// as the docker CLI runs them: per pull, asked only about the image's host,
// bounded by the call timeout, their answers kept for a minute.
//
// While a container runs (after a short delay, since the daemon publishes a
// sample a second), its CPU, memory, network and block I/O samples go to
// the task's WriteStat, read correctly on cgroup v1 and v2. Every daemon
// call, pull and exit is recorded in the OpenCensus measures of package
// stats.
//
// # Pre-fork pool
//
// With PreForkPoolSize > 0 the driver runs a pool (package pool) of holder
// containers: PreForkImage (required; there is no default, since a host
// without a public registry could never pull one) running PreForkCmd
// (default "sleep 2147483647"), unprivileged like calls, with no logging,
// labelled role=holder, spread over PreForkNetworks (default: Docker's
// bridge). The pool pulls the image when the daemon lacks it, with the
// credentials of WithDockerConfig for its registry. CreateContainer leases
// a free holder and creates the container with network mode
// "container:<holder id>", which skips building a network namespace and
// a veth per call; when no holder is free (the pool counts the miss and
// grows up to PreForkPoolMax) or the task disables the network, the
// container gets its own network as without the pool. The lease is
// returned by Close once the container is removed; with PreForkUseOnce the
// holder is then replaced. A holder is watched with the daemon's wait
// call, set up again when the connection drops, so only a real death
// counts. A container whose holder died fails at Run, or, when the holder
// dies while it runs, is ended with StatusError; both errors wrap
// drivers.ErrContainerGone (pool.ErrHolderDied). If the holder dies between
// the lease and the create, the create falls back to a network of its own.
// The driver implements pool.Reporter.
//
// # Image cleaner
//
// With ImageCleanMaxSize > 0 the driver runs an image cleaner (package
// images) over the daemon's whole image store, the pre-fork image and
// ImageCleanExemptTags exempt. A cookie marks its image busy from
// ValidateImage (across the pull) until Close, and a pull kicks the
// cleaner. The store (ImageStore, also usable on its own for a one-shot
// cleanup) reports an image in use when any container of the daemon, ours
// or not, was created from it, or another image is built on it; removes an
// image by id without forcing, untagging its other names first when the
// daemon would not remove them with it (a refusal because of a container
// wraps images.ErrImageInUse, a missing image drivers.ErrImageNotFound);
// and splits sizes into what each image alone holds and what it shares:
// from the daemon when it reports shared sizes (API 1.42+), else counted
// from each image's layers and history (see imageStore for what is
// approximated). Last uses survive restarts in ImageCleanStateDir; without
// it, they are approximated by creation times after a restart. The driver
// implements images.Provider.
//
// # Labels and listing
//
// Containers carry labels naming the library, the configured label tag, the
// driver instance and the role (call or holder). With a label tag set, a
// new driver removes the containers, holders included, that other
// instances with the same tag left behind; it never touches a container
// without its labels. The driver implements drivers.ContainerLister over
// the containers of its label tag, of every instance.
//
// Close ends the running containers first, then closes the pool (every
// holder is stopped and removed), then the cleaner, and waits for every
// goroutine the driver started.
package docker
