package containerd

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/leases"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/fnrun/fnrun/drivers"
)

// collectGarbage makes the daemon run its garbage collector now: deleting
// a lease synchronously waits for a collection.
func collectGarbage(t *testing.T, in *inspector) {
	t.Helper()
	ctx := in.ctx(context.Background())
	ls := in.client.LeasesService()
	l, err := ls.Create(ctx, leases.WithRandomID())
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.Delete(ctx, l, leases.SynchronousDelete); err != nil {
		t.Fatal(err)
	}
}

// TestLeaseHoldsContent: what is written under the driver's lease survives
// a garbage collection while the lease lives and goes with it; the lease
// carries our labels and an expiry, so a crash cannot leave it forever.
func TestLeaseHoldsContent(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	d := newTestDriver(t, env, drivers.Config{}, WithLeaseExpiry(10*time.Minute))
	ctx := d.d.nsCtx(context.Background())

	lctx, release, err := d.d.withLease(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	ls, err := in.fnrunLeases(ctx, d.Settings().Tag)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].Labels[LabelLease] != "test" || ls[0].Labels[LabelInstance] != d.Settings().Instance {
		t.Fatalf("leases %+v, want one labelled lease", ls)
	}
	exp, err := time.Parse(time.RFC3339, ls[0].Labels["containerd.io/gc.expire"])
	if err != nil || exp.Before(time.Now()) || exp.After(time.Now().Add(11*time.Minute)) {
		t.Fatalf("lease expiry %q (%v), want about 10 minutes from now", ls[0].Labels["containerd.io/gc.expire"], err)
	}

	data := []byte("fnrun lease test " + randomID())
	desc := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(data), Size: int64(len(data))}
	cs := d.Client().ContentStore()
	if err := content.WriteBlob(lctx, cs, "fnrun-lease-test-"+randomID(), bytes.NewReader(data), desc); err != nil {
		t.Fatal(err)
	}
	collectGarbage(t, in)
	if _, err := cs.Info(ctx, desc.Digest); err != nil {
		t.Fatalf("content written under the lease was collected while it lived: %v", err)
	}
	release(true)
	if _, err := cs.Info(ctx, desc.Digest); !errdefs.IsNotFound(err) {
		t.Fatalf("content only the lease held: %v after release, want collected", err)
	}
	if ls, _ := in.fnrunLeases(ctx, d.Settings().Tag); len(ls) != 0 {
		t.Fatalf("leases after release: %+v", ls)
	}
}

// TestNoLeaseOutlivesAnOperation: a pull holds a lease while it runs, and
// no lease of ours remains after the pull, nor after a cookie's whole life.
func TestNoLeaseOutlivesAnOperation(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	proxy := newRegistryProxy(t, env.registry, func(p *registryProxy) { p.delay = 200 * time.Millisecond })
	d := newTestDriver(t, env, drivers.Config{})
	tag := d.Settings().Tag
	ref := proxy.host + "/fnrun/busybox:latest"
	removeImageAfter(t, d, ref)
	ctx := context.Background()

	c, err := d.CreateCookie(ctx, pullTask(ref, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	pulled := make(chan error, 1)
	go func() { pulled <- c.PullImage(ctx) }()
	sawPullLease := false
	for !sawPullLease {
		select {
		case err := <-pulled:
			t.Fatalf("pull ended (%v) before its lease was seen", err)
		default:
		}
		ls, err := in.fnrunLeases(ctx, tag)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			sawPullLease = sawPullLease || l.Labels[LabelLease] == "pull"
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := <-pulled; err != nil {
		t.Fatal(err)
	}
	if ls, _ := in.fnrunLeases(ctx, tag); len(ls) != 0 {
		t.Fatalf("leases after the pull: %+v", ls)
	}

	var out syncBuf
	runTask(t, d, &drivers.Task{ID: "fnrun-lease-" + randomID(), ImageRef: ref, Cmd: "echo ok", Stdout: &out}, drivers.StatusSuccess)
	if ls, _ := in.fnrunLeases(ctx, tag); len(ls) != 0 {
		t.Fatalf("leases after a cookie's life: %+v", ls)
	}
	if left, _ := in.leftovers(ctx, tag); len(left) != 0 {
		t.Fatalf("leftovers after close: %v", left)
	}
}

// TestJanitorDeletesALeaseMadeLate: a lease whose delete the daemon did
// not answer is handed to the janitor, and the daemon may serve the
// create only after the janitor's first "not found" (a stopped daemon
// resumes and runs both requests in any order). The janitor still deletes
// it once it appears.
func TestJanitorDeletesALeaseMadeLate(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	d := newTestDriver(t, env, drivers.Config{})
	ctx := d.d.nsCtx(context.Background())
	tag := d.Settings().Tag

	// The late create must land between the janitor's two "not found"
	// answers: 3 s apart here, however slowly a loaded daemon creates.
	j := d.d.janitor
	j.minDelay.Store(int64(3 * time.Second))
	id := "fnrun-test-" + randomID()
	j.deleteLeaseLater(id)
	for first := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		j.mu.Lock()
		seen := j.leases[id]
		j.mu.Unlock()
		if seen == 1 {
			break // the first sweep answered "not found"
		}
		if time.Now().After(first) {
			t.Fatal("the janitor never tried the lease")
		}
	}
	labels := d.Labels()
	if _, err := d.Client().LeasesService().Create(ctx, leases.WithID(id), leases.WithLabels(labels)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ls, err := in.fnrunLeases(ctx, tag)
		if err != nil {
			t.Fatal(err)
		}
		if len(ls) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leases 10s after the late create: %+v", ls)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if left := d.d.janitor.pending(); len(left) != 0 {
		t.Fatalf("janitor still holds %v", left)
	}
}
