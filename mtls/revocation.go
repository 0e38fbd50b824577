package mtls

import (
	"crypto/x509"
	"errors"
	"math/big"

	"github.com/meshgate/meshgate/pki"
)

// ErrRevoked: the peer's certificate serial is revoked. A PeerError for a
// revoked certificate unwraps to it (and to ErrPeerRefused).
var ErrRevoked = errors.New("mtls: certificate revoked")

// Revocations says whether a certificate serial was revoked. The node
// feeds one built from the replicated CA state (pki.RevocationSet
// satisfies it) and replaces it whenever that state changes.
//
// Revoked is called on every handshake: it must be safe for concurrent
// use, must not block and should not allocate.
type Revocations interface {
	Revoked(serial *big.Int) bool
}

// VerifyOption changes what VerifyPeer checks.
type VerifyOption interface{ apply(*verifyOptions) }

type verifyOptions struct {
	revoked Revocations
}

type verifyOptionFunc func(*verifyOptions)

func (f verifyOptionFunc) apply(o *verifyOptions) { f(o) }

// WithRevocations refuses a leaf whose serial r reports revoked (after
// its chain has verified). A nil r checks nothing.
func WithRevocations(r Revocations) VerifyOption {
	return verifyOptionFunc(func(o *verifyOptions) { o.revoked = r })
}

// revocationsHolder lets a Source swap an interface value atomically.
type revocationsHolder struct{ r Revocations }

// SetRevocations makes r the revocation set from the next handshake on
// (MutualConfig and Source.Verify consult it). nil clears it. r must not
// change afterwards: pass a new value instead.
func (s *Source) SetRevocations(r Revocations) {
	if r == nil {
		s.revoked.Store(nil)
	} else {
		s.revoked.Store(&revocationsHolder{r: r})
	}
	s.gen.Add(1)
}

// Revocations returns the current revocation set, or nil.
func (s *Source) Revocations() Revocations {
	if h := s.revoked.Load(); h != nil {
		return h.r
	}
	return nil
}

// Verify is VerifyPeer against the Source's current roots and revocation
// set: what the node's mTLS servers (raft, write forwarding, the bridge,
// ISTIO_MUTUAL listeners) call on a peer's chain.
func (s *Source) Verify(chain []*x509.Certificate, auth Authorizer) (pki.Identity, error) {
	return VerifyPeer(s.Roots(), chain, auth, WithRevocations(s.Revocations()))
}
