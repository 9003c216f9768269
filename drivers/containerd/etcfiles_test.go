package containerd

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/cninet"
)

const localhostLines = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"

// etcCat prints the three files, separated, then eth0's IPv4 address
// when there is an eth0.
const etcCat = `sh -c 'cat /etc/resolv.conf; echo ---; cat /etc/hosts; echo ---; cat /etc/hostname; echo ---; ip -4 -o addr show dev eth0 2>/dev/null | sed "s/.*inet \([0-9.]*\).*/\1/"'`

// etcView is what a container saw of its /etc files.
type etcView struct {
	resolvConf, hosts, hostname, ip string
}

// runEtcTask runs task (whose command is etcCat), checks that its /etc
// folder exists until Close and is gone after, and returns what it saw.
func runEtcTask(t *testing.T, d *Driver, task *drivers.Task) etcView {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut syncBuf
	task.Cmd, task.Stdout, task.Stderr = etcCat, &out, &errOut
	c, err := d.CreateCookie(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := c.CreateContainer(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res := w.Wait(ctx); res.Status() != drivers.StatusSuccess {
		t.Fatalf("status %s (%v); stdout %q stderr %q", res.Status(), res.Error(), out.String(), errOut.String())
	}
	dir := d.d.etc.Dir(task.ID)
	if _, err := os.Stat(filepath.Join(dir, "hosts")); err != nil {
		t.Errorf("/etc files before Close: %v", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("/etc folder %s after Close: %v, want removed", dir, err)
	}
	parts := strings.Split(out.String(), "---\n")
	if len(parts) != 4 {
		t.Fatalf("output %q (stderr %q)", out.String(), errOut.String())
	}
	return etcView{resolvConf: parts[0], hosts: parts[1], hostname: parts[2], ip: strings.TrimSpace(parts[3])}
}

// hostResolvConf is what a container without CNI DNS must see.
func hostResolvConf(t *testing.T) string {
	t.Helper()
	host, err := cninet.HostResolvConf()
	if err != nil {
		t.Fatal(err)
	}
	return string(cninet.ContainerResolvConf(host, types.DNS{}, false))
}

// withDNSConf copies the environment's CNI configuration with a "dns"
// section on its first plugin (the bridge, which returns it as is).
func withDNSConf(t *testing.T, env testEnv, dns types.DNS) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(env.cniConf, "*.conflist"))
	if err != nil || len(files) != 1 {
		t.Fatalf("want one .conflist in %s: %v, %v", env.cniConf, files, err)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var conf map[string]any
	if err := json.Unmarshal(b, &conf); err != nil {
		t.Fatal(err)
	}
	plugins, _ := conf["plugins"].([]any)
	first, _ := plugins[0].(map[string]any)
	if first == nil {
		t.Fatalf("no plugin in %s", files[0])
	}
	first["dns"] = dns
	if b, err = json.Marshal(conf); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(files[0])), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestEtcFilesInside reads the three files inside containers of every
// kind of network, and checks they are all removed with the containers.
func TestEtcFilesInside(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	ipv4 := regexp.MustCompile(`^10\.88\.\d+\.\d+$`)
	check := func(t *testing.T, got etcView, id, resolvConf string, withIP bool) {
		t.Helper()
		if got.resolvConf != resolvConf {
			t.Errorf("resolv.conf\n%s\nwant\n%s", got.resolvConf, resolvConf)
		}
		if got.hostname != id+"\n" {
			t.Errorf("hostname %q, want %q", got.hostname, id)
		}
		want := localhostLines
		if withIP {
			if !ipv4.MatchString(got.ip) {
				t.Fatalf("eth0 address %q", got.ip)
			}
			want += got.ip + "\t" + id + "\n"
		}
		if got.hosts != want {
			t.Errorf("hosts\n%s\nwant\n%s", got.hosts, want)
		}
	}
	noLeftovers := func(t *testing.T, d *Driver) {
		t.Helper()
		if left, err := in.allLeftovers(context.Background(), env, d.Settings().Tag, true); err != nil || len(left) != 0 {
			t.Errorf("leftovers %v, %v", left, err)
		}
	}
	newID := func() string { return "fnrun-etc-" + randomID() }

	t.Run("CNI", func(t *testing.T) {
		d := newTestDriver(t, env, drivers.Config{})
		id := newID()
		check(t, runEtcTask(t, d, &drivers.Task{ID: id, ImageRef: env.localImage}), id, hostResolvConf(t), true)
		noLeftovers(t, d)
	})
	t.Run("DisableNet", func(t *testing.T) {
		d := newTestDriver(t, env, drivers.Config{})
		id := newID()
		got := runEtcTask(t, d, &drivers.Task{ID: id, ImageRef: env.localImage, NoNetwork: true})
		if got.ip != "" {
			t.Errorf("eth0 %q in a container without network", got.ip)
		}
		check(t, got, id, hostResolvConf(t), false)
		noLeftovers(t, d)
	})
	t.Run("ReadOnlyRoot", func(t *testing.T) {
		d := newTestDriver(t, env, drivers.Config{EnableReadOnlyRootFs: true})
		id := newID()
		check(t, runEtcTask(t, d, &drivers.Task{ID: id, ImageRef: env.localImage}), id, hostResolvConf(t), true)
		noLeftovers(t, d)
	})
	t.Run("CNIDNS", func(t *testing.T) {
		dns := types.DNS{Nameservers: []string{"10.88.0.53"}, Search: []string{"fnrun.test"}, Options: []string{"ndots:3"}}
		d := newTestDriver(t, env, drivers.Config{CNIConfDir: withDNSConf(t, env, dns), CNIBinDir: env.cniBin})
		id := newID()
		want := "nameserver 10.88.0.53\nsearch fnrun.test\noptions ndots:3\n"
		check(t, runEtcTask(t, d, &drivers.Task{ID: id, ImageRef: env.localImage}), id, want, true)
		noLeftovers(t, d)
	})
	t.Run("Pool", func(t *testing.T) {
		d := poolDriver(t, env, drivers.Config{PreForkPoolSize: 1})
		id := newID()
		check(t, runEtcTask(t, d, &drivers.Task{ID: id, ImageRef: env.localImage}), id, hostResolvConf(t), true)
		if s, _ := d.PoolStats(); s.Misses != 0 {
			t.Errorf("misses %d: the container did not join a holder", s.Misses)
		}
		noLeftovers(t, d)
	})
	t.Run("TaskVolumeWins", func(t *testing.T) {
		d := newTestDriver(t, env, drivers.Config{})
		hosts := filepath.Join(t.TempDir(), "hosts")
		if err := os.WriteFile(hosts, []byte("10.1.2.3\tmine\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		id := newID()
		got := runEtcTask(t, d, &drivers.Task{ID: id, ImageRef: env.localImage, Mounts: [][2]string{{hosts, "/etc/hosts"}}})
		if got.hosts != "10.1.2.3\tmine\n" {
			t.Errorf("hosts %q, want the task's volume", got.hosts)
		}
	})
}

// TestEtcFilesLeakReaped: the /etc folders a crashed instance left are
// removed by the next instance with its label tag; another tag's are left
// alone.
func TestEtcFilesLeakReaped(t *testing.T) {
	env := requireEnv(t)
	in := newInspector(t, env)
	tag := "etc-reap-" + randomID()
	crashed := newTestDriver(t, env, drivers.Config{ContainerLabelTag: tag, InstanceId: "crashed-" + randomID()})
	var leaked []string
	for i := 0; i < 2; i++ {
		dir, err := crashed.d.etc.Write("leak-"+randomID(), "leak", cninet.Info{IPs: []string{"10.88.0.99"}})
		if err != nil {
			t.Fatal(err)
		}
		leaked = append(leaked, dir)
	}
	other := newTestDriver(t, env, drivers.Config{ContainerLabelTag: "other-" + tag})
	kept, err := other.d.etc.Write("kept-"+randomID(), "kept", cninet.Info{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(kept) })
	if left, err := in.leftovers(context.Background(), tag); err != nil || len(left) != 2 {
		t.Fatalf("before the reaper: %v, %v; want two /etc folders (meaningful check)", left, err)
	}

	newTestDriver(t, env, drivers.Config{ContainerLabelTag: tag})
	deadline := time.Now().Add(10 * time.Second)
	for {
		left, err := in.leftovers(context.Background(), tag)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leftovers of the crashed instance remain: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, dir := range leaked {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want removed", dir, err)
		}
	}
	if _, err := os.Stat(kept); err != nil {
		t.Errorf("another tag's /etc folder: %v", err)
	}
}
