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

// TestOpen: a failing driver gives a nil Driver, never a typed nil, and a
// driver registered without options refuses them.
func TestOpen(t *testing.T) {
	defer emptyRegistry()()
	type typed struct{ Driver }
	RegisterOpener("failing", func(context.Context, Config, ...Option) (Driver, error) {
		return (*typed)(nil), ErrDaemonUnavailable
	})
	Register("plain", func(Config) (Driver, error) { return nil, nil })
	d, err := Open(context.Background(), "failing", Config{})
	if d != nil || !errors.Is(err, ErrDaemonUnavailable) {
		t.Fatalf("Open = %#v, %v; want a nil Driver and the error", d, err)
	}
	if _, err := Open(context.Background(), "plain", Config{}, WithStopGrace(0)); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("options to a driver that takes none: %v, want ErrInvalidConfig", err)
	}
	if _, err := New("plain", Config{}); err != nil {
		t.Fatal(err)
	}
}
