package mock

import (
	"context"

	"github.com/fnrun/fnrun/drivers"
)

func init() {
	drivers.RegisterOpener(Name, func(_ context.Context, cfg drivers.Config, opts ...drivers.Option) (drivers.Driver, error) {
		return New(cfg, opts...)
	})
}
