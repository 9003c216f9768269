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
// Pulls of one image with the same credentials are collapsed into one
// daemon pull, retried with the driver's backoff policy; each caller's
// context bounds only its own wait. Registry credentials come from the task
// (drivers.Auther) or from a Docker config.json (WithDockerConfig), are sent
// only for the exact registry host they name, and are never logged.
//
// While a container runs (after a short delay, since the daemon publishes a
// sample a second), its CPU, memory, network and block I/O samples go to
// the task's WriteStat, read correctly on cgroup v1 and v2. Every daemon
// call, pull and exit is recorded in the OpenCensus measures of package
// stats.
//
// Containers carry labels naming the library, the configured label tag and
// the driver instance. With a label tag set, a new driver removes the
// containers that other instances with the same tag left behind; it never
// touches a container without its labels. Close stops every goroutine the
// driver started and waits for them.
package docker
