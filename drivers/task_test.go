package drivers

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/fnrun/fnrun/models"
	"github.com/fnrun/fnrun/stats"
)

func TestTaskFields(t *testing.T) {
	var got []stats.Stat
	open := uint64(64)
	task := &Task{
		ID: "id", ImageRef: "busybox", Cmd: "echo hi", Env: map[string]string{"A": "b"},
		Stdin: strings.NewReader("in"), MemoryBytes: 1 << 30, MilliCPUs: 250, MaxPIDs: 10,
		MaxOpenFiles: &open, TmpFsSizeMB: 8, Dir: "/w", NoNetwork: true,
		Stats:       func(_ context.Context, s stats.Stat) { got = append(got, s) },
		Credentials: &AuthConfig{Username: "u", Password: "hunter2", ServerAddress: "r"},
	}
	var ct ContainerTask = task
	if ct.Id() != "id" || ct.Image() != "busybox" || ct.Command() != "echo hi" || ct.EnvVars()["A"] != "b" ||
		ct.Memory() != 1<<30 || ct.CPUs() != 250 || ct.PIDs() != 10 || *ct.OpenFiles() != 64 ||
		ct.TmpFsSize() != 8 || ct.WorkDir() != "/w" || !ct.DisableNet() || ct.LockedMemory() != nil {
		t.Fatalf("accessors do not return the fields: %+v", task)
	}
	stdout, stderr := ct.Logger()
	if stdout != io.Discard || stderr != io.Discard {
		t.Fatal("nil writers must become io.Discard")
	}
	ct.WriteStat(context.Background(), stats.Stat{})
	if len(got) != 1 {
		t.Fatal("WriteStat did not reach Stats")
	}
	auth, _ := ct.(Auther).Auth(context.Background())
	if auth.Password != "hunter2" {
		t.Fatal("Auth lost the credentials")
	}
	if s := auth.String(); strings.Contains(s, "hunter2") {
		t.Fatalf("AuthConfig.String leaks the password: %s", s)
	}
}

func TestTaskCloseWrapping(t *testing.T) {
	var order []string
	task := &Task{OnClose: func() { order = append(order, "base") }}
	task.WrapClose(func(next func()) func() {
		return func() { order = append(order, "outer1"); next() }
	})
	task.WrapClose(func(next func()) func() {
		return func() { order = append(order, "outer2"); next() }
	})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); task.Close() }()
	}
	wg.Wait()
	task.Close()
	if got := strings.Join(order, ","); got != "outer2,outer1,base" {
		t.Fatalf("close ran %q, want the chain once, outermost first", got)
	}
	(&Task{}).Close() // no base closer is fine
}

func TestTaskCallHooks(t *testing.T) {
	var order []string
	errStop := errors.New("stop")
	task := &Task{
		Before: func(context.Context, *models.Call, CallExtensions) error { order = append(order, "before"); return nil },
	}
	task.WrapBeforeCall(func(next BeforeCall) BeforeCall {
		return func(ctx context.Context, c *models.Call, e CallExtensions) error {
			order = append(order, "wrapped-before")
			return next(ctx, c, e)
		}
	})
	task.WrapAfterCall(func(next AfterCall) AfterCall {
		return func(ctx context.Context, c *models.Call, e CallExtensions) error {
			order = append(order, "wrapped-after")
			if err := next(ctx, c, e); err != nil {
				return err
			}
			return errStop
		}
	})
	if err := task.BeforeCall(context.Background(), &models.Call{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := task.AfterCall(context.Background(), &models.Call{}, nil); !errors.Is(err, errStop) {
		t.Fatalf("AfterCall = %v", err)
	}
	if got := strings.Join(order, ","); got != "wrapped-before,before,wrapped-after" {
		t.Fatalf("hooks ran %q", got)
	}
}
