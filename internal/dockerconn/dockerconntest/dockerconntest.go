// Package dockerconntest makes the certificates of TLS tests against a
// Docker endpoint: a CA, a daemon certificate for 127.0.0.1, and a client
// folder in the layout of DOCKER_CERT_PATH. Package dockerconn's unit tests
// and the Docker driver's integration tests share it.
package dockerconntest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fnrun/fnrun/internal/dockerconn"
)

// CA issues the certificates of a TLS test: the daemon's, for 127.0.0.1,
// and the client's.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte
}

// NewCA makes a self-signed CA valid for an hour either side of now.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Issue signs a leaf certificate: for the server at 127.0.0.1, or for a
// client. It returns the PEM certificate and key.
func (ca *CA) Issue(t testing.TB, name string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// StrayKey returns a PEM key that belongs to no client certificate of ca.
func (ca *CA) StrayKey(t testing.TB) []byte {
	t.Helper()
	_, key := ca.Issue(t, "unrelated", false)
	return key
}

// CertDir writes a DOCKER_CERT_PATH folder; a nil content leaves its file
// out.
func CertDir(t testing.TB, caPEM, certPEM, keyPEM []byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string][]byte{dockerconn.CAFile: caPEM, dockerconn.CertFile: certPEM, dockerconn.KeyFile: keyPEM} {
		if content == nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// PKI is a CA with a daemon certificate and a client folder in the layout
// of DOCKER_CERT_PATH.
type PKI struct {
	CA         *CA
	Server     tls.Certificate
	ClientDir  string // ca.pem, cert.pem, key.pem
	ClientCert []byte
	ClientKey  []byte
}

// NewPKI makes a CA, its daemon certificate and a client folder.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	ca := NewCA(t, "fnrun test CA")
	serverCert, serverKey := ca.Issue(t, "127.0.0.1", true)
	server, err := tls.X509KeyPair(serverCert, serverKey)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, clientKey := ca.Issue(t, "fnrun test client", false)
	return &PKI{
		CA:         ca,
		Server:     server,
		ClientDir:  CertDir(t, ca.PEM, clientCert, clientKey),
		ClientCert: clientCert,
		ClientKey:  clientKey,
	}
}

// ServerConfig is the daemon's side, as a dockerd started with --tlsverify
// has it: client certificates signed by the CA required.
func (p *PKI) ServerConfig() *tls.Config {
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(p.CA.Cert)
	return &tls.Config{
		Certificates: []tls.Certificate{p.Server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCAs,
		MinVersion:   tls.VersionTLS12,
	}
}
