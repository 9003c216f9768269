package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/internal/statconv"
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
	var body io.ReadCloser
	err := d.doWithin(ctx, "stats", fmt.Sprintf("container %q", c.ID()), kindContainer, 0, func(ctx context.Context) error {
		var err error
		body, err = d.conn.Stream(ctx, http.MethodGet, "/containers/"+c.ID()+"/stats?stream=1")
		return err
	})
	if err != nil {
		if ctx.Err() == nil {
			d.log.WithError(err).WithField("container", c.name).Debug("no stats")
		}
		return
	}
	defer body.Close()
	v2 := d.host.cgroupVersion == "2"
	dec := json.NewDecoder(body)
	for {
		var s docker.Stats
		if err := dec.Decode(&s); err != nil {
			return // the run ended (ctx) or the container stopped
		}
		if s.Read.IsZero() {
			continue // the empty sample of a container that is not running
		}
		write(statconv.FromDocker(&s, v2))
	}
}
