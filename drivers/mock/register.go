package mock

import "github.com/fnrun/fnrun/drivers"

func init() {
	drivers.Register("mock", func(cfg drivers.Config) (drivers.Driver, error) { return New(cfg) })
}
