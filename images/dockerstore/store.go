// Package dockerstore is the image store of a Docker daemon as the image
// cleaner (package images) sees it: an images.Store over the Engine API.
//
// It is a package of its own because it is the cleaner's adapter to one
// runtime's store, not part of running containers: the docker driver
// builds one over its connection (New, with the driver's bounded and
// translated calls) and hands it out through ImageStore, and the cleaner
// is all that uses it.
//
// An image is in use when any container of the daemon, ours or not, was
// created from it, or when another image is built on it (the daemon
// refuses to remove a parent).
//
// Daemons before API 1.42 (20.10 is 1.41) report no shared size, and
// GET /system/df, the only listing that counts shared bytes, also walks
// every container's and volume's files and refuses to run twice at once;
// so List splits the sizes itself, from each image's layers and history.
// When the history does not tell which size is which layer's, the whole
// size counts as the image's own: shared bytes counted twice make the
// cleaner evict early, never late.
package dockerstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"
	docker "github.com/fsouza/go-dockerclient"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/images"
)

// layerFetchConcurrency bounds the image inspections one List makes for
// images it has not seen before.
const layerFetchConcurrency = 4

// Request is one call of the Engine API.
type Request struct {
	API    string // the call's name in the driver's metrics, e.g. "list_images"
	Object string // what the call is about, for errors, e.g. `image "sha256:..."`; may be empty
	Image  bool   // the object is an image: a 404 or a not-found message means drivers.ErrImageNotFound
	Method string
	Path   string // with its query, e.g. "/images/json?all=1"
}

// Call sends one request to the daemon and decodes the JSON answer into
// out, or drops it when out is nil. It is bounded like every daemon call of
// the driver, and its error wraps a class of package drivers and, for an
// answer of status 400 or more, a *docker.Error.
type Call func(ctx context.Context, r Request, out any) error

// Store is the images.Store of one Docker daemon.
type Store struct {
	call Call

	mu     sync.Mutex
	layers map[string]layerInfo // image id -> its layers; image ids are content hashes, so this never goes stale
}

var _ images.Store = (*Store)(nil)

// New returns the store of the daemon that call reaches.
func New(call Call) *Store {
	return &Store{call: call, layers: map[string]layerInfo{}}
}

// apiImage is one entry of GET /images/json. SharedSize is -1 when the
// daemon did not compute it.
type apiImage struct {
	ID          string `json:"Id"`
	ParentID    string `json:"ParentId"`
	RepoTags    []string
	RepoDigests []string
	Created     int64
	Size        int64
	SharedSize  int64
}

// apiContainer is the part of an entry of GET /containers/json we read.
type apiContainer struct {
	ID      string `json:"Id"`
	ImageID string
}

type layerInfo struct {
	chains []string // chain id of each layer, base first
	sizes  []int64  // size of each layer; nil when the history did not tell
}

// List implements images.Store.
func (s *Store) List(ctx context.Context) ([]images.Image, error) {
	var list []apiImage
	if err := s.call(ctx, Request{API: "list_images", Method: http.MethodGet, Path: "/images/json?shared-size=1"}, &list); err != nil {
		return nil, err
	}
	// Containers are listed after images, so a container made from a
	// listed image before this point is seen.
	used, err := s.usedImages(ctx)
	if err != nil {
		return nil, err
	}
	for _, img := range list {
		if img.ParentID != "" {
			used[img.ParentID] = true
		}
	}
	daemonShared := len(list) > 0
	for _, img := range list {
		if img.SharedSize < 0 {
			daemonShared = false
			break
		}
	}
	var layers map[string]layerInfo
	if !daemonShared {
		if layers, err = s.layersOf(ctx, list); err != nil {
			return nil, err
		}
	}
	return buildImages(list, used, layers, daemonShared), nil
}

func (s *Store) usedImages(ctx context.Context) (map[string]bool, error) {
	var ctrs []apiContainer
	if err := s.call(ctx, Request{API: "list", Object: "all containers", Method: http.MethodGet, Path: "/containers/json?all=1"}, &ctrs); err != nil {
		return nil, err
	}
	used := make(map[string]bool, len(ctrs))
	for _, c := range ctrs {
		used[c.ImageID] = true
	}
	return used, nil
}

// buildImages turns the daemon's listing into the cleaner's view. An image
// missing from layers (used when the daemon did not split the sizes)
// vanished during the listing and is left out.
func buildImages(list []apiImage, used map[string]bool, layers map[string]layerInfo, daemonShared bool) []images.Image {
	holders := map[string]int{} // chain id -> images holding the layer
	if !daemonShared {
		for _, img := range list {
			for _, c := range layers[img.ID].chains {
				holders[c]++
			}
		}
	}
	out := make([]images.Image, 0, len(list))
	for _, img := range list {
		im := images.Image{
			ID:         img.ID,
			References: references(img),
			InUse:      used[img.ID],
		}
		if img.Created > 0 {
			im.Created = time.Unix(img.Created, 0)
		}
		switch li, ok := layers[img.ID]; {
		case daemonShared:
			im.Size = nonNegative(img.Size - img.SharedSize)
			im.SharedSize = nonNegative(img.SharedSize)
		case !ok:
			continue
		case li.sizes == nil:
			im.Size = nonNegative(img.Size)
		default:
			for i, c := range li.chains {
				if holders[c] > 1 {
					im.SharedSize += nonNegative(li.sizes[i])
				} else {
					im.Size += nonNegative(li.sizes[i])
				}
			}
		}
		out = append(out, im)
	}
	return out
}

func nonNegative(n int64) uint64 {
	if n < 0 {
		return 0
	}
	return uint64(n)
}

// references are the image's references without the "<none>" placeholders.
func references(img apiImage) []string {
	refs := make([]string, 0, len(img.RepoTags)+len(img.RepoDigests))
	for _, r := range append(slices.Clip(img.RepoTags), img.RepoDigests...) {
		if r == "" || r == "<none>:<none>" || r == "<none>@<none>" {
			continue
		}
		refs = append(refs, r)
	}
	return refs
}

// layersOf returns the layers of every listed image, reading those of the
// images it has not seen before, and forgets the images no longer listed.
func (s *Store) layersOf(ctx context.Context, list []apiImage) (map[string]layerInfo, error) {
	s.mu.Lock()
	known := make(map[string]layerInfo, len(list))
	var missing []string
	seen := make(map[string]bool, len(list))
	for _, img := range list {
		if seen[img.ID] {
			continue
		}
		seen[img.ID] = true
		if li, ok := s.layers[img.ID]; ok {
			known[img.ID] = li
		} else {
			missing = append(missing, img.ID)
		}
	}
	s.mu.Unlock()

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		errs    []error
		fetched = map[string]layerInfo{}
		sem     = make(chan struct{}, layerFetchConcurrency)
	)
	sizeOf := make(map[string]int64, len(list))
	for _, img := range list {
		sizeOf[img.ID] = img.Size
	}
	for _, id := range missing {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			li, err := s.readLayers(ctx, id, sizeOf[id])
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, drivers.ErrImageNotFound):
				// Removed since the listing: left out of this one.
			case err != nil:
				errs = append(errs, err)
			default:
				fetched[id] = li
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for id, li := range fetched {
		known[id] = li
	}
	s.mu.Lock()
	s.layers = known // drops the images that are gone
	s.mu.Unlock()
	return known, nil
}

func (s *Store) readLayers(ctx context.Context, id string, total int64) (layerInfo, error) {
	img, err := s.inspect(ctx, id)
	if err != nil {
		return layerInfo{}, err
	}
	var hist []struct{ Size int64 }
	if err := s.call(ctx, Request{API: "image_history", Object: fmt.Sprintf("image %q", id), Image: true,
		Method: http.MethodGet, Path: "/images/" + id + "/history"}, &hist); err != nil {
		return layerInfo{}, err
	}
	sizes := make([]int64, len(hist))
	for i, h := range hist { // the history is newest first
		sizes[len(hist)-1-i] = h.Size
	}
	return layerInfo{chains: chainIDs(img.RootFS.Layers), sizes: layerSizes(len(img.RootFS.Layers), sizes, total)}, nil
}

// inspect fails with drivers.ErrImageNotFound for a missing image.
func (s *Store) inspect(ctx context.Context, ref string) (*docker.Image, error) {
	return InspectImage(ctx, s.call, ref)
}

// InspectImage asks the daemon through call for image ref; it fails with
// drivers.ErrImageNotFound for a missing image. The driver looks images up
// with it too.
func InspectImage(ctx context.Context, call Call, ref string) (*docker.Image, error) {
	var img docker.Image
	if err := call(ctx, Request{API: "inspect_image", Object: fmt.Sprintf("image %q", ref), Image: true,
		Method: http.MethodGet, Path: "/images/" + ref + "/json"}, &img); err != nil {
		return nil, err
	}
	return &img, nil
}

// chainIDs turns diff ids (base first) into the chain ids the layer store
// names layers by: a layer is the same only on the same base.
func chainIDs(diffIDs []string) []string {
	out := make([]string, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		sum := sha256.Sum256([]byte(out[i-1] + " " + d))
		out[i] = "sha256:" + hex.EncodeToString(sum[:])
	}
	return out
}

// layerSizes gives the size of each of n layers from the history's sizes
// (oldest first), where entries that made no layer (ENV, CMD...) have size
// 0. It returns nil when that cannot be told: a zero-size layer among empty
// entries, or sizes that do not add up to total.
func layerSizes(n int, hist []int64, total int64) []int64 {
	var sizes []int64
	switch {
	case len(hist) == n:
		sizes = hist
	default:
		for _, s := range hist {
			if s > 0 {
				sizes = append(sizes, s)
			}
		}
		if len(sizes) != n {
			return nil
		}
	}
	var sum int64
	for _, s := range sizes {
		sum += s
	}
	if sum != total {
		return nil
	}
	return sizes
}

// Remove implements images.Store: the image and every reference to it go,
// without forcing. The daemon removes an image by id with its references
// only when they are at most one tag of one repository; the others are
// untagged first, once checkUnused passed, so that an image the daemon
// would refuse keeps its names.
func (s *Store) Remove(ctx context.Context, id string) error {
	img, err := s.inspect(ctx, id)
	if err != nil {
		return err
	}
	extra := extraReferences(append(slices.Clip(img.RepoTags), img.RepoDigests...))
	if len(extra) > 0 {
		if err := s.checkUnused(ctx, img.ID); err != nil {
			return err
		}
		for _, ref := range extra {
			err := s.deleteImage(ctx, ref)
			if err != nil && !errors.Is(err, drivers.ErrImageNotFound) {
				return err
			}
		}
	}
	return s.deleteImage(ctx, img.ID)
}

// checkUnused fails with images.ErrImageInUse when the image is in use.
func (s *Store) checkUnused(ctx context.Context, id string) error {
	used, err := s.usedImages(ctx)
	if err != nil {
		return err
	}
	if used[id] {
		return fmt.Errorf("image %s: a container uses it: %w", id, images.ErrImageInUse)
	}
	var all []apiImage
	if err := s.call(ctx, Request{API: "list_images", Method: http.MethodGet, Path: "/images/json?all=1"}, &all); err != nil {
		return err
	}
	for _, im := range all {
		if im.ParentID == id {
			return fmt.Errorf("image %s: image %s is built on it: %w", id, im.ID, images.ErrImageInUse)
		}
	}
	return nil
}

// deleteImage is one DELETE /images/<name> without force; a conflict wraps
// images.ErrImageInUse.
func (s *Store) deleteImage(ctx context.Context, name string) error {
	err := s.call(ctx, Request{API: "remove_image", Object: fmt.Sprintf("image %q", name), Image: true,
		Method: http.MethodDelete, Path: "/images/" + pathEscapeRef(name)}, nil)
	var apiErr *docker.Error
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusConflict {
		return fmt.Errorf("%w: %w", images.ErrImageInUse, err)
	}
	return err
}

// pathEscapeRef escapes a reference for the URL path, keeping the slashes
// and colons the daemon's router expects in a name.
func pathEscapeRef(ref string) string {
	return (&url.URL{Path: ref}).EscapedPath()
}

// extraReferences are the references to untag before the daemon removes an
// image by id: all tags but the first in sorted order, and the digest
// references of other repositories.
func extraReferences(refs []string) []string {
	type named struct{ ref, repo string }
	var tags, digests []named
	for _, r := range refs {
		if r == "" || r == "<none>:<none>" || r == "<none>@<none>" {
			continue
		}
		n, err := reference.ParseNormalizedNamed(r)
		if err != nil {
			continue
		}
		if _, isDigest := n.(reference.Canonical); isDigest {
			digests = append(digests, named{r, n.Name()})
		} else {
			tags = append(tags, named{r, n.Name()})
		}
	}
	slices.SortFunc(tags, func(a, b named) int { return strings.Compare(a.ref, b.ref) })
	var keepRepo string
	switch {
	case len(tags) > 0:
		keepRepo = tags[0].repo
	case len(digests) > 0:
		keepRepo = digests[0].repo
	default:
		return nil
	}
	var extra []string
	for i, t := range tags {
		if i > 0 {
			extra = append(extra, t.ref)
		}
	}
	for _, d := range digests {
		if d.repo != keepRepo {
			extra = append(extra, d.ref)
		}
	}
	return extra
}
