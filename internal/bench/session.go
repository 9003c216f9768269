package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/containerd/defaults"
	"github.com/containerd/containerd/oci"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/pool"
)

// Session compares one driver with its bare client, mode by mode: what
// `fnrun bench` runs and what the Go benchmarks run, so the twins and the
// way they are set up exist once.
type Session struct {
	// Driver is the registered name; Config its configuration.
	Driver string
	Config drivers.Config
	// Image runs every call; it has sh in it.
	Image   string
	Options Options
	// Open opens a driver (the caller's logger and options); nil is
	// drivers.Open with the defaults.
	Open func(ctx context.Context, name string, cfg drivers.Config) (drivers.Driver, error)
	// Step reports a step that takes a while; it returns the function that
	// ends it. Nil reports nothing.
	Step func(what string) (done func())
	// Notes collects what the results should be read with (skipped modes,
	// no bare client).
	Notes []string
}

// Run measures the modes (Cold, Pooled, Warm) of the driver; a mode that
// fails is reported and the next one still runs.
func (s *Session) Run(ctx context.Context, modes ...string) ([]*Result, []error) {
	done := s.step(s.Driver + ": starting the driver and the image")
	drv, err := s.open(ctx, s.Config)
	if err == nil {
		defer drv.Close()
		// One call makes sure the image is present (pulled if needed) and
		// unpacked before anything is timed.
		err = Lifecycle(ctx, drv, &drivers.Task{ID: callID("probe"), ImageRef: s.Image, Cmd: TrivialCommand})
	}
	done()
	if err != nil {
		return nil, []error{fmt.Errorf("%s: %w", s.Driver, err)}
	}
	bare, err := s.bareSide(drv)
	if err != nil {
		return nil, []error{fmt.Errorf("%s: bare client: %w", s.Driver, err)}
	}
	defer bare.close()
	var (
		results []*Result
		errs    []error
	)
	for _, mode := range modes {
		res, err := s.mode(ctx, mode, drv, bare)
		var skip *skipError
		switch {
		case errors.As(err, &skip):
			s.Notes = append(s.Notes, fmt.Sprintf("%s %s: skipped: %s", s.Driver, mode, skip.why))
		case err != nil:
			errs = append(errs, fmt.Errorf("%s %s: %w", s.Driver, mode, err))
		}
		results = append(results, res...)
		if ctx.Err() != nil {
			break
		}
	}
	return results, errs
}

func (s *Session) step(what string) func() {
	if s.Step == nil {
		return func() {}
	}
	return s.Step(what)
}

func (s *Session) open(ctx context.Context, cfg drivers.Config) (drivers.Driver, error) {
	if s.Open != nil {
		return s.Open(ctx, s.Driver, cfg)
	}
	return drivers.Open(ctx, s.Driver, cfg)
}

func (s *Session) mode(ctx context.Context, mode string, cold drivers.Driver, bare *bareSide) ([]*Result, error) {
	var targets []Target
	switch mode {
	case Cold:
		targets = append(targets, NewFnrunCall(cold, Variant{Driver: s.Driver, Mode: Cold, Client: Fnrun}, s.Image))
	case Pooled:
		cfg := s.Config
		cfg.PreForkPoolSize = uint64(max(s.Options.Concurrency, 1))
		cfg.PreForkPoolMax = max(cfg.PreForkPoolMax, cfg.PreForkPoolSize)
		if cfg.PreForkImage == "" {
			cfg.PreForkImage = s.Image
		}
		done := s.step(fmt.Sprintf("%s pooled: starting a pool of %d", s.Driver, cfg.PreForkPoolSize))
		pooled, err := s.open(ctx, cfg)
		if err == nil {
			if rep, ok := pooled.(pool.Reporter); !ok {
				err = &skipError{fmt.Sprintf("the %s driver runs no pre-fork pool (it does not implement pool.Reporter)", s.Driver)}
				pooled.Close()
			} else {
				defer pooled.Close()
				err = WaitPool(ctx, rep, 2*time.Minute)
			}
		}
		done()
		if err != nil {
			return nil, err
		}
		targets = append(targets, NewFnrunCall(pooled, Variant{Driver: s.Driver, Mode: Pooled, Client: Fnrun}, s.Image))
	case Warm:
		if c, ok := cold.(drivers.Capable); ok && !c.Capabilities().Has(drivers.CapRunsCommands) {
			return nil, &skipError{"the driver runs no command, so no hot container can serve a call"}
		}
		targets = append(targets, NewFnrunWarm(cold, s.Driver, s.Image))
	default:
		return nil, fmt.Errorf("unknown mode %q", mode)
	}
	more, err := bare.targets(ctx, mode)
	if err != nil {
		return nil, err
	}
	targets = append(targets, more...)
	done := s.step(fmt.Sprintf("%s %s: %d calls per client at concurrency %d", s.Driver, mode, s.Options.N, s.Options.Concurrency))
	defer done()
	return Compare(ctx, targets, s.Options)
}

// skipError says why a mode cannot be measured on a driver: a note, not a
// failure.
type skipError struct{ why string }

func (e *skipError) Error() string { return "skipped: " + e.why }

// bareSide builds the bare-client targets of one driver, with the options
// its fnrun driver generates, and the minimal client and runc floor where
// there are some. A maker returns a nil target for a mode it has none of.
type bareSide struct {
	makers []func(ctx context.Context, mode string) (Target, error)
	close  func()
}

func (b *bareSide) targets(ctx context.Context, mode string) ([]Target, error) {
	var out []Target
	for _, f := range b.makers {
		t, err := f(ctx, mode)
		if err != nil {
			return nil, err
		}
		if t != nil {
			out = append(out, t)
		}
	}
	return out, nil
}

func (s *Session) bareSide(drv drivers.Driver) (*bareSide, error) {
	probe := func(cmd string, stdin bool) *drivers.Task {
		t := &drivers.Task{ID: callID("proto"), ImageRef: s.Image, Cmd: cmd}
		if stdin {
			t.Stdin = strings.NewReader("")
		}
		return t
	}
	switch s.Driver {
	case "docker":
		client, closeIdle, err := DockerClient(s.Config.Docker)
		if err != nil {
			return nil, err
		}
		return &bareSide{close: closeIdle, makers: []func(context.Context, string) (Target, error){func(ctx context.Context, mode string) (Target, error) {
			if mode == Warm {
				opts, err := DockerOptions(ctx, drv, probe(HotCommand, true))
				if err != nil {
					return nil, err
				}
				return NewDockerWarm(client, opts, s.Driver), nil
			}
			opts, err := DockerOptions(ctx, drv, probe(TrivialCommand, false))
			if err != nil {
				return nil, err
			}
			return NewDockerCall(client, opts, s.Driver, mode), nil
		}}}, nil
	case "containerd":
		address := s.Config.Containerd
		if address == "" {
			address = defaults.DefaultAddress
		}
		c, err := NewContainerd(address, s.Config.Namespace(), s.Image, map[string]string{
			drivers.LabelLibrary:  drivers.LibraryName,
			drivers.LabelDriver:   s.Driver,
			drivers.LabelTag:      s.Config.ContainerLabelTag,
			drivers.LabelInstance: s.Config.InstanceId,
		})
		if err != nil {
			return nil, err
		}
		// The driver's spec for `true`, made once (through a cookie of the
		// driver) for every mode and client; for a cold mode, the bare side
		// is first set up to network a container as the driver does.
		var trueSpec *oci.Spec
		callSpec := func(ctx context.Context, mode string) (*oci.Spec, error) {
			if trueSpec == nil {
				spec, err := c.Spec(ctx, drv, probe(TrivialCommand, false))
				if err != nil {
					return nil, err
				}
				trueSpec = spec
			}
			if mode != Cold || !JoinsNetNS(trueSpec) || c.cni != nil {
				return trueSpec, nil
			}
			// The driver gives each container a CNI network: so does the
			// bare side, with the same configuration.
			confDir, binDir := s.Config.CNIConfDir, s.Config.CNIBinDir
			if confDir == "" {
				confDir = drivers.DefaultCNIConfDir
			}
			if binDir == "" {
				binDir = drivers.DefaultCNIBinDir
			}
			return trueSpec, c.UseCNI(confDir, binDir)
		}
		bare := func(ctx context.Context, mode string) (Target, error) {
			if mode == Warm {
				spec, err := c.Spec(ctx, drv, probe(HotCommand, true))
				if err != nil {
					return nil, err
				}
				return NewContainerdWarm(c, spec, s.Driver), nil
			}
			spec, err := callSpec(ctx, mode)
			if err != nil {
				return nil, err
			}
			return NewContainerdCall(c, spec, s.Driver, mode, Bare), nil
		}
		minimal := func(ctx context.Context, mode string) (Target, error) {
			if mode == Warm {
				return nil, nil
			}
			spec, err := callSpec(ctx, mode)
			if err == nil {
				spec, err = c.MinimalSpec(ctx, spec)
			}
			if err != nil {
				return nil, err
			}
			return NewContainerdCall(c, spec, s.Driver, mode, Minimal), nil
		}
		floor := func(ctx context.Context, mode string) (Target, error) {
			if mode == Warm {
				return nil, nil // no container is made per warm call
			}
			spec, err := callSpec(ctx, mode)
			if err != nil {
				return nil, err
			}
			return NewRuncCall(c, spec, s.Driver, mode), nil
		}
		return &bareSide{close: func() { _ = c.Close() }, makers: []func(context.Context, string) (Target, error){bare, minimal, floor}}, nil
	}
	s.Notes = append(s.Notes, fmt.Sprintf("%s: no bare client to compare with", s.Driver))
	return &bareSide{close: func() {}}, nil
}
