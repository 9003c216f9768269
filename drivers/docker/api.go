package docker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/images/dockerstore"
)

// do runs one daemon call bounded by the call timeout (see translate).
func (d *daemon) do(ctx context.Context, api, what string, kind objectKind, call func(ctx context.Context) error) error {
	return d.doWithin(ctx, api, what, kind, d.s.CallTimeout, call)
}

// doWithin is do with an explicit timeout; 0 means only ctx bounds the call.
func (d *daemon) doWithin(ctx context.Context, api, what string, kind objectKind, timeout time.Duration, call func(ctx context.Context) error) error {
	return d.caller.CallWithin(ctx, api, timeout, func(ctx context.Context) error {
		return translate(ctx, api, what, kind, call(ctx))
	})
}

// storeCall is the image store's way to the daemon: a raw API call, bounded
// and translated like every other.
func (d *daemon) storeCall(ctx context.Context, r dockerstore.Request, out any) error {
	kind := kindNone
	if r.Image {
		kind = kindImage
	}
	return d.do(ctx, r.API, r.Object, kind, func(ctx context.Context) error {
		return d.conn.Call(ctx, r.Method, r.Path, out)
	})
}

func (d *daemon) info(ctx context.Context) (hostInfo, error) {
	var raw struct {
		ServerVersion string
		Driver        string
		DriverStatus  [][2]string
		CgroupVersion string
	}
	err := d.do(ctx, "info", "", kindNone, func(ctx context.Context) error {
		return d.conn.Call(ctx, http.MethodGet, "/info", &raw)
	})
	if err != nil {
		return hostInfo{}, err
	}
	h := hostInfo{version: raw.ServerVersion, storageDriver: raw.Driver, cgroupVersion: raw.CgroupVersion}
	for _, kv := range raw.DriverStatus {
		if kv[0] == "Backing Filesystem" {
			h.backingFs = kv[1]
		}
	}
	if h.cgroupVersion == "" {
		h.cgroupVersion = "1" // daemons before API 1.40 do not say, and only know v1
	}
	return h, nil
}

// inspectContainer fails with drivers.ErrContainerGone for a missing one.
func (d *daemon) inspectContainer(ctx context.Context, id string) (*docker.Container, error) {
	var ctr *docker.Container
	err := d.do(ctx, "inspect_container", fmt.Sprintf("container %q", id), kindContainer, func(ctx context.Context) error {
		var err error
		ctr, err = d.client.InspectContainerWithOptions(docker.InspectContainerOptions{ID: id, Context: ctx})
		return err
	})
	return ctr, err
}

func (d *daemon) kill(ctx context.Context, id string, sig docker.Signal) error {
	return d.do(ctx, "kill", fmt.Sprintf("container %q", id), kindContainer, func(ctx context.Context) error {
		return d.client.KillContainer(docker.KillContainerOptions{ID: id, Signal: sig, Context: ctx})
	})
}

// startContainer goes through the raw API: go-dockerclient's start asks the
// daemon's version on first use and writes the client's version fields
// without a lock, a race when the pool starts several holders at once.
func (d *daemon) startContainer(ctx context.Context, id, what string) error {
	return d.do(ctx, "start", what, kindContainer, func(ctx context.Context) error {
		return d.conn.Call(ctx, http.MethodPost, "/containers/"+id+"/start", nil)
	})
}

// setPaused freezes or thaws a container; one already so is no error.
func (d *daemon) setPaused(ctx context.Context, id string, paused bool) error {
	api := "unpause"
	if paused {
		api = "pause"
	}
	return d.do(ctx, api, fmt.Sprintf("container %q", id), kindContainer, func(ctx context.Context) error {
		return retryPauseRace(ctx, paused, func() error {
			return d.conn.Call(ctx, http.MethodPost, "/containers/"+id+"/"+api, nil)
		}, func() (bool, error) {
			var st struct{ State struct{ Paused bool } }
			err := d.conn.Call(ctx, http.MethodGet, "/containers/"+id+"/json", &st)
			return st.State.Paused, err
		})
	})
}

// pauseRaceRetries bounds the retries of a pause refused by a stale record.
const pauseRaceRetries = 10

// pauseSettle is how long dockerd's record must keep showing the state a
// refused pause or unpause asked for before the driver believes it.
const pauseSettle = 50 * time.Millisecond

// retryPauseRace handles a pause or unpause refused because the container
// is in the wanted state already. containerd's refusal (isPauseDone) is the
// truth. dockerd's (isPauseRace) comes from its record, which lags
// containerd's events under load (20.10 shows a state one event late), so
// it is believed only once the record keeps that state for pauseSettle.
func retryPauseRace(ctx context.Context, paused bool, call func() error, state func() (bool, error)) error {
	var err error
	for attempt := 0; attempt < pauseRaceRetries; attempt++ {
		err = call()
		switch {
		case err == nil || isPauseDone(err, paused):
			return nil
		case !isPauseRace(err):
			return err
		case pauseSettled(ctx, paused, state):
			return nil
		}
		t := time.NewTimer(time.Duration(attempt+1) * 20 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
	return err
}

// pauseSettled reports whether the daemon's record shows the container
// paused (or not) as wanted, and still does pauseSettle later.
func pauseSettled(ctx context.Context, paused bool, state func() (bool, error)) bool {
	if now, err := state(); err != nil || now != paused {
		return false
	}
	t := time.NewTimer(pauseSettle)
	select {
	case <-ctx.Done():
		t.Stop()
		return false
	case <-t.C:
	}
	now, err := state()
	return err == nil && now == paused
}

// isPauseRace: dockerd's record says the container is in that state already.
func isPauseRace(err error) bool {
	var apiErr *docker.Error
	if !errors.As(err, &apiErr) {
		return false
	}
	return (apiErr.Status == http.StatusConflict && strings.Contains(apiErr.Message, "already paused")) ||
		(apiErr.Status == http.StatusInternalServerError && strings.Contains(apiErr.Message, "is not paused"))
}

// isPauseDone: containerd says the processes are in that state already.
func isPauseDone(err error, paused bool) bool {
	var apiErr *docker.Error
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusInternalServerError {
		return false
	}
	if paused {
		return strings.Contains(apiErr.Message, "cannot pause a paused container")
	}
	return strings.Contains(apiErr.Message, "cannot resume a running process")
}

// remove removes a container with its anonymous volumes, killing it if it
// runs. A container already gone is not an error.
func (d *daemon) remove(ctx context.Context, id string) error {
	err := d.do(ctx, "remove", fmt.Sprintf("container %q", id), kindContainer, func(ctx context.Context) error {
		return d.client.RemoveContainer(docker.RemoveContainerOptions{ID: id, RemoveVolumes: true, Force: true, Context: ctx})
	})
	if isGone(err) || isRemovalInProgress(err) {
		return nil
	}
	return err
}

// isRemovalInProgress: another remove of the same container is under way
// (the reaper and a Close racing), which will finish the job.
func isRemovalInProgress(err error) bool {
	var apiErr *docker.Error
	return errors.As(err, &apiErr) && apiErr.Status == http.StatusConflict && strings.Contains(apiErr.Message, "already in progress")
}
