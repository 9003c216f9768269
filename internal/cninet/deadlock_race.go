//go:build race && !deadlocks

package cninet

import "github.com/sasha-s/go-deadlock"

// go-cni guards its state with github.com/sasha-s/go-deadlock in race
// builds. That detector tells goroutines apart with petermattis/goid, which
// reads the goroutine id from runtime internals and returns 0 for every
// goroutine on recent Go releases: two containers set up concurrently then
// look like one goroutine locking twice, and the detector ends the process.
// In race builds (tests), make its mutexes plain ones again; a build with
// the deadlocks tag asks for the detector and keeps it.
func init() {
	deadlock.Opts.Disable = true
}
