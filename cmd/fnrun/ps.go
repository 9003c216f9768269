package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fnrun/fnrun/drivers"
)

const psAbout = `Lists the containers fnrun manages: those carrying fnrun's labels and
the label tag (default fnrun-cli, see --label-tag), call containers and
pool holders alike, with their state (starting, running, paused, exited,
unknown), role and age. Needs a driver that implements
drivers.ContainerLister.`

func (a *app) cmdPs(ctx context.Context, args []string) int {
	fs := newFlagSet("ps", "[--driver NAME | --all] [--quiet]", psAbout)
	var sel driverSelection
	addDriverFlag(fs, &sel, true)
	quiet := fs.Bool("quiet", false, "print the container ids only")
	noTrunc := fs.Bool("no-trunc", false, "print whole container ids (docker's are 64 hex digits; 12 are shown by default)")
	fs.alias("q", "quiet")
	cf := addConfigFlags(fs)
	if done, code := fs.parse(a, args, exitUsage); done {
		return code
	}
	if fs.NArg() > 0 {
		return fs.usageError(a, exitUsage, "unexpected argument %q", fs.Arg(0))
	}
	names, err := sel.resolve(fs)
	if err != nil {
		return fs.usageError(a, exitUsage, "%v", err)
	}
	cfg, log, err := a.loadConfig(cf)
	if err != nil {
		a.errorf("ps: %v", err)
		return exitFailure
	}

	type row struct {
		driver string
		info   drivers.ContainerInfo
	}
	var rows []row
	failed := false
	for _, name := range names {
		list, err := listContainers(ctx, name, cfg, log)
		if err != nil {
			a.errorf("ps: %v", err)
			failed = true
			continue
		}
		for _, c := range list {
			rows = append(rows, row{name, c})
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].info.Created.After(rows[j].info.Created) })
	id := func(s string) string {
		if *noTrunc {
			return s
		}
		return truncID(s)
	}
	if *quiet {
		for _, r := range rows {
			fmt.Fprintln(a.stdout, id(r.info.ID))
		}
	} else {
		tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "DRIVER\tID\tIMAGE\tSTATE\tROLE\tAGE\tINSTANCE")
		now := time.Now()
		for _, r := range rows {
			c := r.info
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.driver, id(c.ID), orDash(c.Image), orDash(c.State),
				orDash(c.Role), formatAge(now, c.Created), orDash(c.Instance))
		}
		_ = tw.Flush()
	}
	if failed {
		return exitFailure
	}
	return exitOK
}

// truncID shortens a 64-hex-digit id to 12 digits, as docker ps does;
// other ids (containerd's are the names fnrun gave) are kept whole.
func truncID(id string) string {
	if len(id) == 64 && strings.Trim(id, "0123456789abcdef") == "" {
		return id[:12]
	}
	return id
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// withLister opens the driver name and runs f with its ContainerLister.
func withLister(ctx context.Context, name string, cfg drivers.Config, log logEntry, f func(drivers.ContainerLister) error) error {
	drv, err := openDriver(ctx, name, cfg, log)
	if err != nil {
		return err
	}
	defer drv.Close()
	l, ok := drv.(drivers.ContainerLister)
	if !ok {
		return fmt.Errorf("the %s driver cannot list its containers (it does not implement drivers.ContainerLister)", name)
	}
	return f(l)
}

func listContainers(ctx context.Context, name string, cfg drivers.Config, log logEntry) ([]drivers.ContainerInfo, error) {
	var out []drivers.ContainerInfo
	err := withLister(ctx, name, cfg, log, func(l drivers.ContainerLister) error {
		var err error
		out, err = l.Containers(ctx)
		if err != nil {
			return fmt.Errorf("%s: listing containers: %w", name, err)
		}
		return nil
	})
	return out, err
}

const killAbout = `Ends and removes containers fnrun manages (see fnrun ps). An ID may be
a unique prefix of a container id. Without --driver, every driver with a
daemon is searched. Containers without fnrun's labels are never touched.`

func (a *app) cmdKill(ctx context.Context, args []string) int {
	fs := newFlagSet("kill", "[--driver NAME] ID...", killAbout)
	var sel driverSelection
	addDriverFlag(fs, &sel, false)
	cf := addConfigFlags(fs)
	if done, code := fs.parse(a, args, exitUsage); done {
		return code
	}
	if fs.NArg() == 0 {
		return fs.usageError(a, exitUsage, "at least one container ID is required")
	}
	names := realDrivers
	if isFlagSet(fs, "driver") {
		if err := checkDriverName(sel.name); err != nil {
			return fs.usageError(a, exitUsage, "%v", err)
		}
		names = []string{sel.name}
	}
	cfg, log, err := a.loadConfig(cf)
	if err != nil {
		a.errorf("kill: %v", err)
		return exitFailure
	}

	pending := map[string]bool{}
	for _, id := range fs.Args() {
		pending[id] = true
	}
	var reachErrs []string
	for _, name := range names {
		if len(pending) == 0 {
			break
		}
		err := withLister(ctx, name, cfg, log, func(l drivers.ContainerLister) error {
			list, err := l.Containers(ctx)
			if err != nil {
				return fmt.Errorf("%s: listing containers: %w", name, err)
			}
			for _, want := range fs.Args() {
				if !pending[want] {
					continue
				}
				id, err := matchContainer(list, want)
				if errors.Is(err, errNoMatch) {
					// Not an id or id prefix: the driver may still know it
					// by name (docker), and refuses what is not fnrun's.
					if kerr := l.KillContainer(ctx, want); kerr == nil {
						delete(pending, want)
						fmt.Fprintln(a.stdout, want)
					}
					continue
				}
				delete(pending, want)
				if err == nil {
					err = l.KillContainer(ctx, id)
				}
				if err != nil {
					a.errorf("kill: %s: %s: %v", name, want, err)
					pending[want] = false // failed, not missing
					continue
				}
				fmt.Fprintln(a.stdout, want)
			}
			return nil
		})
		if err != nil {
			reachErrs = append(reachErrs, err.Error())
		}
	}
	code := exitOK
	for _, want := range fs.Args() {
		ok, found := pending[want]
		switch {
		case !found:
		case ok:
			msg := fmt.Sprintf("kill: no container %q managed by fnrun (label tag %s) on %s", want, cfg.ContainerLabelTag, strings.Join(names, ", "))
			if len(reachErrs) > 0 {
				msg += "; " + strings.Join(reachErrs, "; ")
			}
			a.errorf("%s", msg)
			code = exitFailure
		default:
			code = exitFailure
		}
	}
	return code
}

var errNoMatch = errors.New("no such container")

// matchContainer finds want among list by id or unique id prefix.
func matchContainer(list []drivers.ContainerInfo, want string) (string, error) {
	var matches []string
	for _, c := range list {
		if c.ID == want {
			return c.ID, nil
		}
		if strings.HasPrefix(c.ID, want) {
			matches = append(matches, c.ID)
		}
	}
	switch len(matches) {
	case 0:
		return "", errNoMatch
	case 1:
		return matches[0], nil
	}
	return "", fmt.Errorf("prefix %q names %d containers: give more of the id", want, len(matches))
}
