package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	docker "github.com/fsouza/go-dockerclient"
	"github.com/golang/groupcache/singleflight"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/stats"
)

// puller collapses concurrent pulls of one reference with the same
// credentials into one daemon pull, retried as the driver's policy says.
//
// The shared pull runs in a goroutine the driver owns, bounded by the
// driver's life and the pull timeout, not by any one caller: a caller that
// gives up must not fail the others, and the image is most likely wanted
// again soon. Each caller's context bounds only its own wait.
type puller struct {
	d     *Driver
	group singleflight.Group
}

func newPuller(d *Driver) *puller { return &puller{d: d} }

func (p *puller) pull(ctx context.Context, ref drivers.Reference, conf docker.AuthConfiguration) error {
	key := ref.Familiar + "\x00" + credentialKey(conf)
	res := make(chan error, 1)
	started := p.d.goOwned(func() {
		_, err := p.group.Do(key, func() (any, error) {
			return nil, p.pullWithRetries(ref, conf)
		})
		res <- err
	})
	if !started {
		return fmt.Errorf("pull %s: docker driver: %w", ref.Familiar, drivers.ErrClosed)
	}
	select {
	case err := <-res:
		if err != nil && p.d.ctx.Err() != nil {
			return fmt.Errorf("pull %s: docker driver: %w (%w)", ref.Familiar, drivers.ErrClosed, err)
		}
		return err
	case <-ctx.Done():
		return fmt.Errorf("pull %s: %w", ref.Familiar, ctx.Err())
	}
}

func (p *puller) pullWithRetries(ref drivers.Reference, conf docker.AuthConfiguration) error {
	policy, checker := p.d.retryPolicy()
	attempt := 0
	err := drivers.Retry(p.d.ctx, policy, checker, func(ctx context.Context) error {
		attempt++
		err := p.d.pullOnce(ctx, ref, conf)
		if err != nil {
			p.d.log.WithError(err).WithFields(map[string]any{"image": ref.Familiar, "attempt": attempt}).Debug("pull failed")
		}
		return err
	})
	var pte *pullTimeoutError
	if errors.As(err, &pte) && errors.Is(err, errPullAttemptTimedOut) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		// The retries are used up: report the last attempt's timeout as
		// the daemon call's error (ErrDaemonUnavailable, no answer in time).
		return fmt.Errorf("pull %s: %d attempts timed out after %v each: %w", ref.Familiar, attempt, pte.timeout, pte.err)
	}
	return err
}

// pullOnce is one pull attempt that reaches the daemon.
func (d *Driver) pullOnce(ctx context.Context, ref drivers.Reference, conf docker.AuthConfiguration) error {
	start := time.Now()
	tag := ref.Tag
	if ref.Digest != "" {
		tag = ref.Digest // the API takes a digest in the tag parameter
	}
	var attemptDeadline time.Time
	err := d.doWithin(ctx, "pull", fmt.Sprintf("image %q", ref.Familiar), kindImage, d.opts.pullTimeout, func(ctx context.Context) error {
		attemptDeadline, _ = ctx.Deadline()
		return d.client.PullImage(docker.PullImageOptions{
			Repository:        ref.Name(),
			Tag:               tag,
			OutputStream:      io.Discard,
			InactivityTimeout: pullInactivity,
			Context:           ctx,
		}, conf)
	})
	if err != nil && ctx.Err() == nil && !attemptDeadline.IsZero() && !time.Now().Before(attemptDeadline) && errors.Is(err, context.DeadlineExceeded) {
		// This attempt hit the pull timeout, not the caller's (or the
		// driver's) context: another attempt may well succeed, so the
		// error must not look permanent to drivers.Retry.
		err = &pullTimeoutError{timeout: d.opts.pullTimeout, err: err}
	}
	stats.RecordPull(ctx, driverName, start, err)
	if err == nil {
		d.log.WithFields(map[string]any{"image": ref.Familiar, "took": time.Since(start)}).Debug("pulled image")
	}
	return err
}

// errPullAttemptTimedOut is the error of one pull attempt that outlasted
// the pull timeout (WithPullTimeout). It wraps neither
// context.DeadlineExceeded nor drivers.ErrDaemonUnavailable, so that
// drivers.Retry tries again as the retry policy allows.
var errPullAttemptTimedOut = errors.New("pull attempt timed out")

// pullTimeoutError is one pull attempt that hit the pull timeout. Only
// errPullAttemptTimedOut is exposed to errors.Is, so that it is retried;
// err (the daemon call's error) is what the pull reports once the retries
// are used up.
type pullTimeoutError struct {
	timeout time.Duration
	err     error
}

func (e *pullTimeoutError) Error() string {
	return fmt.Sprintf("%v after %v: %v", errPullAttemptTimedOut, e.timeout, e.err)
}

func (e *pullTimeoutError) Unwrap() error { return errPullAttemptTimedOut }
