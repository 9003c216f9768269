package docker

import (
	"context"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
)

// TestFreezeUnfreezeRepeatedly drives a hot container the way an agent
// does between calls. dockerd 20.10's record of the paused state lags the
// freezer under load and refuses a correct pause or unpause now and then;
// the driver must ride that out rather than fail the call.
func TestFreezeUnfreezeRepeatedly(t *testing.T) {
	e := needEnv(t)
	d := newDriver(t, drivers.Config{})
	c, w := startCall(t, d, e.localImage, "sleep 120")
	ctx := testCtx(t, 2*time.Minute)
	for i := 0; i < 60; i++ {
		if err := c.Freeze(ctx); err != nil {
			t.Fatalf("freeze %d: %v", i, err)
		}
		if err := c.Freeze(ctx); err != nil {
			t.Fatalf("second freeze %d must be a no-op: %v", i, err)
		}
		if err := c.Unfreeze(ctx); err != nil {
			t.Fatalf("unfreeze %d: %v", i, err)
		}
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if res := w.Wait(ctx); res.Status() == drivers.StatusSuccess {
		t.Fatal("a closed sleep 120 reported success")
	}
}

// TestPauseRace: a pause or unpause refused because the container is
// already in that state is no error when containerd says so, or when
// dockerd's record keeps saying so; a record that was only lagging gets
// the call made again.
func TestPauseRace(t *testing.T) {
	ctx := context.Background()
	shim := map[bool]error{
		true:  &docker.Error{Status: 500, Message: "Cannot pause container x: cannot pause a paused container: unknown"},
		false: &docker.Error{Status: 500, Message: "Cannot unpause container x: cannot resume a running process: unknown"},
	}
	record := map[bool]error{
		true:  &docker.Error{Status: 409, Message: "Container x is already paused"},
		false: &docker.Error{Status: 500, Message: "Container x is not paused"},
	}
	for _, paused := range []bool{true, false} {
		// containerd's refusal: done, without asking the record.
		calls := 0
		err := retryPauseRace(ctx, paused, func() error { calls++; return shim[paused] },
			func() (bool, error) { t.Fatal("record read after containerd's answer"); return false, nil })
		if err != nil || calls != 1 {
			t.Errorf("paused=%v, containerd says done: %v after %d calls", paused, err, calls)
		}
		// A record that keeps the wanted state: done.
		calls = 0
		err = retryPauseRace(ctx, paused, func() error { calls++; return record[paused] },
			func() (bool, error) { return paused, nil })
		if err != nil || calls != 1 {
			t.Errorf("paused=%v, settled record: %v after %d calls", paused, err, calls)
		}
		// A record one event late: it shows the wanted state, then the
		// other (the container's real one); the call is made again.
		calls, reads := 0, 0
		err = retryPauseRace(ctx, paused, func() error {
			calls++
			if calls == 1 {
				return record[paused]
			}
			return nil
		}, func() (bool, error) {
			reads++
			if reads == 1 {
				return paused, nil
			}
			return !paused, nil
		})
		if err != nil || calls != 2 {
			t.Errorf("paused=%v, lagging record: %v after %d calls, want the call made again", paused, err, calls)
		}
		// Anything else is the caller's.
		other := &docker.Error{Status: 500, Message: "Container x is not running"}
		if err := retryPauseRace(ctx, paused, func() error { return other }, func() (bool, error) { return paused, nil }); err != other {
			t.Errorf("paused=%v: %v, want the daemon's error", paused, err)
		}
	}
}
