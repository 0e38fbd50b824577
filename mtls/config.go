package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"

	"github.com/meshgate/meshgate/pki"
)

// MutualConfig returns a TLS 1.3 configuration for connections between
// gateway nodes, usable as the server and as the client end. Both ends
// present src's current certificate; the peer's chain must verify against
// src's current roots, its leaf must carry exactly one SPIFFE URI SAN and
// must not be in src's revocation set (SetRevocations), and auth must
// accept that identity. Host names are not checked: a node is
// known by its SPIFFE identity, not by the address it was dialled at.
// Changes to src apply to new handshakes only; connections already up are
// not disturbed.
func MutualConfig(src *Source, auth Authorizer) *tls.Config {
	verify := func(cs tls.ConnectionState) error {
		_, err := src.Verify(cs.PeerCertificates, auth)
		return err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return src.certificate()
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return src.certificate()
		},
		ClientAuth: tls.RequireAnyClientCert,
		// Chain and identity are checked by VerifyConnection against the
		// roots of the moment, which a static RootCAs could not follow.
		InsecureSkipVerify: true,
		VerifyConnection:   verify,
	}
}

// VerifyPeer checks a peer's chain (leaf first, as presented) against
// roots and returns its SPIFFE identity once auth accepts it. The leaf
// must be valid now, usable for client or server auth, and carry exactly
// one URI SAN, a spiffe:// identity in the Istio form. With
// WithRevocations, a revoked leaf is refused with a PeerError that
// unwraps to ErrRevoked.
func VerifyPeer(roots *x509.CertPool, chain []*x509.Certificate, auth Authorizer, opts ...VerifyOption) (pki.Identity, error) {
	var o verifyOptions
	for _, opt := range opts {
		opt.apply(&o)
	}
	if roots == nil {
		return pki.Identity{}, &PeerError{Problem: "no trust bundle loaded"}
	}
	if len(chain) == 0 {
		return pki.Identity{}, &PeerError{Problem: "no certificate presented"}
	}
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return pki.Identity{}, &PeerError{Problem: "certificate does not chain to the trust bundle", Err: err}
	}
	id, err := LeafIdentity(leaf)
	if err != nil {
		return pki.Identity{}, err
	}
	if o.revoked != nil && o.revoked.Revoked(leaf.SerialNumber) {
		return pki.Identity{}, &PeerError{Identity: id.String(), Problem: "certificate serial " + leaf.SerialNumber.Text(16) + " is revoked", Err: ErrRevoked}
	}
	if auth == nil {
		return pki.Identity{}, &PeerError{Identity: id.String(), Problem: "no authorizer configured"}
	}
	if err := auth(id); err != nil {
		var pe *PeerError
		if errors.As(err, &pe) {
			return pki.Identity{}, err
		}
		return pki.Identity{}, &PeerError{Identity: id.String(), Problem: "not authorized", Err: err}
	}
	return id, nil
}

// LeafIdentity reads the SPIFFE identity of a certificate: exactly one URI
// SAN, in the form spiffe://<td>/ns/<ns>/sa/<sa>.
func LeafIdentity(leaf *x509.Certificate) (pki.Identity, error) {
	switch len(leaf.URIs) {
	case 0:
		return pki.Identity{}, &PeerError{Problem: "certificate has no URI SAN (no SPIFFE identity)"}
	case 1:
	default:
		return pki.Identity{}, &PeerError{Problem: "certificate has more than one URI SAN"}
	}
	id, err := pki.IdentityFromURL(leaf.URIs[0])
	if err != nil {
		return pki.Identity{}, &PeerError{Identity: leaf.URIs[0].String(), Problem: "URI SAN is not a SPIFFE workload identity", Err: err}
	}
	return id, nil
}

// Terminator is what a server that terminates mesh TLS for workloads
// needs (sni.MeshIdentity): the Source's current certificate, and client
// chains verified against the Source's roots and revocations, then auth.
type Terminator struct {
	src  *Source
	auth Authorizer
}

// NewTerminator returns a Terminator over src; auth decides which
// verified identities are clients (e.g. AuthorizeTrustDomain).
func NewTerminator(src *Source, auth Authorizer) *Terminator {
	return &Terminator{src: src, auth: auth}
}

// Certificate returns the Source's current certificate.
func (t *Terminator) Certificate() *tls.Certificate { return t.src.Certificate() }

// VerifyClient verifies chain (leaf first) and returns the client's
// SPIFFE ID.
func (t *Terminator) VerifyClient(chain []*x509.Certificate) (string, error) {
	id, err := t.src.Verify(chain, t.auth)
	if err != nil {
		return "", err
	}
	return id.String(), nil
}
