package cninet

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	gocni "github.com/containerd/go-cni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/sirupsen/logrus"
)

// Containerd, unlike Docker, gives a container no /etc/resolv.conf,
// /etc/hosts or /etc/hostname, so names do not resolve inside: EtcFiles
// writes the three per container, as Docker would.

const (
	hostResolvConfPath = "/etc/resolv.conf"
	// systemdResolvConfPath lists the servers systemd-resolved forwards
	// to; its stub at systemdStubResolver is unreachable from the
	// container's network namespace.
	systemdResolvConfPath = "/run/systemd/resolve/resolv.conf"
	systemdStubResolver   = "127.0.0.53"
)

// defaultNameservers are Docker's, for a container whose host lists none
// it can reach. Docker adds Google's IPv6 servers only to IPv6 networks,
// which CNI here does not give.
var defaultNameservers = []string{"8.8.8.8", "8.8.4.4"}

// EtcFileNames are the files written per container, to mount at
// /etc/<name>.
func EtcFileNames() []string { return []string{"resolv.conf", "hosts", "hostname"} }

// Info is what a container's /etc files take from its network; zero for a
// container without one.
type Info struct {
	IPs []string  // the container interface's addresses
	DNS types.DNS // what the network configuration's "dns" gives
}

// HasIPv6 reports whether the container has an IPv6 address.
func (i Info) HasIPv6() bool { return slices.ContainsFunc(i.IPs, isIPv6) }

// isIPv6 takes zoned addresses (fe80::1%eth0) too, as resolv.conf may.
func isIPv6(addr string) bool {
	ip, err := netip.ParseAddr(addr)
	return err == nil && ip.Is6() && !ip.Is4In6()
}

// infoOf reads a CNI result. The container's interface is always the
// first one, eth0: a single network is set up.
func infoOf(res *gocni.Result) Info {
	var info Info
	if res == nil {
		return info
	}
	if iface := res.Interfaces[interfacePrefix+"0"]; iface != nil {
		for _, ip := range iface.IPConfigs {
			info.IPs = append(info.IPs, ip.IP.String())
		}
	}
	for _, dns := range res.DNS {
		info.DNS = mergeDNS(info.DNS, dns)
	}
	return info
}

// EtcFiles writes the /etc files of one driver instance's containers.
type EtcFiles struct {
	// tagDir holds the instance folders of every driver with our label
	// tag; dir is ours, with a folder per container.
	tagDir string
	dir    string
}

// NewEtcFiles places the files by cfg's StateDir, Namespace, Tag and
// Instance; it touches nothing yet.
func NewEtcFiles(cfg Config) *EtcFiles {
	tagDir := cfg.EtcDir()
	return &EtcFiles{tagDir: tagDir, dir: filepath.Join(tagDir, pathComponent(cfg.Instance))}
}

// Dir is the folder of container id's files.
func (e *EtcFiles) Dir(id string) string { return filepath.Join(e.dir, pathComponent(id)) }

// Write writes the files of container id and returns their folder, which
// the caller removes with the container. The host's resolv.conf is read
// each time, as Docker does, so that a change on the host reaches the next
// container.
func (e *EtcFiles) Write(id, hostname string, info Info) (string, error) {
	hostConf, err := HostResolvConf()
	if err != nil {
		return "", fmt.Errorf("/etc files of %s: %w", id, err)
	}
	contents := map[string][]byte{
		"resolv.conf": ContainerResolvConf(hostConf, info.DNS, info.HasIPv6()),
		"hosts":       hostsFile(hostname, info.IPs),
		"hostname":    []byte(hostname + "\n"),
	}
	dir := e.Dir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("/etc files of %s: %w", id, err)
	}
	for _, name := range EtcFileNames() {
		if err := os.WriteFile(filepath.Join(dir, name), contents[name], 0o644); err != nil {
			_ = os.RemoveAll(dir)
			return "", fmt.Errorf("/etc files of %s: %w", id, err)
		}
	}
	return dir, nil
}

// Reap removes the folders of other instances with our label tag, whose
// containers are gone, and returns how many went; never our own.
func (e *EtcFiles) Reap(log *logrus.Entry) int {
	entries, err := os.ReadDir(e.tagDir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.WithError(err).Warn("leak reaper: cannot list /etc file folders")
		}
		return 0
	}
	removed := 0
	for _, entry := range entries {
		dir := filepath.Join(e.tagDir, entry.Name())
		if dir == e.dir {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			log.WithError(err).WithField("dir", dir).Warn("leak reaper: cannot remove /etc files")
			continue
		}
		removed++
	}
	return removed
}

// RemoveDirs removes our folder, and the tag's, when they are empty.
func (e *EtcFiles) RemoveDirs() {
	_ = os.Remove(e.dir)
	_ = os.Remove(e.tagDir)
}

// HostResolvConf reads the host's resolv.conf the way Docker picks it:
// systemd-resolved's upstream list when its stub is the only server; empty
// when the host has none.
func HostResolvConf() ([]byte, error) {
	return readHostResolvConf(hostResolvConfPath, systemdResolvConfPath)
}

func readHostResolvConf(path, systemdPath string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("host resolv.conf: %w", err)
	}
	if ns := parseResolvConf(b, false).Nameservers; len(ns) == 1 && ns[0] == systemdStubResolver {
		if upstream, err := os.ReadFile(systemdPath); err == nil {
			return upstream, nil
		}
	}
	return b, nil
}

// ContainerResolvConf filters the host's resolv.conf as Docker does: no
// loopback nameservers (nothing listens there in the container's
// namespace), and no IPv6 ones for a container without an IPv6 address.
// The network's DNS replaces the matching parts, as Docker's --dns flags
// do, and Docker's default nameservers fill an empty list.
func ContainerResolvConf(host []byte, netDNS types.DNS, ipv6 bool) []byte {
	hostConf := parseResolvConf(host, true)
	if !ipv6 {
		hostConf.Nameservers = slices.DeleteFunc(hostConf.Nameservers, isIPv6)
	}
	conf := mergeDNS(hostConf, netDNS)
	if len(conf.Nameservers) == 0 {
		conf.Nameservers = defaultNameservers
	}
	var b bytes.Buffer
	for _, ns := range conf.Nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	// The resolver takes the last of domain and search: write one.
	switch {
	case len(conf.Search) > 0:
		fmt.Fprintf(&b, "search %s\n", strings.Join(conf.Search, " "))
	case conf.Domain != "":
		fmt.Fprintf(&b, "domain %s\n", conf.Domain)
	}
	if len(conf.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(conf.Options, " "))
	}
	return b.Bytes()
}

// parseResolvConf reads the keywords a container's resolver needs, without
// the loopback nameservers when dropLoopback is set; sortlist and
// comments are dropped.
func parseResolvConf(content []byte, dropLoopback bool) types.DNS {
	var conf types.DNS
	for _, line := range strings.Split(string(content), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "nameserver":
			if ip := net.ParseIP(fields[1]); dropLoopback && ip != nil && ip.IsLoopback() {
				continue
			}
			conf.Nameservers = append(conf.Nameservers, fields[1])
		case "domain":
			conf.Domain, conf.Search = fields[1], nil
		case "search":
			conf.Search, conf.Domain = fields[1:], ""
		case "options":
			conf.Options = append(conf.Options, fields[1:]...)
		}
	}
	return conf
}

// mergeDNS replaces each part of base that over gives. A domain or search
// list replaces both, the resolver using only one of them.
func mergeDNS(base, over types.DNS) types.DNS {
	if len(over.Nameservers) > 0 {
		base.Nameservers = over.Nameservers
	}
	if over.Domain != "" || len(over.Search) > 0 {
		base.Domain, base.Search = over.Domain, over.Search
	}
	if len(over.Options) > 0 {
		base.Options = over.Options
	}
	return base
}

// hostsFile is Docker's /etc/hosts: the loopback and IPv6 names, then the
// container's addresses with its host name (none without an address, as
// with Docker's --network none).
func hostsFile(hostname string, ips []string) []byte {
	var b bytes.Buffer
	b.WriteString("127.0.0.1\tlocalhost\n" +
		"::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"fe00::0\tip6-localnet\n" +
		"ff00::0\tip6-mcastprefix\n" +
		"ff02::1\tip6-allnodes\n" +
		"ff02::2\tip6-allrouters\n")
	for _, ip := range ips {
		fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
	}
	return b.Bytes()
}
