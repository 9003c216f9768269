package fn

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// This file speaks the registry's HTTP API directly, so that every
// scenario gets images of its own in the loopback registries without
// going through either runtime: derived from the busybox there, with a
// configuration (and optionally a layer) nobody else has, so that
// removing them from a store touches no other test's image.

const (
	mediaManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaConfig   = "application/vnd.docker.container.image.v1+json"
	mediaLayer    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

type descriptor struct {
	MediaType string `json:"mediaType"`
	Size      int64  `json:"size"`
	Digest    string `json:"digest"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

// registry is one loopback registry, with its credentials if it asks.
type registry struct {
	host           string
	user, password string
	client         *http.Client
}

func newRegistry(t *testing.T, host, user, password string) *registry {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &registry{host: host, user: user, password: password, client: &http.Client{Transport: tr, Timeout: time.Minute}}
}

// do sends one request; want lists the acceptable statuses.
func (r *registry) do(method, target string, body []byte, header http.Header, want ...int) (*http.Response, []byte, error) {
	if !strings.HasPrefix(target, "http") {
		target = "http://" + r.host + target
	}
	req, err := http.NewRequest(method, target, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if r.user != "" {
		req.SetBasicAuth(r.user, r.password)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	for _, w := range want {
		if resp.StatusCode == w {
			return resp, data, nil
		}
	}
	return resp, data, fmt.Errorf("%s %s: %s: %s", method, target, resp.Status, bytes.TrimSpace(data))
}

// imageSpec is what a derived image changes of its source.
type imageSpec struct {
	cmd       []string // the image's command; nil keeps the source's
	volumes   []string // volumes the image declares
	layerSize int      // bytes of random data in an extra layer; 0 for none
}

// derive pushes, as repo:tag of r, an image made of the busybox of r
// (fnrun/busybox:latest) and spec, with a configuration of its own, and
// returns its reference. The test's end deletes it from the registry.
func (r *registry) derive(t *testing.T, repo, tag string, spec imageSpec) string {
	t.Helper()
	const srcRepo = "fnrun/busybox"
	accept := http.Header{"Accept": {mediaManifest}}
	_, raw, err := r.do(http.MethodGet, "/v2/"+srcRepo+"/manifests/latest", nil, accept, http.StatusOK)
	if err != nil {
		t.Fatal(err)
	}
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil || m.MediaType != mediaManifest {
		t.Fatalf("manifest of %s: %v (media type %q)", srcRepo, err, m.MediaType)
	}
	_, rawConfig, err := r.do(http.MethodGet, "/v2/"+srcRepo+"/blobs/"+m.Config.Digest, nil, nil, http.StatusOK)
	if err != nil {
		t.Fatal(err)
	}
	var config map[string]any
	if err := json.Unmarshal(rawConfig, &config); err != nil {
		t.Fatal(err)
	}
	run, _ := config["config"].(map[string]any)
	if run == nil {
		run = map[string]any{}
		config["config"] = run
	}
	labels, _ := run["Labels"].(map[string]any)
	if labels == nil {
		labels = map[string]any{}
	}
	labels["io.fnrun.test.image"] = randomID() // a configuration, so an image id, of its own
	run["Labels"] = labels
	if spec.cmd != nil {
		run["Cmd"] = spec.cmd
	}
	if len(spec.volumes) > 0 {
		vols := map[string]any{}
		for _, v := range spec.volumes {
			vols[v] = map[string]any{}
		}
		run["Volumes"] = vols
	}
	for _, l := range m.Layers {
		r.mount(t, repo, srcRepo, l.Digest)
	}
	if spec.layerSize > 0 {
		layer, diffID := randomLayer(t, spec.layerSize)
		m.Layers = append(m.Layers, descriptor{MediaType: mediaLayer, Size: int64(len(layer)), Digest: r.upload(t, repo, layer)})
		rootfs, _ := config["rootfs"].(map[string]any)
		ids, _ := rootfs["diff_ids"].([]any)
		rootfs["diff_ids"] = append(ids, diffID)
		history, _ := config["history"].([]any)
		config["history"] = append(history, map[string]any{"created": time.Now().UTC().Format(time.RFC3339Nano), "created_by": "fnrun test layer"})
	}
	newConfig, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	m.Config = descriptor{MediaType: mediaConfig, Size: int64(len(newConfig)), Digest: r.upload(t, repo, newConfig)}
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	resp, _, err := r.do(http.MethodPut, "/v2/"+repo+"/manifests/"+tag, body, http.Header{"Content-Type": {mediaManifest}}, http.StatusCreated)
	if err != nil {
		t.Fatal(err)
	}
	digest := resp.Header.Get("Docker-Content-Digest")
	t.Cleanup(func() {
		// Its configuration is its own, so the digest is too: deleting it
		// deletes nobody else's image.
		if _, _, err := r.do(http.MethodDelete, "/v2/"+repo+"/manifests/"+digest, nil, nil, http.StatusAccepted, http.StatusNotFound); err != nil {
			t.Logf("registry cleanup: %v", err)
		}
	})
	return r.host + "/" + repo + ":" + tag
}

// mount makes the blob of repo from available in repo.
func (r *registry) mount(t *testing.T, repo, from, digest string) {
	t.Helper()
	resp, _, err := r.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?mount="+digest+"&from="+from, nil, nil, http.StatusCreated, http.StatusAccepted)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusCreated {
		return
	}
	// No cross-repository mount here: copy the blob.
	_, data, err := r.do(http.MethodGet, "/v2/"+from+"/blobs/"+digest, nil, nil, http.StatusOK)
	if err != nil {
		t.Fatal(err)
	}
	r.put(t, resp.Header.Get("Location"), data)
}

// upload pushes data as a blob of repo and returns its digest.
func (r *registry) upload(t *testing.T, repo string, data []byte) string {
	t.Helper()
	resp, _, err := r.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil, http.StatusAccepted)
	if err != nil {
		t.Fatal(err)
	}
	return r.put(t, resp.Header.Get("Location"), data)
}

func (r *registry) put(t *testing.T, location string, data []byte) string {
	t.Helper()
	sum := sha256.Sum256(data)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	u, err := url.Parse(location)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("digest", digest)
	u.RawQuery = q.Encode()
	if _, _, err := r.do(http.MethodPut, u.String(), data, http.Header{"Content-Type": {"application/octet-stream"}}, http.StatusCreated); err != nil {
		t.Fatal(err)
	}
	return digest
}

// randomLayer is a gzipped tar of one file of n random bytes, and the
// digest of the tar (the layer's diff id).
func randomLayer(t *testing.T, n int) (gz []byte, diffID string) {
	t.Helper()
	data := make([]byte, n)
	_, _ = rand.Read(data)
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	if err := tw.WriteHeader(&tar.Header{Name: "fnrun-test-" + randomID(), Mode: 0o644, Size: int64(n), ModTime: time.Unix(1704067200, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(tarBuf.Bytes())
	var gzBuf bytes.Buffer
	zw := gzip.NewWriter(&gzBuf)
	if _, err := zw.Write(tarBuf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return gzBuf.Bytes(), "sha256:" + hex.EncodeToString(sum[:])
}

// proxyRegistry stands in front of a loopback registry on a port of its
// own, so that its references are new to every store. Every tag of
// fnrun/busybox is served as the registry's fnrun/busybox:latest. It
// counts the requests for manifests by tag (one per pull attempt of a
// reference), can slow them down, and can answer them with an error.
type proxyRegistry struct {
	host string
	srv  *httptest.Server

	mu     sync.Mutex
	counts map[string]int // tag -> manifest requests by tag
	delay  time.Duration
	status int // non-zero: the answer to every manifest request
}

var manifestPath = regexp.MustCompile(`^/v2/fnrun/busybox/manifests/([^/]+)$`)

func newProxyRegistry(t *testing.T, upstream string) *proxyRegistry {
	t.Helper()
	p := &proxyRegistry{counts: map[string]int{}}
	target := &url.URL{Scheme: "http", Host: upstream}
	tr := &http.Transport{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			if m := manifestPath.FindStringSubmatch(pr.In.URL.Path); m != nil && !strings.HasPrefix(m[1], "sha256:") {
				pr.Out.URL.Path = "/v2/fnrun/busybox/manifests/latest"
			}
		},
		Transport: tr,
		ErrorLog:  log.New(io.Discard, "", 0), // a runtime giving up on a request is no news
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if m := manifestPath.FindStringSubmatch(req.URL.Path); m != nil && !strings.HasPrefix(m[1], "sha256:") {
			p.mu.Lock()
			p.counts[m[1]]++
			delay, status := p.delay, p.status
			p.mu.Unlock()
			select {
			case <-time.After(delay):
			case <-req.Context().Done():
				return
			}
			if status != 0 {
				http.Error(w, `{"errors":[{"code":"UNAVAILABLE","message":"fnrun test: registry down"}]}`, status)
				return
			}
		}
		rp.ServeHTTP(w, req)
	}))
	t.Cleanup(func() {
		p.srv.Close()
		tr.CloseIdleConnections()
	})
	p.host = strings.TrimPrefix(p.srv.URL, "http://")
	return p
}

// ref is the proxy's reference of fnrun/busybox with tag.
func (p *proxyRegistry) ref(tag string) string { return p.host + "/fnrun/busybox:" + tag }

func (p *proxyRegistry) set(delay time.Duration, status int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay, p.status = delay, status
}

func (p *proxyRegistry) count(tag string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[tag]
}

// withTimeout is a context for a registry or daemon chore of the test.
func withTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Minute)
}
