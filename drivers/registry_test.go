package drivers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

type nopDriver struct{ Driver }

func TestRegistry(t *testing.T) {
	t.Cleanup(emptyRegistry())
	factory := func(Config) (Driver, error) { return nopDriver{}, nil }

	Register("zeta", factory)
	Register("alpha", factory)
	if got := fmt.Sprint(Drivers()); got != "[alpha zeta]" {
		t.Fatalf("Drivers() = %s, want sorted [alpha zeta]", got)
	}
	if _, err := New("alpha", Config{}); err != nil {
		t.Fatalf("New(alpha): %v", err)
	}
	_, err := New("nope", Config{})
	if !errors.Is(err, ErrDriverNotFound) {
		t.Fatalf("New(nope) error %v, want ErrDriverNotFound", err)
	}
}

func TestRegisterPanics(t *testing.T) {
	t.Cleanup(emptyRegistry())
	factory := func(Config) (Driver, error) { return nopDriver{}, nil }
	Register("taken", factory)
	for _, tc := range []struct {
		name string
		reg  func()
	}{
		{"empty name", func() { Register("", factory) }},
		{"nil factory", func() { Register("x", nil) }},
		{"duplicate", func() { Register("taken", factory) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("Register did not panic")
				}
			}()
			tc.reg()
		})
	}
}

func TestRegistryConcurrent(t *testing.T) {
	t.Cleanup(emptyRegistry())
	factory := func(Config) (Driver, error) { return nopDriver{}, nil }
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(2)
		go func(i int) { defer wg.Done(); Register(fmt.Sprint("d", i), factory) }(i)
		go func() { defer wg.Done(); _ = Drivers(); _, _ = New("d0", Config{}) }()
	}
	wg.Wait()
	if n := len(Drivers()); n != 16 {
		t.Fatalf("%d drivers registered, want 16", n)
	}
}

func TestConfigNamespace(t *testing.T) {
	if got := (Config{}).Namespace(); got != "fnrun" {
		t.Errorf("default namespace %q", got)
	}
	if got := (Config{ContainerdNamespace: "x"}).Namespace(); got != "x" {
		t.Errorf("namespace %q", got)
	}
}

func TestContextResult(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := ContextResult(ctx); r.Status() != StatusCancelled || !errors.Is(r.Error(), context.Canceled) {
		t.Errorf("cancelled: %s %v", r.Status(), r.Error())
	}
	ctx, cancel = context.WithTimeout(context.Background(), 0)
	defer cancel()
	if r := ContextResult(ctx); r.Status() != StatusTimeout || !errors.Is(r.Error(), context.DeadlineExceeded) {
		t.Errorf("timeout: %s %v", r.Status(), r.Error())
	}
	var exit *ExitError
	if r := ExitResult(2); r.Status() != StatusError || !errors.As(r.Error(), &exit) || exit.ExitCode != 2 {
		t.Errorf("exit: %s %v", r.Status(), r.Error())
	}
	if r := ExitResult(0); r.Status() != StatusSuccess || r.Error() != nil {
		t.Errorf("success: %s %v", r.Status(), r.Error())
	}
	if r := OOMResult(137); r.Status() != StatusKilled || !errors.Is(r.Error(), ErrOutOfMemory) {
		t.Errorf("oom: %s %v", r.Status(), r.Error())
	}
}
