package cninet

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	gocni "github.com/containerd/go-cni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/fnrun/fnrun/internal/logs"
)

func TestContainerResolvConf(t *testing.T) {
	for _, tc := range []struct {
		name string
		host string
		cni  types.DNS
		ipv6 bool
		want string
	}{{
		name: "LoopbackRemoved",
		host: "# a comment\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\nnameserver 127.1.2.3\nnameserver 2001:db8::1\nsearch example.com corp.example.com\noptions ndots:2 timeout:1\nsortlist 10.0.0.0\n",
		ipv6: true,
		want: "nameserver 10.0.0.2\nnameserver 2001:db8::1\nsearch example.com corp.example.com\noptions ndots:2 timeout:1\n",
	}, {
		name: "IPv6RemovedWithoutIPv6",
		host: "nameserver 2001:db8::1\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\n",
		want: "nameserver 10.0.0.2\n",
	}, {
		name: "OnlyIPv6Left",
		host: "nameserver 2001:db8::1\n",
		want: "nameserver 8.8.8.8\nnameserver 8.8.4.4\n",
	}, {
		name: "CNIIPv6NameserverKept",
		host: "nameserver 10.0.0.2\n",
		cni:  types.DNS{Nameservers: []string{"2001:db8::53"}},
		want: "nameserver 2001:db8::53\n",
	}, {
		name: "DefaultsWhenNoneLeft",
		host: "nameserver 127.0.0.1\nnameserver ::1\nsearch example.com\noptions edns0\n",
		want: "nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch example.com\noptions edns0\n",
	}, {
		name: "EmptyHost",
		want: "nameserver 8.8.8.8\nnameserver 8.8.4.4\n",
	}, {
		name: "LastOfDomainAndSearch",
		host: "search a.example\ndomain b.example\nnameserver 10.0.0.2\noptions ndots:1\noptions rotate\n",
		want: "nameserver 10.0.0.2\ndomain b.example\noptions ndots:1 rotate\n",
	}, {
		name: "CNINameserversKeepHostSearch",
		host: "nameserver 10.0.0.2\nsearch example.com\noptions ndots:2\n",
		cni:  types.DNS{Nameservers: []string{"10.88.0.53"}},
		want: "nameserver 10.88.0.53\nsearch example.com\noptions ndots:2\n",
	}, {
		name: "CNIReplacesEverything",
		host: "nameserver 127.0.0.53\ndomain example.com\noptions ndots:2\n",
		cni:  types.DNS{Nameservers: []string{"10.88.0.53", "10.88.0.54"}, Search: []string{"fnrun.test"}, Options: []string{"ndots:5"}},
		want: "nameserver 10.88.0.53\nnameserver 10.88.0.54\nsearch fnrun.test\noptions ndots:5\n",
	}, {
		name: "CNISearchOnly",
		host: "nameserver 127.0.0.1\n",
		cni:  types.DNS{Search: []string{"fnrun.test"}},
		want: "nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch fnrun.test\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(ContainerResolvConf([]byte(tc.host), tc.cni, tc.ipv6)); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestReadHostResolvConf(t *testing.T) {
	const upstream = "nameserver 192.0.2.1\nsearch lan\n"
	for _, tc := range []struct {
		name     string
		host     string // "" for no file
		systemd  string // "" for no file
		wantFrom string // "host", "systemd" or "" for nothing
	}{
		{name: "Plain", host: "nameserver 10.0.0.2\n", systemd: upstream, wantFrom: "host"},
		{name: "SystemdStub", host: "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n", systemd: upstream, wantFrom: "systemd"},
		{name: "StubWithoutUpstreamFile", host: "nameserver 127.0.0.53\n", wantFrom: "host"},
		{name: "StubAmongOthers", host: "nameserver 127.0.0.53\nnameserver 10.0.0.2\n", systemd: upstream, wantFrom: "host"},
		{name: "NoHostFile", systemd: upstream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			hostPath, systemdPath := filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "systemd-resolv.conf")
			for path, content := range map[string]string{hostPath: tc.host, systemdPath: tc.systemd} {
				if content == "" {
					continue
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := readHostResolvConf(hostPath, systemdPath)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"host": tc.host, "systemd": tc.systemd}[tc.wantFrom]
			if string(got) != want {
				t.Errorf("got %q, want %q (from %q)", got, want, tc.wantFrom)
			}
		})
	}
}

const localhostLines = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"

func TestHostsFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		ips  []string
		want string
	}{
		{name: "LoopbackOnly", want: localhostLines},
		{name: "OneAddress", ips: []string{"10.88.0.7"}, want: localhostLines + "10.88.0.7\tcall-1\n"},
		{name: "DualStack", ips: []string{"10.88.0.7", "fd00::7"}, want: localhostLines + "10.88.0.7\tcall-1\nfd00::7\tcall-1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(hostsFile("call-1", tc.ips)); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// TestInfoOf: the addresses are the container interface's, not the
// bridge's; the DNS of every result is merged.
func TestInfoOf(t *testing.T) {
	res := &gocni.Result{
		Interfaces: map[string]*gocni.Config{
			"fnrun0": {IPConfigs: []*gocni.IPConfig{{IP: net.ParseIP("10.88.0.1")}}},
			"eth0":   {Sandbox: "/run/netns/x", IPConfigs: []*gocni.IPConfig{{IP: net.ParseIP("10.88.0.9")}}},
		},
		DNS: []types.DNS{{Nameservers: []string{"10.88.0.53"}}, {Search: []string{"fnrun.test"}}},
	}
	info := infoOf(res)
	if !slices.Equal(info.IPs, []string{"10.88.0.9"}) {
		t.Errorf("ips %q, want eth0's", info.IPs)
	}
	if !slices.Equal(info.DNS.Nameservers, []string{"10.88.0.53"}) || !slices.Equal(info.DNS.Search, []string{"fnrun.test"}) {
		t.Errorf("dns %+v", info.DNS)
	}
	if got := infoOf(nil); got.IPs != nil || !got.DNS.IsEmpty() {
		t.Errorf("nil result: %+v", got)
	}
}

func TestInfoHasIPv6(t *testing.T) {
	for _, tc := range []struct {
		ips  []string
		want bool
	}{
		{nil, false},
		{[]string{"10.88.0.5"}, false},
		{[]string{"::ffff:10.88.0.5"}, false},
		{[]string{"10.88.0.5", "fd00::5"}, true},
	} {
		if got := (Info{IPs: tc.ips}).HasIPv6(); got != tc.want {
			t.Errorf("HasIPv6(%v) = %v, want %v", tc.ips, got, tc.want)
		}
	}
}

// TestEtcFiles writes a container's files, and reaps another instance's
// folder while keeping our own and another tag's.
func TestEtcFiles(t *testing.T) {
	state := t.TempDir()
	cfg := Config{StateDir: state, Namespace: "fnrun", Tag: "etc-test", Instance: "mine"}
	mine := NewEtcFiles(cfg)
	dir, err := mine.Write("call-1", "call-1", Info{IPs: []string{"10.88.0.7"}})
	if err != nil {
		t.Fatal(err)
	}
	if dir != mine.Dir("call-1") || filepath.Dir(filepath.Dir(dir)) != cfg.EtcDir() {
		t.Errorf("folder %s, want %s under %s", dir, mine.Dir("call-1"), cfg.EtcDir())
	}
	for name, want := range map[string]string{
		"hosts":    localhostLines + "10.88.0.7\tcall-1\n",
		"hostname": "call-1\n",
	} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", name, b, err, want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "resolv.conf")); err != nil || len(b) == 0 {
		t.Errorf("resolv.conf: %q, %v", b, err)
	}

	crashedCfg := cfg
	crashedCfg.Instance = "crashed"
	crashed, err := NewEtcFiles(crashedCfg).Write("leak", "leak", Info{})
	if err != nil {
		t.Fatal(err)
	}
	otherCfg := cfg
	otherCfg.Tag = "other"
	other, err := NewEtcFiles(otherCfg).Write("kept", "kept", Info{})
	if err != nil {
		t.Fatal(err)
	}
	if n := mine.Reap(logs.Discard()); n != 1 {
		t.Errorf("reaped %d folders, want 1", n)
	}
	if _, err := os.Stat(filepath.Dir(crashed)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("crashed instance's folder: %v, want removed", err)
	}
	for _, d := range []string{dir, other} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s: %v, want kept", d, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	mine.RemoveDirs()
	if _, err := os.Stat(cfg.EtcDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tag folder after RemoveDirs: %v, want removed", err)
	}
}

func TestPathComponent(t *testing.T) {
	seen := map[string]string{}
	for _, s := range []string{"", ".", "..", "a/b", "h-x", "ok_name-1.2", strings.Repeat("x", 65), "fnrun"} {
		got := pathComponent(s)
		if got == "" || got == "." || got == ".." || strings.ContainsRune(got, '/') {
			t.Errorf("pathComponent(%q) = %q, not a safe file name", s, got)
		}
		if prev, dup := seen[got]; dup {
			t.Errorf("pathComponent(%q) = pathComponent(%q) = %q", s, prev, got)
		}
		seen[got] = s
	}
	if got := pathComponent("ok_name-1.2"); got != "ok_name-1.2" {
		t.Errorf("a safe name changed: %q", got)
	}
}
