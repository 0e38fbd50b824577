package catalog

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"time"
)

// Signer signs the records this node originates (its endpoint deltas, its
// full state and its leave intent) with the node's private key. The node
// key is ECDSA P-256. Implementations must be safe for concurrent use and
// must not block: Sign is called with the catalog's lock held.
type Signer interface {
	// Sign signs digest (a SHA-256 hash) with the node's current private
	// key and returns the ASN.1 signature, as crypto.Signer does, with
	// the certificate chain (leaf first, DER) whose leaf holds the public
	// key of that private key. A renewal must swap key and chain together.
	Sign(digest []byte) (sig []byte, chain [][]byte, err error)
}

// Verifier decides whether a member proved a fleet node identity. Must be
// safe for concurrent use and must not block (no network access).
type Verifier interface {
	// VerifyChain checks a certificate chain (leaf first, DER) against the
	// mesh roots of the moment and the identities allowed to be gateway
	// nodes, and returns the leaf's public key; the error says why a
	// chain is refused.
	VerifyChain(chain [][]byte) (crypto.PublicKey, error)
}

// TrustGeneration is an optional Verifier capability for trust that
// changes (roots rotated, allowed identities changed): Generation grows on
// every change, and the catalog then verifies every cached chain again.
type TrustGeneration interface {
	Generation() uint64
}

// recordDomain separates catalog signatures from any other use of the
// node key; the cluster ID in the signed bytes keeps a record of one fleet
// from being replayed into another that trusts the same roots.
const recordDomain = "meshgate catalog record v2\x00"

// recordDigest is what an owner signs for a record body.
func recordDigest(clusterID string, body []byte) []byte {
	h := sha256.New()
	h.Write([]byte(recordDomain))
	h.Write([]byte(clusterID))
	h.Write([]byte{0})
	h.Write(body)
	return h.Sum(nil)
}

// keyIDOf names a leaf certificate in deltas and leave intents: the first
// bytes of its SHA-256. A renewed certificate has another ID, so receivers
// can tell a key they do not hold yet from a forgery.
func keyIDOf(leaf []byte) [keyIDLen]byte {
	s := sha256.Sum256(leaf)
	var id [keyIDLen]byte
	copy(id[:], s[:])
	return id
}

func chainSum(chain [][]byte) [32]byte {
	h := sha256.New()
	for _, c := range chain {
		var n [8]byte
		l := len(c)
		for i := range n {
			n[i] = byte(l >> (8 * i))
		}
		h.Write(n[:])
		h.Write(c)
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}

// rawSig turns an ASN.1 ECDSA P-256 signature into r||s (64 bytes).
func rawSig(der []byte) ([]byte, error) {
	var rs struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &rs)
	if err != nil || len(rest) != 0 || rs.R == nil || rs.S == nil || rs.R.Sign() <= 0 || rs.S.Sign() <= 0 ||
		rs.R.BitLen() > 256 || rs.S.BitLen() > 256 {
		return nil, fmt.Errorf("%w: not an ECDSA P-256 signature", ErrSign)
	}
	out := make([]byte, sigLen)
	rs.R.FillBytes(out[:32])
	rs.S.FillBytes(out[32:])
	return out, nil
}

// p256Key checks that a verified chain's key can check record signatures.
func p256Key(pub crypto.PublicKey) (*ecdsa.PublicKey, error) {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("node key is %T, not ECDSA P-256", pub)
	}
	return k, nil
}

func verifyRaw(pub *ecdsa.PublicKey, digest, sig []byte) bool {
	if len(sig) != sigLen {
		return false
	}
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, digest, r, s)
}

// ownerTrust is what this node knows of an owner's identity: the chain it
// last verified (pub set), or the chain it refused (err set).
type ownerTrust struct {
	sum   [32]byte
	chain [][]byte
	keyID [keyIDLen]byte
	pub   *ecdsa.PublicKey
	err   error
	gen   uint64
	at    time.Time
}

func (t *ownerTrust) trusted() bool { return t != nil && t.pub != nil }

// Untrusted reasons shown in Member.TrustReason for members without a
// chain verdict.
const (
	reasonNoRecord = "no signed state received yet"
)

// errUnsigned is a record without a signature on a node that checks them.
var errUnsigned = errors.New("record is unsigned")

// sealLocked signs body and returns the seal: key ID and signature, plus
// the chain when withChain. Without a Signer the seal is empty.
func (c *Catalog) sealLocked(body []byte, withChain bool) seal {
	if c.cfg.Signer == nil {
		return seal{}
	}
	der, chain, err := c.cfg.Signer.Sign(recordDigest(c.cfg.ClusterID, body))
	var sig []byte
	if err == nil {
		sig, err = rawSig(der)
	}
	if err == nil && len(chain) == 0 {
		err = fmt.Errorf("%w: signer returned no certificate chain", ErrSign)
	}
	if err != nil {
		// Unsigned records are refused by every peer: this node's changes
		// stop flowing until its key works again. Say so loudly.
		c.m.signFailures.Inc()
		c.log.Error("catalog: cannot sign a record; peers will refuse it", "err", err)
		return seal{}
	}
	s := seal{KeyID: keyIDOf(chain[0]), Sig: sig}
	if withChain {
		s.Chain = chain
	}
	return s
}

// checkSigner signs once at start, so a node key that cannot sign records
// (not ECDSA P-256, no chain) fails New rather than every record later,
// and warns when the node's own chain would be refused by its Verifier
// (peers configured alike would refuse it too).
func checkSigner(cfg Config, log *slog.Logger) error {
	if cfg.Signer == nil {
		return nil
	}
	der, chain, err := cfg.Signer.Sign(recordDigest(cfg.ClusterID, nil))
	if err == nil {
		_, err = rawSig(der)
	}
	if err == nil && len(chain) == 0 {
		err = errors.New("no certificate chain")
	}
	if err != nil {
		return fmt.Errorf("%w: the node key must be ECDSA P-256 with a certificate chain: %w", ErrSign, err)
	}
	if cfg.Verifier != nil {
		if _, err := cfg.Verifier.VerifyChain(chain); err != nil {
			log.Warn("catalog: this node's own certificate would be refused by its peers' record check", "err", err)
		}
	}
	return nil
}

func (c *Catalog) trustGen() uint64 {
	if g, ok := c.cfg.Verifier.(TrustGeneration); ok {
		return g.Generation()
	}
	return 0
}

// checkKeySealLocked verifies a delta or leave intent with the owner's
// cached key. It counts refusals; ask says the owner's full state (which
// carries its chain) should be requested.
func (c *Catalog) checkKeySealLocked(owner string, body []byte, s seal) (ok, ask bool) {
	if c.cfg.Verifier == nil {
		return true, false
	}
	t := c.trust[owner]
	switch {
	case len(s.Sig) == 0:
		c.m.drop(DropBadSignature)
		return false, false
	case !t.trusted() || t.keyID != s.KeyID:
		// The owner's chain is unknown, refused, or older than its key
		// (it renewed): its state carries the chain.
		c.m.drop(DropUntrusted)
		return false, true
	case !verifyRaw(t.pub, recordDigest(c.cfg.ClusterID, body), s.Sig):
		c.m.drop(DropBadSignature)
		return false, true
	}
	return true, false
}

// checkStateLocked verifies a full state: its chain against the Verifier
// (cached by content and trust generation) and its signature with the
// chain's key. A state that verifies makes its owner trusted with that
// chain; a refused chain is recorded only for an owner not trusted yet, so
// a forged state cannot take trust away from a node that has it.
func (c *Catalog) checkStateLocked(s *state, body []byte, now time.Time) bool {
	if c.cfg.Verifier == nil {
		return true
	}
	if len(s.Seal.Sig) == 0 || len(s.Seal.Chain) == 0 {
		c.m.drop(DropBadSignature)
		c.noteRefusedLocked(s.Owner, nil, errUnsigned, now)
		return false
	}
	gen := c.trustGen()
	sum := chainSum(s.Seal.Chain)
	cur := c.trust[s.Owner]
	var pub *ecdsa.PublicKey
	switch {
	case cur != nil && cur.sum == sum && cur.gen == gen && cur.pub != nil:
		pub = cur.pub
	case cur != nil && cur.sum == sum && cur.gen == gen:
		c.m.drop(DropUntrusted) // refused before; not verified again
		return false
	default:
		k, err := c.cfg.Verifier.VerifyChain(s.Seal.Chain)
		if err == nil {
			pub, err = p256Key(k)
		}
		if err != nil {
			c.m.drop(DropUntrusted)
			c.noteRefusedLocked(s.Owner, s.Seal.Chain, err, now)
			return false
		}
	}
	if !verifyRaw(pub, recordDigest(c.cfg.ClusterID, body), s.Seal.Sig) {
		c.m.drop(DropBadSignature)
		return false
	}
	if cur == nil || cur.sum != sum || cur.gen != gen || cur.pub == nil {
		c.trust[s.Owner] = &ownerTrust{sum: sum, chain: cloneChain(s.Seal.Chain), keyID: keyIDOf(s.Seal.Chain[0]),
			pub: pub, gen: gen, at: now}
		if !cur.trusted() {
			c.log.Info("catalog: member proved its identity", "peer", s.Owner)
			c.markMembersLocked()
		}
	}
	return true
}

// noteRefusedLocked records why an owner that is not trusted was refused.
func (c *Catalog) noteRefusedLocked(owner string, chain [][]byte, err error, now time.Time) {
	cur := c.trust[owner]
	if cur.trusted() {
		return
	}
	if cur == nil || cur.err == nil || cur.err.Error() != err.Error() {
		c.log.Warn("catalog: member's records refused: no valid node identity", "peer", owner, "err", err)
		c.markMembersLocked()
	}
	t := &ownerTrust{err: err, gen: c.trustGen(), at: now}
	if chain != nil {
		t.sum, t.chain = chainSum(chain), cloneChain(chain)
	}
	c.trust[owner] = t
}

// recheckTrustLocked verifies every cached chain again after the trust
// generation changed, and the trusted ones every recheck interval (they
// may have expired). An owner whose chain no longer verifies loses its
// endpoints on this node and is asked for its state: if it renewed under
// the new roots, the reply restores it.
func (c *Catalog) recheckTrustLocked(now time.Time) {
	if c.cfg.Verifier == nil {
		return
	}
	gen := c.trustGen()
	for _, owner := range sortedKeys(c.trust) {
		t := c.trust[owner]
		if t.gen == gen && now.Sub(t.at) < c.cfg.TrustRecheckInterval {
			continue
		}
		if t.chain == nil {
			t.gen, t.at = gen, now
			continue
		}
		k, err := c.cfg.Verifier.VerifyChain(t.chain)
		var pub *ecdsa.PublicKey
		if err == nil {
			pub, err = p256Key(k)
		}
		was := t.trusted()
		t.gen, t.at = gen, now
		if err != nil {
			t.pub, t.err = nil, err
			if was {
				c.log.Warn("catalog: member's identity no longer verifies; its endpoints are withdrawn here", "peer", owner, "err", err)
				if c.view.dropOwner(owner) {
					c.endpointsChangedLocked()
				}
				c.markMembersLocked()
				c.enqueueLocked(job{kind: jobRequest, to: owner})
			}
			continue
		}
		t.pub, t.err = pub, nil
		if !was {
			c.log.Info("catalog: member's identity verifies now", "peer", owner)
			c.markMembersLocked()
			c.enqueueLocked(job{kind: jobRequest, to: owner})
		}
	}
}

// probeIdentitiesLocked asks alive members this node holds no chain for
// (they publish nothing, so nothing else would fetch their state) for
// their state, a few per tick, so Members shows them trusted or not.
func (c *Catalog) probeIdentitiesLocked() {
	if c.cfg.Verifier == nil {
		return
	}
	n := 0
	for _, name := range sortedKeys(c.members) {
		if n >= maxIdentityProbes {
			return
		}
		mi := c.members[name]
		if name == c.cfg.Name || mi.status != StatusAlive || c.trust[name] != nil || c.probed[name] {
			continue
		}
		c.probed[name] = true
		c.enqueueLocked(job{kind: jobRequest, to: name})
		n++
	}
}

// maxIdentityProbes bounds the identity probes sent per maintenance tick.
const maxIdentityProbes = 4

// trustOf is a member's trust as Members reports it.
func (c *Catalog) trustOf(name string) (bool, string) {
	if c.cfg.Verifier == nil || name == c.cfg.Name {
		return true, ""
	}
	t := c.trust[name]
	switch {
	case t == nil:
		return false, reasonNoRecord
	case t.pub == nil:
		return false, t.err.Error()
	}
	return true, ""
}

func cloneChain(chain [][]byte) [][]byte {
	out := make([][]byte, len(chain))
	for i, c := range chain {
		out[i] = append([]byte(nil), c...)
	}
	return out
}
