package dockerconfig

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/fnrun/fnrun/drivers"
)

// ErrCredentialHelper is wrapped by every failure of a Docker credential
// helper (docker-credential-<name>) named by the config.json's credsStore
// or credHelpers. A helper missing from PATH, or answering outside the
// protocol, also wraps drivers.ErrInvalidConfig.
var ErrCredentialHelper = errors.New("docker credential helper failed")

const (
	credentialHelperPrefix = "docker-credential-"

	// helperNotFoundAnswer is the answer of docker-credential-helpers when
	// it has nothing for the server: an anonymous pull, not a failure.
	helperNotFoundAnswer = "credentials not found in native keychain"

	// helperIdentityTokenUser marks a Secret that is an identity token.
	helperIdentityTokenUser = "<token>"

	// credentialHelperCacheTTL bounds how long a helper's answer for a host
	// is reused. Running a helper per pull costs a process and, for stores
	// such as pass or a desktop keychain, may unlock a key; but helpers such
	// as ecr-login hand out tokens that expire, and a `docker login` should
	// take effect without restarting the driver, so answers are kept for a
	// minute, not for the driver's life.
	credentialHelperCacheTTL = time.Minute
)

// credentialHelpers asks the helpers of one config.json for credentials,
// lazily and for the exact host of each pull.
type credentialHelpers struct {
	store   string                // credsStore: the helper of every host without its own
	perHost map[string]hostHelper // credHelpers, keyed by RegistryHost
	timeout time.Duration
	ttl     time.Duration
	log     *logrus.Entry

	mu       sync.Mutex
	cache    map[string]cachedCredentials
	inflight map[string]*helperLookup
}

// hostHelper is one credHelpers entry. An empty name means that the host
// uses the plain auths even when a credsStore is set, as in the docker CLI.
type hostHelper struct {
	name      string
	serverURL string // the key as written in config.json, which the helper is asked
}

type cachedCredentials struct {
	conf    drivers.AuthConfig
	expires time.Time
}

// helperLookup is one helper run that concurrent pulls from a host share,
// so that a burst of cookies does not start a burst of helpers.
type helperLookup struct {
	done chan struct{}
	conf drivers.AuthConfig
	err  error
}

// newCredentialHelpers returns nil when the config names no helper.
func newCredentialHelpers(store string, helpers map[string]string, timeout time.Duration, log *logrus.Entry) (*credentialHelpers, error) {
	if store == "" && len(helpers) == 0 {
		return nil, nil
	}
	if store != "" {
		if err := checkHelperName(store); err != nil {
			return nil, fmt.Errorf("credsStore: %w", err)
		}
	}
	h := &credentialHelpers{
		store:    store,
		perHost:  make(map[string]hostHelper, len(helpers)),
		timeout:  timeout,
		ttl:      credentialHelperCacheTTL,
		log:      log,
		cache:    make(map[string]cachedCredentials),
		inflight: make(map[string]*helperLookup),
	}
	for key, name := range helpers {
		host := RegistryHost(key)
		if host == "" {
			continue
		}
		if name != "" {
			if err := checkHelperName(name); err != nil {
				return nil, fmt.Errorf("credHelpers[%q]: %w", key, err)
			}
		}
		if prev, ok := h.perHost[host]; ok && !preferKey(host, key, prev.serverURL) {
			continue
		}
		h.perHost[host] = hostHelper{name: name, serverURL: key}
	}
	return h, nil
}

// checkHelperName refuses names that would run something other than a
// docker-credential-* program found on PATH.
func checkHelperName(name string) error {
	if name == "" || strings.ContainsAny(name, `/\`) || strings.TrimSpace(name) != name {
		return fmt.Errorf("helper name %q: %w", name, drivers.ErrInvalidConfig)
	}
	return nil
}

// helperFor says which helper holds the credentials of host, with the
// docker CLI's precedence: credHelpers for the host, then credsStore. ok
// is false when the plain auths apply.
func (h *credentialHelpers) helperFor(host string) (name, serverURL string, ok bool) {
	if h == nil {
		return "", "", false
	}
	if hh, found := h.perHost[host]; found {
		return hh.name, hh.serverURL, hh.name != ""
	}
	if h.store != "" {
		return h.store, defaultServerURL(host), true
	}
	return "", "", false
}

// credentials returns the helper's credentials for host; ok is false when
// no helper is configured for it. A helper that knows nothing of the host
// gives the zero value: an anonymous pull.
func (h *credentialHelpers) credentials(ctx context.Context, host string) (conf drivers.AuthConfig, ok bool, err error) {
	name, serverURL, ok := h.helperFor(host)
	if !ok {
		return drivers.AuthConfig{}, false, nil
	}
	for {
		h.mu.Lock()
		if c, found := h.cache[host]; found && time.Now().Before(c.expires) {
			h.mu.Unlock()
			return c.conf, true, nil
		}
		if l, found := h.inflight[host]; found {
			h.mu.Unlock()
			select {
			case <-l.done:
			case <-ctx.Done():
				return drivers.AuthConfig{}, true, ctx.Err()
			}
			// The run ended because its caller gave up: ask again with
			// this caller's own context rather than share its error.
			if isContextError(l.err) && ctx.Err() == nil {
				continue
			}
			return l.conf, true, l.err
		}
		l := &helperLookup{done: make(chan struct{})}
		h.inflight[host] = l
		h.mu.Unlock()

		l.conf, l.err = h.run(ctx, name, serverURL, host)

		h.mu.Lock()
		delete(h.inflight, host)
		if l.err == nil {
			h.cache[host] = cachedCredentials{conf: l.conf, expires: time.Now().Add(h.ttl)}
		}
		h.mu.Unlock()
		close(l.done)
		return l.conf, true, l.err
	}
}

func isContextError(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// run executes one `docker-credential-<name> get`. Neither the helper's
// answer nor its stderr reaches an error or a log: either may hold the
// secret, so only the helper's name and exit status are reported.
func (h *credentialHelpers) run(ctx context.Context, name, serverURL, host string) (drivers.AuthConfig, error) {
	if h.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.timeout)
		defer cancel()
	}
	program := credentialHelperPrefix + name
	cmd := exec.CommandContext(ctx, program, "get")
	cmd.Stdin = strings.NewReader(serverURL)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	// A helper that leaves a child holding its pipes must not keep the
	// pull waiting past the context.
	cmd.WaitDelay = time.Second
	fields := logrus.Fields{"helper": program, "registry": host}

	err := cmd.Run()
	if err == nil {
		conf, perr := parseHelperAnswer(stdout.Bytes())
		if perr != nil {
			h.log.WithFields(fields).Warn("credential helper answered outside the protocol")
			return drivers.AuthConfig{}, fmt.Errorf("registry %s: %s: %w: %w: %w", host, program, perr, ErrCredentialHelper, drivers.ErrInvalidConfig)
		}
		if conf != (drivers.AuthConfig{}) {
			conf.ServerAddress = host
		}
		return conf, nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		h.log.WithFields(fields).Warn("credential helper did not answer in time")
		return drivers.AuthConfig{}, fmt.Errorf("registry %s: %s did not answer: %w: %w", host, program, ErrCredentialHelper, ctxErr)
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		// It never ran: missing from PATH, not executable, not a program.
		// The error names the program and the reason, nothing it printed.
		h.log.WithFields(fields).WithError(err).Warn("credential helper cannot run")
		return drivers.AuthConfig{}, fmt.Errorf("registry %s: %w: %w: %w", host, err, ErrCredentialHelper, drivers.ErrInvalidConfig)
	}
	if isHelperNotFound(stdout.Bytes()) || isHelperNotFound(stderr.Bytes()) {
		h.log.WithFields(fields).Debug("credential helper has no credentials; pulling anonymously")
		return drivers.AuthConfig{}, nil
	}
	h.log.WithFields(fields).WithField("exit_status", exitErr.ExitCode()).Warn("credential helper failed")
	return drivers.AuthConfig{}, fmt.Errorf("registry %s: %s get: exit status %d: %w", host, program, exitErr.ExitCode(), ErrCredentialHelper)
}

// isHelperNotFound recognises the helper's "nothing stored" answer, which
// docker-credential-helpers print on stdout and some helpers on stderr.
func isHelperNotFound(out []byte) bool {
	return strings.TrimSpace(string(out)) == helperNotFoundAnswer
}

// helperAnswer is the JSON a helper prints for `get`.
type helperAnswer struct {
	ServerURL string `json:"ServerURL"`
	Username  string `json:"Username"`
	Secret    string `json:"Secret"`
}

// errHelperAnswer is deliberately free of the JSON decoder's message, which
// can quote the bytes (the secret) it choked on.
var errHelperAnswer = errors.New("the answer is not the credential helper protocol's JSON")

// parseHelperAnswer turns a helper's `get` answer into credentials, as the
// docker CLI does: the user "<token>" means the secret is an identity
// token; an answer without a secret is an anonymous pull.
func parseHelperAnswer(out []byte) (drivers.AuthConfig, error) {
	var a helperAnswer
	dec := json.NewDecoder(bytes.NewReader(out))
	if err := dec.Decode(&a); err != nil {
		return drivers.AuthConfig{}, errHelperAnswer
	}
	if dec.More() {
		return drivers.AuthConfig{}, errHelperAnswer
	}
	if a.Secret == "" {
		return drivers.AuthConfig{}, nil
	}
	if a.Username == helperIdentityTokenUser {
		return drivers.AuthConfig{IdentityToken: a.Secret}, nil
	}
	return drivers.AuthConfig{Username: a.Username, Password: a.Secret}, nil
}
