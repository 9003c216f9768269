package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/stats"
)

// sampleStats streams the daemon's samples of the container (one a second)
// to the task until ctx ends, once the container has run for the stats
// delay. A failure only costs samples: it is logged, never returned, since
// stats must not change how a run ends.
func (d *daemon) sampleStats(ctx context.Context, c *container, write func(stats.Stat)) {
	if delay := d.o.statsDelay; delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	var resp *http.Response
	err := d.doWithin(ctx, "stats", fmt.Sprintf("container %q", c.ID()), kindContainer, 0, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.api.baseURL+"/containers/"+c.ID()+"/stats?stream=1", nil)
		if err != nil {
			return err
		}
		resp, err = d.api.http.Do(req)
		if err != nil {
			return err
		}
		if resp.StatusCode >= http.StatusBadRequest {
			defer resp.Body.Close()
			return readAPIError(resp)
		}
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			d.log.WithError(err).WithField("container", c.name).Debug("no stats")
		}
		return
	}
	defer resp.Body.Close()
	v2 := d.host.cgroupVersion == "2"
	dec := json.NewDecoder(resp.Body)
	for {
		var s docker.Stats
		if err := dec.Decode(&s); err != nil {
			return // the run ended (ctx) or the container stopped
		}
		if s.Read.IsZero() {
			continue // the empty sample of a container that is not running
		}
		write(toStat(&s, v2))
	}
}

// toStat converts a daemon sample. cgroupV2 is the daemon's version, learnt
// from /info at start: memory and block I/O keys differ between versions.
func toStat(s *docker.Stats, cgroupV2 bool) stats.Stat {
	m := map[string]uint64{
		stats.MetricCPUTotal:  s.CPUStats.CPUUsage.TotalUsage,
		stats.MetricCPUUser:   s.CPUStats.CPUUsage.UsageInUsermode,
		stats.MetricCPUKernel: s.CPUStats.CPUUsage.UsageInKernelmode,
		stats.MetricMemUsage:  memoryUsage(s, cgroupV2),
		stats.MetricMemLimit:  s.MemoryStats.Limit,
		stats.MetricPids:      s.PidsStats.Current,
	}
	var rx, tx uint64
	if len(s.Networks) > 0 {
		for _, n := range s.Networks {
			rx += n.RxBytes
			tx += n.TxBytes
		}
	} else {
		rx, tx = s.Network.RxBytes, s.Network.TxBytes
	}
	m[stats.MetricNetRx], m[stats.MetricNetTx] = rx, tx
	var read, write uint64
	for _, e := range s.BlkioStats.IOServiceBytesRecursive {
		// "Read"/"Write" on cgroup v1, "read"/"write" on v2.
		switch strings.ToLower(e.Op) {
		case "read":
			read += e.Value
		case "write":
			write += e.Value
		}
	}
	m[stats.MetricDiskRead], m[stats.MetricDiskWrite] = read, write
	return stats.Stat{Timestamp: s.Read, Metrics: m}
}

// memoryUsage is the working set the way `docker stats` shows it: usage
// without the inactive page cache, which the kernel drops first
// (total_inactive_file on v1, where inactive_file leaves out the
// container's child cgroups; inactive_file on v2, which is hierarchical).
func memoryUsage(s *docker.Stats, cgroupV2 bool) uint64 {
	usage := s.MemoryStats.Usage
	inactive := s.MemoryStats.Stats.TotalInactiveFile
	if cgroupV2 {
		inactive = s.MemoryStats.Stats.InactiveFile
	}
	if inactive < usage {
		return usage - inactive
	}
	return usage
}
