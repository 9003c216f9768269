package faults

import (
	"os"
	"testing"
)

// TestMain stops the private daemons and removes every trace of them once
// the tests are done, whatever their outcome.
func TestMain(m *testing.M) {
	code := m.Run()
	stopPrivate()
	os.Exit(code)
}
