package sni

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"
)

// MeshIdentity is what Gateway servers with tls.mode ISTIO_MUTUAL
// terminate with: the node's mesh certificate and a verifier of client
// chains against the mesh roots. The agent backs it with the mtls
// package's Source, so renewal and root rotation apply to handshakes that
// start after them.
type MeshIdentity interface {
	// Certificate returns the node's current mesh certificate, or nil
	// when it has none yet.
	Certificate() *tls.Certificate
	// VerifyClient verifies a client chain (leaf first) against the mesh
	// roots and returns the client's SPIFFE ID
	// ("spiffe://<trust domain>/ns/<ns>/sa/<sa>").
	VerifyClient(chain []*x509.Certificate) (string, error)
}

// Refusal reasons of ISTIO_MUTUAL servers.
const (
	// ReasonNoIdentity: the node has no mesh identity to terminate with
	// (ServerConfig.MeshIdentity unset, or no certificate yet).
	ReasonNoIdentity Reason = "no_identity"
	// ReasonHandshake: the TLS handshake failed, e.g. no client
	// certificate, or one that does not chain to the mesh roots.
	ReasonHandshake Reason = "handshake"
	// ReasonForbidden: the client's identity is not in the server's
	// tls.subjectAltNames.
	ReasonForbidden Reason = "forbidden"
)

// errNoMeshCert is returned to a handshake when the identity has no
// certificate yet.
var errNoMeshCert = errors.New("sni: the node has no mesh certificate yet")

// forbiddenError is a verified client identity that the server's
// subjectAltNames do not admit.
type forbiddenError struct{ id string }

func (e *forbiddenError) Error() string {
	return fmt.Sprintf("client identity %s is not in the server's subjectAltNames", e.id)
}

// terminate runs the server side of an ISTIO_MUTUAL handshake over c,
// whose reads replay the peeked ClientHello. The client must present a
// certificate that chains to the mesh roots and, when the server lists
// subjectAltNames, carries one of them. It returns the TLS connection
// and the client's SPIFFE ID, or the refusal reason.
func (s *Server) terminate(ctx context.Context, c net.Conn, dec *Decision) (*tls.Conn, string, Reason, error) {
	id := s.cfg.MeshIdentity
	if id == nil {
		return nil, "", ReasonNoIdentity, fmt.Errorf("sni: Gateway %s server %s is ISTIO_MUTUAL but this node has no mesh identity (enroll it, or set tls.cert_file)", dec.Gateway, dec.Server)
	}
	if id.Certificate() == nil {
		return nil, "", ReasonNoIdentity, errNoMeshCert
	}
	allowed := dec.TLS.GetSubjectAltNames()
	var peer string
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAnyClientCert,
		// crypto/tls does not call VerifyPeerCertificate on a resumed
		// session, so a resumption would skip the roots, revocation and
		// subjectAltNames checks. This config lives for one connection,
		// so its tickets could never be redeemed anyway: issue none.
		SessionTicketsDisabled: true,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if cert := id.Certificate(); cert != nil {
				return cert, nil
			}
			return nil, errNoMeshCert
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			chain := make([]*x509.Certificate, 0, len(raw))
			for i, der := range raw {
				cert, err := x509.ParseCertificate(der)
				if err != nil {
					return fmt.Errorf("client certificate %d: %w", i, err)
				}
				chain = append(chain, cert)
			}
			p, err := id.VerifyClient(chain)
			if err != nil {
				return err
			}
			if len(allowed) > 0 && !slices.Contains(allowed, p) {
				return &forbiddenError{id: p}
			}
			peer = p
			return nil
		},
	}
	tc := tls.Server(c, cfg)
	lim := s.cfg.Limits.withDefaults()
	if lim.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, lim.Timeout)
		defer cancel()
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = c.SetDeadline(time.Time{})
		if _, ok := errors.AsType[*forbiddenError](err); ok {
			return nil, "", ReasonForbidden, fmt.Errorf("sni: Gateway %s server %s: %w", dec.Gateway, dec.Server, err)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, "", ReasonTimeout, fmt.Errorf("sni: ISTIO_MUTUAL handshake: %w", err)
		}
		return nil, "", ReasonHandshake, fmt.Errorf("sni: ISTIO_MUTUAL handshake: %w", err)
	}
	return tc, peer, "", nil
}
