package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/defaults"
	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	fncd "github.com/fnrun/fnrun/drivers/containerd"
)

const doctorAbout = `Checks what fnrun needs on this host and says what to fix:
  - each daemon (docker, containerd): reachable, its version, and that the
    fnrun driver starts on it;
  - cgroups: mode (v1, hybrid, v2 unified) and the controllers the limits
    need (cpu, memory, pids), the freezer that freezing needs, and on v2
    the cgroup namespace every container gets;
  - the registry of $FNRUN_REGISTRY (or --registry): GET /v2/ answers;
  - CNI (for containerd): the configuration folder has a .conflist whose
    plugins are in the plugin folder.
Exits 1 when a required check fails; warnings do not change the exit status.`

type checkStatus int

const (
	checkOK checkStatus = iota
	checkWarn
	checkFail
	checkSkip
)

func (s checkStatus) String() string {
	return [...]string{"ok", "warn", "FAIL", "skip"}[s]
}

type checkResult struct {
	name   string
	status checkStatus
	detail string
	fix    string
}

func (a *app) cmdDoctor(ctx context.Context, args []string) int {
	fs := newFlagSet("doctor", "[--driver NAME] [--registry HOST:PORT]", doctorAbout)
	var sel driverSelection
	addDriverFlag(fs, &sel, false)
	registry := fs.String("registry", "", "registry `HOST:PORT` (or URL) to check; env FNRUN_REGISTRY")
	timeout := fs.Duration("timeout", 10*time.Second, "bound of each check")
	cf := addConfigFlags(fs)
	if done, code := fs.parse(a, args, exitUsage); done {
		return code
	}
	if fs.NArg() > 0 {
		return fs.usageError(a, exitUsage, "unexpected argument %q", fs.Arg(0))
	}
	names := realDrivers
	if isFlagSet(fs, "driver") {
		if err := checkDriverName(sel.name); err != nil {
			return fs.usageError(a, exitUsage, "%v", err)
		}
		names = []string{sel.name}
	}
	if err := positiveDuration("timeout", *timeout); err != nil {
		return fs.usageError(a, exitUsage, "%v", err)
	}
	cfg, log, err := a.loadConfig(cf)
	if err != nil {
		a.errorf("doctor: %v", err)
		return exitFailure
	}
	reg := *registry
	if !isFlagSet(fs, "registry") {
		reg = a.getenv("FNRUN_REGISTRY")
	}

	var results []checkResult
	add := func(r ...checkResult) {
		for _, c := range r {
			results = append(results, c)
			printCheck(a.stdout, c)
		}
	}
	bounded := func(f func(ctx context.Context) []checkResult) []checkResult {
		cctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		return f(cctx)
	}
	for _, name := range names {
		switch name {
		case "docker":
			add(bounded(func(ctx context.Context) []checkResult { return checkDocker(ctx, cfg, log) })...)
		case "containerd":
			add(bounded(func(ctx context.Context) []checkResult { return checkContainerd(ctx, cfg, log) })...)
			add(checkCNI(cfg)...)
		case "mock":
			add(checkResult{name: "mock", status: checkOK, detail: "needs nothing"})
		}
	}
	if len(names) > 1 || names[0] != "mock" {
		add(checkCgroups()...)
		add(checkTools(names)...)
	}
	add(bounded(func(ctx context.Context) []checkResult { return []checkResult{checkRegistry(ctx, reg)} })...)

	failures, warnings := 0, 0
	for _, r := range results {
		switch r.status {
		case checkFail:
			failures++
		case checkWarn:
			warnings++
		}
	}
	fmt.Fprintln(a.stdout)
	switch {
	case failures > 0:
		fmt.Fprintf(a.stdout, "%d required check(s) failed, %d warning(s): fix the FAIL lines above.\n", failures, warnings)
		return exitFailure
	case warnings > 0:
		fmt.Fprintf(a.stdout, "all required checks passed, %d warning(s).\n", warnings)
	default:
		fmt.Fprintln(a.stdout, "all checks passed.")
	}
	return exitOK
}

func printCheck(w io.Writer, c checkResult) {
	fmt.Fprintf(w, "%-4s  %-12s %s\n", c.status, c.name, c.detail)
	if c.fix != "" && (c.status == checkFail || c.status == checkWarn) {
		fmt.Fprintf(w, "      %-12s fix: %s\n", "", c.fix)
	}
}

// dockerEndpoint is the endpoint the docker driver will use.
func dockerEndpoint(cfg drivers.Config) string {
	if cfg.Docker != "" {
		return cfg.Docker
	}
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		return h
	}
	return "unix:///var/run/docker.sock"
}

// containerdAddress is the socket the containerd driver will use.
func containerdAddress(cfg drivers.Config) string {
	if cfg.Containerd != "" {
		return cfg.Containerd
	}
	return defaults.DefaultAddress
}

func checkDocker(ctx context.Context, cfg drivers.Config, log logEntry) []checkResult {
	endpoint := dockerEndpoint(cfg)
	fix := "start dockerd, or point --docker-host / FNRUN_DOCKER_HOST (or DOCKER_HOST) at its socket"
	c, err := docker.NewClient(endpoint)
	if err != nil {
		return []checkResult{{name: "docker", status: checkFail, detail: fmt.Sprintf("endpoint %s: %v", endpoint, err), fix: "use unix:///path or tcp://host:port"}}
	}
	c.SetTimeout(5 * time.Second)
	env, err := c.VersionWithContext(ctx)
	if err != nil {
		return []checkResult{{name: "docker", status: checkFail, detail: fmt.Sprintf("unreachable at %s: %v", endpoint, err), fix: fix}}
	}
	detail := fmt.Sprintf("reachable at %s, Docker Engine %s (API %s)", endpoint, env.Get("Version"), env.Get("ApiVersion"))
	if info, err := c.Info(); err == nil {
		detail += fmt.Sprintf(", storage %s, cgroup driver %s", info.Driver, info.CgroupDriver)
	}
	out := []checkResult{{name: "docker", status: checkOK, detail: detail}}
	if cfg.DockerNetworks == "" {
		out = append(out, checkDockerBridge(c))
	}

	dcfg := cfg
	dcfg.ContainerLabelTag = "" // start no leak reaper: doctor only looks
	if d, err := openDriver(ctx, "docker", dcfg, log); err != nil {
		out = append(out, checkResult{name: "docker", status: checkFail, detail: "the fnrun driver does not start: " + err.Error(),
			fix: "see the error; --server-version in the config sets the oldest daemon accepted"})
	} else {
		_ = d.Close()
		out = append(out, checkResult{name: "docker", status: checkOK, detail: "the fnrun docker driver starts"})
	}
	return out
}

// checkDockerBridge checks that the interface of Docker's default bridge
// network exists: without it, every container with a network (and every
// pool holder) fails to start with "could not find bridge docker0".
func checkDockerBridge(c *docker.Client) checkResult {
	nw, err := c.NetworkInfo("bridge")
	if err != nil {
		return checkResult{name: "docker", status: checkWarn, detail: "no default bridge network: " + err.Error(),
			fix: "containers need --network=false, or docker_networks in the config naming a network"}
	}
	iface := nw.Options["com.docker.network.bridge.name"]
	if iface == "" {
		iface = "docker0"
	}
	if _, err := net.InterfaceByName(iface); err != nil {
		gw := ""
		for _, cfg := range nw.IPAM.Config {
			if cfg.Gateway != "" && cfg.Subnet != "" {
				if _, n, err := net.ParseCIDR(cfg.Subnet); err == nil {
					ones, _ := n.Mask.Size()
					gw = fmt.Sprintf("%s/%d", cfg.Gateway, ones)
				}
			}
		}
		fix := "restart dockerd, which recreates it"
		if gw != "" {
			fix += fmt.Sprintf(", or recreate it: ip link add %s type bridge && ip addr add %s dev %s && ip link set %s up", iface, gw, iface, iface)
		}
		return checkResult{name: "docker", status: checkFail,
			detail: fmt.Sprintf("the default bridge network's interface %s is missing: containers with a network and pool holders cannot start", iface), fix: fix}
	}
	return checkResult{name: "docker", status: checkOK, detail: fmt.Sprintf("default bridge network on %s", iface)}
}

func daemonVersion(ctx context.Context, name string, cfg drivers.Config) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	switch name {
	case "docker":
		c, err := docker.NewClient(dockerEndpoint(cfg))
		if err != nil {
			return ""
		}
		env, err := c.VersionWithContext(ctx)
		if err != nil {
			return ""
		}
		return fmt.Sprintf("docker: Docker Engine %s (API %s)", env.Get("Version"), env.Get("ApiVersion"))
	case "containerd":
		c, err := ctrd.New(containerdAddress(cfg), ctrd.WithTimeout(5*time.Second))
		if err != nil {
			return ""
		}
		defer c.Close()
		v, err := c.Version(ctx)
		if err != nil {
			return ""
		}
		runc := ""
		if out, err := exec.CommandContext(ctx, "runc", "--version").Output(); err == nil {
			runc = ", " + strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
		}
		return fmt.Sprintf("containerd: %s (%s)%s", v.Version, v.Revision, runc)
	}
	return ""
}

func checkContainerd(ctx context.Context, cfg drivers.Config, log logEntry) []checkResult {
	addr := containerdAddress(cfg)
	fix := "start containerd, or point --containerd-address / FNRUN_CONTAINERD_ADDRESS at its socket"
	c, err := ctrd.New(addr, ctrd.WithTimeout(5*time.Second))
	if err != nil {
		return []checkResult{{name: "containerd", status: checkFail, detail: fmt.Sprintf("unreachable at %s: %v", addr, err), fix: fix}}
	}
	defer c.Close()
	v, err := c.Version(ctx)
	if err != nil {
		return []checkResult{{name: "containerd", status: checkFail, detail: fmt.Sprintf("unreachable at %s: %v", addr, err), fix: fix}}
	}
	out := []checkResult{{name: "containerd", status: checkOK, detail: fmt.Sprintf("reachable at %s, containerd %s (namespace %s)", addr, v.Version, cfg.Namespace())}}
	dcfg := cfg
	dcfg.ContainerLabelTag = ""
	if d, err := openDriver(ctx, "containerd", dcfg, log); err != nil {
		out = append(out, checkResult{name: "containerd", status: checkFail, detail: "the fnrun driver does not start: " + err.Error(), fix: "see the error"})
	} else {
		_ = d.Close()
		out = append(out, checkResult{name: "containerd", status: checkOK, detail: "the fnrun containerd driver starts"})
	}
	return out
}

// cgroupHost is what the cgroup checks read. Fields, not constants, so
// that tests check v2 and hybrid file trees on a v1 host.
type cgroupHost struct {
	root      string         // the cgroup mount point
	mode      cgroups.CGMode // the mode the containerd driver and runc see
	mountinfo string         // the mount table, which lists the v1 hierarchies
	cgroupNS  string         // a cgroup namespace file: absent when the kernel has none
}

// thisCgroupHost is the host doctor runs on, the one the daemons run
// containers on when their sockets are local.
func thisCgroupHost() cgroupHost {
	return cgroupHost{root: "/sys/fs/cgroup", mode: cgroups.Mode(), mountinfo: "/proc/self/mountinfo", cgroupNS: "/proc/self/ns/cgroup"}
}

// cgroupsRequired are the controllers the task limits need.
var cgroupsRequired = []string{"cpu", "memory", "pids"}

// checkCgroups reports the cgroup mode (v1, hybrid or v2), the controllers
// the limits need and the freezer that freezing needs, and, on v2, the
// cgroup namespaces every container gets there.
func checkCgroups() []checkResult { return thisCgroupHost().check() }

func (h cgroupHost) check() []checkResult {
	switch h.mode {
	case cgroups.Unified:
		return h.checkV2()
	case cgroups.Legacy, cgroups.Hybrid:
		return h.checkV1()
	}
	return []checkResult{{name: "cgroups", status: checkFail, detail: "no cgroup file system at " + h.root,
		fix: "mount the cgroup file systems on " + h.root + " (cgroup2, or the v1 hierarchies: cgroupfs-mount does it)"}}
}

// checkV2 checks a unified host: the controllers the root offers, the v2
// freezer and cgroup namespaces.
func (h cgroupHost) checkV2() []checkResult {
	data, err := os.ReadFile(filepath.Join(h.root, "cgroup.controllers"))
	if err != nil {
		return []checkResult{{name: "cgroups", status: checkFail, detail: "v2 (unified), but " + err.Error(),
			fix: "check that " + h.root + " is the host's cgroup2 mount and readable by this user"}}
	}
	have := map[string]bool{}
	for _, c := range strings.Fields(string(data)) {
		have[c] = true
	}
	out := []checkResult{controllersResult("v2 (unified)", cgroupsRequired, have,
		"the kernel offers them to no v2 cgroup: boot without cgroup_disable= for them, and without binding them to a v1 hierarchy")}
	// The v2 freezer is cgroup.freeze in every non-root cgroup (Linux 5.2+).
	if hasFreezeFile(h.root) {
		out = append(out, checkResult{name: "freezer", status: checkOK, detail: "cgroup v2 freezer (cgroup.freeze)"})
	} else {
		out = append(out, checkResult{name: "freezer", status: checkFail, detail: "no cgroup.freeze in any cgroup: the kernel has no v2 freezer",
			fix: "use Linux 5.2 or newer; Freeze and Unfreeze fail without it"})
	}
	return append(out, h.checkCgroupNS())
}

// checkCgroupNS: on v2 every container gets a cgroup namespace of its own
// (so it sees its own limits and nothing of the others), and runc refuses
// to start one on a kernel without them.
func (h cgroupHost) checkCgroupNS() checkResult {
	if _, err := os.Stat(h.cgroupNS); err != nil {
		return checkResult{name: "cgroupns", status: checkFail, detail: "the kernel has no cgroup namespaces: on cgroup v2 every container gets one, so none starts",
			fix: "use Linux 4.6 or newer, which has cgroup namespaces"}
	}
	return checkResult{name: "cgroupns", status: checkOK, detail: "each container gets a cgroup namespace of its own, its limits at " + h.root}
}

// checkV1 checks a v1 or hybrid host: the mounted v1 hierarchies and the
// v1 freezer. A hybrid host is used as a v1 one: runc and Docker put the
// limits on the v1 hierarchies, so a controller bound to the v2 one is
// missing for them.
func (h cgroupHost) checkV1() []checkResult {
	version := "v1"
	if h.mode == cgroups.Hybrid {
		version = "hybrid (limits on the v1 hierarchies, as on v1; v2 at " + filepath.Join(h.root, "unified") + ")"
	}
	have := mountedV1Controllers(h.mountinfo)
	out := []checkResult{controllersResult(version, cgroupsRequired, have, "mount the missing hierarchies under "+h.root+" (cgroupfs-mount does it)")}
	if have["freezer"] {
		return append(out, checkResult{name: "freezer", status: checkOK, detail: "cgroup v1 freezer mounted"})
	}
	return append(out, checkResult{name: "freezer", status: checkFail, detail: "the cgroup v1 freezer is not mounted",
		fix: "mount it: mkdir -p " + h.root + "/freezer && mount -t cgroup -o freezer cgroup " + h.root + "/freezer"})
}

func controllersResult(version string, required []string, have map[string]bool, fix string) checkResult {
	var missing []string
	for _, c := range required {
		if !have[c] {
			missing = append(missing, c)
		}
	}
	var list []string
	for c := range have {
		list = append(list, c)
	}
	sort.Strings(list)
	if len(missing) > 0 {
		return checkResult{name: "cgroups", status: checkFail, detail: fmt.Sprintf("%s; missing controllers %s (have %s)", version, strings.Join(missing, ", "), strings.Join(list, " ")), fix: fix}
	}
	return checkResult{name: "cgroups", status: checkOK, detail: fmt.Sprintf("%s; controllers %s", version, strings.Join(list, " "))}
}

// mountedV1Controllers lists the controllers of the v1 hierarchies in the
// mount table at mountinfo.
func mountedV1Controllers(mountinfo string) map[string]bool {
	have := map[string]bool{}
	data, err := os.ReadFile(mountinfo)
	if err != nil {
		return have
	}
	for _, line := range strings.Split(string(data), "\n") {
		_, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f := strings.Fields(post)
		if len(f) < 3 || f[0] != "cgroup" {
			continue
		}
		for _, opt := range strings.Split(f[2], ",") {
			switch opt {
			case "rw", "ro", "nosuid", "nodev", "noexec", "relatime", "noatime":
			default:
				if !strings.HasPrefix(opt, "name=") && !strings.Contains(opt, "=") {
					have[opt] = true
				}
			}
		}
	}
	return have
}

// hasFreezeFile reports whether a cgroup below root has cgroup.freeze.
func hasFreezeFile(root string) bool {
	entries, err := os.ReadDir(root)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if e.IsDir() {
			if _, err := os.Stat(filepath.Join(root, e.Name(), "cgroup.freeze")); err == nil {
				return true
			}
		}
	}
	return false
}

// checkRegistry sends GET /v2/ to the registry.
func checkRegistry(ctx context.Context, reg string) checkResult {
	if reg == "" {
		return checkResult{name: "registry", status: checkSkip, detail: "no registry given (set FNRUN_REGISTRY or --registry to check one)"}
	}
	u := reg
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	u = strings.TrimRight(u, "/") + "/v2/"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return checkResult{name: "registry", status: checkFail, detail: fmt.Sprintf("%s: %v", reg, err), fix: "give HOST:PORT or a URL"}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return checkResult{name: "registry", status: checkFail, detail: fmt.Sprintf("GET %s: %v", u, err),
			fix: "start the registry (make up starts one on 127.0.0.1:5000), or fix FNRUN_REGISTRY"}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	switch resp.StatusCode {
	case http.StatusOK:
		return checkResult{name: "registry", status: checkOK, detail: fmt.Sprintf("GET %s: 200, Docker registry API v2", u)}
	case http.StatusUnauthorized:
		return checkResult{name: "registry", status: checkOK, detail: fmt.Sprintf("GET %s: 401, registry API v2 with authentication", u)}
	}
	return checkResult{name: "registry", status: checkFail, detail: fmt.Sprintf("GET %s: %s, not a registry API v2", u, resp.Status), fix: "check FNRUN_REGISTRY names a registry"}
}

// checkCNI checks the CNI configuration the containerd driver networks
// containers with.
func checkCNI(cfg drivers.Config) []checkResult {
	confDir, binDir := cfg.CNIConfDir, cfg.CNIBinDir
	if confDir == "" {
		confDir = drivers.DefaultCNIConfDir
	}
	if binDir == "" {
		binDir = drivers.DefaultCNIBinDir
	}
	fixConf := fmt.Sprintf("put a network configuration list (*.conflist) in %s, or set --cni-conf-dir / FNRUN_CNI_CONF", confDir)
	files, _ := filepath.Glob(filepath.Join(confDir, "*.conflist"))
	if len(files) == 0 {
		return []checkResult{{name: "cni", status: checkFail, detail: "no .conflist in " + confDir + ": containerd containers get no network", fix: fixConf}}
	}
	sort.Strings(files)
	file := files[0] // CNI uses the first in lexical order
	data, err := os.ReadFile(file)
	var list struct {
		Name    string `json:"name"`
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if err == nil {
		err = json.Unmarshal(data, &list)
	}
	if err == nil && len(list.Plugins) == 0 {
		err = errors.New("no plugins")
	}
	if err != nil {
		return []checkResult{{name: "cni", status: checkFail, detail: fmt.Sprintf("%s: %v", file, err), fix: fixConf}}
	}
	var types []string
	for _, p := range list.Plugins {
		if p.Type != "" && !slices.Contains(types, p.Type) {
			types = append(types, p.Type)
		}
	}
	var missing []string
	for _, t := range types {
		st, err := os.Stat(filepath.Join(binDir, t))
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return []checkResult{{name: "cni", status: checkFail, detail: fmt.Sprintf("network %q (%s) needs plugins missing from %s: %s", list.Name, file, binDir, strings.Join(missing, ", ")),
			fix: "install containernetworking-plugins, or set --cni-bin-dir / FNRUN_CNI_BIN to where they are"}}
	}
	return []checkResult{{name: "cni", status: checkOK, detail: fmt.Sprintf("network %q from %s; plugins %s in %s", list.Name, file, strings.Join(types, ", "), binDir)}}
}

// checkTools looks for the binaries the daemons run containers with.
func checkTools(names []string) []checkResult {
	var out []checkResult
	for _, n := range names {
		if n != "containerd" {
			continue
		}
		if p, err := exec.LookPath("runc"); err == nil {
			out = append(out, checkResult{name: "runc", status: checkOK, detail: p})
		} else {
			out = append(out, checkResult{name: "runc", status: checkWarn, detail: "runc is not on fnrun's PATH (containerd needs it on its own PATH)", fix: "install runc"})
		}
		if p, err := exec.LookPath(fncd.FnrunShim); err == nil {
			out = append(out, checkResult{name: "shim", status: checkOK, detail: p + ": tasks run with " + fncd.FnrunRuntime + " (containerd must find it on its own PATH too)"})
		} else {
			out = append(out, checkResult{name: "shim", status: checkWarn, detail: fncd.FnrunShim + " is not on PATH: tasks run with " + fncd.DefaultRuntime + ", whose every task delete runs runc twice",
				fix: "go build -o /usr/local/bin/" + fncd.FnrunShim + " ./cmd/" + fncd.FnrunShim})
		}
		init := ""
		for _, name := range []string{"tini-static", "docker-init"} {
			if p, err := exec.LookPath(name); err == nil {
				init = p
				break
			}
		}
		if init != "" {
			out = append(out, checkResult{name: "init", status: checkOK, detail: init + " runs as process 1 of containerd containers"})
		} else {
			out = append(out, checkResult{name: "init", status: checkWarn, detail: "no tini-static or docker-init on PATH: containerd containers run their command as process 1 (no zombie reaping, SIGTERM ignored by most programs)",
				fix: "install tini (Debian: tini)"})
		}
	}
	return out
}
