package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"

	docker "github.com/fsouza/go-dockerclient"
	"github.com/moby/moby/api/types/jsonstream"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/dockerconn"
)

// ErrFsSizeUnsupported is drivers.ErrFsSizeUnsupported: FsSize needs a
// storage driver with quotas (overlay2 on xfs with pquota, btrfs, zfs,
// devicemapper).
var ErrFsSizeUnsupported = drivers.ErrFsSizeUnsupported

// daemonError is an error of one daemon call, translated into a class of
// the drivers package while keeping the daemon's own error for errors.As.
type daemonError struct {
	api   string // the daemon API, as tagged in the metrics
	what  string // the object, e.g. `container "abc"`
	class error  // a drivers.Err* sentinel, or a context error; may be nil
	err   error  // what go-dockerclient or the transport returned
}

func (e *daemonError) Error() string {
	var b strings.Builder
	b.WriteString("docker ")
	b.WriteString(e.api)
	if e.what != "" {
		b.WriteString(" ")
		b.WriteString(e.what)
	}
	if e.class != nil && !strings.Contains(e.err.Error(), e.class.Error()) {
		b.WriteString(": ")
		b.WriteString(e.class.Error())
	}
	b.WriteString(": ")
	b.WriteString(e.err.Error())
	return b.String()
}

// Unwrap lets errors.Is match the class and errors.As find the daemon's
// typed error (*docker.Error, *docker.NoSuchContainer...).
func (e *daemonError) Unwrap() []error {
	if e.class == nil {
		return []error{e.err}
	}
	return []error{e.class, e.err}
}

// objectKind says how a 404 is to be read: the daemon answers 404 for a
// missing container and for a missing image alike.
type objectKind int

const (
	kindNone objectKind = iota
	kindContainer
	kindImage
)

// translate turns what a daemon call returned into an error wrapping one of
// the drivers classes. ctx is the call's: when it has ended, the call was
// cut short, and lifecycle.Caller says why (the caller gave up, or no
// answer in time) better than the transport's error does.
func translate(ctx context.Context, api, what string, kind objectKind, err error) error {
	if err == nil {
		return nil
	}
	var de *daemonError
	if errors.As(err, &de) {
		return err // already translated by an inner call
	}
	out := &daemonError{api: api, what: what, err: err}
	switch {
	case ctx.Err() != nil:
	case errors.Is(err, docker.ErrInactivityTimeout):
		out.class = drivers.ErrDaemonUnavailable
		out.err = fmt.Errorf("no answer in time: %w", err)
	default:
		if why, ok := dockerconn.DescribeTLSFailure(err); ok {
			out.class = drivers.ErrDaemonUnavailable
			out.err = fmt.Errorf("%s: %w", why, err)
			break
		}
		out.class = classify(kind, err)
	}
	return out
}

func classify(kind objectKind, err error) error {
	var (
		apiErr  *docker.Error
		jsonErr *jsonstream.Error
		noCtr   *docker.NoSuchContainer
	)
	switch {
	case isUnavailable(err):
		return drivers.ErrDaemonUnavailable
	case errors.Is(err, docker.ErrContainerAlreadyExists):
		return drivers.ErrAlreadyExists
	case errors.As(err, &noCtr), errors.Is(err, docker.ErrNoSuchImage) && kind == kindContainer:
		return drivers.ErrContainerGone
	case errors.Is(err, docker.ErrNoSuchImage):
		return drivers.ErrImageNotFound
	case errors.As(err, &apiErr):
		return classifyStatus(kind, apiErr.Status, apiErr.Message)
	case errors.As(err, &jsonErr):
		// A pull reports registry failures inside its JSON stream.
		return classifyStatus(kind, jsonErr.Code, jsonErr.Message)
	}
	return nil
}

func classifyStatus(kind objectKind, status int, msg string) error {
	switch {
	case status == http.StatusUnauthorized || isUnauthorizedMessage(msg):
		return drivers.ErrUnauthorized
	case status == http.StatusNotFound && kind == kindContainer:
		return drivers.ErrContainerGone
	case status == http.StatusNotFound || (kind == kindImage && isNotFoundMessage(msg)):
		return drivers.ErrImageNotFound
	case strings.Contains(msg, "logging driver"):
		// The daemon dials the syslog endpoint as the container starts.
		return drivers.ErrSyslogUnavailable
	case isStorageOptMessage(msg):
		return ErrFsSizeUnsupported
	case kind == kindImage && isRegistryDownMessage(msg):
		return drivers.ErrRegistryUnavailable
	}
	return nil
}

// isRegistryDownMessage recognises the daemon's report of a registry that
// refused or cut the connection, or failed with a server error.
func isRegistryDownMessage(msg string) bool {
	m := strings.ToLower(msg)
	for _, s := range []string{"connection refused", "connection reset", "unexpected eof", ": eof",
		"broken pipe", "no such host", "unexpected http status: 5", "internal server error",
		"bad gateway", "service unavailable", "gateway timeout"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// The daemon reports a registry's refusal as a 500 whose message is all we
// have; these are the forms dockerd 20.10 to 28 use.
func isUnauthorizedMessage(msg string) bool {
	m := strings.ToLower(msg)
	if strings.Contains(m, "repository does not exist") {
		return false // Docker Hub's ambiguous "pull access denied": treat as missing
	}
	for _, s := range []string{"unauthorized", "authentication required", "no basic auth credentials", "denied: ", "incorrect username or password"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

func isNotFoundMessage(msg string) bool {
	m := strings.ToLower(msg)
	for _, s := range []string{"manifest unknown", "not found", "repository does not exist", "no such image", "name unknown"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

func isStorageOptMessage(msg string) bool {
	return strings.Contains(msg, "storage-opt") || strings.Contains(msg, "storage opt")
}

// isUnavailable reports an error that says the daemon cannot be reached,
// as opposed to a daemon that answered with an error. An EOF counts: the
// daemon hung up in the middle of an answer.
func isUnavailable(err error) bool {
	if errors.Is(err, docker.ErrConnectionRefused) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ENOENT) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial"
}

func isGone(err error) bool {
	return errors.Is(err, drivers.ErrContainerGone)
}

// isNotRunning: the daemon refused to signal a container that has exited.
func isNotRunning(err error) bool {
	var apiErr *docker.Error
	return errors.As(err, &apiErr) && apiErr.Status == http.StatusConflict && strings.Contains(apiErr.Message, "is not running")
}

// holderGoneMessage reports an error of a create or start that joined a
// holder which is gone or stopped: the daemon answers "No such container"
// (404, which a create would otherwise read as a missing image) or
// "cannot join network of a non running container".
func holderGoneMessage(err error) bool {
	var apiErr *docker.Error
	if !errors.As(err, &apiErr) {
		return false
	}
	m := strings.ToLower(apiErr.Message)
	return strings.Contains(m, "no such container") || strings.Contains(m, "non running container") ||
		strings.Contains(m, "cannot join network")
}
