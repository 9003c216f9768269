package faults

import (
	"context"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/test"
)

// waitBound is how long a Wait may take to notice that its daemon died.
const waitBound = 60 * time.Second

// TestDaemonDiesMidRun kills the daemon (SIGKILL) while containers run,
// one of them frozen and one only created. Waits must end with an error
// within waitBound, Close must return, the driver must work again once the
// daemon is back on the same socket, and what the dead daemon's containers
// left is reaped: by the cookies' own Close on the running driver, and by a
// new driver instance with the same label tag at its start.
func TestDaemonDiesMidRun(t *testing.T) {
	forEach(t, func(t *testing.T, tg *target) {
		tag := "faults-dies-" + randomID()
		drv := tg.mustDriver(t, driverOpts{tag: tag, callTimeout: 5 * time.Second})
		ctx := testCtx(t, 5*time.Minute)

		start := func(name string, run, freeze bool) (drivers.Cookie, drivers.WaitResult) {
			c, err := drv.CreateCookie(ctx, tg.task(name, "sleep 300"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close(context.Background()) })
			if err := test.Prepare(ctx, c); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if !run {
				return c, nil
			}
			w, err := c.Run(ctx)
			if err != nil {
				t.Fatalf("%s: Run: %v", name, err)
			}
			if freeze {
				if err := c.Freeze(ctx); err != nil {
					t.Fatalf("%s: Freeze: %v", name, err)
				}
			}
			return c, w
		}
		running, runningWait := start("dies-running", true, false)
		frozen, frozenWait := start("dies-frozen", true, true)
		created, _ := start("dies-created", false, false)
		time.Sleep(500 * time.Millisecond) // let the processes really start

		tg.d.kill(t)
		t.Logf("%s killed with SIGKILL", tg.d.name)

		for _, w := range []struct {
			name string
			w    drivers.WaitResult
		}{{"running", runningWait}, {"frozen", frozenWait}} {
			var res drivers.RunResult
			took := within(t, "Wait of the "+w.name+" container after the daemon died", waitBound, func() {
				res = w.w.Wait(context.Background())
			})
			t.Logf("Wait (%s) returned after %v: status %s, %s: %v", w.name, took.Round(time.Millisecond), res.Status(), classOf(res.Error()), res.Error())
			if res.Status() == drivers.StatusSuccess || res.Error() == nil {
				t.Errorf("Wait (%s) after the daemon died: status %s, error %v; want an error", w.name, res.Status(), res.Error())
			}
		}
		for _, c := range []struct {
			name string
			c    drivers.Cookie
		}{{"running", running}, {"frozen", frozen}, {"created", created}} {
			var err error
			took := within(t, "Close of the "+c.name+" cookie while the daemon is dead", waitBound, func() {
				err = c.c.Close(context.Background())
			})
			t.Logf("Close (%s) with the daemon dead returned after %v: %s: %v", c.name, took.Round(time.Millisecond), classOf(err), err)
		}

		// A call while the daemon is dead fails fast and typed.
		c, err := drv.CreateCookie(ctx, tg.task("dies-validate", "true"))
		if err != nil {
			t.Fatal(err)
		}
		var verr error
		took := within(t, "ValidateImage while the daemon is dead", 15*time.Second, func() {
			_, verr = c.ValidateImage(ctx)
		})
		t.Logf("ValidateImage with the daemon dead: after %v, %s: %v", took.Round(time.Millisecond), classOf(verr), verr)
		if verr == nil || classOf(verr) == "untyped" {
			t.Errorf("ValidateImage with the daemon dead: %v; want a typed error (ErrDaemonUnavailable)", verr)
		}
		_ = c.Close(ctx)

		restart := timed(func() {
			if err := tg.d.ensure(); err != nil {
				t.Fatalf("restart %s: %v", tg.d.name, err)
			}
		})
		t.Logf("%s restarted on the same socket in %v", tg.d.name, restart.Round(time.Millisecond))
		back := eventually(t, drv, tg, 60*time.Second)
		t.Logf("the same driver works again %v after the restart", back.Round(time.Millisecond))

		// The running driver reaps its own: a second Close finishes the job.
		for _, c := range []struct {
			name string
			c    drivers.Cookie
		}{{"running", running}, {"frozen", frozen}, {"created", created}} {
			var err error
			within(t, "Close of the "+c.name+" cookie after the restart", waitBound, func() {
				err = c.c.Close(context.Background())
			})
			if err != nil {
				t.Errorf("Close (%s) after the daemon came back: %v", c.name, err)
			}
		}
		if left := tg.pollLeftovers(t, tag, 20*time.Second); len(left) > 0 {
			t.Errorf("after every cookie's Close on the running driver, left behind: %v", left)
		}
	})
}

// TestDaemonDiesReapedByNextInstance kills the daemon under running, frozen
// and created containers, restarts it, and lets a new driver instance with
// the same label tag clean up (the old one is abandoned, as a crashed
// agent's would be): nothing of the tag may remain.
func TestDaemonDiesReapedByNextInstance(t *testing.T) {
	forEach(t, func(t *testing.T, tg *target) {
		tag := "faults-reap-" + randomID()
		drv := tg.mustDriver(t, driverOpts{tag: tag, callTimeout: 5 * time.Second})
		ctx := testCtx(t, 5*time.Minute)
		for i, mode := range []string{"running", "frozen", "created"} {
			c, err := drv.CreateCookie(ctx, tg.task("reap-"+mode, "sleep 300"))
			if err != nil {
				t.Fatal(err)
			}
			if err := test.Prepare(ctx, c); err != nil {
				t.Fatal(err)
			}
			if i < 2 {
				if _, err := c.Run(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if mode == "frozen" {
				if err := c.Freeze(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		time.Sleep(500 * time.Millisecond)
		tg.d.kill(t)
		if err := tg.d.ensure(); err != nil {
			t.Fatalf("restart %s: %v", tg.d.name, err)
		}
		before, err := tg.leftovers(ctx, tag)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("after the restart, the abandoned instance has: %v", before)

		// The next instance, same tag, reaps at start.
		tg.mustDriver(t, driverOpts{tag: tag, callTimeout: 5 * time.Second})
		if left := tg.pollLeftovers(t, tag, 60*time.Second); len(left) > 0 {
			t.Errorf("a new instance with the same label tag left behind: %v", left)
		}
	})
}
