package containerd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/events"
	"github.com/containerd/containerd/runtime"
	"github.com/containerd/typeurl/v2"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/statconv"
)

// oomEvents collects the TaskOOM events of the namespace, seen by a client
// that is not the driver's.
type oomEvents struct {
	mu  sync.Mutex
	ids map[string]bool
}

func watchOOM(t *testing.T, in *inspector) *oomEvents {
	t.Helper()
	ctx, cancel := context.WithCancel(in.ctx(context.Background()))
	ch, errs := in.client.Subscribe(ctx, fmt.Sprintf("topic==%q", runtime.TaskOOMEventTopic))
	e := &oomEvents{ids: map[string]bool{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case env := <-ch:
				if v, err := typeurl.UnmarshalAny(env.Event); err == nil {
					if oom, ok := v.(*apievents.TaskOOM); ok {
						e.mu.Lock()
						e.ids[oom.ContainerID] = true
						e.mu.Unlock()
					}
				}
			case <-errs:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return e
}

func (e *oomEvents) seen(id string, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for {
		e.mu.Lock()
		ok := e.ids[id]
		e.mu.Unlock()
		if ok || time.Now().After(deadline) {
			return ok
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runKeep runs a task to its end and returns the result and the cgroup's
// OOM-kill counter read (by the inspector) before the cookie is closed.
func runKeep(t *testing.T, d *Driver, in *inspector, task *drivers.Task) (drivers.RunResult, uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := d.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res := w.Wait(ctx)
	ctr, err := in.client.LoadContainer(in.ctx(ctx), task.ID)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := ctr.Task(in.ctx(ctx), nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := tk.Metrics(in.ctx(ctx))
	if err != nil {
		t.Fatal(err)
	}
	_, kills, err := statconv.FromContainerd(m)
	if err != nil {
		t.Fatal(err)
	}
	return res, kills
}

// TestOOMEventVersusSIGKILL: a container the kernel's OOM killer ends is
// "killed" with ErrOutOfMemory, and containerd reported it both ways (event
// and cgroup counter); a process that SIGKILLs itself exits 137 too, but is
// a plain error with no OOM report.
func TestOOMEventVersusSIGKILL(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	events := watchOOM(t, in)
	d := newTestDriver(t, env, drivers.Config{})

	oom := &drivers.Task{ID: "fnrun-oom-" + randomID(), ImageRef: env.localImage, MemoryBytes: 32 << 20,
		Cmd: `sh -c 'a=x; while true; do a="$a$a"; done'`}
	res, kills := runKeep(t, d, in, oom)
	if res.Status() != drivers.StatusKilled || !errors.Is(res.Error(), drivers.ErrOutOfMemory) {
		t.Errorf("OOM run: status %q error %v, want killed with ErrOutOfMemory", res.Status(), res.Error())
	}
	if kills == 0 {
		t.Error("the cgroup's OOM-kill counter did not rise")
	}
	if !events.seen(oom.ID, 10*time.Second) {
		t.Error("no TaskOOM event for the OOM-killed container")
	}

	kill := &drivers.Task{ID: "fnrun-sigkill-" + randomID(), ImageRef: env.localImage, MemoryBytes: 64 << 20,
		Cmd: `sh -c 'kill -9 $$'`}
	res, kills = runKeep(t, d, in, kill)
	var exit *drivers.ExitError
	if res.Status() != drivers.StatusError || !errors.As(res.Error(), &exit) || exit.ExitCode != 137 {
		t.Errorf("SIGKILL run: status %q error %v, want error with exit code 137", res.Status(), res.Error())
	}
	if errors.Is(res.Error(), drivers.ErrOutOfMemory) {
		t.Error("a plain SIGKILL was reported as out of memory")
	}
	if kills != 0 {
		t.Errorf("OOM-kill counter %d for a plain SIGKILL", kills)
	}
	if events.seen(kill.ID, time.Second) {
		t.Error("a TaskOOM event for a plain SIGKILL")
	}
}

func TestOOMWatcherHandle(t *testing.T) {
	w := newOOMWatcher(&daemon{log: testLogger(t)})
	seen, stop := w.watch("a")
	defer stop()
	other, stopOther := w.watch("b")
	defer stopOther()
	anyEv, err := typeurl.MarshalAny(&apievents.TaskOOM{ContainerID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	w.handle(&events.Envelope{Topic: runtime.TaskOOMEventTopic, Event: anyEv})
	w.handle(&events.Envelope{Topic: runtime.TaskOOMEventTopic, Event: anyEv}) // twice: no double close
	select {
	case <-seen:
	default:
		t.Fatal("event for a not delivered")
	}
	select {
	case <-other:
		t.Fatal("event for a delivered to b")
	default:
	}
}
