package pki

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"time"
)

// CRLValidity is how far a CRL's nextUpdate lies after its thisUpdate.
// A new CRL is made as soon as the revocations change, and otherwise once
// half of this has passed, so a cached CRL is never older than 3h while
// the CA is up, and a consumer that honours nextUpdate tolerates a CA
// outage of 3h.
const CRLValidity = 6 * time.Hour

// crlCache is the last CRL made.
type crlCache struct {
	set        *RevocationSet
	signing    *signingState
	der        []byte
	thisUpdate time.Time
}

// CRL returns a DER X.509 v2 CRL of the revoked, unexpired certificates,
// signed by the CA's signing certificate. Its CRL number increases with
// every CRL this instance makes: it is the Unix time in milliseconds of
// thisUpdate (or the previous number plus one if that is not larger), so
// numbers from different nodes of a fleet also increase over time, as
// far as their clocks agree. The CRL is cached and rebuilt when the
// revocation set or the signing certificate changes, or when half of
// CRLValidity has passed. Safe for concurrent use.
func (ca *CA) CRL(ctx context.Context) ([]byte, error) {
	set := ca.life.revoked.Load()
	st := ca.state.Load()
	now := ca.now()
	ca.life.crlMu.Lock()
	defer ca.life.crlMu.Unlock()
	if c := ca.life.crl; c != nil && c.set == set && c.signing == st && now.Sub(c.thisUpdate) < CRLValidity/2 && !now.Before(c.thisUpdate) {
		return c.der, nil
	}
	if st.cert.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, fmt.Errorf("%w: the signing certificate %q lacks the cRLSign key usage", ErrNoCRL, st.cert.Subject)
	}
	der, err := buildCRL(set, st, now, ca.nextCRLNumber(now))
	if err != nil {
		return nil, err
	}
	ca.life.crl = &crlCache{set: set, signing: st, der: der, thisUpdate: now}
	return der, nil
}

// nextCRLNumber returns the number of a CRL made at now. crlMu is held.
func (ca *CA) nextCRLNumber(now time.Time) int64 {
	n := now.UnixMilli()
	if n <= ca.life.crlNumber {
		n = ca.life.crlNumber + 1
	}
	ca.life.crlNumber = n
	return n
}

// buildCRL signs a CRL of set's unexpired entries at now.
func buildCRL(set *RevocationSet, st *signingState, now time.Time, number int64) ([]byte, error) {
	revs := set.List()
	entries := make([]x509.RevocationListEntry, 0, len(revs))
	for _, r := range revs {
		if r.NotAfter.Before(now) {
			continue // expired: RFC 5280 lets a CRL drop it
		}
		e := x509.RevocationListEntry{SerialNumber: r.Serial, RevocationTime: r.RevokedAt.UTC()}
		if r.Reason != RevocationUnspecified {
			e.ReasonCode = int(r.Reason)
		}
		entries = append(entries, e)
	}
	tmpl := &x509.RevocationList{
		Number:                    big.NewInt(number),
		ThisUpdate:                now.UTC().Add(-time.Minute), // a little backdated, for clock skew
		NextUpdate:                now.UTC().Add(CRLValidity),
		RevokedCertificateEntries: entries,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, st.cert, st.key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoCRL, err)
	}
	return der, nil
}
