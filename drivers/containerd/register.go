package containerd

import (
	"context"

	"github.com/fnrun/fnrun/drivers"
)

func init() {
	drivers.Register(DriverName, newRegistered)
}

// newRegistered builds a driver from the registry. It returns a nil
// interface, not a typed nil, on error.
func newRegistered(cfg drivers.Config) (drivers.Driver, error) {
	d, err := New(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	return d, nil
}
