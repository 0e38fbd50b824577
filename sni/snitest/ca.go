package snitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a throw-away certificate authority for tests. It issues ECDSA P-256
// leaf certificates for DNS names or IP addresses. A CA is safe for
// concurrent use.
type CA struct {
	cert   *x509.Certificate
	key    crypto.Signer
	pool   *x509.CertPool
	serial atomic.Int64
}

// NewCA creates a self-signed root valid for one day. It fails tb on error.
func NewCA(tb testing.TB) *CA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("snitest: generate CA key: %v", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "snitest root", Organization: []string{"meshgate test"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatalf("snitest: create CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("snitest: parse CA certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	ca := &CA{cert: cert, key: key, pool: pool}
	ca.serial.Store(1)
	return ca
}

// Cert returns the root certificate.
func (ca *CA) Cert() *x509.Certificate { return ca.cert }

// Pool returns a pool holding only the root.
func (ca *CA) Pool() *x509.CertPool { return ca.pool }

// Issue returns a leaf certificate and key for names. A name that parses as
// an IP address becomes an IP SAN, anything else a DNS SAN. The leaf is
// usable for both server and client authentication.
func (ca *CA) Issue(tb testing.TB, names ...string) tls.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("snitest: generate leaf key: %v", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial.Add(1)),
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	if len(names) > 0 {
		tmpl.Subject.CommonName = names[0]
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		tb.Fatalf("snitest: issue leaf for %q: %v", names, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("snitest: parse leaf: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// ServerConfig returns a server config presenting a fresh leaf for names.
// nextProtos, when given, is offered for ALPN.
func (ca *CA) ServerConfig(tb testing.TB, names []string, nextProtos ...string) *tls.Config {
	tb.Helper()
	return &tls.Config{
		Certificates: []tls.Certificate{ca.Issue(tb, names...)},
		NextProtos:   nextProtos,
		MinVersion:   tls.VersionTLS12,
	}
}

// ClientConfig returns a client config that sends serverName as SNI,
// verifies the server's certificate for exactly that name against the CA,
// and offers alpn (if any). Session tickets are disabled so every dial is a
// full handshake.
func (ca *CA) ClientConfig(serverName string, alpn ...string) *tls.Config {
	return &tls.Config{
		ServerName:             serverName,
		RootCAs:                ca.pool,
		NextProtos:             alpn,
		MinVersion:             tls.VersionTLS12,
		SessionTicketsDisabled: true,
	}
}

// IdentityClientConfig returns a client config that sends serverName as SNI
// but verifies the server's chain against the CA and requires one of
// identities among its DNS names, as Istio clients check a workload
// identity rather than the SNI (which for AUTO_PASSTHROUGH is a cluster
// name).
func (ca *CA) IdentityClientConfig(serverName string, identities []string, alpn ...string) *tls.Config {
	return &tls.Config{
		ServerName:             serverName,
		NextProtos:             alpn,
		MinVersion:             tls.VersionTLS12,
		SessionTicketsDisabled: true,
		InsecureSkipVerify:     true, // replaced by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("snitest: no server certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.pool, Intermediates: inter}); err != nil {
				return fmt.Errorf("snitest: verify server chain: %w", err)
			}
			for _, id := range identities {
				if slices.Contains(leaf.DNSNames, id) {
					return nil
				}
			}
			return fmt.Errorf("snitest: server certificate names %v, want one of %v", leaf.DNSNames, identities)
		},
	}
}
