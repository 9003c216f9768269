package images

import (
	"strings"

	"github.com/distribution/reference"

	"github.com/fnrun/fnrun/drivers"
)

// Every reference is reduced to one canonical key, so that the many ways of
// writing one name meet in one map entry:
//
//	busybox, busybox:latest, docker.io/library/busybox:latest -> docker.io/library/busybox:latest
//	busybox@sha256:<hex>, busybox:1.0@sha256:<hex>            -> docker.io/library/busybox@sha256:<hex>
//	sha256:<hex>, <hex> (64 hex digits)                        -> sha256:<hex>
//
// A tag written beside a digest is dropped: the digest decides the content.
// Image ids get the third form; they cannot collide with a reference key,
// which always holds a "/".

const digestPrefix = "sha256:"

// parseID recognises an image id or bare digest: "sha256:<64 hex>" or 64 hex
// digits. isID is true when s has the id form; ok is false when it starts
// with "sha256:" but the rest is not 64 lowercase hex digits.
func parseID(s string) (id string, isID, ok bool) {
	switch {
	case strings.HasPrefix(s, digestPrefix):
		return s, true, isHex64(s[len(digestPrefix):])
	case isHex64(s):
		return digestPrefix + s, true, true
	}
	return "", false, false
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// refKey is the canonical key of a reference, or false if s is neither a
// valid reference nor an id.
func refKey(s string) (string, bool) {
	if id, isID, ok := parseID(s); isID {
		return id, ok
	}
	ref, err := drivers.NormalizeImage(s)
	if err != nil {
		return "", false
	}
	if ref.Digest != "" {
		return ref.Name() + "@" + ref.Digest, true
	}
	return ref.Normalized, true
}

// idKey is the key of an image id as a store reports it: the canonical id
// form when it has one, else the id itself.
func idKey(id string) string {
	if k, isID, ok := parseID(id); isID && ok {
		return k
	}
	return id
}

// keyDigest is the digest part of a digest key ("sha256:<hex>"), or "".
func keyDigest(key string) string {
	if at := strings.LastIndexByte(key, '@'); at >= 0 {
		return key[at+1:]
	}
	return ""
}

// exemptSet holds the parsed Config.Exempt.
type exemptSet struct {
	refs    map[string]struct{} // tag keys
	digests map[string]struct{} // digests and ids, "sha256:<hex>"
}

func parseExempt(entries []string) (exemptSet, error) {
	x := exemptSet{refs: map[string]struct{}{}, digests: map[string]struct{}{}}
	for _, raw := range entries {
		s := strings.TrimSpace(raw)
		if s == "" {
			continue
		}
		if id, isID, ok := parseID(s); isID {
			if !ok {
				return x, configErrorf("exempt image %q: an image id is sha256: and 64 lowercase hex digits", raw)
			}
			x.digests[id] = struct{}{}
			continue
		}
		if _, err := reference.ParseNormalizedNamed(s); err != nil {
			return x, configErrorf("exempt image %q: %v", raw, err)
		}
		ref, err := drivers.NormalizeImage(s)
		if err != nil {
			return x, configErrorf("exempt image %q: %v", raw, err)
		}
		if ref.Digest != "" {
			// Content-addressed: the same digest under another name or
			// registry is the same image.
			x.digests[ref.Digest] = struct{}{}
			continue
		}
		x.refs[ref.Normalized] = struct{}{}
	}
	return x, nil
}

// matches reports whether an image with the given id key and reference keys
// is exempt.
func (x exemptSet) matches(id string, keys []string) bool {
	if len(x.refs) == 0 && len(x.digests) == 0 {
		return false
	}
	if _, ok := x.digests[id]; ok {
		return true
	}
	for _, k := range keys {
		if _, ok := x.refs[k]; ok {
			return true
		}
		if _, ok := x.digests[k]; ok { // a reference in id form
			return true
		}
		if d := keyDigest(k); d != "" {
			if _, ok := x.digests[d]; ok {
				return true
			}
		}
	}
	return false
}
