package pool

// Reporter is an optional interface of a driver that runs a pre-fork pool,
// for callers such as `fnrun pool` that only hold a drivers.Driver.
type Reporter interface {
	// PoolStats returns the pool's figures, or false when the driver runs
	// without a pool.
	PoolStats() (Stats, bool)
}
