package netns

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCreateRemove pins a namespace, sees it as pinned, and removes it;
// removing it again is no error. It needs root (unshare, mount).
func TestCreateRemove(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs as root; network namespaces need it")
		}
		t.Skip("needs root")
	}
	path := filepath.Join(t.TempDir(), "ns")
	if err := Create(path); err != nil {
		t.Fatal(err)
	}
	if !IsPinned(path) {
		t.Fatalf("%s is not a pinned namespace after Create", path)
	}
	if err := Create(path); err == nil {
		t.Fatal("Create over an existing path succeeded")
	}
	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	if IsPinned(path) {
		t.Fatal("still pinned after Remove")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("file left after Remove: %v", err)
	}
	if err := Remove(path); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
}
