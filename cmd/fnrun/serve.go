package main

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/serve"
)

const serveAbout = `Runs an invocation agent speaking Fn's API: deploy functions with
POST /v2/apps and POST /v2/fns (or Fn's CLI pointed at FN_API_URL=http://ADDR),
call them with POST /invoke/FN_ID. Functions are images that follow Fn's
container contract (http-stream over a unix socket); each runs in hot
containers, frozen between calls, that end after the function's
idle_timeout. Apps and functions are kept in a bbolt file and survive a
restart. GET /health and GET /metrics (Prometheus) are for operators.

SIGINT or SIGTERM stops accepting calls, lets those in flight finish for
--shutdown-timeout, then ends and removes every container; a second signal
ends fnrun at once.

Unless set, the label tag is "fnrun-serve" and the instance id is new at
every start, so a new fnrun serve removes what an earlier one left behind.`

// Defaults of fnrun serve.
const (
	serveLabelTag     = "fnrun-serve"
	defaultServeState = "/var/tmp/fnrun-serve"
	defaultImageClean = "16g"
)

func (a *app) cmdServe(ctx context.Context, args []string) int {
	fs := newFlagSet("serve", "[--driver NAME] [--addr HOST:PORT] [flags]", serveAbout)
	var sel driverSelection
	addDriverFlag(fs, &sel, false)
	addr := fs.String("addr", "127.0.0.1:8080", "listen on `HOST:PORT`")
	state := fs.String("state-dir", "", "`DIR` for the store and the sockets' folders; env FNRUN_SERVE_STATE (default "+defaultServeState+")")
	db := fs.String("db", "", "bbolt `FILE` of apps and functions (default STATE-DIR/fn.db)")
	maxContainers := fs.Int("max-containers", serve.DefaultMaxContainers, "hot containers in all, `N`")
	maxPerFn := fs.Int("max-containers-per-fn", serve.DefaultMaxContainersPerFn, "hot containers of one function, `N`")
	maxQueue := fs.Int("max-queue", serve.DefaultMaxQueue, "calls of one function that may wait for a container, `N`; more get 503")
	freezeIdle := fs.Duration("freeze-idle", serve.DefaultFreezeIdle, "freeze a container idle for `DURATION` (0: as soon as its call ends; negative: never)")
	startTimeout := fs.Duration("start-timeout", serve.DefaultStartTimeout, "how long a started function has to listen on its socket, `DURATION`")
	maxCalls := fs.Int("max-calls-per-container", 0, "retire a container after `N` calls (0: never; 1: every call is cold)")
	poolSize := fs.Int("pool-size", -1, "pre-fork pool holders, `N` (default pre_fork_pool_size of the config; 0: no pool)")
	poolImage := fs.String("pool-image", "", "holders' `IMAGE` (default pre_fork_image of the config, else $FNRUN_TEST_IMAGE)")
	imageBudget := fs.String("image-clean-max-size", "", "`SIZE` the image cleaner keeps the image store under (default image_clean_max_size of the config, else "+defaultImageClean+"; 0: no cleaner)")
	shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "how long calls in flight may finish at shutdown, `DURATION`")
	logFormat := fs.String("log-format", "text", "log `FORMAT`: text or json (level: --log-level, default info)")
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
	switch {
	case *maxContainers <= 0 || *maxPerFn <= 0 || *maxQueue <= 0:
		return fs.usageError(a, exitUsage, "--max-containers, --max-containers-per-fn and --max-queue must be positive")
	case *startTimeout <= 0 || *shutdownTimeout < 0:
		return fs.usageError(a, exitUsage, "--start-timeout must be positive and --shutdown-timeout not negative")
	case *maxCalls < 0:
		return fs.usageError(a, exitUsage, "--max-calls-per-container must not be negative")
	case *logFormat != "text" && *logFormat != "json":
		return fs.usageError(a, exitUsage, "--log-format: want text or json")
	}

	cfg, err := cf.load(a.getenv)
	if err != nil {
		a.errorf("serve: %v", err)
		return exitFailure
	}
	level := cf.logLevelValue(a.getenv)
	if level == "" {
		level = "info"
	}
	log, err := a.logger(level)
	if err != nil {
		a.errorf("serve: %v", err)
		return exitFailure
	}
	if *logFormat == "json" {
		log.Logger.SetFormatter(&logrus.JSONFormatter{})
	}
	log = log.WithField("component", "serve")
	if !cf.set("label-tag") && a.getenv("FNRUN_LABEL_TAG") == "" {
		cfg.ContainerLabelTag = serveLabelTag
	}
	if !cf.set("instance") && a.getenv("FNRUN_INSTANCE") == "" {
		cfg.InstanceId = "serve-" + randomHex(4)
	}

	dir := *state
	if dir == "" {
		dir = a.getenv("FNRUN_SERVE_STATE")
	}
	if dir == "" {
		dir = defaultServeState
	}
	if *db == "" {
		*db = filepath.Join(dir, "fn.db")
	}
	if *poolSize >= 0 {
		cfg.PreForkPoolSize = uint64(*poolSize)
	}
	if cfg.PreForkPoolSize > 0 {
		if *poolImage != "" {
			cfg.PreForkImage = *poolImage
		}
		if cfg.PreForkImage == "" {
			cfg.PreForkImage = a.getenv("FNRUN_TEST_IMAGE")
		}
		if cfg.PreForkImage == "" {
			return fs.usageError(a, exitUsage, "a pre-fork pool needs --pool-image")
		}
	}
	if *imageBudget != "" || cfg.ImageCleanMaxSize == 0 {
		s := *imageBudget
		if s == "" {
			s = defaultImageClean
		}
		if cfg.ImageCleanMaxSize, err = parseSize(s); err != nil {
			return fs.usageError(a, exitUsage, "--image-clean-max-size: %v", err)
		}
	}
	if cfg.ImageCleanMaxSize > 0 && cfg.ImageCleanStateDir == "" {
		cfg.ImageCleanStateDir = filepath.Join(dir, "images-"+sel.name)
	}

	// The listener first: a busy port fails before any container starts.
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		a.errorf("serve: %v", err)
		return exitFailure
	}
	defer l.Close()
	store, err := serve.OpenStore(*db, 5*time.Second)
	if err != nil {
		a.errorf("serve: %v (is another fnrun serve using it?)", err)
		return exitFailure
	}
	drv, err := openDriver(ctx, sel.name, cfg, log.WithField("component", "driver"))
	if err != nil {
		_ = store.Close()
		a.errorf("serve: %v", err)
		return exitFailure
	}
	defer func() {
		if err := drv.Close(); err != nil {
			log.WithError(err).Error("closing the driver")
		}
	}()
	srv, err := serve.New(drv, store,
		serve.WithLogger(log),
		serve.WithDriverName(sel.name),
		serve.WithSocketDir(filepath.Join(dir, "iofs")),
		serve.WithLimits(*maxContainers, *maxPerFn, *maxQueue),
		serve.WithFreezeIdle(*freezeIdle),
		serve.WithStartTimeout(*startTimeout),
		serve.WithMaxCallsPerContainer(*maxCalls),
	)
	if err != nil {
		_ = store.Close()
		a.errorf("serve: %v", err)
		return exitFailure
	}
	log.WithFields(logrus.Fields{"addr": l.Addr().String(), "driver": sel.name, "db": *db,
		"label_tag": cfg.ContainerLabelTag, "instance": cfg.InstanceId, "pool": cfg.PreForkPoolSize,
		"image_budget": formatSize(cfg.ImageCleanMaxSize)}).Info("fnrun serve listening")

	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case err := <-served:
		// The listener failed before any signal.
		_ = srv.Close()
		a.errorf("serve: %v", err)
		return exitFailure
	case <-ctx.Done():
	}
	log.WithField("cause", context.Cause(ctx)).WithField("grace", *shutdownTimeout).Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	<-served
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		log.Warn("calls still running at the end of the grace were cut")
	case err != nil:
		a.errorf("serve: shutdown: %v", err)
		return exitFailure
	}
	log.Info("stopped; every container removed")
	return exitOK
}
