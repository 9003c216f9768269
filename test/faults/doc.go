// Package faults breaks things on purpose and checks that the drivers
// survive: daemons killed or stopped (SIGSTOP) in the middle of calls, a
// registry that goes down or stalls mid-pull, images removed from outside,
// storms of cancelled cookies, long soaks, bad input, and the security
// promises seen from inside the container.
//
// The package has no code of its own: everything is in its tests, which
// run against real daemons. Tests that kill or stop a daemon never touch the
// shared environment of test/env/up.sh; they start private ones (a
// containerd and a dockerd with its own data root, exec root, sockets and
// cgroup parent, under a short folder in /tmp) and load the test image
// tarball into them. The shared environment is only read: its registry
// (behind a fault-injecting proxy of the test's own), its authenticated
// registry, and its daemons' sockets for the fuzz target, which makes no
// daemon call.
//
// With CI=true a missing environment fails the tests (test.Env); without
// it they are skipped. Knobs, all optional:
//
//	FNRUN_SOAK_CALLS    calls per soak phase (sequential, then concurrent) per driver (default 100)
//	FNRUN_STORM_COOKIES cookies per driver in the cancellation storm (default 300)
//	FNRUN_STORM_POOL_COOKIES the same with a pre-fork pool (default 100)
//	FNRUN_FAULTS_SEED   seed of the storm's random choices (default: time-based, logged)
//	FNRUN_FAULTS_KEEP   set to 1 to keep the private daemons' folders for a post-mortem
package faults
