package faults

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/test"
)

// TestImageRemovedBeforeCreate removes the image from outside (the daemon's
// own API) between ValidateImage and CreateContainer. CreateContainer must
// fail with drivers.ErrImageNotFound and leave nothing behind, and the
// error must be retryable: once the image is back, validating and creating
// again works, on the same cookie and on a new one.
func TestImageRemovedBeforeCreate(t *testing.T) {
	forEach(t, func(t *testing.T, tg *target) {
		ctx := testCtx(t, 2*time.Minute)
		tag := "faults-rmimg-" + randomID()
		drv := tg.mustDriver(t, driverOpts{tag: tag})
		ref := "fnfaults/rm-" + randomID()[:8] + ":latest"
		if err := tg.tagImage(ctx, ref); err != nil {
			t.Fatalf("tag %s: %v", ref, err)
		}
		t.Cleanup(func() { _ = tg.removeImage(context.Background(), ref) })

		task := tg.task("rmimg", "echo created")
		task.ImageRef = ref
		var stdout test.SyncBuffer
		task.Stdout = &stdout
		c, err := drv.CreateCookie(ctx, task)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		if need, err := c.ValidateImage(ctx); err != nil || need {
			t.Fatalf("ValidateImage of a present image = %v, %v", need, err)
		}
		if err := tg.removeImage(ctx, ref); err != nil {
			t.Fatalf("remove %s from outside: %v", ref, err)
		}
		err = c.CreateContainer(ctx)
		t.Logf("CreateContainer after the image was removed: %s: %v", classOf(err), err)
		if !errors.Is(err, drivers.ErrImageNotFound) {
			t.Errorf("CreateContainer of an image removed from outside: %v; want ErrImageNotFound", err)
		}
		if left := tg.pollLeftovers(t, tag, 5*time.Second); len(left) > 0 {
			t.Errorf("a failed create left behind: %v", left)
		}

		// Retry on the same cookie, as an agent would: validate (a pull is
		// needed), the image comes back (here: tagged again), create.
		if need, err := c.ValidateImage(ctx); err != nil || !need {
			t.Errorf("ValidateImage after the removal = %v, %v; want true, nil", need, err)
		}
		if err := tg.tagImage(ctx, ref); err != nil {
			t.Fatal(err)
		}
		if need, err := c.ValidateImage(ctx); err != nil || need {
			t.Errorf("ValidateImage once the image is back = %v, %v; want false, nil", need, err)
		}
		if err := c.CreateContainer(ctx); err != nil {
			t.Errorf("CreateContainer retried on the same cookie once the image is back: %v", err)
		} else {
			w, err := c.Run(ctx)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if res := w.Wait(ctx); res.Status() != drivers.StatusSuccess || stdout.String() != "created\n" {
				t.Errorf("retried run: %s %v, stdout %q", res.Status(), res.Error(), stdout.String())
			}
		}
		if err := c.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}

		// A new cookie works too.
		task2 := tg.task("rmimg-new", "echo created")
		task2.ImageRef = ref
		wantSuccess(t, mustRun(t, ctx, drv, task2))
		tg.waitNoLeftovers(t, tag, 10*time.Second)
	})
}
