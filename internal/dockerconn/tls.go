package dockerconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"

	"github.com/fnrun/fnrun/drivers"
)

// The file names the docker CLI looks for in DOCKER_CERT_PATH.
const (
	CAFile   = "ca.pem"
	CertFile = "cert.pem"
	KeyFile  = "key.pem"
)

// TLSRequest is where the wish for TLS came from: the driver's WithTLS,
// or DOCKER_TLS_VERIFY read next to DOCKER_HOST (TLSFromEnv).
type TLSRequest struct {
	Enabled  bool
	CertPath string // empty: DOCKER_CERT_PATH, else ~/.docker
	Explicit bool   // asked for by WithTLS rather than the environment
}

// TLSFromEnv reads DOCKER_TLS_VERIFY as the docker CLI does: any non-empty
// value, "0" included, turns verification on.
func TLSFromEnv() TLSRequest {
	return TLSRequest{Enabled: os.Getenv("DOCKER_TLS_VERIFY") != ""}
}

// ClientTLSConfig builds the TLS configuration for endpoint, or nil when
// the connection stays plain. Only tcp:// endpoints use TLS: the docker CLI
// ignores DOCKER_TLS_VERIFY for a unix socket, which is why the environment
// alone never makes a unix endpoint fail, whereas an explicit request
// (the driver's WithTLS) on one is a mistake worth reporting.
func ClientTLSConfig(req TLSRequest, endpoint string) (*tls.Config, error) {
	if !req.Enabled {
		return nil, nil
	}
	if u, err := url.Parse(endpoint); err != nil || u.Scheme != "tcp" {
		if req.Explicit {
			return nil, fmt.Errorf("docker driver: TLS needs a tcp:// endpoint, not %q: %w", endpoint, drivers.ErrInvalidConfig)
		}
		return nil, nil
	}
	dir := req.CertPath
	if dir == "" {
		dir = os.Getenv("DOCKER_CERT_PATH")
	}
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("docker driver: TLS: no DOCKER_CERT_PATH and no home folder for ~/.docker: %v: %w", err, drivers.ErrInvalidConfig)
		}
		dir = filepath.Join(home, ".docker")
	}
	return loadTLSConfig(dir)
}

// loadTLSConfig reads dir as the docker CLI reads DOCKER_CERT_PATH: the
// daemon must present a certificate signed by ca.pem, and cert.pem with
// key.pem, when present, identify the client. ca.pem is required: without
// it a daemon's identity would rest on the system roots, which the
// daemon's self-made CA is never part of.
func loadTLSConfig(dir string) (*tls.Config, error) {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("docker driver: TLS certificates in %s: %s: %w", dir, fmt.Sprintf(format, args...), drivers.ErrInvalidConfig)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, invalid("%v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, invalid("%s holds no PEM certificate", CAFile)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}

	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	haveCert, err := fileExists(certPath)
	if err != nil {
		return nil, invalid("%v", err)
	}
	haveKey, err := fileExists(keyPath)
	if err != nil {
		return nil, invalid("%v", err)
	}
	switch {
	case haveCert && haveKey:
		pair, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return nil, invalid("client certificate: %v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	case haveCert != haveKey:
		return nil, invalid("%s and %s go together, only one is there", CertFile, KeyFile)
	}
	return cfg, nil
}

func fileExists(path string) (bool, error) {
	_, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// DescribeTLSFailure says which side of a TLS connection gave up, for an error that
// is one (false otherwise): the daemon's certificate failing verification, the daemon
// refusing the handshake (typically over the client certificate), or an
// endpoint that does not speak TLS. Without it all three read as a bare
// "remote error" or "x509: ..." deep in a transport error.
func DescribeTLSFailure(err error) (string, bool) {
	var (
		verifyErr    *tls.CertificateVerificationError
		authorityErr x509.UnknownAuthorityError
		hostErr      x509.HostnameError
		invalidErr   x509.CertificateInvalidError
		recordErr    tls.RecordHeaderError
		opErr        *net.OpError
	)
	switch {
	case errors.As(err, &verifyErr), errors.As(err, &authorityErr), errors.As(err, &hostErr), errors.As(err, &invalidErr):
		return "TLS: the daemon's certificate failed verification against the CA (ca.pem)", true
	case errors.As(err, &recordErr), errors.Is(err, http.ErrSchemeMismatch):
		// net/http reports a plain HTTP answer to its handshake as a
		// scheme mismatch; a dial of ours sees the record itself.
		return "TLS: the endpoint does not speak TLS", true
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		// Go reports every alert the peer sends this way; during a
		// handshake it is the daemon turning the client down.
		return "TLS: the daemon refused the handshake (client certificate missing or not trusted?)", true
	}
	return "", false
}
