package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/fnrun/fnrun/drivers"
)

// Defaults of the command's driver configuration.
const (
	// defaultLabelTag tags every object the command creates. Leftovers of
	// earlier runs are found by it (fnrun ps) and removed by fnrun kill.
	defaultLabelTag = "fnrun-cli"
	// defaultInstance is the instance id of every fnrun process. Drivers
	// remove, at start, what other instances with their label tag left
	// behind; with one instance id shared by every fnrun process, an
	// `fnrun ps` never removes the container of an `fnrun run` still
	// running beside it.
	defaultInstance = "fnrun-cli"
)

// configFlags are the flags every subcommand that opens a driver takes.
// Each one overrides its environment variable, which overrides the
// --config file, which overrides the defaults.
type configFlags struct {
	file       string
	docker     string
	containerd string
	namespace  string
	cniConf    string
	cniBin     string
	labelTag   string
	instance   string
	logLevel   string
	fs         *flagSet
}

func addConfigFlags(fs *flagSet) *configFlags {
	c := &configFlags{fs: fs}
	fs.StringVar(&c.file, "config", "", "`FILE` with a drivers.Config as JSON (its json field tags: docker, containerd, pre_fork_pool_size...); env FNRUN_CONFIG")
	fs.StringVar(&c.docker, "docker-host", "", "Docker `ENDPOINT`, unix:///path or tcp://host:port; env FNRUN_DOCKER_HOST, then DOCKER_HOST")
	fs.StringVar(&c.containerd, "containerd-address", "", "containerd socket `PATH`; env FNRUN_CONTAINERD_ADDRESS")
	fs.StringVar(&c.namespace, "containerd-namespace", "", "containerd `NAMESPACE`; env FNRUN_CONTAINERD_NAMESPACE (default "+drivers.DefaultContainerdNamespace+")")
	fs.StringVar(&c.cniConf, "cni-conf-dir", "", "CNI network configuration `DIR`; env FNRUN_CNI_CONF (default "+drivers.DefaultCNIConfDir+")")
	fs.StringVar(&c.cniBin, "cni-bin-dir", "", "CNI plugin `DIR`; env FNRUN_CNI_BIN (default "+drivers.DefaultCNIBinDir+")")
	fs.StringVar(&c.labelTag, "label-tag", "", "`TAG` labelled on every container fnrun creates and lists; env FNRUN_LABEL_TAG (default "+defaultLabelTag+")")
	fs.StringVar(&c.instance, "instance", "", "driver instance `ID` in the labels; env FNRUN_INSTANCE (default "+defaultInstance+", shared by every fnrun process)")
	fs.StringVar(&c.logLevel, "log-level", "", "log the drivers' messages on stderr from `LEVEL` up (debug, info, warn, error); env FNRUN_LOG_LEVEL (default off)")
	for _, n := range []string{"config", "docker-host", "containerd-address", "containerd-namespace", "cni-conf-dir", "cni-bin-dir", "label-tag", "instance", "log-level"} {
		fs.common[n] = true
	}
	return c
}

// load builds the driver configuration: defaults, then the --config file,
// then the environment, then the flags given on the command line.
func (c *configFlags) load(getenv func(string) string) (drivers.Config, error) {
	cfg := drivers.Config{ContainerLabelTag: defaultLabelTag, InstanceId: defaultInstance}

	file := getenv("FNRUN_CONFIG")
	if c.set("config") {
		file = c.file
	}
	if file != "" {
		if err := readConfigFile(file, &cfg); err != nil {
			return cfg, err
		}
	}

	env := func(dst *string, names ...string) {
		for _, n := range names {
			if v := getenv(n); v != "" {
				*dst = v
				return
			}
		}
	}
	env(&cfg.Docker, "FNRUN_DOCKER_HOST", "DOCKER_HOST")
	env(&cfg.Containerd, "FNRUN_CONTAINERD_ADDRESS")
	env(&cfg.ContainerdNamespace, "FNRUN_CONTAINERD_NAMESPACE")
	env(&cfg.CNIConfDir, "FNRUN_CNI_CONF")
	env(&cfg.CNIBinDir, "FNRUN_CNI_BIN")
	env(&cfg.ContainerLabelTag, "FNRUN_LABEL_TAG")
	env(&cfg.InstanceId, "FNRUN_INSTANCE")

	flagged := map[string]*string{
		"docker-host":          &cfg.Docker,
		"containerd-address":   &cfg.Containerd,
		"containerd-namespace": &cfg.ContainerdNamespace,
		"cni-conf-dir":         &cfg.CNIConfDir,
		"cni-bin-dir":          &cfg.CNIBinDir,
		"label-tag":            &cfg.ContainerLabelTag,
		"instance":             &cfg.InstanceId,
	}
	c.fs.Visit(func(f *flag.Flag) {
		if dst, ok := flagged[f.Name]; ok {
			*dst = f.Value.String()
		}
	})
	if cfg.ContainerLabelTag == "" {
		return cfg, errors.New("the label tag is empty: fnrun only lists and removes containers by their label tag")
	}
	return cfg, nil
}

// logLevelValue is the --log-level flag or FNRUN_LOG_LEVEL.
func (c *configFlags) logLevelValue(getenv func(string) string) string {
	if c.set("log-level") {
		return c.logLevel
	}
	return getenv("FNRUN_LOG_LEVEL")
}

func (c *configFlags) set(name string) bool {
	found := false
	c.fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			found = true
		}
	})
	return found
}

// readConfigFile decodes a drivers.Config in JSON over cfg: fields the file
// leaves out keep their value. Unknown fields are an error, so a typo does
// not silently fall back to a default.
func readConfigFile(path string, cfg *drivers.Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return fmt.Errorf("config file %s: %v", path, err)
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		return fmt.Errorf("config file %s: more than one JSON value", path)
	}
	return nil
}
