// Package images keeps a runtime's image store under a byte budget: a
// size-budgeted LRU of images with busy counts and exempt references, and
// the background job that evicts idle images through a small Store
// interface, implemented once per runtime.
//
// The package holds the policy; a driver supplies the store (list images
// with ids, references, sizes and whether a container uses them; remove
// one by id) and calls the cleaner from its cookies:
//
//	cfg := images.Config{MaxSize: budget, Exempt: exempt, StateDir: stateDir, Driver: "docker"}
//	cleaner, err := images.New(store, cfg, images.WithLogger(log))
//	...
//	err = cleaner.Start(ctx) // lists the store; fails if the exempt images exceed the budget
//
//	// In the cookie:
//	release := cleaner.Use(task.Image()) // in ValidateImage, before looking the image up
//	... pull if needed, then cleaner.Kick()
//	release()                            // in Close
//
//	// In Driver.Close, after the cookies are done:
//	cleaner.Close()
//
// The stores of the real runtimes are packages of their own,
// images/dockerstore and images/containerdstore, each the cleaner's adapter
// to one runtime, which its driver builds over its connection.
//
// # Policy
//
// Every image of the store is tracked with its references, size and last
// use. When the tracked size of the store passes Config.MaxSize, idle
// images are removed, least recently used first, until the tracked size
// is at most Config.LowWater (90% of the budget by default), so the store
// does not churn around the limit: after an eviction the store must grow
// by the gap between the two marks before the next one. An image with
// several tags is removed as a whole (Store.Remove by id).
//
// An image is never removed while it is busy (held through Use: counted,
// so two cookies keep it busy until both release), while a container in
// the store uses it (Image.InUse, or Remove failing with ErrImageInUse),
// or when it is exempt. Use keys by reference, not by image, so a Use made
// before a pull protects the image from the moment it appears in the
// store. Exempt entries match references the way users write them (see
// Config.Exempt); the caller adds the pre-fork pool's image to them
// (lifecycle.Configure does).
//
// A removal that fails is retried with backoff (WithRemoveBackOff), other
// candidates going first meanwhile; a pass gives up after three failures,
// and passes are at least Config.MinInterval apart, so a daemon that
// refuses everything is never hammered. An image that vanished from
// outside (Remove wraps drivers.ErrImageNotFound, or List no longer shows
// it) is forgotten.
//
// # Sizes
//
// The budget is compared with the tracked size: the sum of every image's
// Image.Size, the bytes only that image holds, plus the largest
// Image.SharedSize of any image, counted once. That is exact when the
// shared layers are one common base (function images built on the same
// runtime image, the usual case) and an undercount by the smaller groups
// when several unrelated bases are each shared by several images. A
// removal is assumed to free the image's Size; bytes it shared that become
// unique to another image are counted at the next sync. Docker reports
// both numbers (Size and SharedSize from the disk-usage listing: report
// Size-SharedSize and SharedSize); containerd can compute them by
// counting, for each blob of the content store (and snapshot), how many
// images reference it. A store that cannot tell reports the whole size in
// Size, and shared layers are then counted once per image: the cleaner
// evicts earlier than needed, never later.
//
// # Last use
//
// Last uses order the eviction and must survive restarts. A Store that
// implements LastUseStore keeps them itself (containerd: an image label)
// and reports them back in Image.LastUsed. Otherwise, with
// Config.StateDir set, they are kept in StateDir/last-use.json, replaced
// atomically (temporary file, then rename) at most every 30 seconds and at
// Close. Writes are batched: Use does no I/O. Without either, or for an
// image neither knows, the last use is approximated: at the first sync
// (after a restart) by the image's creation time, so images used since the
// restart stay longest and older builds go first; for an image that
// appears later from outside, by the time it was first seen.
//
// # Background job
//
// Start lists the store, checks the exempt set against the budget, and
// starts one goroutine that evicts when needed, lists the store again every
// Config.ResyncInterval (and after a Kick, which a driver calls after a
// pull) to pick up external changes, and writes last uses. Close stops it
// and waits for it. CleanOnce is one pass of that job, with a dry-run
// option, for a separate cleanup job or the command line; Snapshot lists
// the tracked images with their state.
//
// # Metrics
//
// Each pass records, tagged with Config.Driver, the stats measures
// ImageBytesBusy and ImageBytesIdle (shared bytes count as idle),
// ImageBudget, ImageEvictions and ImageEvictionFailures (an ErrImageInUse
// refusal is not a failure).
//
// # Cost
//
// Use and release are O(log n) (a min-heap of eviction candidates keyed by
// last use); choosing the next image to evict is O(1) and removing it from
// the heap O(log n). A sync is O(n) over the listing, and references are
// only parsed again when an image's references change.
package images
