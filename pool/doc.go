// Package pool is the pre-fork pool: a set of long-running holder
// containers whose network namespaces new containers join, so no network
// namespace is built per call. It is runtime-agnostic; each driver supplies
// a small adapter that starts and stops a holder and says how a container
// joins it.
package pool
