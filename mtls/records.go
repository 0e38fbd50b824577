package mtls

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
)

// ErrNoSigningKey: the Source's certificate has no private key that can
// sign.
var ErrNoSigningKey = errors.New("mtls: certificate has no signing key")

// Records signs and verifies a node's gossip records with the node's own
// identity: it signs with the current certificate's private key of src
// and verifies other nodes' chains against src's current roots and auth.
// It implements the catalog's Signer, Verifier and TrustGeneration (the
// Source's generation, so a root rotation re-verifies cached chains).
// Safe for concurrent use.
type Records struct {
	src  *Source
	auth Authorizer
}

// NewRecords returns Records for src. auth decides which SPIFFE identities
// are fleet nodes (tls.peer_identities, or the node's own identity); nil
// accepts any leaf that chains to the roots, as a raft transport built
// from certificate files does.
func NewRecords(src *Source, auth Authorizer) *Records { return &Records{src: src, auth: auth} }

// Sign signs digest (SHA-256) with the current certificate's key and
// returns the ASN.1 signature with that certificate's chain.
func (r *Records) Sign(digest []byte) ([]byte, [][]byte, error) {
	cert := r.src.Certificate()
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, nil, ErrNoCertificate
	}
	k, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, ErrNoSigningKey
	}
	sig, err := k.Sign(rand.Reader, digest, crypto.SHA256)
	if err != nil {
		return nil, nil, fmt.Errorf("mtls: sign record: %w", err)
	}
	return sig, cert.Certificate, nil
}

// VerifyChain parses a DER chain (leaf first), verifies it against the
// current roots and, with an Authorizer, the leaf's SPIFFE identity, and
// returns the leaf's public key.
func (r *Records) VerifyChain(chain [][]byte) (crypto.PublicKey, error) {
	certs := make([]*x509.Certificate, 0, len(chain))
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, &PeerError{Problem: fmt.Sprintf("certificate %d of the chain does not parse", i), Err: err}
		}
		certs = append(certs, c)
	}
	if r.auth != nil {
		if _, err := r.src.Verify(certs, r.auth); err != nil {
			return nil, err
		}
		return certs[0].PublicKey, nil
	}
	roots := r.src.Roots()
	switch {
	case roots == nil:
		return nil, &PeerError{Problem: "no trust bundle loaded"}
	case len(certs) == 0:
		return nil, &PeerError{Problem: "no certificate presented"}
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, &PeerError{Problem: "certificate does not chain to the trust bundle", Err: err}
	}
	if rev := r.src.Revocations(); rev != nil && rev.Revoked(certs[0].SerialNumber) {
		return nil, &PeerError{Problem: "certificate serial " + certs[0].SerialNumber.Text(16) + " is revoked", Err: ErrRevoked}
	}
	return certs[0].PublicKey, nil
}

// Generation is the Source's generation: it changes when the node's
// certificate or the roots are replaced.
func (r *Records) Generation() uint64 { return r.src.Generation() }
