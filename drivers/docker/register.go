package docker

import (
	"context"

	"github.com/fnrun/fnrun/drivers"
)

func init() {
	drivers.RegisterOpener(driverName, func(ctx context.Context, cfg drivers.Config, opts ...drivers.Option) (drivers.Driver, error) {
		return New(ctx, cfg, opts...)
	})
}
