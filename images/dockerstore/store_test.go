package dockerstore

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
)

// TestLayerSizes checks how sizes are split without the daemon's help.
func TestLayerSizes(t *testing.T) {
	for _, c := range []struct {
		name  string
		n     int
		hist  []int64
		total int64
		want  []int64
	}{
		{"one entry per layer", 2, []int64{5, 0}, 5, []int64{5, 0}},
		{"empty entries", 2, []int64{5, 0, 7, 0}, 12, []int64{5, 7}},
		{"zero-size layer among empty entries", 3, []int64{5, 0, 7, 0}, 12, nil},
		{"sizes do not add up", 2, []int64{5, 7}, 13, nil},
	} {
		if got := layerSizes(c.n, c.hist, c.total); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	sum := sha256.Sum256([]byte("sha256:a sha256:b"))
	if c := chainIDs([]string{"sha256:a", "sha256:b"}); !slices.Equal(c, []string{"sha256:a", "sha256:" + hex.EncodeToString(sum[:])}) {
		t.Errorf("chain ids %v", c)
	}
}

// TestBuildImages: shared layers are counted as shared, an image whose
// layers are unknown reports its whole size, and the daemon's own split
// wins when it gives one.
func TestBuildImages(t *testing.T) {
	list := []apiImage{
		{ID: "a", Size: 10, SharedSize: -1},
		{ID: "b", Size: 13, SharedSize: -1},
		{ID: "c", Size: 20, SharedSize: -1, ParentID: "a"},
	}
	layers := map[string]layerInfo{
		"a": {chains: []string{"base", "a1"}, sizes: []int64{4, 6}},
		"b": {chains: []string{"base", "b1"}, sizes: []int64{4, 9}},
		"c": {chains: []string{"base", "a1", "c1"}}, // sizes unknown
	}
	got := buildImages(list, map[string]bool{"a": true}, layers, false)
	want := map[string][2]uint64{"a": {0, 10}, "b": {9, 4}, "c": {20, 0}}
	for _, im := range got {
		if w := want[im.ID]; im.Size != w[0] || im.SharedSize != w[1] {
			t.Errorf("%s: size %d shared %d, want %v", im.ID, im.Size, im.SharedSize, w)
		}
	}
	if !got[0].InUse || got[1].InUse {
		t.Errorf("in use: %v %v", got[0].InUse, got[1].InUse)
	}
	delete(layers, "b") // vanished during the listing
	if got := buildImages(list, nil, layers, false); len(got) != 2 {
		t.Errorf("%d images with one vanished, want 2", len(got))
	}
	daemon := []apiImage{{ID: "a", Size: 10, SharedSize: 4, RepoTags: []string{"<none>:<none>"}}}
	if got := buildImages(daemon, nil, nil, true); got[0].Size != 6 || got[0].SharedSize != 4 || len(got[0].References) != 0 {
		t.Errorf("daemon split: %+v", got[0])
	}
}

func TestExtraReferences(t *testing.T) {
	for _, c := range []struct {
		refs []string
		want []string
	}{
		{nil, nil},
		{[]string{"a:1"}, nil},
		{[]string{"a:1", "a@sha256:" + strings.Repeat("1", 64)}, nil},
		{[]string{"b:1", "a:1"}, []string{"b:1"}},
		{[]string{"a:2", "a:1", "a@sha256:" + strings.Repeat("1", 64), "b@sha256:" + strings.Repeat("2", 64)},
			[]string{"a:2", "b@sha256:" + strings.Repeat("2", 64)}},
	} {
		if got := extraReferences(c.refs); !slices.Equal(got, c.want) {
			t.Errorf("extraReferences(%v) = %v, want %v", c.refs, got, c.want)
		}
	}
}
