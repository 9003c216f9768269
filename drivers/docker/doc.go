// Package docker is the fnrun driver over the Docker Engine API (API 1.41
// and later), built on github.com/fsouza/go-dockerclient: a runtime of the
// shared cookie life cycle (package lifecycle), which holds the contract's
// behaviour. It registers itself as "docker"; New builds one without the
// registry:
//
//	drv, err := docker.New(ctx, drivers.Config{Docker: "unix:///run/docker.sock"},
//		drivers.WithLogger(log), drivers.WithDockerConfig("/etc/fnrun/docker"))
//
// One cookie is one container named after the task's id. Every task knob
// maps to the container's Config and HostConfig (see
// Cookie.ContainerOptions); containers run unprivileged by default (user
// 1000:1000, no capabilities, no-new-privileges) with an init as process
// 1, are attached before they start so no output is lost, report an OOM
// kill from the daemon's own state, and are removed with their volumes.
// A task's LoggerConfig is Docker's syslog log driver.
//
// Every daemon call goes through one pooled transport and is bounded by
// the call timeout. A tcp:// endpoint is reached over TLS as the docker
// CLI reaches it, when DOCKER_TLS_VERIFY is set or WithTLS is given. The
// connection itself (endpoint, TLS, the transport go-dockerclient shares,
// the raw calls and the attach hijack) is package internal/dockerconn; the
// driver holds the daemon calls and their translation into the drivers
// error classes.
// Registry credentials come from the task (drivers.Auther) or a Docker
// config.json, credential helpers included, for the exact registry host
// only. Stats stream from the daemon (cgroup v1 and v2) once a container
// has run for a short delay.
//
// With a pre-fork pool, a call's container joins a free holder with
// network mode "container:<holder id>", skipping a network namespace and a
// veth per call; holders spread over PreForkNetworks. The image store the
// cleaner works through (ImageStore; package images/dockerstore, over the
// driver's calls) reports an image in use when any container of the daemon
// was created from it or another image is built on it, and splits sizes
// into what each image holds alone and what it shares: from the daemon on
// API 1.42+, else from each image's layers and history.
package docker
