package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync/atomic"
)

// ErrNoCertificate: the Source has no certificate yet.
var ErrNoCertificate = errors.New("mtls: no certificate loaded")

// Source holds a node's certificate and the roots it trusts. The zero
// value is empty; handshakes fail with ErrNoCertificate until
// SetCertificate is called. All methods are safe for concurrent use: the
// setters swap immutable values that handshakes read without locks.
type Source struct {
	cert  atomic.Pointer[tls.Certificate]
	roots atomic.Pointer[x509.CertPool]
	// revoked holds the revocation set (SetRevocations), nil for none.
	revoked atomic.Pointer[revocationsHolder]
	gen     atomic.Uint64
}

// NewSource returns a Source holding cert and roots (either may be nil and
// set later).
func NewSource(cert *tls.Certificate, roots *x509.CertPool) *Source {
	s := &Source{}
	if cert != nil {
		s.SetCertificate(cert)
	}
	if roots != nil {
		s.SetRoots(roots)
	}
	return s
}

// SetCertificate makes cert the one presented from the next handshake on.
// cert must not be modified afterwards.
func (s *Source) SetCertificate(cert *tls.Certificate) {
	s.cert.Store(cert)
	s.gen.Add(1)
}

// SetRoots makes roots the trust bundle from the next handshake on.
func (s *Source) SetRoots(roots *x509.CertPool) {
	s.roots.Store(roots)
	s.gen.Add(1)
}

// Certificate returns the current certificate, or nil.
func (s *Source) Certificate() *tls.Certificate { return s.cert.Load() }

// Roots returns the current trust bundle, or nil.
func (s *Source) Roots() *x509.CertPool { return s.roots.Load() }

// Generation counts the changes made so far; it lets callers notice that
// the certificate, bundle or revocation set was replaced.
func (s *Source) Generation() uint64 { return s.gen.Load() }

func (s *Source) certificate() (*tls.Certificate, error) {
	if c := s.cert.Load(); c != nil {
		return c, nil
	}
	return nil, ErrNoCertificate
}
