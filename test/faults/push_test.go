package faults

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
	"net/http"
	"os"
	"path"
	"sync"
	"testing"
	"time"
)

// pushUniqueImage pushes to the shared plain registry an image no daemon
// has seen: the test image's busybox layer plus a layer of random bytes,
// under a repository name of its own (fnfaults/u-<random>). A pull of it
// must download its blobs, so a registry fault hits them. The test's
// cleanup deletes the manifest from the registry.
//
// It returns the reference as repository:tag, without the registry host,
// so it can be pulled through a proxy.
func pushUniqueImage(t testing.TB, registry, imageTar string) string {
	t.Helper()
	base, err := loadBase(imageTar)
	if err != nil {
		t.Fatalf("read %s: %v", imageTar, err)
	}
	random := make([]byte, 512<<10)
	_, _ = rand.Read(random)
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	_ = tw.WriteHeader(&tar.Header{Name: "fnf-random", Mode: 0o644, Size: int64(len(random)), ModTime: time.Unix(1704067200, 0)})
	_, _ = tw.Write(random)
	_ = tw.Close()

	type blob struct {
		data   []byte
		digest string
		diffID string
	}
	gz := func(raw []byte) blob {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		_, _ = w.Write(raw)
		_ = w.Close()
		return blob{data: b.Bytes(), digest: sha(b.Bytes()), diffID: sha(raw)}
	}
	layers := []blob{gz(base.layer), gz(layer.Bytes())}

	var cfg map[string]any
	if err := json.Unmarshal(base.config, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["rootfs"] = map[string]any{"type": "layers", "diff_ids": []string{layers[0].diffID, layers[1].diffID}}
	if h, ok := cfg["history"].([]any); ok {
		cfg["history"] = append(h, map[string]any{"created": "2024-01-01T00:00:00Z", "created_by": "fnrun test/faults: random layer"})
	}
	cfgBytes, _ := json.Marshal(cfg)

	repo := "fnfaults/u-" + randomID()
	client := &http.Client{Timeout: time.Minute}
	upload := func(data []byte, digest string) {
		t.Helper()
		resp, err := client.Post("http://"+registry+"/v2/"+repo+"/blobs/uploads/", "", nil)
		if err != nil {
			t.Fatalf("push %s: %v", repo, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("push %s: start upload: %s", repo, resp.Status)
		}
		loc := resp.Header.Get("Location")
		if !bytes.HasPrefix([]byte(loc), []byte("http")) {
			loc = "http://" + registry + loc
		}
		sep := "?"
		if bytes.ContainsRune([]byte(loc), '?') {
			sep = "&"
		}
		req, _ := http.NewRequest(http.MethodPut, loc+sep+"digest="+digest, bytes.NewReader(data))
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err = client.Do(req)
		if err != nil {
			t.Fatalf("push %s: %v", repo, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("push %s: upload %s: %s", repo, digest, resp.Status)
		}
	}
	for _, l := range layers {
		upload(l.data, l.digest)
	}
	cfgDigest := sha(cfgBytes)
	upload(cfgBytes, cfgDigest)

	type desc struct {
		MediaType string `json:"mediaType"`
		Size      int    `json:"size"`
		Digest    string `json:"digest"`
	}
	manifest := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{
		SchemaVersion: 2,
		MediaType:     "application/vnd.docker.distribution.manifest.v2+json",
		Config:        desc{"application/vnd.docker.container.image.v1+json", len(cfgBytes), cfgDigest},
	}
	for _, l := range layers {
		manifest.Layers = append(manifest.Layers, desc{"application/vnd.docker.image.rootfs.diff.tar.gzip", len(l.data), l.digest})
	}
	mBytes, _ := json.Marshal(manifest)
	req, _ := http.NewRequest(http.MethodPut, "http://"+registry+"/v2/"+repo+"/manifests/latest", bytes.NewReader(mBytes))
	req.Header.Set("Content-Type", manifest.MediaType)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("push %s manifest: %v", repo, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push %s manifest: %s", repo, resp.Status)
	}
	t.Cleanup(func() {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodDelete, "http://"+registry+"/v2/"+repo+"/manifests/"+sha(mBytes), nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
		}
	})
	return repo + ":latest"
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// baseImage is the test image tarball's one layer and its configuration.
type baseImage struct {
	layer  []byte
	config []byte
}

var (
	baseOnce sync.Once
	baseVal  baseImage
	baseErr  error
)

func loadBase(imageTar string) (baseImage, error) {
	baseOnce.Do(func() {
		files := map[string][]byte{}
		f, err := os.Open(imageTar)
		if err != nil {
			baseErr = err
			return
		}
		defer f.Close()
		tr := tar.NewReader(f)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				baseErr = err
				return
			}
			if h.Typeflag != tar.TypeReg {
				continue
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				baseErr = err
				return
			}
			files[path.Clean(h.Name)] = b
		}
		var manifest []struct {
			Config string
			Layers []string
		}
		if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil || len(manifest) != 1 || len(manifest[0].Layers) != 1 {
			baseErr = fmt.Errorf("unexpected manifest.json (%v): %s", err, files["manifest.json"])
			return
		}
		baseVal = baseImage{layer: files[path.Clean(manifest[0].Layers[0])], config: files[path.Clean(manifest[0].Config)]}
		if baseVal.layer == nil || baseVal.config == nil {
			baseErr = fmt.Errorf("layer or config missing from %s", imageTar)
		}
	})
	return baseVal, baseErr
}
