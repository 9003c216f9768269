package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"go.uber.org/goleak"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/clock"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"))
}

// image builds a test image named name: id idOf(name), created at
// t0 - age, and refs (default "<name>:latest").
func image(name string, size uint64, age time.Duration, refs ...string) Image {
	if refs == nil {
		refs = []string{name + ":latest"}
	}
	return Image{ID: idOf(name), References: refs, Size: size, Created: t0.Add(-age)}
}

func newTestCleaner(t *testing.T, s Store, cfg Config, opts ...Option) (*Cleaner, *clock.Fake) {
	t.Helper()
	clk := newClock()
	c, err := New(s, cfg, append([]Option{WithClock(clk)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, clk
}

// syncNow lists the store into the cache without evicting.
func syncNow(t *testing.T, c *Cleaner) {
	t.Helper()
	c.passMu.Lock()
	defer c.passMu.Unlock()
	if err := c.sync(context.Background()); err != nil {
		t.Fatalf("sync: %v", err)
	}
}

func clean(t *testing.T, c *Cleaner, opts ...CleanOption) Report {
	t.Helper()
	rep, err := c.CleanOnce(context.Background(), opts...)
	if err != nil {
		t.Fatalf("CleanOnce: %v", err)
	}
	checkInvariants(t, c)
	return rep
}

func use(c *Cleaner, clk *clock.Fake, ref string) {
	clk.Advance(time.Second)
	release := c.Use(ref)
	clk.Advance(time.Second)
	release()
}

func TestLRUOrder(t *testing.T) {
	all := []string{"a", "b", "c", "d"}
	tests := []struct {
		name string
		// ages are the images' build ages (last use before any Use).
		ages map[string]time.Duration
		uses []string
		max  uint64
		low  uint64
		want []string
	}{
		{
			name: "never used: oldest build first",
			ages: map[string]time.Duration{"a": 4 * time.Hour, "b": 3 * time.Hour, "c": 2 * time.Hour, "d": time.Hour},
			max:  35, low: 20,
			want: []string{"a", "b"},
		},
		{
			name: "used since the start outlives never used",
			ages: map[string]time.Duration{"a": 4 * time.Hour, "b": 3 * time.Hour, "c": 2 * time.Hour, "d": time.Hour},
			uses: []string{"a"},
			max:  35, low: 20,
			want: []string{"b", "c"},
		},
		{
			name: "least recently used first",
			ages: map[string]time.Duration{"a": time.Hour, "b": time.Hour, "c": time.Hour, "d": time.Hour},
			uses: []string{"d", "c", "b", "a", "d", "c"},
			max:  35, low: 10,
			want: []string{"b", "a", "d"},
		},
		{
			name: "references written differently are one image",
			ages: map[string]time.Duration{"a": time.Hour, "b": time.Hour, "c": time.Hour, "d": time.Hour},
			uses: []string{"docker.io/library/a:latest", "b", "library/c:latest", "d:latest", "a"},
			max:  39, low: 30,
			want: []string{"b"},
		},
		{
			name: "under budget: nothing",
			ages: map[string]time.Duration{"a": time.Hour, "b": time.Hour, "c": time.Hour, "d": time.Hour},
			max:  40, low: 10,
			want: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore()
			for _, n := range all {
				s.add(image(n, 10, tt.ages[n]))
			}
			c, clk := newTestCleaner(t, s, Config{MaxSize: tt.max, LowWater: tt.low})
			syncNow(t, c)
			for _, u := range tt.uses {
				use(c, clk, u)
			}
			rep := clean(t, c)
			got := ids(rep.Removed)
			for i := range got {
				got[i] = nameOf(got[i], all)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("removed %v, want %v", got, tt.want)
			}
			if rep.BytesAfter > tt.low && len(tt.want) > 0 {
				t.Errorf("ended at %d bytes, above the low-water mark %d", rep.BytesAfter, tt.low)
			}
		})
	}
}

func TestBusyCounts(t *testing.T) {
	s := newStore(image("a", 10, 3*time.Hour), image("b", 10, 2*time.Hour))
	c, clk := newTestCleaner(t, s, Config{MaxSize: 15, LowWater: 5})
	syncNow(t, c)

	r1 := c.Use("a")
	r2 := c.Use("docker.io/library/a") // the same image, written another way
	if got := c.Snapshot().Images; got[len(got)-1].ID != idOf("a") || got[len(got)-1].Uses != 2 {
		t.Fatalf("after two uses: %+v", got)
	}
	r1()
	r1() // idempotent
	if got := findInfo(t, c, "a").Uses; got != 1 {
		t.Fatalf("uses after one release (twice): %d, want 1", got)
	}

	rep := clean(t, c)
	if got := ids(rep.Removed); !slices.Equal(got, names("b")) {
		t.Fatalf("removed %v, want only b while a is busy", got)
	}
	if !s.has(idOf("a")) {
		t.Fatal("busy image removed")
	}

	clk.Advance(time.Minute)
	r2()
	if got := findInfo(t, c, "a").Uses; got != 0 {
		t.Fatalf("uses after both released: %d", got)
	}
	s.add(image("c", 10, 0))
	clk.Advance(time.Minute)
	rep = clean(t, c)
	// a was released before c was first seen, so a goes first; then c, to
	// reach the low-water mark of 5.
	if got := ids(rep.Removed); !slices.Equal(got, names("a", "c")) {
		t.Fatalf("removed %v, want a then c", got)
	}
}

func findInfo(t *testing.T, c *Cleaner, name string) ImageInfo {
	t.Helper()
	for _, in := range c.Snapshot().Images {
		if in.ID == idOf(name) {
			return in
		}
	}
	t.Fatalf("image %s not tracked", name)
	return ImageInfo{}
}

func TestExemptMatching(t *testing.T) {
	dig := "sha256:" + hexOf("manifest")
	other := "sha256:" + hexOf("other")
	tests := []struct {
		name   string
		exempt string
		id     string
		refs   []string
		want   bool
	}{
		{"short name matches docker short tag", "busybox", "", []string{"busybox:latest"}, true},
		{"short name matches full name", "busybox", "", []string{"docker.io/library/busybox:latest"}, true},
		{"full name matches short tag", "docker.io/library/busybox:latest", "", []string{"busybox:latest"}, true},
		{"short name is latest only", "busybox", "", []string{"busybox:1.36"}, false},
		{"explicit tag", "busybox:1.36", "", []string{"busybox:latest", "busybox:1.36"}, true},
		{"registry with port", "localhost:5000/fn/hello:0.1", "", []string{"localhost:5000/fn/hello:0.1"}, true},
		{"registry matters", "localhost:5000/fn/hello:0.1", "", []string{"fn/hello:0.1"}, false},
		{"digest reference matches digest reference", "busybox@" + dig, "", []string{"busybox@" + dig}, true},
		{"digest reference with a tag", "busybox:1.36@" + dig, "", []string{"busybox@" + dig}, true},
		{"digest reference matches the digest anywhere", "busybox@" + dig, "", []string{"localhost:5000/busybox@" + dig}, true},
		{"digest reference matches a containerd target id", "busybox@" + dig, dig, []string{"busybox:latest"}, true},
		{"other digest", "busybox@" + dig, "", []string{"busybox@" + other}, false},
		{"digest reference does not match the tag", "busybox@" + dig, "", []string{"busybox:latest"}, false},
		{"id form matches the id of an untagged image", dig, dig, nil, true},
		{"bare hex matches the id", hexOf("manifest"), dig, nil, true},
		{"id form matches a digest reference", dig, "", []string{"fn/app@" + dig}, true},
		{"id form does not match another id", dig, other, []string{"busybox:latest"}, false},
		{"invalid store references are ignored", "busybox", "", []string{"<none>:<none>", "<none>@<none>"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := Image{ID: tt.id, References: tt.refs, Size: 1}
			if img.ID == "" {
				img.ID = idOf("image")
			}
			s := newStore(img)
			c, _ := newTestCleaner(t, s, Config{MaxSize: 100, Exempt: []string{"unrelated:1", tt.exempt}})
			syncNow(t, c)
			if got := c.Snapshot().Images[0].Exempt; got != tt.want {
				t.Fatalf("exempt %q for image %s %v: got %v, want %v", tt.exempt, img.ID, tt.refs, got, tt.want)
			}
		})
	}
}

func TestExemptNeverRemoved(t *testing.T) {
	s := newStore(
		image("pool", 10, 9*time.Hour, "fnproject/pool:latest"),
		image("base", 10, 8*time.Hour, "busybox:latest", "busybox:1.36"),
		image("pinned", 10, 7*time.Hour, "fn/app@sha256:"+hexOf("pinned-manifest")),
		Image{ID: idOf("bydigest"), Size: 10, Created: t0.Add(-6 * time.Hour)},
		image("x", 10, time.Hour),
	)
	cfg := Config{MaxSize: 20, LowWater: 1, Exempt: []string{"busybox:1.36", "fn/app@sha256:" + hexOf("pinned-manifest"), idOf("bydigest"), "fnproject/pool"}}
	c, _ := newTestCleaner(t, s, cfg)
	// The exempt images take 40 bytes: more than the budget, refused.
	if _, err := c.CleanOnce(context.Background()); !errors.Is(err, drivers.ErrInvalidConfig) {
		t.Fatalf("exempt set over budget: %v, want ErrInvalidConfig", err)
	}
	c.cfg.MaxSize, c.cfg.LowWater = 45, 1
	rep := clean(t, c)
	if got := ids(rep.Removed); !slices.Equal(got, names("x")) {
		t.Fatalf("removed %v, want only x", got)
	}
}

func TestWaterMarks(t *testing.T) {
	s := newStore()
	c, clk := newTestCleaner(t, s, Config{MaxSize: 100, LowWater: 70})
	var removedAt []int
	n := 0
	add := func() Report {
		n++
		clk.Advance(time.Minute)
		s.add(image(fmt.Sprintf("img%02d", n), 10, 0))
		rep := clean(t, c)
		if len(rep.Removed) > 0 {
			removedAt = append(removedAt, n)
			if rep.BytesAfter > 70 {
				t.Fatalf("after eviction at image %d: %d bytes, above the low-water mark", n, rep.BytesAfter)
			}
		}
		if rep.BytesAfter > 100 {
			t.Fatalf("after image %d: %d bytes, over budget", n, rep.BytesAfter)
		}
		return rep
	}
	for i := 0; i < 10; i++ { // 100 bytes: at the budget, not over it
		if rep := add(); len(rep.Removed) != 0 {
			t.Fatalf("removed %v at %d bytes", ids(rep.Removed), rep.BytesBefore)
		}
	}
	if rep := add(); len(rep.Removed) != 4 { // 110 -> 70
		t.Fatalf("at 110 bytes removed %d images, want 4", len(rep.Removed))
	}
	for i := 0; i < 20; i++ {
		add()
	}
	// From 70 it takes four more images to pass 100 again: one eviction of
	// four images every four additions, never one per addition.
	want := []int{11, 15, 19, 23, 27, 31}
	if !slices.Equal(removedAt, want) {
		t.Fatalf("evictions after images %v, want %v", removedAt, want)
	}
	if got := len(s.removes); got != 4*len(want) {
		t.Fatalf("%d removals, want %d", got, 4*len(want))
	}
}

func TestDefaultLowWater(t *testing.T) {
	c, _ := newTestCleaner(t, newStore(), Config{MaxSize: 1000})
	if c.cfg.LowWater != 900 {
		t.Fatalf("default low water %d, want 900", c.cfg.LowWater)
	}
}

func TestMultiTagRemovedAsWhole(t *testing.T) {
	refs := []string{"fn/app:1", "fn/app:latest", "localhost:5000/fn/app:1", "fn/app@sha256:" + hexOf("app-manifest")}
	s := newStore(image("app", 50, 2*time.Hour, refs...), image("keep", 10, 0))
	c, clk := newTestCleaner(t, s, Config{MaxSize: 55, LowWater: 40})
	syncNow(t, c)

	r1 := c.Use("fn/app:latest")
	r2 := c.Use("localhost:5000/fn/app:1")
	if got := findInfo(t, c, "app").Uses; got != 2 {
		t.Fatalf("two tags of one image: uses %d, want 2", got)
	}
	r1()
	r2()
	clk.Advance(time.Minute)
	c.Use("keep")() // keep is more recent than app
	rep := clean(t, c)
	if got := ids(rep.Removed); !slices.Equal(got, names("app")) {
		t.Fatalf("removed %v, want app", got)
	}
	if got := s.removeAttempts(idOf("app")); got != 1 {
		t.Fatalf("%d Remove calls for a four-reference image, want one", got)
	}
	for _, r := range refs {
		if release := c.Use(r); findPending(c, r) == 0 {
			t.Errorf("reference %s still resolves to an image", r)
		} else {
			release()
		}
	}
}

func findPending(c *Cleaner, ref string) int {
	key, _ := refKey(ref)
	for _, p := range c.Snapshot().Pending {
		if p.Ref == key {
			return p.Uses
		}
	}
	return 0
}

func TestRemoveFailureRetriedWithBackoff(t *testing.T) {
	// a is the least recently used and always refuses; b and c go
	// meanwhile; then a alone keeps the store over budget, and is retried
	// with growing delays over ten minutes of passes every 100ms.
	s := newStore(image("a", 100, 3*time.Hour), image("b", 10, 2*time.Hour), image("c", 10, time.Hour))
	s.setRemoveErr(func(id string) error {
		if id == idOf("a") {
			return errors.New("conflict: the daemon says no")
		}
		return nil
	})
	c, clk := newTestCleaner(t, s, Config{MaxSize: 50, LowWater: 40})
	rep := clean(t, c)
	if got := ids(rep.Removed); !slices.Equal(got, names("b", "c")) {
		t.Fatalf("first pass removed %v, want b and c past the failing a", got)
	}
	if len(rep.Failed) != 1 || rep.Failed[0].Image.ID != idOf("a") {
		t.Fatalf("first pass failures: %+v", rep.Failed)
	}
	if info := findInfo(t, c, "a"); info.RetryAt.IsZero() || info.Evictable() {
		t.Fatalf("failed image not waiting for a retry: %+v", info)
	}
	const step, span = 100 * time.Millisecond, 10 * time.Minute
	for elapsed := time.Duration(0); elapsed < span; elapsed += step {
		clk.Advance(step)
		clean(t, c)
	}
	attempts := s.removeAttempts(idOf("a"))
	// 1s, 2s, 4s... capped at 10 minutes, each drawn from [d/2, d]: about
	// ten attempts in ten minutes; 6000 passes would be a tight loop.
	if attempts < 4 || attempts > 16 {
		t.Fatalf("%d attempts on the failing image over %v of passes every %v", attempts, span, step)
	}
	t.Logf("%d attempts in %v", attempts, span)

	s.setRemoveErr(nil)
	clk.Advance(11 * time.Minute)
	if rep := clean(t, c); !slices.Equal(ids(rep.Removed), names("a")) {
		t.Fatalf("after the daemon relents: removed %v, want a", ids(rep.Removed))
	}
}

func TestPassStopsAfterRepeatedFailures(t *testing.T) {
	s := newStore()
	for i := 0; i < 20; i++ {
		s.add(image(fmt.Sprintf("i%02d", i), 10, time.Duration(20-i)*time.Hour))
	}
	s.setRemoveErr(func(string) error { return fmt.Errorf("daemon: %w", drivers.ErrDaemonUnavailable) })
	c, _ := newTestCleaner(t, s, Config{MaxSize: 100, LowWater: 50})
	rep := clean(t, c)
	if len(rep.Failed) != maxFailuresPerPass || len(s.removes) != maxFailuresPerPass {
		t.Fatalf("a failing daemon got %d removals in one pass (%d failures reported), want %d",
			len(s.removes), len(rep.Failed), maxFailuresPerPass)
	}
}

func TestVanishedImageForgotten(t *testing.T) {
	s := newStore(image("a", 10, 3*time.Hour), image("b", 10, 2*time.Hour), image("c", 10, time.Hour))
	c, _ := newTestCleaner(t, s, Config{MaxSize: 25, LowWater: 10})
	syncNow(t, c)

	// Removed from outside between the sync and the eviction: Remove
	// reports drivers.ErrImageNotFound.
	s.del(idOf("a"))
	rep := c.evictPass(context.Background())
	checkInvariants(t, c)
	if !slices.Equal(rep.Vanished, names("a")) || !slices.Equal(ids(rep.Removed), names("b")) || len(rep.Failed) != 0 {
		t.Fatalf("report %+v: want a vanished, b removed, no failure", rep)
	}
	if len(c.Snapshot().Images) != 1 {
		t.Fatalf("vanished image still tracked: %v", ids(c.Snapshot().Images))
	}

	// Removed from outside and noticed by a resync.
	s.add(image("d", 5, 0))
	syncNow(t, c)
	s.del(idOf("c"))
	syncNow(t, c)
	checkInvariants(t, c)
	snap := c.Snapshot()
	if got := ids(snap.Images); !slices.Equal(got, names("d")) || snap.TrackedBytes != 5 {
		t.Fatalf("after external removal: %v, %d bytes", got, snap.TrackedBytes)
	}
}

func TestInUseByStoreNeverRemoved(t *testing.T) {
	a := image("a", 10, 3*time.Hour)
	a.InUse = true
	s := newStore(a, image("b", 10, 2*time.Hour), image("c", 10, time.Hour))
	s.setRemoveErr(func(id string) error {
		if id == idOf("b") { // a container was created from b after the listing
			return fmt.Errorf("conflict: %w", ErrImageInUse)
		}
		return nil
	})
	c, _ := newTestCleaner(t, s, Config{MaxSize: 25, LowWater: 5})
	rep := clean(t, c)
	if !slices.Equal(ids(rep.Removed), names("c")) {
		t.Fatalf("removed %v, want only c", ids(rep.Removed))
	}
	if s.removeAttempts(idOf("a")) != 0 {
		t.Fatal("Remove called for an image a container uses")
	}
	if len(rep.Failed) != 1 || !errors.Is(rep.Failed[0].Err, ErrImageInUse) {
		t.Fatalf("failures %+v, want b refused as in use", rep.Failed)
	}
	if findInfo(t, c, "b").RetryAt.IsZero() {
		t.Fatal("image refused as in use is not waiting for a retry")
	}
}

func TestUseBeforePullProtectsImage(t *testing.T) {
	s := newStore(image("old", 10, time.Hour))
	c, clk := newTestCleaner(t, s, Config{MaxSize: 50, LowWater: 10})
	syncNow(t, c)

	release := c.Use("localhost:5000/fn/new:1") // ValidateImage: not there, pull
	if got := findPending(c, "localhost:5000/fn/new:1"); got != 1 {
		t.Fatalf("pending uses %d, want 1", got)
	}
	clk.Advance(time.Minute)
	s.add(Image{ID: idOf("new"), References: []string{"localhost:5000/fn/new:1"}, Size: 100, Created: t0.Add(-24 * time.Hour)})
	rep := clean(t, c) // the pull's Kick
	if s.has(idOf("old")) || !s.has(idOf("new")) {
		t.Fatalf("removed %v: want old removed and the image being used kept", ids(rep.Removed))
	}
	if info := findInfo(t, c, "new"); info.Uses != 1 || info.Evictable() {
		t.Fatalf("pulled image: %+v, want busy", info)
	}
	release()
	rep = clean(t, c)
	if !slices.Equal(ids(rep.Removed), names("new")) {
		t.Fatalf("after release removed %v, want new", ids(rep.Removed))
	}
}

func TestTagMovedToNewImage(t *testing.T) {
	s := newStore(image("v1", 10, time.Hour, "fn/app:latest"))
	c, _ := newTestCleaner(t, s, Config{MaxSize: 100})
	syncNow(t, c)
	release := c.Use("fn/app")
	// A pull moved the tag: v1 is untagged, v2 has it.
	s.update(idOf("v1"), func(img *Image) { img.References = nil })
	s.add(image("v2", 10, 0, "fn/app:latest"))
	syncNow(t, c)
	checkInvariants(t, c)
	if findInfo(t, c, "v1").Uses != 0 || findInfo(t, c, "v2").Uses != 1 {
		t.Fatalf("after the tag moved: v1 %+v, v2 %+v", findInfo(t, c, "v1"), findInfo(t, c, "v2"))
	}
	release()
	checkInvariants(t, c)
	if findInfo(t, c, "v2").Uses != 0 {
		t.Fatal("release did not free the image the tag moved to")
	}

	// A racy listing with the tag on both images keeps one owner.
	s.update(idOf("v1"), func(img *Image) { img.References = []string{"fn/app:latest"} })
	release = c.Use("fn/app")
	for i := 0; i < 3; i++ {
		syncNow(t, c)
		checkInvariants(t, c)
	}
	if u1, u2 := findInfo(t, c, "v1").Uses, findInfo(t, c, "v2").Uses; u1+u2 != 1 {
		t.Fatalf("one use counted %d times (v1 %d, v2 %d)", u1+u2, u1, u2)
	}
	release()
	checkInvariants(t, c)
}

func TestSharedBytesCountedOnce(t *testing.T) {
	mk := func(name string, age time.Duration) Image {
		img := image(name, 10, age)
		img.SharedSize = 100 // a common base image
		return img
	}
	s := newStore(mk("a", 3*time.Hour), mk("b", 2*time.Hour), mk("c", time.Hour))
	c, _ := newTestCleaner(t, s, Config{MaxSize: 125, LowWater: 115})
	syncNow(t, c)
	if got := c.Snapshot().TrackedBytes; got != 130 {
		t.Fatalf("tracked %d bytes, want 3*10 + 100 once", got)
	}
	rep := clean(t, c)
	if !slices.Equal(ids(rep.Removed), names("a", "b")) || rep.BytesAfter != 110 {
		t.Fatalf("removed %v down to %d", ids(rep.Removed), rep.BytesAfter)
	}
}

func TestDryRun(t *testing.T) {
	s := newStore(image("a", 10, 3*time.Hour), image("b", 10, 2*time.Hour), image("c", 10, time.Hour))
	c, _ := newTestCleaner(t, s, Config{MaxSize: 25, LowWater: 10})
	dry := clean(t, c, DryRun())
	if !dry.DryRun || !slices.Equal(ids(dry.Removed), names("a", "b")) || dry.BytesAfter != 10 {
		t.Fatalf("dry run: %v", dry)
	}
	if len(s.removes) != 0 || len(c.Snapshot().Images) != 3 {
		t.Fatal("dry run removed something")
	}
	real := clean(t, c)
	if !slices.Equal(ids(real.Removed), ids(dry.Removed)) {
		t.Fatalf("real run removed %v, dry run said %v", ids(real.Removed), ids(dry.Removed))
	}
}

func TestLastUseStateFileAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	s := newStore(image("a", 10, 3*time.Hour), image("b", 10, 2*time.Hour), image("c", 10, time.Hour))
	cfg := Config{MaxSize: 25, LowWater: 20, StateDir: dir}

	c1, clk := newTestCleaner(t, s, cfg)
	syncNow(t, c1)
	use(c1, clk, "c")
	use(c1, clk, "a") // LRU now: b (never used), c, a
	want := map[string]time.Time{}
	for _, in := range c1.Snapshot().Images {
		want[in.ID] = in.LastUsed
	}
	if err := c1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	files, _ := os.ReadDir(dir)
	if len(files) != 1 || files[0].Name() != stateFileName {
		t.Fatalf("state folder holds %v, want only %s (no temporary files)", files, stateFileName)
	}
	b, err := os.ReadFile(filepath.Join(dir, stateFileName))
	if err != nil {
		t.Fatal(err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil || len(st.LastUse) != 3 {
		t.Fatalf("state file %s: %v", b, err)
	}

	// A restart: a new cleaner over the same store and folder.
	s.add(image("d", 1, 30*time.Minute))
	c2, clk2 := newTestCleaner(t, s, cfg)
	clk2.Advance(time.Minute) // the restart happens after the last use
	syncNow(t, c2)
	for _, in := range c2.Snapshot().Images {
		if w, ok := want[in.ID]; ok && !in.LastUsed.Equal(w) {
			t.Errorf("image %s: last use %v after restart, want %v", in.ID, in.LastUsed, w)
		}
	}
	if got := findInfo(t, c2, "d").LastUsed; !got.Equal(t0.Add(-30 * time.Minute)) {
		t.Errorf("image unknown to the file: last use %v, want its creation time", got)
	}
	rep := clean(t, c2)
	if all := []string{"a", "b", "c", "d"}; !slices.Equal(ids(rep.Removed), names("b", "d")) {
		got := ids(rep.Removed)
		for i := range got {
			got[i] = nameOf(got[i], all)
		}
		t.Fatalf("after restart removed %v, want b then d", got)
	}
}

func TestStateFileCorruptIgnored(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, stateFileName), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newStore(image("a", 10, time.Hour))
	c, clk := newTestCleaner(t, s, Config{MaxSize: 100, StateDir: dir})
	syncNow(t, c)
	use(c, clk, "a")
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, stateFileName))
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil || !st.LastUse[idOf("a")].Equal(clk.Now()) {
		t.Fatalf("state file not rewritten: %s (%v)", b, err)
	}
}

func TestLastUseStore(t *testing.T) {
	fs := newStore(image("a", 10, 3*time.Hour), image("b", 10, 2*time.Hour), image("c", 10, time.Hour))
	s := luStore{fs}
	// StateDir is ignored: the store keeps last uses itself.
	dir := t.TempDir()
	cfg := Config{MaxSize: 25, LowWater: 10, StateDir: dir}
	c1, clk := newTestCleaner(t, s, cfg)
	syncNow(t, c1)
	use(c1, clk, "b")
	use(c1, clk, "a")
	if fs.sets != 0 {
		t.Fatal("Use wrote to the store: it must not do I/O")
	}
	aUse := findInfo(t, c1, "a").LastUsed
	if err := c1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if fs.sets != 2 || !fs.lastUse[idOf("a")].Equal(aUse) {
		t.Fatalf("store last uses %v after %d writes", fs.lastUse, fs.sets)
	}
	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Fatalf("state file written although the store keeps last uses: %v", files)
	}

	c2, clk2 := newTestCleaner(t, s, cfg)
	clk2.Advance(time.Minute)
	rep := clean(t, c2)
	if !slices.Equal(ids(rep.Removed), names("c", "b")) {
		t.Fatalf("after restart removed %v, want c (never used) then b", ids(rep.Removed))
	}
}

func TestNewErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		opts []Option
	}{
		{"zero budget", Config{}, nil},
		{"low water above budget", Config{MaxSize: 10, LowWater: 11}, nil},
		{"negative resync", Config{MaxSize: 10, ResyncInterval: -time.Second}, nil},
		{"uppercase exempt", Config{MaxSize: 10, Exempt: []string{"BusyBox"}}, nil},
		{"exempt with a space", Config{MaxSize: 10, Exempt: []string{"busy box"}}, nil},
		{"short id", Config{MaxSize: 10, Exempt: []string{"sha256:1234"}}, nil},
		{"bad digest reference", Config{MaxSize: 10, Exempt: []string{"busybox@sha256:xyz"}}, nil},
		{"state folder is a file", Config{MaxSize: 10, StateDir: file}, nil},
		{"backoff without retries", Config{MaxSize: 10}, []Option{WithRemoveBackOff(drivers.BackOffConfig{})}},
		{"spinning backoff", Config{MaxSize: 10}, []Option{WithRemoveBackOff(drivers.BackOffConfig{MaxRetries: 3, MaxDelay: 10})}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(newStore(), tt.cfg, tt.opts...)
			if !errors.Is(err, drivers.ErrInvalidConfig) {
				t.Fatalf("New: %v, want ErrInvalidConfig", err)
			}
			if c != nil {
				t.Fatal("cleaner returned with an error")
			}
			t.Log(err)
		})
	}
	if _, err := New(nil, Config{MaxSize: 1}); !errors.Is(err, drivers.ErrInvalidConfig) {
		t.Fatalf("nil store: %v", err)
	}
}

func TestStartErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("exempt set over budget", func(t *testing.T) {
		s := newStore(image("pool", 100, time.Hour), image("x", 10, time.Hour))
		c, _ := newTestCleaner(t, s, Config{MaxSize: 50, Exempt: []string{"pool"}})
		err := c.Start(ctx)
		if !errors.Is(err, drivers.ErrInvalidConfig) || !strings.Contains(err.Error(), "exempt") {
			t.Fatalf("Start: %v, want an exempt-set error wrapping ErrInvalidConfig", err)
		}
		if len(s.removes) != 0 {
			t.Fatal("removed images although the settings are refused")
		}
	})
	t.Run("store unavailable", func(t *testing.T) {
		s := newStore()
		s.listErr = fmt.Errorf("dial: %w", drivers.ErrDaemonUnavailable)
		c, _ := newTestCleaner(t, s, Config{MaxSize: 50})
		if err := c.Start(ctx); !errors.Is(err, drivers.ErrDaemonUnavailable) {
			t.Fatalf("Start: %v", err)
		}
		s.listErr = nil
		if err := c.Start(ctx); err != nil {
			t.Fatalf("Start after the daemon came back: %v", err)
		}
	})
	t.Run("twice, and after close", func(t *testing.T) {
		c, _ := newTestCleaner(t, newStore(), Config{MaxSize: 50})
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx); err == nil {
			t.Fatal("second Start accepted")
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		c2, _ := newTestCleaner(t, newStore(), Config{MaxSize: 50})
		_ = c2.Close()
		if err := c2.Start(ctx); !errors.Is(err, drivers.ErrClosed) {
			t.Fatalf("Start after Close: %v", err)
		}
	})
}

// waitFor polls cond for up to five seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLoopKickRateLimitedAndEvicts(t *testing.T) {
	s := newStore(image("a", 10, 2*time.Hour), image("b", 10, time.Hour))
	c, clk := newTestCleaner(t, s, Config{MaxSize: 25, LowWater: 20, MinInterval: time.Second, ResyncInterval: time.Hour})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk.BlockUntil(1) // asleep until the resync
	lists := s.listCount()

	// A pull brings c: the store is over budget. Kicks coalesce and wait
	// for MinInterval since the last pass.
	s.add(image("c", 10, 0))
	for i := 0; i < 50; i++ {
		c.Kick()
	}
	time.Sleep(20 * time.Millisecond)
	if got := s.listCount(); got != lists {
		t.Fatalf("%d passes before MinInterval passed", got-lists)
	}
	clk.Advance(time.Second)
	waitFor(t, "the kicked pass to evict a", func() bool { return !s.has(idOf("a")) })
	clk.BlockUntil(1)
	if got := s.listCount(); got != lists+1 {
		t.Fatalf("50 kicks made %d passes, want 1", got-lists)
	}
	if s.has(idOf("b")) != true || len(s.removes) != 1 {
		t.Fatalf("removals %v, want only a", s.removes)
	}

	// The periodic resync picks up an external change.
	s.add(image("d", 10, 0))
	clk.Advance(time.Hour)
	waitFor(t, "the resync to evict b", func() bool { return !s.has(idOf("b")) })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, c)
}

func TestLoopRetriesWithBackoff(t *testing.T) {
	s := newStore(image("a", 100, time.Hour))
	s.setRemoveErr(func(string) error { return errors.New("refused") })
	c, clk := newTestCleaner(t, s, Config{MaxSize: 50, MinInterval: 100 * time.Millisecond, ResyncInterval: time.Hour})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	const step, span = 100 * time.Millisecond, 10 * time.Minute
	for elapsed := time.Duration(0); elapsed < span; elapsed += step {
		clk.BlockUntil(1)
		clk.Advance(step)
	}
	clk.BlockUntil(1)
	attempts, lists := s.removeAttempts(idOf("a")), s.listCount()
	if attempts < 4 || attempts > 16 {
		t.Fatalf("%d removal attempts in %v of fake time", attempts, span)
	}
	if lists > attempts+2 {
		t.Fatalf("%d passes for %d retries: the loop woke without cause", lists, attempts)
	}
	t.Logf("%d attempts, %d lists in %v", attempts, lists, span)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestLoopListFailureBacksOff(t *testing.T) {
	s := newStore()
	c, clk := newTestCleaner(t, s, Config{MaxSize: 50, MinInterval: 100 * time.Millisecond, ResyncInterval: time.Minute})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.listErr = fmt.Errorf("dial: %w", drivers.ErrDaemonUnavailable)
	s.mu.Unlock()
	const step, span = 100 * time.Millisecond, 10 * time.Minute
	for elapsed := time.Duration(0); elapsed < span; elapsed += step {
		clk.BlockUntil(1)
		clk.Advance(step)
	}
	clk.BlockUntil(1)
	// Backoff from 100ms up to the resync interval: a few dozen lists,
	// not one per 100ms step.
	if got := s.listCount(); got < 10 || got > 40 {
		t.Fatalf("%d lists in %v with the daemon down", got, span)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCloseWaitsForTheJob(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	s := newStore(image("a", 10, time.Hour))
	c, err := New(s, Config{MaxSize: 50, MinInterval: time.Millisecond, ResyncInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a few passes", func() bool { return s.listCount() > 3 })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	n := s.listCount()
	time.Sleep(10 * time.Millisecond)
	if s.listCount() != n {
		t.Fatal("the job listed the store after Close returned")
	}
}

func TestConcurrentUseReleaseEvict(t *testing.T) {
	s := newStore()
	const nimg = 40
	refs := make([]string, 0, nimg+5)
	for i := 0; i < nimg; i++ {
		name := fmt.Sprintf("img%02d", i)
		s.add(image(name, 10, time.Duration(i)*time.Minute))
		refs = append(refs, name)
	}
	for i := 0; i < 5; i++ {
		refs = append(refs, fmt.Sprintf("notyet%d", i)) // pulled later
	}
	s.setRemoveErr(func(id string) error {
		if id[len(id)-1]%5 == 0 {
			return errors.New("flaky daemon")
		}
		return nil
	})
	c, err := New(s, Config{MaxSize: 200, LowWater: 150, MinInterval: time.Millisecond, ResyncInterval: 2 * time.Millisecond},
		WithRemoveBackOff(drivers.BackOffConfig{MaxRetries: 100, Interval: 1, MinDelay: 1, MaxDelay: 5}))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 1))
			var held []func()
			for i := 0; i < 2000; i++ {
				if len(held) > 0 && r.IntN(2) == 0 {
					k := r.IntN(len(held))
					held[k]()
					held[k]() // idempotent, even concurrently with others
					held = slices.Delete(held, k, k+1)
					continue
				}
				held = append(held, c.Use(refs[r.IntN(len(refs))]))
				if i%100 == 0 {
					c.Kick()
				}
			}
			for _, rel := range held {
				rel()
			}
		}(uint64(g))
	}
	wg.Add(1)
	go func() { // the outside world: pulls, external removals, snapshots
		defer wg.Done()
		r := rand.New(rand.NewPCG(99, 2))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := refs[r.IntN(len(refs))]
			if r.IntN(3) == 0 {
				s.del(idOf(name))
			} else {
				s.add(image(name, 10, 0))
			}
			c.Kick()
			if i%10 == 0 {
				_ = c.Snapshot()
				checkInvariants(t, c)
			}
			if _, err := c.CleanOnce(context.Background()); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, c)
	s.mu.Lock()
	t.Logf("%d removal attempts, %d lists", len(s.removes), s.lists)
	if len(s.removes) == 0 {
		t.Error("no eviction happened: the test exercised nothing")
	}
	s.mu.Unlock()
	snap := c.Snapshot()
	for _, in := range snap.Images {
		if in.Uses != 0 {
			t.Errorf("image %s still has %d uses after every release", in.ID, in.Uses)
		}
	}
	if len(snap.Pending) != 0 || len(c.users) != 0 {
		t.Errorf("holders left after every release: %+v", snap.Pending)
	}
}

func TestLoopPersistsLastUses(t *testing.T) {
	dir := t.TempDir()
	s := newStore(image("a", 10, time.Hour))
	c, clk := newTestCleaner(t, s, Config{MaxSize: 100, StateDir: dir, ResyncInterval: time.Minute})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk.BlockUntil(1)
	path := filepath.Join(dir, stateFileName)
	readA := func() time.Time {
		b, err := os.ReadFile(path)
		if err != nil {
			return time.Time{}
		}
		var st stateFile
		_ = json.Unmarshal(b, &st)
		return st.LastUse[idOf("a")]
	}
	use(c, clk, "a")
	want := clk.Now()
	clk.BlockUntil(1)
	clk.Advance(time.Minute) // the resync, more than the persist interval after the last write
	waitFor(t, "the state file to hold the use", func() bool { return readA().Equal(want) })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// flakyLUStore fails SetLastUse while fail is set.
type flakyLUStore struct {
	luStore
	fail bool
}

func (s *flakyLUStore) SetLastUse(ctx context.Context, id string, t time.Time) error {
	if s.fail {
		return errors.New("label update refused")
	}
	return s.luStore.SetLastUse(ctx, id, t)
}

func TestLastUseStoreFailureKeptForNextWrite(t *testing.T) {
	fs := newStore(image("a", 10, time.Hour))
	s := &flakyLUStore{luStore: luStore{fs}, fail: true}
	c, clk := newTestCleaner(t, s, Config{MaxSize: 100})
	syncNow(t, c)
	use(c, clk, "a")
	if err := c.persist(context.Background(), false); err == nil {
		t.Fatal("a failed write reported no error")
	}
	s.fail = false
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !fs.lastUse[idOf("a")].Equal(clk.Now()) {
		t.Fatalf("the use that failed to persist was dropped: %v", fs.lastUse)
	}
}

func TestLogsFailedRemoval(t *testing.T) {
	logger, hook := logtest.NewNullLogger()
	s := newStore(image("a", 10, time.Hour))
	s.setRemoveErr(func(string) error { return errors.New("refused") })
	c, _ := newTestCleaner(t, s, Config{MaxSize: 5, Driver: "docker"}, WithLogger(logrus.NewEntry(logger)))
	rep := clean(t, c)
	t.Log(rep)
	if !strings.Contains(rep.String(), "0 images, 1 failed") {
		t.Errorf("report reads %q", rep)
	}
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel && e.Data["image"] == idOf("a") && e.Data["driver"] == "docker" && e.Data[logrus.ErrorKey] != nil {
			return
		}
	}
	t.Fatalf("no warning naming the image, driver and error among %d entries", len(hook.AllEntries()))
}
