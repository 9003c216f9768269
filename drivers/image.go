package drivers

import (
	"fmt"
	"strings"

	"github.com/distribution/reference"
)

// ParseImage splits an image reference into its registry, repository and
// tag, as Fn's drivers do. The registry is empty when the reference names
// none (the default registry is implied), and then a one-part repository is
// an official one, under library/; the tag is "latest" when none is given,
// and holds the digest ("sha256:...") for a digest reference. ParseImage
// never fails: use NormalizeImage to validate a reference.
//
//	ParseImage("busybox")                      -> "", "library/busybox", "latest"
//	ParseImage("localhost:5000/fn/hello:0.1")  -> "localhost:5000", "fn/hello", "0.1"
//	ParseImage("quay.io/fn/app@sha256:abc...") -> "quay.io", "fn/app", "sha256:abc..."
func ParseImage(image string) (registry, repo, tag string) {
	name := image
	if at := strings.Index(name, "@"); at >= 0 {
		name, tag = name[:at], name[at+1:]
		// A tag before the digest ("app:1.0@sha256:...") is informational;
		// the digest decides what is pulled.
		if colon := strings.LastIndex(name, ":"); colon > strings.LastIndex(name, "/") {
			name = name[:colon]
		}
	} else if colon := strings.LastIndex(name, ":"); colon > strings.LastIndex(name, "/") {
		name, tag = name[:colon], name[colon+1:]
	}
	if tag == "" {
		tag = "latest"
	}
	first, rest, found := strings.Cut(name, "/")
	switch {
	case !found && name != "":
		return "", "library/" + name, tag
	case strings.ContainsAny(first, ".:") || first == "localhost":
		return first, rest, tag
	}
	return "", name, tag
}

// Reference is a validated image reference.
type Reference struct {
	// Normalized is the fully qualified form, as containerd names images:
	// "docker.io/library/busybox:latest".
	Normalized string
	// Familiar is the short form Docker prints: "busybox:latest".
	Familiar string
	// Domain is the registry host, with its port if any: "docker.io".
	Domain string
	// Path is the repository path inside the registry: "library/busybox".
	Path string
	// Tag is the tag, "latest" when none was given, or empty for a digest
	// reference without a tag.
	Tag string
	// Digest is the digest of a digest reference, else empty.
	Digest string
}

// NormalizeImage validates image and normalises it the way Docker does
// (busybox means docker.io/library/busybox:latest). A malformed reference
// gives an error wrapping ErrInvalidTask.
func NormalizeImage(image string) (Reference, error) {
	if image == "" {
		return Reference{}, InvalidTaskf("empty image reference")
	}
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return Reference{}, fmt.Errorf("image %q: %w: %v", image, ErrInvalidTask, err)
	}
	ref := Reference{Domain: reference.Domain(named), Path: reference.Path(named)}
	if tagged, ok := named.(reference.Tagged); ok {
		ref.Tag = tagged.Tag()
	}
	if digested, ok := named.(reference.Digested); ok {
		ref.Digest = digested.Digest().String()
	} else {
		named = reference.TagNameOnly(named)
		ref.Tag = named.(reference.Tagged).Tag()
	}
	ref.Normalized = named.String()
	ref.Familiar = reference.FamiliarString(named)
	return ref, nil
}

// Name is the repository name without tag or digest, fully qualified.
func (r Reference) Name() string { return r.Domain + "/" + r.Path }
