package drivers

import (
	"errors"
	"testing"
)

func TestParseImage(t *testing.T) {
	for _, tc := range []struct {
		in                  string
		registry, repo, tag string
	}{
		{"busybox", "", "library/busybox", "latest"},
		{"busybox:1.36", "", "library/busybox", "1.36"},
		{"mongo@sha256:abc", "", "library/mongo", "sha256:abc"},
		{"fnproject/hello", "", "fnproject/hello", "latest"},
		{"fnproject/hello:0.0.1", "", "fnproject/hello", "0.0.1"},
		{"localhost/hello", "localhost", "hello", "latest"},
		{"localhost:5000/hello:v2", "localhost:5000", "hello", "v2"},
		{"127.0.0.1:5000/fnrun/busybox:latest", "127.0.0.1:5000", "fnrun/busybox", "latest"},
		{"127.0.0.1:5000/fnrun/busybox", "127.0.0.1:5000", "fnrun/busybox", "latest"},
		{"quay.io/org/app@sha256:abc", "quay.io", "org/app", "sha256:abc"},
		{"quay.io/org/app:1.0@sha256:abc", "quay.io", "org/app", "sha256:abc"},
		{"registry.example.com:443/a/b/c:t", "registry.example.com:443", "a/b/c", "t"},
		{"docker.io/library/busybox", "docker.io", "library/busybox", "latest"},
		{"", "", "", "latest"},
		{":", "", "", "latest"},
	} {
		reg, repo, tag := ParseImage(tc.in)
		if reg != tc.registry || repo != tc.repo || tag != tc.tag {
			t.Errorf("ParseImage(%q) = %q, %q, %q; want %q, %q, %q", tc.in, reg, repo, tag, tc.registry, tc.repo, tc.tag)
		}
	}
}

func FuzzParseImage(f *testing.F) {
	for _, s := range []string{"busybox", "localhost:5000/a:b", "a@sha256:x", "::@@//", "a/b/c:d@e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, _, tag := ParseImage(s)
		if tag == "" {
			t.Fatalf("ParseImage(%q) gave an empty tag", s)
		}
		_, _ = NormalizeImage(s)
	})
}

func TestNormalizeImage(t *testing.T) {
	for _, tc := range []struct {
		in, normalized, familiar string
	}{
		{"busybox", "docker.io/library/busybox:latest", "busybox:latest"},
		{"fnproject/hello:1", "docker.io/fnproject/hello:1", "fnproject/hello:1"},
		{"127.0.0.1:5000/fnrun/busybox", "127.0.0.1:5000/fnrun/busybox:latest", "127.0.0.1:5000/fnrun/busybox:latest"},
		{"localhost/x@sha256:" + sha, "localhost/x@sha256:" + sha, "localhost/x@sha256:" + sha},
	} {
		ref, err := NormalizeImage(tc.in)
		if err != nil {
			t.Errorf("NormalizeImage(%q): %v", tc.in, err)
			continue
		}
		if ref.Normalized != tc.normalized || ref.Familiar != tc.familiar {
			t.Errorf("NormalizeImage(%q) = %q / %q, want %q / %q", tc.in, ref.Normalized, ref.Familiar, tc.normalized, tc.familiar)
		}
	}
	for _, bad := range []string{"", "UPPER", "a::b", "a b", "-x", "a@sha256:short"} {
		if _, err := NormalizeImage(bad); !errors.Is(err, ErrInvalidTask) {
			t.Errorf("NormalizeImage(%q) = %v, want ErrInvalidTask", bad, err)
		}
	}
}

const sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
