package docker

import (
	"testing"
	"time"

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
