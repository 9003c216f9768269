package images

import (
	"container/heap"
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// benchStore lists n images with fresh strings every time, as a driver
// decoding a daemon's answer would, so the memory the cleaner keeps is
// measured in full.
type benchStore struct {
	n int
	// reuse, once set, is answered (a shallow copy) instead of fresh
	// images, so that the resync benchmark measures the reconciliation
	// and not the fake's string formatting.
	reuse []Image
}

func (s *benchStore) List(context.Context) ([]Image, error) {
	if s.reuse != nil {
		return append([]Image(nil), s.reuse...), nil
	}
	out := make([]Image, s.n)
	for i := range out {
		name := fmt.Sprintf("localhost:5000/fn/app%05d", i)
		out[i] = Image{
			ID:         strings.Clone(idOf(name)),
			References: []string{name + ":1", name + "@sha256:" + hexOf(name+"m")},
			Size:       uint64(1+i%97) << 20,
			Created:    t0.Add(-time.Duration(i) * time.Second),
		}
	}
	return out, nil
}

func (*benchStore) Remove(context.Context, string) error { return nil }

func benchRef(i int) string { return fmt.Sprintf("localhost:5000/fn/app%05d:1", i) }

// BenchmarkCleaner measures the per-operation cost with 10,000 tracked
// images, and reports the memory the cleaner keeps per image.
func BenchmarkCleaner(b *testing.B) {
	const n = 10000
	ctx := context.Background()
	store := &benchStore{n: n}
	newCleaner := func(b *testing.B) (*Cleaner, float64) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c, err := New(store, Config{MaxSize: 1 << 62, Driver: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		c.passMu.Lock()
		err = c.sync(ctx)
		c.passMu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(c)
		if len(c.byID) != n || c.idle.Len() != n {
			b.Fatalf("tracking %d images, %d candidates", len(c.byID), c.idle.Len())
		}
		return c, float64(after.HeapAlloc-before.HeapAlloc) / n
	}
	refs := make([]string, n)
	for i := range refs {
		refs[i] = benchRef(i)
	}

	b.Run("use-release", func(b *testing.B) {
		// An idle image becomes busy (leaves the candidate heap) and idle
		// again (back in as the most recent).
		c, perImage := newCleaner(b)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c.Use(refs[(i*7919)%n])()
		}
		b.StopTimer()
		b.ReportMetric(perImage, "bytes/image")
		c.Close()
	})
	b.Run("touch", func(b *testing.B) {
		// Another use of an image already busy: counting and last use
		// only.
		c, perImage := newCleaner(b)
		held := c.Use(refs[0])
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c.Use(refs[0])()
		}
		b.StopTimer()
		held()
		b.ReportMetric(perImage, "bytes/image")
		c.Close()
	})
	b.Run("choose-eviction", func(b *testing.B) {
		// Pick the least recently used candidate and take it out of the
		// heap, as evict does; put it back as just used to keep n tracked.
		c, perImage := newCleaner(b)
		now := t0.Add(time.Hour)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c.mu.Lock()
			e := heap.Pop(&c.idle).(*entry)
			now = now.Add(time.Millisecond)
			e.lastUse = now
			c.seq++
			e.seq = c.seq
			heap.Push(&c.idle, e)
			c.mu.Unlock()
		}
		b.StopTimer()
		b.ReportMetric(perImage, "bytes/image")
		c.Close()
	})
	b.Run("resync", func(b *testing.B) {
		// A periodic resync of an unchanged store: one List answer
		// reconciled (the List itself is the fake's).
		c, perImage := newCleaner(b)
		store.reuse, _ = store.List(ctx)
		defer func() { store.reuse = nil }()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c.passMu.Lock()
			if err := c.sync(ctx); err != nil {
				b.Fatal(err)
			}
			c.passMu.Unlock()
		}
		b.StopTimer()
		b.ReportMetric(perImage, "bytes/image")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/image")
		c.Close()
	})
}
