package drivers

import (
	"fmt"
	"sort"
	"sync"
)

var (
	registryMu sync.RWMutex
	registry   = make(map[string]DriverFunc)
)

// Register makes a driver available by name. Like database/sql, it panics
// when name is empty, f is nil or name is already registered: all three are
// programming errors found at init time.
func Register(name string, f DriverFunc) {
	if name == "" {
		panic("drivers: Register with an empty name")
	}
	if f == nil {
		panic("drivers: Register of a nil DriverFunc for " + name)
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("drivers: Register called twice for driver " + name)
	}
	registry[name] = f
}

// New creates the driver registered under name.
func New(name string, cfg Config) (Driver, error) {
	registryMu.RLock()
	f, ok := registry[name]
	registryMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("driver %q (registered: %v): %w", name, Drivers(), ErrDriverNotFound)
	}
	return f(cfg)
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
	registry = make(map[string]DriverFunc)
	return func() {
		registryMu.Lock()
		defer registryMu.Unlock()
		registry = saved
	}
}
