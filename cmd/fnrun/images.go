package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/lifecycle"
	"github.com/fnrun/fnrun/images"
)

const imagesAbout = `Lists the images of a driver's store, least recently used first (the
order in which idle images are evicted), with their size (bytes only that
image holds), shared bytes, last use, whether they are busy (held by a
call, or used by a container) and exempt from cleaning.

The figures come from the driver's running image cleaner when it has one
(image_clean_max_size in the config), otherwise from a one-shot listing of
its store. Needs a driver that implements images.Provider.

  fnrun images clean --help   cleans the store down to a size budget`

const listBudget = 1 << 62 // budget of a listing-only cleaner: nothing is ever over it

func (a *app) cmdImages(ctx context.Context, args []string) int {
	if len(args) > 0 && args[0] == "clean" {
		return a.cmdImagesClean(ctx, args[1:])
	}
	fs := newFlagSet("images", "[--driver NAME]", imagesAbout)
	var sel driverSelection
	addDriverFlag(fs, &sel, false)
	var exempt stringList
	fs.Var(&exempt, "exempt", "show `REF` as exempt, on top of image_clean_exempt_tags (repeatable)")
	cf := addConfigFlags(fs)
	if done, code := fs.parse(a, args, exitUsage); done {
		return code
	}
	if fs.NArg() > 0 {
		return fs.usageError(a, exitUsage, "unexpected argument %q (did you mean 'fnrun images clean'?)", fs.Arg(0))
	}
	if err := checkDriverName(sel.name); err != nil {
		return fs.usageError(a, exitUsage, "%v", err)
	}
	cfg, log, err := a.loadConfig(cf)
	if err != nil {
		a.errorf("images: %v", err)
		return exitFailure
	}
	drv, prov, err := openProvider(ctx, sel.name, cfg, log)
	if err != nil {
		a.errorf("images: %v", err)
		return exitFailure
	}
	defer drv.Close()

	var snap images.Snapshot
	if c, ok := prov.ImageCleaner(); ok {
		snap = c.Snapshot()
	} else {
		ccfg, err := cleanerConfig(sel.name, cfg, listBudget, exempt)
		var c *images.Cleaner
		if err == nil {
			c, err = images.New(prov.ImageStore(), ccfg, images.WithLogger(log))
		}
		if err == nil {
			// A dry run lists the store and removes nothing.
			_, err = c.CleanOnce(ctx, images.DryRun())
			snap = c.Snapshot()
			_ = c.Close()
		}
		if err != nil {
			a.errorf("images: %s: %v", sel.name, err)
			return exitFailure
		}
		snap.Budget, snap.LowWater = 0, 0
	}
	writeImages(a.stdout, snap, time.Now())
	return exitOK
}

// openProvider opens the driver and finds its images.Provider.
func openProvider(ctx context.Context, name string, cfg drivers.Config, log logEntry) (drivers.Driver, images.Provider, error) {
	drv, err := openDriver(ctx, name, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	prov, ok := drv.(images.Provider)
	if !ok {
		drv.Close()
		return nil, nil, fmt.Errorf("the %s driver gives no access to its image store (it does not implement images.Provider)", name)
	}
	return drv, prov, nil
}

// cleanerConfig is the cleaner configuration of driver name: the driver's
// (exempt images, the pool's image, the state folder) with budget and the
// extra exempt references.
func cleanerConfig(name string, cfg drivers.Config, budget uint64, exempt []string) (images.Config, error) {
	cfg.ImageCleanMaxSize = budget
	s, err := lifecycle.Configure(name, cfg, nil)
	if err != nil {
		return images.Config{}, err
	}
	ccfg := *s.Cleaner
	ccfg.Exempt = append(ccfg.Exempt, exempt...)
	return ccfg, nil
}

func writeImages(w io.Writer, snap images.Snapshot, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tID\tSIZE\tSHARED\tLAST USE\tBUSY\tEXEMPT")
	for _, im := range snap.Images {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", imageName(im), shortID(im.ID), formatSize(im.Size), formatSize(im.SharedSize),
			lastUse(now, im.LastUsed), busy(im), yesNo(im.Exempt))
	}
	for _, p := range snap.Pending {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Ref, "(pulling)", "-", "-", "-", fmt.Sprintf("yes (%d)", p.Uses), "-")
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\n%d image(s), %s tracked (busy %s, idle %s, shared %s)", len(snap.Images), formatSize(snap.TrackedBytes),
		formatSize(snap.BusyBytes), formatSize(snap.IdleBytes), formatSize(snap.SharedBytes))
	if snap.Budget > 0 {
		fmt.Fprintf(w, "; budget %s, low water %s", formatSize(snap.Budget), formatSize(snap.LowWater))
	}
	fmt.Fprintln(w)
}

func imageName(im images.ImageInfo) string {
	if len(im.References) == 0 {
		return "<none>"
	}
	// Prefer a tag to a digest reference: it is what people type.
	best := im.References[0]
	for _, r := range im.References {
		if !strings.Contains(r, "@") {
			best = r
			break
		}
	}
	if n := len(im.References); n > 1 {
		return fmt.Sprintf("%s (+%d)", best, n-1)
	}
	return best
}

func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func lastUse(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return formatAge(now, t) + " ago"
}

func busy(im images.ImageInfo) string {
	var parts []string
	if im.Uses > 0 {
		parts = append(parts, fmt.Sprintf("%d call(s)", im.Uses))
	}
	if im.InUse {
		parts = append(parts, "container")
	}
	if im.Removing {
		parts = append(parts, "removing")
	}
	if len(parts) == 0 {
		return "-"
	}
	return "yes: " + strings.Join(parts, ", ")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "-"
}

const imagesCleanAbout = `Removes idle images, least recently used first, until the store is at
most at the low-water mark (90% of --max-size by default) once it is over
--max-size. Never removes an image a container uses, an exempt image
(--exempt, image_clean_exempt_tags, the pool's image) or one being pulled.

With --dry-run, prints what would be removed and removes nothing. With
--watch, runs a pass every INTERVAL until SIGINT or SIGTERM (the image
cleanup job as a background process), printing each pass that removes
something or fails.`

func (a *app) cmdImagesClean(ctx context.Context, args []string) int {
	fs := newFlagSet("images clean", "--max-size SIZE [--dry-run] [--exempt REF]... [--watch INTERVAL]", imagesCleanAbout)
	var sel driverSelection
	addDriverFlag(fs, &sel, false)
	var maxSize, lowWater sizeFlag
	var exempt stringList
	fs.Var(&maxSize, "max-size", "byte budget of the image store, `SIZE` such as 500m or 10g (default image_clean_max_size of the config)")
	fs.Var(&lowWater, "low-water", "`SIZE` a pass brings the store down to (default 90% of --max-size)")
	fs.Var(&exempt, "exempt", "never remove `REF` (repeatable)")
	dryRun := fs.Bool("dry-run", false, "print what would be removed; remove nothing")
	watch := fs.Duration("watch", 0, "run a pass every `INTERVAL` (such as 1m) until interrupted")
	cf := addConfigFlags(fs)
	if done, code := fs.parse(a, args, exitUsage); done {
		return code
	}
	if fs.NArg() > 0 {
		return fs.usageError(a, exitUsage, "unexpected argument %q", fs.Arg(0))
	}
	if err := checkDriverName(sel.name); err != nil {
		return fs.usageError(a, exitUsage, "%v", err)
	}
	if *watch < 0 {
		return fs.usageError(a, exitUsage, "--watch must be positive")
	}
	cfg, log, err := a.loadConfig(cf)
	if err != nil {
		a.errorf("images clean: %v", err)
		return exitFailure
	}
	budget := cfg.ImageCleanMaxSize
	if maxSize.set {
		budget = maxSize.v
	}
	if budget == 0 {
		return fs.usageError(a, exitUsage, "--max-size is required (or image_clean_max_size in the config)")
	}
	ccfg, err := cleanerConfig(sel.name, cfg, budget, exempt)
	if err != nil {
		a.errorf("images clean: %v", err)
		return exitFailure
	}
	if lowWater.set {
		ccfg.LowWater = lowWater.v
	}

	drv, prov, err := openProvider(ctx, sel.name, cfg, log)
	if err != nil {
		a.errorf("images clean: %v", err)
		return exitFailure
	}
	defer drv.Close()
	cleaner, err := images.New(prov.ImageStore(), ccfg, images.WithLogger(log))
	if err != nil {
		a.errorf("images clean: %v", err)
		return exitFailure
	}
	defer cleaner.Close()
	var opts []images.CleanOption
	if *dryRun {
		opts = append(opts, images.DryRun())
	}

	if *watch == 0 {
		rep, err := cleaner.CleanOnce(ctx, opts...)
		if err != nil {
			a.errorf("images clean: %s: %v", sel.name, err)
			return exitFailure
		}
		writeReport(a.stdout, rep, time.Now())
		if len(rep.Failed) > 0 {
			return exitFailure
		}
		return exitOK
	}

	a.infof("images clean: a pass every %v on %s (budget %s), until interrupted", *watch, sel.name, formatSize(budget))
	t := time.NewTicker(*watch)
	defer t.Stop()
	for pass := 1; ; pass++ {
		rep, err := cleaner.CleanOnce(ctx, opts...)
		switch {
		case ctx.Err() != nil:
			return exitOK
		case errors.Is(err, drivers.ErrInvalidConfig):
			a.errorf("images clean: %s: %v", sel.name, err)
			return exitFailure
		case err != nil:
			// A passing failure (the daemon restarting): the next pass retries.
			a.errorf("images clean: pass %d: %v", pass, err)
		case pass == 1 || len(rep.Removed) > 0 || len(rep.Failed) > 0:
			fmt.Fprintf(a.stdout, "%s pass %d\n", time.Now().Format(time.RFC3339), pass)
			writeReport(a.stdout, rep, time.Now())
		}
		select {
		case <-ctx.Done():
			return exitOK
		case <-t.C:
		}
	}
}

func writeReport(w io.Writer, rep images.Report, now time.Time) {
	verb := "removed"
	if rep.DryRun {
		verb = "would remove"
	}
	if len(rep.Removed) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "%s\tID\tSIZE\tLAST USE\n", strings.ToUpper(verb))
		for _, im := range rep.Removed {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", imageName(im), shortID(im.ID), formatSize(im.Size), lastUse(now, im.LastUsed))
		}
		_ = tw.Flush()
	}
	for _, f := range rep.Failed {
		fmt.Fprintf(w, "failed to remove %s (%s): %v\n", imageName(f.Image), shortID(f.Image.ID), f.Err)
	}
	for _, id := range rep.Vanished {
		fmt.Fprintf(w, "vanished from outside: %s\n", shortID(id))
	}
	after := "after"
	if rep.DryRun {
		after = "after, estimated"
	}
	fmt.Fprintf(w, "%s %d image(s); store %s before, %s %s; budget %s, low water %s\n", verb, len(rep.Removed),
		formatSize(rep.BytesBefore), formatSize(rep.BytesAfter), after, formatSize(rep.Budget), formatSize(rep.LowWater))
}
