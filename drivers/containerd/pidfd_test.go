package containerd

import (
	"os"
	"testing"
)

// TestHoldInitChecksTheCgroup: a pid is held only when its process is in a
// cgroup of the container named, which a pid of another PID namespace's
// process would not be. (TestShims holds real containers' first processes.)
func TestHoldInitChecksTheCgroup(t *testing.T) {
	if p := holdInit(uint32(os.Getpid()), "fnrun-no-such-container"); p != nil {
		p.release()
		t.Fatal("held a process outside the container's cgroup")
	}
}
