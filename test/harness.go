// Package test holds the conformance suite that every fnrun driver passes,
// and the scripts (test/env) that start the real test environment: dockerd,
// a standalone containerd and two loopback registries.
//
// A driver's test calls Run with a Factory that builds the driver for a
// given configuration:
//
//	func TestConformance(t *testing.T) {
//		test.Run(t, func(t *testing.T, cfg drivers.Config) *test.Harness { ... })
//	}
//
// The suite holds every behaviour the drivers contract promises. A driver
// declares what it can do through drivers.Capable; checks of capabilities it
// lacks are skipped with the reason.
package test

import (
	"context"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
)

// Harness is one driver under test and what the suite needs to know about
// its environment.
type Harness struct {
	// Driver is the driver under test. The suite closes it.
	Driver drivers.Driver
	// Image is an image the driver can run without credentials, present
	// locally or pullable: a busybox with sh and the usual applets, whose
	// user 1000 exists.
	Image string
	// PullImage is an image in a registry that the driver can pull. The
	// suite removes it with RemoveImage before checking that validation
	// asks for a pull.
	PullImage string
	// MissingImage is a well-formed reference the registry does not have.
	MissingImage string
	// RemoveImage removes an image from the driver's local store. A missing
	// image is not an error.
	RemoveImage func(ctx context.Context, ref string) error
	// Leftovers lists what the driver created and has not removed:
	// containers, tasks, snapshots, holders... Empty once every cookie is
	// closed.
	Leftovers func(ctx context.Context) ([]string, error)
	// Capabilities overrides what the driver reports through
	// drivers.Capable. Zero means ask the driver.
	Capabilities drivers.Capability
	// MainPID is the pid on this host of container id's main process, whose
	// parent is the runtime's supervisor of it (its shim). Nil for a
	// runtime that runs no process (the mock).
	MainPID func(ctx context.Context, id string) (int, error)
	// Script, for a driver that runs no command (the mock), makes task
	// behave as s says its command does, through the driver's own
	// scripting. Drivers that run commands leave it nil.
	Script func(task *drivers.Task, s Script)
}

// Script is what a case's command does, for drivers that run no command.
type Script struct {
	Stdout, Stderr string
	ExitCode       int
	// Delay is how long the command runs; Hang runs it until it is ended.
	Delay time.Duration
	Hang  bool
	// EchoStdin copies the input to stdout.
	EchoStdin bool
	// OOM: the kernel's OOM killer ends the command. ChildOOM: it ends a
	// child, and the command still exits with ExitCode.
	OOM, ChildOOM bool
	// ImageMissing: the registry has no such image.
	ImageMissing bool
}

// Factory builds a driver for cfg, which holds only the behaviour settings
// the suite needs (EnableReadOnlyRootFs, ...); the factory adds the
// connection settings and a label tag of its own. It fails the test if the
// driver cannot be built, and registers its own cleanups with t.Cleanup.
type Factory func(t *testing.T, cfg drivers.Config) *Harness
