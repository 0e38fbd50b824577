package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"
)

// benchPKI is a throwaway CA and one server certificate it signed. Keys are
// ECDSA P-256, as workload certificates of a mesh are.
type benchPKI struct {
	// Roots trusts the CA; clients verify the backend against it.
	Roots *x509.CertPool
	// Server is the backend's certificate (leaf only; the root is in Roots).
	Server tls.Certificate
}

// newPKI creates the CA and a server certificate valid for names.
func newPKI(names ...string) (*benchPKI, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("proxybench: CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "proxybench CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("proxybench: CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("proxybench: parse CA certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("proxybench: server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     names,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("proxybench: server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("proxybench: parse server certificate: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return &benchPKI{
		Roots:  roots,
		Server: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
	}, nil
}

// serverConfig is the backend's TLS config: full handshakes only (no session
// tickets), so every connection of the handshake test costs the same.
func (p *benchPKI) serverConfig() *tls.Config {
	return &tls.Config{
		Certificates:           []tls.Certificate{p.Server},
		SessionTicketsDisabled: true,
		MinVersion:             tls.VersionTLS12,
	}
}

// clientConfig is the client's TLS config for serverName: it verifies the
// chain and name and keeps no session cache, so each dial is a full handshake
// with Go's default (post-quantum, ~1.8 KB) ClientHello.
func (p *benchPKI) clientConfig(serverName string) *tls.Config {
	return &tls.Config{
		RootCAs:    p.Roots,
		ServerName: serverName,
		MinVersion: tls.VersionTLS12,
	}
}
