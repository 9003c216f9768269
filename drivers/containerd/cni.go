package containerd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	gocni "github.com/containerd/go-cni"
	"github.com/containernetworking/cni/libcni"
	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/netns"
)

// DefaultStateDir is where the driver keeps what it owns on the host: the
// pinned network namespaces of its containers and holders, under
// netns/<containerd namespace>/<label tag>/<instance>/, and the /etc files
// of its containers, under etc/<containerd namespace>/<label tag>/<instance>/.
// A tmpfs is the right place: neither survives a reboot.
const DefaultStateDir = "/run/fnrun/containerd"

// cniInterfacePrefix names CNI's interfaces: eth0 for the one network.
const cniInterfacePrefix = "eth"

// cniNetwork gives each container and pool holder a namespace of its own,
// made and pinned by the driver before the container exists (package
// netns) and set up by the first network of the configuration folder. The
// pin's file name is the CNI container id, so whoever finds the file (a
// Close, a holder's stop, a later instance's leak reaper) can tear the
// attachment down with nothing else to go on.
type cniNetwork struct {
	cni     gocni.CNI
	network string // the configuration's network name, for logs
	// tagDir holds the instance folders of every driver with our label
	// tag; dir is ours. Namespaces are files named by their CNI id.
	tagDir string
	dir    string
	// idPrefix starts every CNI container id of our label tag, so the
	// attachments of one tag can be told apart in the plugins' state.
	idPrefix string
}

var cniConfExtensions = []string{".conf", ".conflist", ".json"}

// newCNINetwork loads the CNI configuration. Without one it returns nil,
// nil, unless CNIConfDir or CNIBinDir is set; a broken one (unloadable, a
// plugin missing) fails with drivers.ErrInvalidConfig: asking for
// networking and silently running without it would be worse than not
// starting.
func newCNINetwork(cfg drivers.Config, stateDir, instance string, log *logrus.Entry) (*cniNetwork, error) {
	explicit := cfg.CNIConfDir != "" || cfg.CNIBinDir != ""
	confDir, binDir := cfg.CNIConfDir, cfg.CNIBinDir
	if confDir == "" {
		confDir = drivers.DefaultCNIConfDir
	}
	if binDir == "" {
		binDir = drivers.DefaultCNIBinDir
	}
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("containerd driver: CNI: %s: %w", fmt.Sprintf(format, args...), drivers.ErrInvalidConfig)
	}
	files, err := libcni.ConfFiles(confDir, cniConfExtensions)
	if err != nil {
		return nil, invalid("read configuration folder %s: %v", confDir, err)
	}
	if len(files) == 0 {
		if explicit {
			return nil, invalid("no network configuration (%s) in %s", strings.Join(cniConfExtensions, ", "), confDir)
		}
		log.WithField("cni_conf_dir", confDir).Warn("no CNI network configuration: containers get loopback only (set CNIConfDir and CNIBinDir to give them a network)")
		return nil, nil
	}
	c, err := gocni.New(
		gocni.WithPluginConfDir(confDir),
		gocni.WithPluginDir([]string{binDir}),
		gocni.WithInterfacePrefix(cniInterfacePrefix))
	if err == nil {
		err = c.Load(gocni.WithDefaultConf)
	}
	if err != nil {
		return nil, invalid("load configuration from %s: %v", confDir, err)
	}
	nets := c.GetConfig().Networks
	if len(nets) == 0 || nets[0].Config == nil {
		return nil, invalid("no usable network in %s", confDir)
	}
	net := nets[0].Config
	for _, p := range net.Plugins {
		if p.Network == nil || p.Network.Type == "" {
			continue
		}
		bin := filepath.Join(binDir, p.Network.Type)
		if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return nil, invalid("network %q needs plugin %q, not found as an executable in %s", net.Name, p.Network.Type, binDir)
		}
	}
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	tagDir := filepath.Join(stateDir, "netns", pathComponent(cfg.Namespace()), pathComponent(cfg.ContainerLabelTag))
	n := &cniNetwork{
		cni:      c,
		network:  net.Name,
		tagDir:   tagDir,
		dir:      filepath.Join(tagDir, pathComponent(instance)),
		idPrefix: cniIDPrefix(cfg.Namespace(), cfg.ContainerLabelTag),
	}
	err = os.MkdirAll(n.dir, 0o700)
	if err != nil {
		// Another instance of the tag may have removed the tag's folder,
		// empty, as it closed: once more.
		err = os.MkdirAll(n.dir, 0o700)
	}
	if err != nil {
		return nil, invalid("network namespace folder: %v", err)
	}
	// Creating a namespace needs CAP_SYS_ADMIN: find out now rather than
	// at every container.
	probe := filepath.Join(n.dir, "probe-"+randomID())
	if err := netns.Create(probe); err != nil {
		return nil, invalid("cannot create network namespaces (the driver needs CAP_SYS_ADMIN on the daemon's host): %v", err)
	}
	if err := netns.Remove(probe); err != nil {
		return nil, invalid("cannot remove network namespaces: %v", err)
	}
	return n, nil
}

// cniIDPrefix starts the CNI ids of one containerd namespace and label tag.
func cniIDPrefix(namespace, tag string) string {
	h := sha256.Sum256([]byte(namespace + "\x00" + tag))
	return "fnrun-" + hex.EncodeToString(h[:4]) + "-"
}

var safeComponent = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// pathComponent is s when it is a safe file name, else a distinct hash.
func pathComponent(s string) string {
	switch {
	case s == "":
		return "_"
	case s != "." && s != ".." && !strings.HasPrefix(s, "h-") && safeComponent.MatchString(s):
		return s
	}
	h := sha256.Sum256([]byte(s))
	return "h-" + hex.EncodeToString(h[:8])
}

// netNS is one pinned namespace with a CNI attachment, its file named id.
type netNS struct {
	id   string // the CNI container id
	path string
	info netInfo // of the setup; zero for a namespace found on disk
}

// attachNetwork creates a namespace and sets it up with CNI. On error nothing
// is left behind (the attachment is torn down before the namespace goes).
func (d *daemon) attachNetwork(ctx context.Context) (*netNS, error) {
	n := d.cni
	id := n.idPrefix + randomID()
	ns := &netNS{id: id, path: filepath.Join(n.dir, id)}
	err := netns.Create(ns.path)
	if errors.Is(err, os.ErrNotExist) {
		// Our folder went away from outside: make it again, once.
		if err = os.MkdirAll(n.dir, 0o700); err == nil {
			err = netns.Create(ns.path)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	var res *gocni.Result
	err = d.call(ctx, "cni.Setup", func(ctx context.Context) error {
		var err error
		res, err = n.cni.Setup(ctx, id, ns.path)
		return err
	})
	if err != nil {
		cctx, cancel := d.cleanupCtx(ctx)
		defer cancel()
		if derr := d.detachNetwork(cctx, ns); derr != nil {
			d.log.WithError(derr).WithField("netns", ns.path).Warn("cannot undo a failed CNI setup; the leak reaper of a later instance will")
		}
		return nil, fmt.Errorf("network %q: CNI setup: %w", n.network, err)
	}
	if d.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		d.log.WithFields(logrus.Fields{"netns": ns.path, "ips": resultIPs(res)}).Debug("CNI network set up")
	}
	ns.info = netInfoOf(res)
	return ns, nil
}

// detachNetwork tears the CNI attachment down, then removes the namespace.
// When CNI fails the namespace file is kept, so that a later try (or the
// leak reaper) still knows the attachment.
func (d *daemon) detachNetwork(ctx context.Context, ns *netNS) error {
	path := ns.path
	if !netns.IsPinned(path) {
		// Not (or no longer) a pinned namespace, after a crash between file
		// and pin or an earlier unpin: the plugins fail on such a path, and
		// with none still do their best-effort cleanup (the address lease).
		path = ""
	}
	err := d.call(ctx, "cni.Remove", func(ctx context.Context) error {
		return d.cni.cni.Remove(ctx, ns.id, path)
	})
	if err != nil {
		return fmt.Errorf("network %q: CNI teardown of %s: %w", d.cni.network, ns.id, err)
	}
	return netns.Remove(ns.path)
}

// reapNetworks tears down the namespaces that other instances with our
// label tag left, then their folders. Our own folder is never touched.
func (d *daemon) reapNetworks(ctx context.Context, log *logrus.Entry) int {
	n := d.cni
	entries, err := os.ReadDir(n.tagDir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.WithError(err).Warn("leak reaper: cannot list network namespaces")
		}
		return 0
	}
	removed := 0
	for _, e := range entries {
		dir := filepath.Join(n.tagDir, e.Name())
		if !e.IsDir() || dir == n.dir {
			continue
		}
		files, err := os.ReadDir(dir)
		if err != nil {
			log.WithError(err).WithField("dir", dir).Warn("leak reaper: cannot list network namespaces")
			continue
		}
		for _, f := range files {
			if ctx.Err() != nil {
				return removed
			}
			ns := &netNS{id: f.Name(), path: filepath.Join(dir, f.Name())}
			var err error
			if strings.HasPrefix(ns.id, n.idPrefix) {
				err = d.detachNetwork(ctx, ns)
			} else {
				err = netns.Remove(ns.path) // a probe, or not ours to tear down
			}
			if err != nil {
				log.WithError(err).WithField("netns", ns.path).Warn("leak reaper: cannot remove network namespace")
				continue
			}
			removed++
		}
		_ = os.Remove(dir) // only when empty
	}
	return removed
}

// ownNetNSPath reports whether path is a namespace file of our label tag,
// and gives its CNI attachment.
func (d *daemon) ownNetNSPath(path string) (*netNS, bool) {
	if d.cni == nil || path == "" {
		return nil, false
	}
	clean := filepath.Clean(path)
	rel, err := filepath.Rel(d.cni.tagDir, clean)
	if err != nil || strings.HasPrefix(rel, "..") || strings.Count(rel, string(filepath.Separator)) != 1 {
		return nil, false
	}
	id := filepath.Base(clean)
	if !strings.HasPrefix(id, d.cni.idPrefix) {
		return nil, false
	}
	return &netNS{id: id, path: clean}, true
}

func resultIPs(res *gocni.Result) []string {
	if res == nil {
		return nil
	}
	var ips []string
	for name, cfg := range res.Interfaces {
		for _, ip := range cfg.IPConfigs {
			ips = append(ips, name+"="+ip.IP.String())
		}
	}
	sort.Strings(ips)
	return ips
}

// cniLease is a cookie's own CNI network, torn down at Close.
type cniLease struct {
	d  *daemon
	ns *netNS
}

func (l *cniLease) Path() string { return l.ns.path }

func (l *cniLease) Release(ctx context.Context) error {
	return l.d.detachNetwork(ctx, l.ns)
}
