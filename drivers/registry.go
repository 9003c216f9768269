package drivers

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// Opener opens a driver: ctx bounds its start-up, opts set its Settings.
type Opener func(ctx context.Context, cfg Config, opts ...Option) (Driver, error)

var (
	registryMu sync.RWMutex
	registry   = make(map[string]Opener)
)

// Register makes a driver available by name. Like database/sql, it panics
// when name is empty, f is nil or name is already registered: all three are
// programming errors found at init time. A driver registered this way takes
// no options; see RegisterOpener.
func Register(name string, f DriverFunc) {
	if f == nil {
		panic("drivers: Register of a nil DriverFunc for " + name)
	}
	RegisterOpener(name, func(ctx context.Context, cfg Config, opts ...Option) (Driver, error) {
		if len(opts) > 0 {
			return nil, fmt.Errorf("driver %q takes no options: %w", name, ErrInvalidConfig)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return f(cfg)
	})
}

// RegisterOpener is Register for a driver that takes a context and options,
// as every fnrun driver does.
func RegisterOpener(name string, open Opener) {
	if name == "" {
		panic("drivers: Register with an empty name")
	}
	if open == nil {
		panic("drivers: Register of a nil Opener for " + name)
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("drivers: Register called twice for driver " + name)
	}
	registry[name] = open
}

// New creates the driver registered under name, with its default settings.
func New(name string, cfg Config) (Driver, error) {
	return Open(context.Background(), name, cfg)
}

// Open creates the driver registered under name: ctx bounds its start-up
// (connecting, checking the daemon), opts set its logger and timeouts. On
// error the Driver is nil, never a typed nil.
func Open(ctx context.Context, name string, cfg Config, opts ...Option) (Driver, error) {
	registryMu.RLock()
	open, ok := registry[name]
	registryMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("driver %q (registered: %v): %w", name, Drivers(), ErrDriverNotFound)
	}
	d, err := open(ctx, cfg, opts...)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// Drivers returns the names of the registered drivers, sorted.
func Drivers() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	names := make([]string, 0, len(registry))
	for name := range registry {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// emptyRegistry empties the registry for a test and returns the function
// that puts the previous registrations back.
func emptyRegistry() (restore func()) {
	registryMu.Lock()
	defer registryMu.Unlock()
	saved := registry
	registry = make(map[string]Opener)
	return func() {
		registryMu.Lock()
		defer registryMu.Unlock()
		registry = saved
	}
}
