// Package pool is the pre-fork pool: a set of long-running holder
// containers whose network namespaces new containers join, so no network
// namespace is built per call. It is runtime-agnostic; each driver supplies
// a small Adapter that starts and stops a holder, waits for one to die,
// makes sure the holders' image is present, and says (in Holder) how a
// container joins it: Docker by network mode "container:<Holder.ID>",
// containerd by the namespace path Holder.NetNSPath in the OCI spec.
//
// A driver creates one pool when PreForkPoolSize > 0:
//
//	p, err := pool.New(adapter, pool.Config{Size: 4, Driver: "docker"}, pool.WithLogger(log))
//	...
//	if l, ok := p.Lease(ctx); ok {
//		// join l.Holder(); watch l.Dead(); l.Release() when the container is gone
//	} else {
//		// no holder free: use a plain network; the miss is counted
//	}
//	...
//	p.Close()
//
// The pool's promises, and why:
//
//   - A lease never blocks. Falling back to a plain network costs one
//     network setup; waiting for a holder to start costs more than that.
//     Misses while the pool has every holder it aims for make it aim for
//     one more, up to Max; holders beyond Size that stay free for
//     IdleShrinkAfter are stopped again.
//   - One container per holder at a time, so a container never shares a
//     network namespace with a concurrent call. With UseOnce a released
//     holder is stopped and replaced in the background, so every lease
//     gets a fresh namespace and no caller waits for the replacement.
//   - Self-healing. Every holder is watched with Adapter.WaitHolder; a dead
//     one leaves the free list at once, its lease's Dead channel closes,
//     and a replacement is started. Adapter failures (image pull, daemon
//     down, holders dying as soon as they start) are logged and counted in
//     Stats.Failures, and retries follow Config.ReplaceBackoff, one start
//     at a time until one succeeds, so a broken daemon sees a trickle of
//     calls, not a loop. The pool keeps serving the holders it has.
//   - Observability. Stats gives the counts; every change is recorded into
//     the stats.Pool* OpenCensus measures, tagged with Config.Driver; each
//     replacement is logged at debug level.
//   - Close stops every holder, including those still being started, and
//     waits for every goroutine the pool started.
package pool
