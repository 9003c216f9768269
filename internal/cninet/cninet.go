// Package cninet gives the containers of a runtime without networking of
// its own (containerd) what Docker gives its containers: a network, and the
// /etc/resolv.conf, /etc/hosts and /etc/hostname that make names resolve.
// It is apart from the driver because none of it talks to the runtime: it
// is host state, kept on the host's file system and in CNI's plugins.
//
// The network is the first one of a CNI configuration folder, set up in a
// namespace made and pinned before the container exists (package netns), so
// that an OCI spec can name it by path. The pin's file name is the CNI
// container id, so whoever finds the file (a Close, a holder's stop, a later
// instance's leak reaper) can tear the attachment down with nothing else to
// go on. The /etc files are written per container, the way Docker writes
// them, to be bind-mounted read-only.
//
// Both live under a state folder, by runtime namespace, label tag and driver
// instance:
//
//	<state>/netns/<namespace>/<tag>/<instance>/<CNI container id>
//	<state>/etc/<namespace>/<tag>/<instance>/<container>/{resolv.conf,hosts,hostname}
//
// A tmpfs is the right place for it: none of it survives a reboot. Every
// instance of a tag reaps what the tag's other instances left (they share
// the state folder), never its own.
package cninet

import (
	"context"
	"crypto/rand"
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
	"github.com/fnrun/fnrun/internal/logs"
	"github.com/fnrun/fnrun/internal/netns"
)

// Config places one driver instance's network and /etc files.
type Config struct {
	// ConfDir and BinDir locate the CNI configuration and plugins; empty
	// means drivers.DefaultCNIConfDir and drivers.DefaultCNIBinDir. Setting
	// either makes a configuration required (see New).
	ConfDir, BinDir string
	// StateDir holds the namespaces and the /etc files; it must be set.
	StateDir string
	// Namespace is the runtime's namespace, Tag the label tag and Instance
	// the driver instance's id; any string is fine, an unsafe file name
	// becomes a hash.
	Namespace, Tag, Instance string
}

// NetNSDir is the folder of the label tag's namespaces, a folder per
// instance in it.
func (c Config) NetNSDir() string { return c.tagDir("netns") }

// EtcDir is the folder of the label tag's /etc files, a folder per
// instance in it and one per container in those.
func (c Config) EtcDir() string { return c.tagDir("etc") }

func (c Config) tagDir(kind string) string {
	return filepath.Join(c.StateDir, kind, pathComponent(c.Namespace), pathComponent(c.Tag))
}

// IDPrefix starts the CNI container id of every attachment of the label
// tag, so that the plugins' state (such as host-local's address leases)
// tells the tag's attachments apart.
func (c Config) IDPrefix() string {
	h := sha256.Sum256([]byte(c.Namespace + "\x00" + c.Tag))
	return "fnrun-" + hex.EncodeToString(h[:4]) + "-"
}

// Caller makes one call that may block on the outside world, bounded and
// recorded as the driver's (lifecycle.Caller is one).
type Caller interface {
	Call(ctx context.Context, api string, f func(context.Context) error) error
}

// interfacePrefix names CNI's interfaces: eth0 for the one network.
const interfacePrefix = "eth"

var confExtensions = []string{".conf", ".conflist", ".json"}

// Network gives each container its own namespace with an attachment to the
// first network of the CNI configuration.
type Network struct {
	cni  gocni.CNI
	name string // the configuration's network name, for errors and logs
	call Caller
	log  *logrus.Entry
	// tagDir holds the instance folders of every driver with our label
	// tag; dir is ours.
	tagDir   string
	dir      string
	idPrefix string
}

// New loads the CNI configuration. Without one it returns nil, nil, unless
// cfg.ConfDir or cfg.BinDir is set; a broken one (unloadable, a plugin
// missing) fails with drivers.ErrInvalidConfig: asking for networking and
// silently running without it would be worse than not starting. call makes
// CNI's setups and teardowns; a nil log discards.
func New(cfg Config, call Caller, log *logrus.Entry) (*Network, error) {
	if log == nil {
		log = logs.Discard()
	}
	explicit := cfg.ConfDir != "" || cfg.BinDir != ""
	confDir, binDir := cfg.ConfDir, cfg.BinDir
	if confDir == "" {
		confDir = drivers.DefaultCNIConfDir
	}
	if binDir == "" {
		binDir = drivers.DefaultCNIBinDir
	}
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("CNI: %s: %w", fmt.Sprintf(format, args...), drivers.ErrInvalidConfig)
	}
	if cfg.StateDir == "" {
		return nil, invalid("no state folder")
	}
	files, err := libcni.ConfFiles(confDir, confExtensions)
	if err != nil {
		return nil, invalid("read configuration folder %s: %v", confDir, err)
	}
	if len(files) == 0 {
		if explicit {
			return nil, invalid("no network configuration (%s) in %s", strings.Join(confExtensions, ", "), confDir)
		}
		log.WithField("cni_conf_dir", confDir).Warn("no CNI network configuration: containers get loopback only (set CNIConfDir and CNIBinDir to give them a network)")
		return nil, nil
	}
	c, err := gocni.New(
		gocni.WithPluginConfDir(confDir),
		gocni.WithPluginDir([]string{binDir}),
		gocni.WithInterfacePrefix(interfacePrefix))
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
	tagDir := cfg.NetNSDir()
	n := &Network{
		cni:      c,
		name:     net.Name,
		call:     call,
		log:      log,
		tagDir:   tagDir,
		dir:      filepath.Join(tagDir, pathComponent(cfg.Instance)),
		idPrefix: cfg.IDPrefix(),
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
		n.RemoveDirs()
		return nil, invalid("cannot create network namespaces (the driver needs CAP_SYS_ADMIN on the daemon's host): %v", err)
	}
	if err := netns.Remove(probe); err != nil {
		// The pinned probe stays for the tag's next instance to reap.
		return nil, invalid("cannot remove network namespaces: %v", err)
	}
	return n, nil
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

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NS is one pinned namespace with a CNI attachment. It is a
// containerd.NetworkLease: Release ends it.
type NS struct {
	n    *Network
	id   string // the CNI container id, the file's name
	path string
	info Info // of the setup; zero for a namespace found on disk
}

// Path is the pinned namespace, for an OCI spec.
func (ns *NS) Path() string { return ns.path }

// Info is what the container's /etc files take from the attachment.
func (ns *NS) Info() Info { return ns.info }

// Attach creates a namespace and sets it up with CNI. On error nothing is
// left behind (the attachment is torn down before the namespace goes).
func (n *Network) Attach(ctx context.Context) (*NS, error) {
	id := n.idPrefix + randomID()
	ns := &NS{n: n, id: id, path: filepath.Join(n.dir, id)}
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
	err = n.call.Call(ctx, "cni.Setup", func(ctx context.Context) error {
		var err error
		res, err = n.cni.Setup(ctx, id, ns.path)
		return err
	})
	if err != nil {
		// The call bounds the teardown; the caller's ending must not
		// prevent it.
		if derr := ns.Release(context.WithoutCancel(ctx)); derr != nil {
			n.log.WithError(derr).WithField("netns", ns.path).Warn("cannot undo a failed CNI setup; the leak reaper of a later instance will")
		}
		return nil, fmt.Errorf("network %q: CNI setup: %w", n.name, err)
	}
	if n.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		n.log.WithFields(logrus.Fields{"netns": ns.path, "ips": resultIPs(res)}).Debug("CNI network set up")
	}
	ns.info = infoOf(res)
	return ns, nil
}

// Release tears the CNI attachment down, then removes the namespace. When
// CNI fails the namespace file is kept, so that a later try (or the leak
// reaper) still knows the attachment.
func (ns *NS) Release(ctx context.Context) error {
	n, path := ns.n, ns.path
	if !netns.IsPinned(path) {
		// Not (or no longer) a pinned namespace, after a crash between file
		// and pin or an earlier unpin: the plugins fail on such a path, and
		// with none still do their best-effort cleanup (the address lease).
		path = ""
	}
	err := n.call.Call(ctx, "cni.Remove", func(ctx context.Context) error {
		return n.cni.Remove(ctx, ns.id, path)
	})
	if err != nil {
		return fmt.Errorf("network %q: CNI teardown of %s: %w", n.name, ns.id, err)
	}
	return netns.Remove(ns.path)
}

// Reap tears down the namespaces that other instances with our label tag
// left, then removes their folders, and returns how many namespaces went.
// Our own folder is never touched.
func (n *Network) Reap(ctx context.Context, log *logrus.Entry) int {
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
			ns := &NS{n: n, id: f.Name(), path: filepath.Join(dir, f.Name())}
			var err error
			if strings.HasPrefix(ns.id, n.idPrefix) {
				err = ns.Release(ctx)
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

// OwnNS gives the attachment of path when path is a namespace of our label
// tag (any instance's), such as another instance's container's, to Release.
func (n *Network) OwnNS(path string) (*NS, bool) {
	if n == nil || path == "" {
		return nil, false
	}
	clean := filepath.Clean(path)
	rel, err := filepath.Rel(n.tagDir, clean)
	if err != nil || strings.HasPrefix(rel, "..") || strings.Count(rel, string(filepath.Separator)) != 1 {
		return nil, false
	}
	id := filepath.Base(clean)
	if !strings.HasPrefix(id, n.idPrefix) {
		return nil, false
	}
	return &NS{n: n, id: id, path: clean}, true
}

// RemoveDirs removes our folder, and the tag's, when they are empty:
// nothing of ours is left, and another instance of the tag may still be
// using the tag's folder.
func (n *Network) RemoveDirs() {
	_ = os.Remove(n.dir)
	_ = os.Remove(n.tagDir)
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
