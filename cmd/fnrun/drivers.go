package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	_ "github.com/fnrun/fnrun/drivers/containerd" // registers "containerd"
	_ "github.com/fnrun/fnrun/drivers/docker"     // registers "docker"
	_ "github.com/fnrun/fnrun/drivers/mock"       // registers "mock"
)

// realDrivers are the drivers --all covers: those with a daemon behind.
var realDrivers = []string{"docker", "containerd"}

// connectTimeout bounds a driver's start-up (connect, version check).
const connectTimeout = 30 * time.Second

// logger is the drivers' logger: nothing by default, stderr from the
// level given with --log-level.
func (a *app) logger(level string) (*logrus.Entry, error) {
	l := logrus.New()
	l.Out = a.stderr
	switch strings.ToLower(level) {
	case "", "off", "none":
		l.Out = io.Discard
		l.SetLevel(logrus.PanicLevel)
	default:
		lvl, err := logrus.ParseLevel(level)
		if err != nil {
			return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
		}
		l.SetLevel(lvl)
	}
	return logrus.NewEntry(l).WithField("component", "fnrun"), nil
}

// checkDriverName refuses a driver that is not registered.
func checkDriverName(name string) error {
	for _, n := range drivers.Drivers() {
		if n == name {
			return nil
		}
	}
	return fmt.Errorf("unknown driver %q (registered: %s)", name, strings.Join(drivers.Drivers(), ", "))
}

// openDriver starts the registered driver name, its start-up bounded by
// ctx and connectTimeout, logging through log.
func openDriver(ctx context.Context, name string, cfg drivers.Config, log *logrus.Entry, opts ...drivers.Option) (drivers.Driver, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	d, err := drivers.Open(ctx, name, cfg, append([]drivers.Option{drivers.WithLogger(log)}, opts...)...)
	if err != nil {
		return nil, &hintedError{fmt.Errorf("%s driver: %w%s", name, err, hint(name, err))}
	}
	return d, nil
}

// hintedError is an error whose message already says what to do.
type hintedError struct{ err error }

func (e *hintedError) Error() string { return e.err.Error() }
func (e *hintedError) Unwrap() error { return e.err }

// hint says what to do about a common failure, or "".
func hint(driver string, err error) string {
	var hinted *hintedError
	switch {
	case errors.As(err, &hinted):
		return ""
	case strings.Contains(err.Error(), "could not find bridge"):
		return " (Docker's default bridge interface is gone: 'fnrun doctor' says how to bring it back; --network=false runs without it)"
	case errors.Is(err, drivers.ErrDaemonUnavailable) && driver == "docker":
		return " (is dockerd running? set --docker-host or FNRUN_DOCKER_HOST; 'fnrun doctor' checks)"
	case errors.Is(err, drivers.ErrDaemonUnavailable) && driver == "containerd":
		return " (is containerd running? set --containerd-address or FNRUN_CONTAINERD_ADDRESS; 'fnrun doctor' checks)"
	case errors.Is(err, drivers.ErrImageNotFound):
		return " (check the reference, or that the registry has it)"
	case errors.Is(err, drivers.ErrUnauthorized):
		return " (check the registry credentials)"
	}
	return ""
}

// driverSelection is the --driver and --all flags of ps, bench and the
// like.
type driverSelection struct {
	name string
	all  bool
}

func addDriverFlag(fs *flagSet, sel *driverSelection, withAll bool) {
	fs.StringVar(&sel.name, "driver", "docker", "driver `NAME`: "+strings.Join(drivers.Drivers(), ", "))
	if withAll {
		fs.BoolVar(&sel.all, "all", false, "every driver with a daemon: "+strings.Join(realDrivers, ", "))
	}
}

// names returns the drivers selected.
func (s driverSelection) names() ([]string, error) {
	if s.all {
		return realDrivers, nil
	}
	if err := checkDriverName(s.name); err != nil {
		return nil, err
	}
	return []string{s.name}, nil
}

// logEntry is the drivers' logger.
type logEntry = *logrus.Entry

// resolve checks --driver against --all and returns the selected drivers.
func (s driverSelection) resolve(fs *flagSet) ([]string, error) {
	if s.all && isFlagSet(fs, "driver") {
		return nil, errors.New("--driver and --all exclude each other")
	}
	return s.names()
}

// isFlagSet reports whether the flag name was given on the command line.
func isFlagSet(fs *flagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			found = true
		}
	})
	return found
}

// loadConfig loads the configuration and the logger.
func (a *app) loadConfig(cf *configFlags) (drivers.Config, logEntry, error) {
	cfg, err := cf.load(a.getenv)
	if err != nil {
		return cfg, nil, err
	}
	log, err := a.logger(cf.logLevelValue(a.getenv))
	return cfg, log, err
}
