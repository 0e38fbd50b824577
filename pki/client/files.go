package client

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/meshgate/meshgate/pki"
)

// File names written by WriteBundle (Istio's VM layout, /etc/certs).
const (
	FileKey       = "key.pem"
	FileCertChain = "cert-chain.pem"
	FileRootCert  = "root-cert.pem"
)

// WriteBundle writes key.pem (PKCS#8, mode 0600), cert-chain.pem (leaf
// then intermediates, 0644) and root-cert.pem (the trust bundle, 0644)
// into dir (created 0755 if missing). Each file is replaced atomically; a
// crash between two files can leave a key that does not match its chain,
// which LoadBundle detects.
func WriteBundle(dir string, b *Bundle) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(b.Key)
	if err != nil {
		return fmt.Errorf("client: marshal key: %w", err)
	}
	var chain, roots bytes.Buffer
	for _, c := range b.Chain {
		pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	for _, c := range b.Roots {
		pem.Encode(&roots, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{FileKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600},
		{FileCertChain, chain.Bytes(), 0o644},
		{FileRootCert, roots.Bytes(), 0o644},
	} {
		if err := writeAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// writeAtomic writes data to a temp file in the same directory, syncs it
// and renames it over path.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	name := tmp.Name()
	_, werr := tmp.Write(data)
	cerr := tmp.Chmod(mode)
	serr := tmp.Sync()
	xerr := tmp.Close()
	if err := errors.Join(werr, cerr, serr, xerr); err != nil {
		os.Remove(name)
		return fmt.Errorf("client: write %s: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		os.Remove(name)
		return fmt.Errorf("client: %w", err)
	}
	return nil
}

// LoadBundle reads what WriteBundle wrote and checks it (key matches the
// leaf, the leaf has one SPIFFE identity and chains to root-cert.pem).
func LoadBundle(dir string) (*Bundle, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		return b, nil
	}
	keyPEM, err := read(FileKey)
	if err != nil {
		return nil, err
	}
	chainPEM, err := read(FileCertChain)
	if err != nil {
		return nil, err
	}
	rootPEM, err := read(FileRootCert)
	if err != nil {
		return nil, err
	}
	key, err := pki.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("client: %s: %w", FileKey, err)
	}
	chain, err := ParseCerts(chainPEM)
	if err != nil {
		return nil, fmt.Errorf("client: %s: %w", FileCertChain, err)
	}
	roots, err := ParseCerts(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("client: %s: %w", FileRootCert, err)
	}
	if len(chain[0].URIs) != 1 {
		return nil, fmt.Errorf("client: %s: leaf has %d URI SANs, want 1", FileCertChain, len(chain[0].URIs))
	}
	id, err := pki.IdentityFromURL(chain[0].URIs[0])
	if err != nil {
		return nil, fmt.Errorf("client: %s: %w", FileCertChain, err)
	}
	b := &Bundle{Identity: id, Key: key, Chain: chain, Roots: roots}
	if err := b.check(); err != nil {
		return nil, err
	}
	return b, nil
}

// LoadRoots reads a PEM file of root certificates into a pool (for
// Config.RootCAs).
func LoadRoots(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	certs, err := ParseCerts(b)
	if err != nil {
		return nil, fmt.Errorf("client: %s: %w", path, err)
	}
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p, nil
}
