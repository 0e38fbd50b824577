package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"time"
)

// newRootKey makes the private key of a self-signed root.
func newRootKey(alg KeyAlgorithm) (crypto.Signer, error) {
	switch alg {
	case RSA2048:
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("pki: generate RSA root key: %w", err)
		}
		return k, nil
	default:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("pki: generate ECDSA root key: %w", err)
		}
		return k, nil
	}
}

// rootTemplate is the template of a self-signed root: O = trust domain,
// CA with keyCertSign + cRLSign, valid from now-backdate for ttl.
func rootTemplate(trustDomain string, now time.Time, backdate, ttl time.Duration) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	// Every root gets a subject of its own (CN names its serial), so that
	// the cross certificate made at a rotation has an issuer that differs
	// from its subject: with equal names it looks self-issued, Go leaves
	// out its authority key id, and OpenSSL cannot build the chain from a
	// new leaf to the old root.
	return &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{trustDomain},
			CommonName:   "meshgate root " + serial.Text(16)[:12],
		},
		NotBefore:             now.Add(-backdate).UTC(),
		NotAfter:              now.Add(ttl).UTC(),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, nil
}

// newSelfSignedRoot makes a root key and certificate.
func newSelfSignedRoot(cfg Config, now time.Time) (crypto.Signer, *x509.Certificate, error) {
	key, err := newRootKey(cfg.KeyAlgorithm)
	if err != nil {
		return nil, nil, err
	}
	tmpl, err := rootTemplate(cfg.TrustDomain, now, cfg.Backdate, cfg.RootTTL)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: create root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: parse root certificate: %w", err)
	}
	return key, cert, nil
}

// crossSign certifies newRoot's subject and key with the previous root,
// so that a peer trusting only prev accepts leaves of newRoot when the
// cross certificate is sent as an intermediate.
func crossSign(newRoot, prev *x509.Certificate, prevKey crypto.Signer) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notAfter := newRoot.NotAfter
	if prev.NotAfter.Before(notAfter) {
		notAfter = prev.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               newRoot.Subject,
		RawSubject:            newRoot.RawSubject,
		NotBefore:             newRoot.NotBefore,
		NotAfter:              notAfter,
		KeyUsage:              newRoot.KeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          newRoot.SubjectKeyId,
		// Go copies the issuer's key id only when issuer and subject
		// differ; say it outright for roots made before subjects did.
		AuthorityKeyId: prev.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, prev, newRoot.PublicKey, prevKey)
	if err != nil {
		return nil, fmt.Errorf("pki: cross-sign new root: %w", err)
	}
	return x509.ParseCertificate(der)
}

// randomSerial returns a positive 159-bit random serial (20 bytes, top bit
// clear), as cfssl makes them.
func randomSerial() (*big.Int, error) {
	var b [20]byte
	if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	b[0] &= 0x7f
	if b[0] == 0 {
		b[0] = 1 // keep the encoding 20 bytes and never zero
	}
	return new(big.Int).SetBytes(b[:]), nil
}
