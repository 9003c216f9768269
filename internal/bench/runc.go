package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/oci"
	"github.com/opencontainers/image-spec/identity"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	fncd "github.com/fnrun/fnrun/drivers/containerd"
)

// Runc is the client of the floor rows: runc itself, as containerd's shim
// runs it.
const Runc = "runc"

// RuncDir holds the runc floor's state, root filesystem and bundles.
const RuncDir = "/run/fnrun/bench/runc"

// RuncCall is the floor of a call: `runc run` of the image's root
// filesystem (copied once, read-only to every call) with the
// containerd driver's spec for `true`, less what the driver adds around the
// runtime (its /etc files; a network namespace to join: runc makes a fresh
// one with loopback only). No daemon is involved: it is what every
// driver's call costs at least.
type RuncCall struct {
	c       *Containerd
	proto   *oci.Spec
	variant Variant
	rootfs  string
}

// NewRuncCall returns the runc floor of mode; proto is the containerd
// driver's spec for `true` (see Containerd.Spec).
func NewRuncCall(c *Containerd, proto *oci.Spec, driverName, mode string) *RuncCall {
	return &RuncCall{c: c, proto: proto, variant: Variant{driverName, mode, Runc}}
}

func (t *RuncCall) Variant() Variant { return t.variant }

// Prepare copies the image's root filesystem into a folder, once, from a
// read-only view of its snapshot.
func (t *RuncCall) Prepare(ctx context.Context, _ int) error {
	if _, err := exec.LookPath("runc"); err != nil {
		return err
	}
	ctx = t.c.ctx(ctx)
	img, err := t.c.Client.GetImage(ctx, t.c.Image)
	if err != nil {
		return err
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return err
	}
	sn := t.c.Client.SnapshotService(fncd.DefaultSnapshotter)
	key := callID("runc-view")
	mounts, err := sn.View(ctx, key, identity.ChainID(diffIDs).String())
	if err != nil {
		return err
	}
	defer sn.Remove(context.WithoutCancel(ctx), key)
	view := filepath.Join(RuncDir, key)
	t.rootfs = filepath.Join(RuncDir, callID("rootfs"))
	for _, dir := range []string{view, t.rootfs} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	defer os.Remove(view)
	if err := mount.All(mounts, view); err != nil {
		return err
	}
	defer mount.UnmountAll(view, 0)
	if out, err := exec.CommandContext(ctx, "cp", "-a", view+"/.", t.rootfs).CombinedOutput(); err != nil {
		return fmt.Errorf("copy the root filesystem: %w: %s", err, out)
	}
	return nil
}

func (t *RuncCall) Call(ctx context.Context, _ int) error {
	id := callID("r")
	bundle := filepath.Join(RuncDir, "bundles", id)
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return err
	}
	defer os.RemoveAll(bundle)
	data, err := json.Marshal(t.spec(id))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "runc", "--root", filepath.Join(RuncDir, "state"), "run", "--bundle", bundle, id).CombinedOutput()
	markResult(ctx)
	if err != nil {
		return fmt.Errorf("runc run %s: %w: %s", id, err, out)
	}
	return nil
}

// spec is proto for container id (see Containerd.specFor: a new network
// namespace), on the read-only copy, without the /etc files, in a cgroup
// outside containerd's namespace.
func (t *RuncCall) spec(id string) *oci.Spec {
	spec := t.c.specFor(t.proto, id, "", "")
	spec.Root = &specs.Root{Path: t.rootfs, Readonly: true}
	spec.Mounts = nil
	for _, m := range t.proto.Mounts {
		if !isEtcFile(m.Destination) {
			spec.Mounts = append(spec.Mounts, m)
		}
	}
	spec.Linux.CgroupsPath = "/fnrun-bench-runc/" + id
	return spec
}

// Close removes the unpacked image.
func (t *RuncCall) Close(context.Context) error {
	if t.rootfs == "" {
		return nil
	}
	return os.RemoveAll(t.rootfs)
}

// resultMark is where a target notes when its call's result was known,
// when that is before the call ends (before the container is removed).
type resultMark struct{ at time.Time }

type resultMarkKey struct{}

// markResult notes that the call of ctx knows its result now.
func markResult(ctx context.Context) {
	if m, ok := ctx.Value(resultMarkKey{}).(*resultMark); ok && m.at.IsZero() {
		m.at = time.Now()
	}
}
