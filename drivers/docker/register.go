package docker

import (
	"context"

	"github.com/fnrun/fnrun/drivers"
)

func init() {
	drivers.Register(driverName, func(cfg drivers.Config) (drivers.Driver, error) { return New(context.Background(), cfg) })
}
