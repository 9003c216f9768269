package faults

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/test"
)

// Bounds of the hang test. Every daemon call is bounded by hangCallTimeout;
// a step that makes several calls in a row may take a few of them. Ending a
// container on a silent daemon takes a status call and one SIGKILL, then
// the output is dropped at once (no exit is coming).
const (
	hangCallTimeout = 2 * time.Second
	hangPullTimeout = 3 * time.Second
	hangSimpleBound = hangCallTimeout + 3*time.Second
	hangPullBound   = hangPullTimeout + hangCallTimeout + 3*time.Second
	hangEndBound    = 4*hangCallTimeout + 5*time.Second
)

// TestDaemonHangs stops the daemon with SIGSTOP, so that it accepts
// connections and never answers, and calls every step of the contract:
// each must return within its bound with an error wrapping
// drivers.ErrDaemonUnavailable or context.DeadlineExceeded. After SIGCONT
// the same driver must carry on and clean up everything.
func TestDaemonHangs(t *testing.T) {
	forEach(t, func(t *testing.T, tg *target) {
		tag := "faults-hang-" + randomID()
		o := driverOpts{tag: tag, callTimeout: hangCallTimeout, pullTimeout: hangPullTimeout, dialTimeout: hangCallTimeout}
		drv := tg.mustDriver(t, o)
		other := tg.mustDriver(t, driverOpts{tag: tag, callTimeout: hangCallTimeout, dialTimeout: hangCallTimeout})
		ctx := testCtx(t, 5*time.Minute)

		cookie := func(name, cmd string) drivers.Cookie {
			c, err := drv.CreateCookie(ctx, tg.task(name, cmd))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close(context.Background()) })
			return c
		}
		running := cookie("hang-running", "sleep 300")
		if err := test.Prepare(ctx, running); err != nil {
			t.Fatal(err)
		}
		runningWait, err := running.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		frozen := cookie("hang-frozen", "sleep 300")
		if err := test.Prepare(ctx, frozen); err != nil {
			t.Fatal(err)
		}
		if _, err := frozen.Run(ctx); err != nil {
			t.Fatal(err)
		}
		if err := frozen.Freeze(ctx); err != nil {
			t.Fatal(err)
		}
		created := cookie("hang-created", "true")
		if err := test.Prepare(ctx, created); err != nil {
			t.Fatal(err)
		}
		fresh := cookie("hang-fresh", "true")
		time.Sleep(300 * time.Millisecond)

		tg.d.freeze(t)
		t.Logf("%s stopped with SIGSTOP", tg.d.name)
		thawed := false
		defer func() {
			if !thawed {
				tg.d.thaw(t)
			}
		}()

		var rows []string
		record := func(what string, took time.Duration, err error) {
			rows = append(rows, fmt.Sprintf("  %-40s %8v  %-32s %v", what, took.Round(time.Millisecond), classOf(err), err))
		}
		typed := func(err error) bool {
			return errors.Is(err, drivers.ErrDaemonUnavailable) || errors.Is(err, context.DeadlineExceeded)
		}
		// mustFail: the call must fail, typed, within limit.
		mustFail := func(what string, limit time.Duration, f func() error) {
			var err error
			took := within(t, what, limit, func() { err = f() })
			record(what, took, err)
			switch {
			case err == nil:
				t.Errorf("%s succeeded against a stopped daemon", what)
			case !typed(err):
				t.Errorf("%s: %v; want ErrDaemonUnavailable or DeadlineExceeded", what, err)
			}
		}
		// mayFail: nil is fine (nothing to do), an error must be typed.
		mayFail := func(what string, limit time.Duration, f func() error) {
			var err error
			took := within(t, what, limit, func() { err = f() })
			record(what, took, err)
			if err != nil && !typed(err) {
				t.Errorf("%s: %v; want nil, ErrDaemonUnavailable or DeadlineExceeded", what, err)
			}
		}

		mustFail("New", hangSimpleBound, func() error {
			o := o
			o.newCtx = context.Background() // only the driver's own bounds
			d, err := tg.build(o)
			if err == nil {
				_ = d.Close()
			}
			return err
		})
		var cc drivers.Cookie
		mayFail("CreateCookie (no daemon call)", time.Second, func() error {
			var err error
			cc, err = drv.CreateCookie(ctx, tg.task("hang-cc", "true"))
			return err
		})
		if cc != nil {
			defer cc.Close(context.Background())
		}
		mustFail("ValidateImage", hangSimpleBound, func() error { _, err := fresh.ValidateImage(ctx); return err })
		mustFail("PullImage", hangPullBound, func() error { return fresh.PullImage(ctx) })
		mustFail("CreateContainer", 2*hangSimpleBound, func() error { return fresh.CreateContainer(ctx) })
		mustFail("Run (created container)", 2*hangSimpleBound, func() error { _, err := created.Run(ctx); return err })
		mustFail("Freeze (running container)", hangSimpleBound, func() error { return running.Freeze(ctx) })
		mustFail("Unfreeze (frozen container)", hangSimpleBound, func() error { return frozen.Unfreeze(ctx) })
		var res drivers.RunResult
		took := within(t, "Wait with a 1s deadline", hangEndBound, func() {
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			res = runningWait.Wait(wctx)
		})
		record("Wait with a 1s deadline ("+res.Status()+")", took, res.Error())
		if res.Status() != drivers.StatusTimeout || !errors.Is(res.Error(), context.DeadlineExceeded) {
			t.Errorf("Wait with a deadline on a hung daemon: %s, %v; want timeout wrapping DeadlineExceeded", res.Status(), res.Error())
		}
		mayFail("Close (running container)", hangEndBound, func() error { return running.Close(ctx) })
		mayFail("Close (frozen container)", hangEndBound, func() error { return frozen.Close(ctx) })
		mayFail("Close (created container)", hangEndBound, func() error { return created.Close(ctx) })
		mayFail("Close (fresh cookie, create timed out)", hangEndBound, func() error { return fresh.Close(ctx) })
		mayFail("Driver.Close (another instance)", hangEndBound, func() error { return other.Close() })
		t.Logf("%s driver against a SIGSTOPped %s (call timeout %v, pull timeout %v):\n  %-40s %8s  %-32s %s\n%s",
			tg.name, tg.d.name, hangCallTimeout, hangPullTimeout, "call", "took", "class", "error", strings.Join(rows, "\n"))

		tg.d.thaw(t)
		thawed = true
		back := eventually(t, drv, tg, 60*time.Second)
		t.Logf("after SIGCONT the same driver works again within %v", back.Round(time.Millisecond))
		for _, c := range []struct {
			name string
			c    drivers.Cookie
		}{{"running", running}, {"frozen", frozen}, {"created", created}, {"fresh", fresh}} {
			if err := c.c.Close(ctx); err != nil {
				t.Errorf("Close (%s) after SIGCONT: %v", c.name, err)
			}
		}
		// A request the stopped daemon accepted may be served after SIGCONT
		// (a create whose caller gave up): give it time to show.
		time.Sleep(2 * time.Second)
		tg.waitNoLeftovers(t, tag, 20*time.Second)
	})
}
