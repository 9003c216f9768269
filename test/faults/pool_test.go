package faults

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/pool"
	"github.com/fnrun/fnrun/test"
)

// poolBound is how long the pool may take to notice a dead holder and
// replace it.
const poolBound = 60 * time.Second

// TestPoolHolderKilled kills pre-fork pool holders from outside (SIGKILL
// through the daemon's API): first an idle one, which the pool must
// replace while it keeps serving calls; then the one a running call
// leased, which must end that call with an error wrapping
// drivers.ErrContainerGone, be replaced, and leave the pool serving. When
// the driver closes, no holder may remain.
func TestPoolHolderKilled(t *testing.T) {
	const size = 2
	forEach(t, func(t *testing.T, tg *target) {
		ctx := testCtx(t, 5*time.Minute)
		tag := "faults-pool-" + randomID()
		drv, err := tg.build(driverOpts{tag: tag, pool: size})
		if err != nil {
			t.Fatalf("new %s driver with a pool: %v", tg.name, err)
		}
		closed := false
		defer func() {
			if !closed {
				_ = drv.Close()
			}
		}()
		rep, ok := drv.(pool.Reporter)
		if !ok {
			t.Fatalf("%s driver does not implement pool.Reporter", tg.name)
		}
		stats := func() pool.Stats {
			s, ok := rep.PoolStats()
			if !ok {
				t.Fatalf("PoolStats: the driver runs no pool")
			}
			return s
		}
		waitPool := func(what string, cond func(pool.Stats) bool) {
			t.Helper()
			deadline := time.Now().Add(poolBound)
			for !cond(stats()) {
				if time.Now().After(deadline) {
					t.Fatalf("pool: %s not reached within %v: %+v", what, poolBound, stats())
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		waitPool("full", func(s pool.Stats) bool { return s.Free == size })
		t.Logf("pool full: %+v", stats())

		// An idle holder dies.
		holders := tg.holders(t, ctx, tag)
		if len(holders) != size {
			t.Fatalf("%d holders carry the tag, want %d: %v", len(holders), size, holders)
		}
		tg.killHolder(t, ctx, holders[0])
		took := timed(func() {
			waitPool("idle holder replaced", func(s pool.Stats) bool { return s.Deaths >= 1 && s.Free == size })
		})
		t.Logf("idle holder killed: replaced within %v: %+v", took.Round(time.Millisecond), stats())
		wantSuccess(t, mustRun(t, ctx, drv, tg.task("pool-after-idle", "echo served")))

		// The holder of a running call dies.
		c, err := drv.CreateCookie(ctx, tg.task("pool-leased", "sleep 300"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		if err := test.Prepare(ctx, c); err != nil {
			t.Fatal(err)
		}
		w, err := c.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s := stats(); s.Leased != 1 {
			t.Errorf("a running call leases %d holders, want 1 (%+v)", s.Leased, s)
		}
		deaths := stats().Deaths
		for _, h := range tg.holders(t, ctx, tag) {
			tg.killHolder(t, ctx, h) // the leased one among them
		}
		var res drivers.RunResult
		took = within(t, "Wait of a call whose holder died", poolBound, func() { res = w.Wait(ctx) })
		t.Logf("leased holder killed: the call ended after %v: %s, %s: %v", took.Round(time.Millisecond), res.Status(), classOf(res.Error()), res.Error())
		if res.Status() != drivers.StatusError || !errors.Is(res.Error(), drivers.ErrContainerGone) {
			t.Errorf("call whose holder died: %s %v; want StatusError wrapping ErrContainerGone", res.Status(), res.Error())
		}
		if err := c.Close(ctx); err != nil {
			t.Errorf("Close of the call whose holder died: %v", err)
		}
		waitPool("holders replaced after the leased one died", func(s pool.Stats) bool {
			return s.Deaths >= deaths+size && s.Free == size && s.Leased == 0
		})
		t.Logf("after killing every holder under a call: %+v", stats())
		for i := 0; i < 3; i++ {
			wantSuccess(t, mustRun(t, ctx, drv, tg.task(fmt.Sprintf("pool-after-leased-%d", i), "echo served")))
		}

		closed = true
		if err := drv.Close(); err != nil {
			t.Errorf("driver Close: %v", err)
		}
		tg.waitNoLeftovers(t, tag, 30*time.Second)
	})
}

// holders lists the ids of the running pool holders carrying tag.
func (tg *target) holders(t testing.TB, ctx context.Context, tag string) []string {
	t.Helper()
	var out []string
	if tg.name == "docker" {
		list, err := tg.dc.ListContainers(docker.ListContainersOptions{Context: ctx, Filters: map[string][]string{"label": {
			drivers.LabelTag + "=" + tag, drivers.LabelRole + "=" + drivers.RoleHolder}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range list {
			out = append(out, c.ID)
		}
		return out
	}
	nctx := tg.nsCtx(ctx)
	ctrs, err := tg.cc.Containers(nctx, fmt.Sprintf("labels.%q==%q,labels.%q==%q", drivers.LabelTag, tag, drivers.LabelRole, drivers.RoleHolder))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ctrs {
		if task, err := c.Task(nctx, nil); err == nil {
			if st, err := task.Status(nctx); err == nil && st.Status == "running" {
				out = append(out, c.ID())
			}
		}
	}
	return out
}

// killHolder kills a holder from outside with SIGKILL.
func (tg *target) killHolder(t testing.TB, ctx context.Context, id string) {
	t.Helper()
	if tg.name == "docker" {
		if err := tg.dc.KillContainer(docker.KillContainerOptions{ID: id, Signal: docker.SIGKILL, Context: ctx}); err != nil {
			t.Fatalf("kill holder %s: %v", id, err)
		}
		return
	}
	nctx := tg.nsCtx(ctx)
	c, err := tg.cc.LoadContainer(nctx, id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.Task(nctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Kill(nctx, syscall.SIGKILL); err != nil {
		t.Fatalf("kill holder %s: %v", id, err)
	}
}
