package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
)

// DockerClient returns a bare go-dockerclient client on endpoint, with a
// keep-alive connection pool like the driver's, so that the comparison is
// of the steps and not of go-dockerclient's default of one connection per
// call. Call the returned function when done with it.
func DockerClient(endpoint string) (*docker.Client, func(), error) {
	if endpoint == "" {
		c, err := docker.NewClientFromEnv()
		return c, func() {}, err
	}
	c, err := docker.NewClient(endpoint)
	if err != nil {
		return nil, nil, err
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "unix" {
		return c, func() {}, nil
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", u.Path)
		},
		MaxIdleConns:        100,
		MaxIdleConnsPerHost: 100,
	}
	c.HTTPClient = &http.Client{Transport: tr}
	return c, tr.CloseIdleConnections, nil
}

// DockerOptions returns the create options the docker driver drv generates
// for task, for the bare twin to send the same container to the daemon.
// task must not be run: the cookie is closed before it is created.
func DockerOptions(ctx context.Context, drv drivers.Driver, task *drivers.Task) (docker.CreateContainerOptions, error) {
	c, err := drv.CreateCookie(ctx, task)
	if err != nil {
		return docker.CreateContainerOptions{}, err
	}
	defer c.Close(ctx)
	opts, ok := c.ContainerOptions().(*docker.CreateContainerOptions)
	if !ok || opts == nil || opts.Config == nil || opts.HostConfig == nil {
		return docker.CreateContainerOptions{}, fmt.Errorf("the driver's container options are %T, not go-dockerclient create options", c.ContainerOptions())
	}
	return cloneDockerOptions(*opts), nil
}

// cloneDockerOptions copies the parts of opts that the targets change.
func cloneDockerOptions(opts docker.CreateContainerOptions) docker.CreateContainerOptions {
	cfg := *opts.Config
	host := *opts.HostConfig
	opts.Config, opts.HostConfig = &cfg, &host
	return opts
}

// DockerCall is the bare twin of a cold or pooled call: inspect the image,
// create the container with the driver's options, attach to its output,
// start it, wait for its exit and the end of its output, remove it. For
// the pooled mode, Prepare starts one holder per worker (a sleeping
// container with the image) and a worker's calls join its holder's network
// namespace, as containers join the pool's holders.
type DockerCall struct {
	client  *docker.Client
	opts    docker.CreateContainerOptions
	variant Variant

	mu      sync.Mutex
	holders []string
}

// NewDockerCall returns the bare docker target of mode (Cold or Pooled);
// opts are the driver's create options for `true` (see DockerOptions).
func NewDockerCall(client *docker.Client, opts docker.CreateContainerOptions, driverName, mode string) *DockerCall {
	return &DockerCall{client: client, opts: opts, variant: Variant{driverName, mode, Bare}}
}

func (t *DockerCall) Variant() Variant { return t.variant }

func (t *DockerCall) Prepare(ctx context.Context, workers int) error {
	if t.variant.Mode != Pooled {
		return nil
	}
	for w := 0; w < workers; w++ {
		opts := cloneDockerOptions(t.opts)
		opts.Name = callID("bh")
		opts.Context = ctx
		opts.Config.Cmd = []string{"sleep", "2147483647"}
		opts.Config.AttachStdout, opts.Config.AttachStderr = false, false
		opts.Config.Labels = withRole(opts.Config.Labels, drivers.RoleHolder)
		ctr, err := t.client.CreateContainer(opts)
		if err != nil {
			return fmt.Errorf("holder: %w", err)
		}
		t.mu.Lock()
		t.holders = append(t.holders, ctr.ID)
		t.mu.Unlock()
		if err := t.client.StartContainerWithContext(ctr.ID, nil, ctx); err != nil {
			return fmt.Errorf("holder: %w", err)
		}
	}
	return nil
}

func withRole(labels map[string]string, role string) map[string]string {
	out := make(map[string]string, len(labels)+1)
	for k, v := range labels {
		out[k] = v
	}
	out[drivers.LabelRole] = role
	return out
}

func (t *DockerCall) Call(ctx context.Context, worker int) error {
	opts := t.opts
	if t.variant.Mode == Pooled {
		opts = cloneDockerOptions(t.opts)
		t.mu.Lock()
		opts.HostConfig.NetworkMode = "container:" + t.holders[worker]
		t.mu.Unlock()
	}
	return dockerLifecycle(ctx, t.client, opts, callID("b"))
}

func (t *DockerCall) Close(ctx context.Context) error {
	t.mu.Lock()
	holders := t.holders
	t.holders = nil
	t.mu.Unlock()
	var errs []error
	for _, id := range holders {
		errs = append(errs, dockerRemove(ctx, t.client, id))
	}
	return errors.Join(errs...)
}

func dockerRemove(ctx context.Context, c *docker.Client, id string) error {
	err := c.RemoveContainer(docker.RemoveContainerOptions{ID: id, Force: true, RemoveVolumes: true, Context: ctx})
	var gone *docker.NoSuchContainer
	if errors.As(err, &gone) {
		return nil
	}
	return err
}

// dockerLifecycle is one bare call, as the driver's benchmark does it.
func dockerLifecycle(ctx context.Context, c *docker.Client, opts docker.CreateContainerOptions, name string) error {
	if _, err := c.InspectImage(opts.Config.Image); err != nil {
		return err
	}
	opts.Name, opts.Context = name, ctx
	ctr, err := c.CreateContainer(opts)
	if err != nil {
		return err
	}
	defer dockerRemove(context.WithoutCancel(ctx), c, ctr.ID)
	// Not attached: the driver attaches no task that keeps no output.
	if err := c.StartContainerWithContext(ctr.ID, nil, ctx); err != nil {
		return err
	}
	code, err := c.WaitContainerWithContext(ctr.ID, ctx)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("container %s exited %d", name, code)
	}
	markResult(ctx)
	return dockerRemove(ctx, c, ctr.ID)
}

// DockerWarm is the bare twin of the warm target: one long-lived container
// per worker, created with the driver's options for HotCommand with stdin,
// attached, started and paused; a call unpauses it, echoes one line through
// it and pauses it again.
type DockerWarm struct {
	client  *docker.Client
	opts    docker.CreateContainerOptions
	variant Variant

	mu  sync.Mutex
	hot []*dockerHot
}

type dockerHot struct {
	id    string
	stdin *io.PipeWriter
	out   *lineConn
	cw    docker.CloseWaiter
	seq   int
}

// NewDockerWarm returns the bare warm target; opts are the driver's create
// options for HotCommand with stdin (see DockerOptions).
func NewDockerWarm(client *docker.Client, opts docker.CreateContainerOptions, driverName string) *DockerWarm {
	return &DockerWarm{client: client, opts: opts, variant: Variant{driverName, Warm, Bare}}
}

func (t *DockerWarm) Variant() Variant { return t.variant }

func (t *DockerWarm) Prepare(ctx context.Context, workers int) error {
	for w := 0; w < workers; w++ {
		opts := cloneDockerOptions(t.opts)
		opts.Name, opts.Context = callID("bw"), ctx
		ctr, err := t.client.CreateContainer(opts)
		if err != nil {
			return err
		}
		inR, inW := io.Pipe()
		h := &dockerHot{id: ctr.ID, stdin: inW, out: newLineConn()}
		t.mu.Lock()
		t.hot = append(t.hot, h)
		t.mu.Unlock()
		success := make(chan struct{})
		h.cw, err = t.client.AttachToContainerNonBlocking(docker.AttachToContainerOptions{
			Container: ctr.ID, InputStream: inR, OutputStream: h.out.w, ErrorStream: io.Discard,
			Stream: true, Stdin: true, Stdout: true, Stderr: true, Success: success,
		})
		if err != nil {
			return err
		}
		<-success
		success <- struct{}{}
		if err := t.client.StartContainerWithContext(ctr.ID, nil, ctx); err != nil {
			return err
		}
		h.seq++
		if err := echo(ctx, h.stdin, h.out, fmt.Sprintf("call %d", h.seq)); err != nil {
			return err
		}
		if err := t.client.PauseContainer(ctr.ID); err != nil {
			return err
		}
	}
	return nil
}

func (t *DockerWarm) Call(ctx context.Context, worker int) error {
	t.mu.Lock()
	h := t.hot[worker]
	t.mu.Unlock()
	if err := t.client.UnpauseContainer(h.id); err != nil {
		return err
	}
	h.seq++
	if err := echo(ctx, h.stdin, h.out, fmt.Sprintf("call %d", h.seq)); err != nil {
		return err
	}
	return t.client.PauseContainer(h.id)
}

// Repair pauses the worker's hot container again after a failed call.
func (t *DockerWarm) Repair(_ context.Context, worker int) {
	t.mu.Lock()
	h := t.hot[worker]
	t.mu.Unlock()
	time.Sleep(repairDelay)
	_ = t.client.PauseContainer(h.id)
}

func (t *DockerWarm) Close(ctx context.Context) error {
	t.mu.Lock()
	hot := t.hot
	t.hot = nil
	t.mu.Unlock()
	var errs []error
	for _, h := range hot {
		h.out.discard()
		_ = t.client.UnpauseContainer(h.id) // a paused container cannot be killed everywhere
		_ = h.stdin.Close()
		errs = append(errs, dockerRemove(ctx, t.client, h.id))
		if h.cw != nil {
			_ = h.cw.Close()
		}
		h.out.close()
	}
	return errors.Join(errs...)
}
