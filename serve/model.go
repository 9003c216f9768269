package serve

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"net/url"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/drivers/lifecycle"
)

// Limits and defaults of Fn's API.
const (
	maxNameLength = 255

	// Memory in MB, timeouts in seconds.
	defaultMemoryMB    = 128
	maxMemoryMB        = 8 * 1024
	defaultTimeout     = 30
	maxTimeout         = 300
	defaultIdleTimeout = 30
	maxIdleTimeout     = 3600

	maxAnnotationKeys       = 100
	maxAnnotationKeyBytes   = 128
	maxAnnotationValueBytes = 512

	// InvokeEndpointAnnotation is the annotation Fn's server adds to every
	// function it returns; Fn's CLI reads it to know where to invoke.
	InvokeEndpointAnnotation = "fnproject.io/fn/invokeEndpoint"

	// ExtensionsAnnotation holds, as a JSON object of strings, the call
	// extensions of a function: they become the task's Extensions, are
	// handed to BeforeCall and AfterCall, and take part in the slot key
	// through the driver's GetSlotKeyExtensions.
	ExtensionsAnnotation = "fnrun.io/extensions"
)

// App is an application: a named group of functions with a shared
// configuration, as in Fn's API (same JSON field names).
type App struct {
	ID          string                     `json:"id"`
	Name        string                     `json:"name"`
	Config      map[string]string          `json:"config,omitempty"`
	Annotations map[string]json.RawMessage `json:"annotations,omitempty"`
	SyslogURL   *string                    `json:"syslog_url,omitempty"`
	CreatedAt   DateTime                   `json:"created_at,omitempty"`
	UpdatedAt   DateTime                   `json:"updated_at,omitempty"`
}

// Fn is a function: an image that speaks Fn's container contract, with its
// limits and configuration, as in Fn's API (same JSON field names). Memory
// is in MB, Timeout and IdleTimeout in seconds.
type Fn struct {
	ID          string                     `json:"id"`
	Name        string                     `json:"name"`
	AppID       string                     `json:"app_id"`
	Image       string                     `json:"image"`
	Memory      uint64                     `json:"memory,omitempty"`
	Timeout     int32                      `json:"timeout,omitempty"`
	IdleTimeout int32                      `json:"idle_timeout,omitempty"`
	Config      map[string]string          `json:"config,omitempty"`
	Annotations map[string]json.RawMessage `json:"annotations,omitempty"`
	CreatedAt   DateTime                   `json:"created_at,omitempty"`
	UpdatedAt   DateTime                   `json:"updated_at,omitempty"`
}

// DateTime is a time that marshals as Fn's timestamps do: RFC 3339 in UTC
// with milliseconds.
type DateTime time.Time

const dateTimeLayout = "2006-01-02T15:04:05.000Z07:00"

// MarshalJSON implements json.Marshaler.
func (d DateTime) MarshalJSON() ([]byte, error) {
	t := time.Time(d)
	if t.IsZero() {
		return []byte(`""`), nil
	}
	return json.Marshal(t.UTC().Format(dateTimeLayout))
}

// UnmarshalJSON implements json.Unmarshaler: RFC 3339 with or without
// fractions, or an empty string.
func (d *DateTime) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if s == "" {
		*d = DateTime{}
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return err
	}
	*d = DateTime(t)
	return nil
}

// IsZero reports whether the time is unset.
func (d DateTime) IsZero() bool { return time.Time(d).IsZero() }

// newID returns a 26-character id that sorts by creation time, like Fn's
// (48 bits of milliseconds then 80 random bits, in Crockford's base32).
func newID() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixMilli())<<16)
	if _, err := rand.Read(b[6:]); err != nil {
		// crypto/rand does not fail on Linux; keep the id unique anyway.
		binary.BigEndian.PutUint64(b[8:], uint64(time.Now().UnixNano()))
	}
	const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	var out [26]byte
	// 128 bits as 26 groups of 5 (the first group has 3 bits).
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	for i := 25; i >= 0; i-- {
		out[i] = alphabet[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

// validName reports whether an app name holds only letters, digits, '_'
// and '-'.
func validAppName(name string) bool {
	for _, c := range name {
		if !unicode.IsLetter(c) && !unicode.IsNumber(c) && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func (a *App) validate() error {
	switch {
	case a.Name == "":
		return errAppsMissingName
	case len(a.Name) > maxNameLength:
		return errAppsTooLongName
	case !validAppName(a.Name):
		return errAppsInvalidName
	}
	if err := validateConfig(a.Config); err != nil {
		return err
	}
	if a.SyslogURL != nil && *a.SyslogURL != "" {
		if _, err := lifecycle.CheckLogger(drivers.LoggerConfig{URL: *a.SyslogURL}); err != nil {
			return apiErr(400, ErrInvalid, "invalid syslog url: "+err.Error())
		}
	}
	return validateAnnotations(a.Annotations)
}

func (f *Fn) setDefaults(now time.Time) {
	if f.Memory == 0 {
		f.Memory = defaultMemoryMB
	}
	if f.Timeout == 0 {
		f.Timeout = defaultTimeout
	}
	if f.IdleTimeout == 0 {
		f.IdleTimeout = defaultIdleTimeout
	}
	if f.Config == nil {
		f.Config = map[string]string{}
	}
	if f.CreatedAt.IsZero() {
		f.CreatedAt = DateTime(now)
	}
	if f.UpdatedAt.IsZero() {
		f.UpdatedAt = DateTime(now)
	}
}

func (f *Fn) validate() error {
	switch {
	case f.Name == "":
		return errFnsMissingName
	case len(f.Name) > maxNameLength:
		return errFnsTooLongName
	case url.PathEscape(f.Name) != f.Name:
		return errFnsInvalidName
	case f.AppID == "":
		return errFnsMissingAppID
	case f.Image == "":
		return errFnsMissingImage
	case f.Timeout <= 0 || f.Timeout > maxTimeout:
		return errFnsInvalidTimeout
	case f.IdleTimeout <= 0 || f.IdleTimeout > maxIdleTimeout:
		return errFnsInvalidIdle
	case f.Memory < 1 || f.Memory > maxMemoryMB:
		return errInvalidMemory
	}
	if _, err := drivers.NormalizeImage(f.Image); err != nil {
		return errFnsInvalidImage.WithCause(err)
	}
	if err := validateConfig(f.Config); err != nil {
		return err
	}
	if err := validateAnnotations(f.Annotations); err != nil {
		return err
	}
	_, err := extensionsOf(f.Annotations)
	return err
}

func validateConfig(cfg map[string]string) error {
	for k, v := range cfg {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return errInvalidConfigKey
		}
	}
	return nil
}

func validateAnnotations(ann map[string]json.RawMessage) error {
	if len(ann) > maxAnnotationKeys {
		return errInvalidAnnotations.WithCause(nil)
	}
	for k, v := range ann {
		if k == "" || len(k) > maxAnnotationKeyBytes || strings.IndexFunc(k, func(r rune) bool { return r > unicode.MaxASCII || unicode.IsSpace(r) }) >= 0 {
			return &APIError{Code: 400, Class: ErrInvalid, Message: "Invalid annotation key, annotation keys must be non-empty ascii strings excluding whitespace"}
		}
		v = bytes.TrimSpace(v)
		if len(v) == 0 || len(v) > maxAnnotationValueBytes || !json.Valid(v) || string(v) == "null" || string(v) == `""` {
			return &APIError{Code: 400, Class: ErrInvalid, Message: "Invalid annotation value, annotation values may only be non-empty strings, numbers, objects, or arrays"}
		}
	}
	return nil
}

// extensionsOf returns the call extensions held by ExtensionsAnnotation.
func extensionsOf(ann map[string]json.RawMessage) (map[string]string, error) {
	raw, ok := ann[ExtensionsAnnotation]
	if !ok {
		return nil, nil
	}
	var ext map[string]string
	if err := json.Unmarshal(raw, &ext); err != nil {
		return nil, &APIError{Code: 400, Class: ErrInvalid, Message: "Invalid annotation " + ExtensionsAnnotation + ": want an object of strings", Cause: err}
	}
	return ext, nil
}

// mergeMap applies a patch: an empty value removes the key.
func mergeMap(dst, patch map[string]string) map[string]string {
	if patch == nil {
		return dst
	}
	if dst == nil {
		dst = make(map[string]string, len(patch))
	}
	for k, v := range patch {
		if v == "" {
			delete(dst, k)
		} else {
			dst[k] = v
		}
	}
	return dst
}

// mergeAnnotations applies a patch: a key whose value is the empty string
// (`""`) is removed.
func mergeAnnotations(dst, patch map[string]json.RawMessage) map[string]json.RawMessage {
	if patch == nil {
		return dst
	}
	if dst == nil {
		dst = make(map[string]json.RawMessage, len(patch))
	}
	for k, v := range patch {
		if t := bytes.TrimSpace(v); string(t) == `""` {
			delete(dst, k)
		} else {
			dst[k] = v
		}
	}
	return dst
}

func cloneStrings(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func cloneRaw(m map[string]json.RawMessage) map[string]json.RawMessage {
	if m == nil {
		return nil
	}
	out := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		out[k] = append(json.RawMessage(nil), v...)
	}
	return out
}

func (a *App) clone() *App {
	c := *a
	c.Config = cloneStrings(a.Config)
	c.Annotations = cloneRaw(a.Annotations)
	if a.SyslogURL != nil {
		s := *a.SyslogURL
		c.SyslogURL = &s
	}
	return &c
}

func (f *Fn) clone() *Fn {
	c := *f
	c.Config = cloneStrings(f.Config)
	c.Annotations = cloneRaw(f.Annotations)
	return &c
}

// sortedKeys returns the keys of m, sorted.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
