package images

import (
	"context"
	"errors"
	"time"
)

// Image is one image as a Store reports it.
//
// Sizes: Size is what removing this image alone would free, and SharedSize
// what it shares with other images (a common base layer). The cleaner
// counts every image's Size plus the largest SharedSize of any image once,
// so shared layers are not counted once per image; see the package
// documentation for what that approximates.
type Image struct {
	// ID names the image's content in the store. Every reference naming
	// that content shares the ID, and Remove(ID) removes them all. Docker:
	// the image id, "sha256:<config digest>". containerd: the digest of the
	// target (manifest or index) the image records point to; records that
	// point to the same target are one Image.
	ID string
	// References are every name of the image as the store spells them:
	// tags ("busybox:latest", "docker.io/library/busybox:latest") and
	// digest references ("busybox@sha256:..."). Entries that are not
	// valid references ("<none>:<none>") are ignored. Empty for an
	// untagged image.
	References []string
	// Size is the number of bytes that removing this image alone would
	// free: what no other image in the store shares. A store that cannot
	// tell shared from unique bytes reports the whole size here and
	// SharedSize 0, and the cleaner then overcounts shared layers (it
	// evicts earlier than needed, never later).
	Size uint64
	// SharedSize is the number of bytes this image shares with at least
	// one other image in the store.
	SharedSize uint64
	// Created is when the image was built, or zero if unknown. It orders
	// images whose last use is unknown.
	Created time.Time
	// InUse reports that a container in the store, created by fnrun or
	// not, running or not, uses the image. Such an image is never removed.
	InUse bool
	// LastUsed is the last use the store persisted (see LastUseStore), or
	// zero.
	LastUsed time.Time
}

// Store is the image store of one runtime, as the cleaner sees it: for
// Docker and containerd, packages images/dockerstore and
// images/containerdstore, which their drivers build and hand out through
// Provider; the cleaner holds the policy.
// List and Remove calls never overlap each other (SetLastUse may overlap
// them), are never made with the cleaner's lock held, and must honour ctx:
// Close cancels it.
type Store interface {
	// List returns every image in the store. The cleaner owns the returned
	// slice.
	List(ctx context.Context) ([]Image, error)
	// Remove removes the image with the given Image.ID and every reference
	// to it, without forcing: if a container uses the image the removal
	// must fail, preferably with an error wrapping ErrImageInUse. An error
	// wrapping drivers.ErrImageNotFound means the image vanished from
	// outside; the cleaner forgets it.
	Remove(ctx context.Context, id string) error
}

// LastUseStore is an optional ability of a Store: persisting the last use
// of an image in the store itself (containerd keeps it in an image label),
// so it survives restarts and is reported back through Image.LastUsed.
// When the Store does not implement it, the cleaner keeps last uses in a
// state file under Config.StateDir, or approximates them (see the package
// documentation).
type LastUseStore interface {
	// SetLastUse records t as the last use of the image id. An error
	// wrapping drivers.ErrImageNotFound is ignored.
	SetLastUse(ctx context.Context, id string, t time.Time) error
}

// ErrImageInUse is what Store.Remove should wrap when the runtime refuses
// to remove an image because a container uses it. The cleaner then treats
// the image as in use and tries again later with backoff; the refusal is
// logged at debug level and not counted as an eviction failure.
var ErrImageInUse = errors.New("image in use")
