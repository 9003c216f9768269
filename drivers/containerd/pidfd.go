package containerd

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// initProcess is the first process of a started task, held by a pidfd so
// that Remove can make sure it has ended whatever became of its shim: a
// shim that dies leaves its container running until containerd's clean-up
// after it (some 150 ms here), and Close must not return before the
// container has ended. A pidfd cannot name another process later.
type initProcess struct{ fd int }

// initExitTimeout bounds the wait for a killed first process to end.
const initExitTimeout = 2 * time.Second

// holdInit holds process pid, the first process of container id, or
// returns nil when it cannot: a kernel before 5.3, or a pid that is not
// that process here (a driver in another PID namespace than the daemon's
// sees another process, or none, under the daemon's pid). Once the pidfd is
// open, the process it names is checked to be in a cgroup of the container,
// then to be still alive: the pid cannot have changed hands in between.
func holdInit(pid uint32, id string) *initProcess {
	fd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		return nil
	}
	p := &initProcess{fd: fd}
	cgroups, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/cgroup")
	inContainer := err == nil && slices.ContainsFunc(strings.Split(string(cgroups), "\n"), func(line string) bool {
		return strings.HasSuffix(line, "/"+id)
	})
	if !inContainer || unix.PidfdSendSignal(fd, 0, nil, 0) != nil {
		p.release()
		return nil
	}
	return p
}

// release lets go of the process; nil holds none.
func (p *initProcess) release() {
	if p != nil {
		_ = unix.Close(p.fd)
	}
}

// end kills the process if it still runs, waits until it has ended, and
// lets go of it.
func (p *initProcess) end() error {
	defer p.release()
	if ended(p.fd, 0) {
		return nil
	}
	if err := unix.PidfdSendSignal(p.fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill the container's first process: %w", err)
	}
	if !ended(p.fd, initExitTimeout) {
		return fmt.Errorf("the container's first process runs %v after SIGKILL", initExitTimeout)
	}
	return nil
}

// ended reports whether the process of pidfd fd has ended within timeout.
func ended(fd int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(max(time.Until(deadline), 0).Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && n > 0
	}
}
