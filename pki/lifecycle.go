package pki

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/internal/promreg"
)

// Certificate lifecycle: every issued certificate has a record in the
// store, keyed by serial, that keeps its grant: the token it descends
// from and the longest lifetime that token's issuance allowed. A renewal
// (authenticated with a client certificate) gets at most that lifetime,
// and its own record carries the same grant, so a chain of renewals never
// outgrows the original issuance. The record is written in the same store
// write as the issuance's audit record (no extra replicated write), and
// deleted once the certificate has expired (the prune runs at most every
// pruneEvery, in an audit batch): the table holds live certificates only,
// and so does a raft snapshot of it.

const (
	// pruneEvery is how often expired certificate and revocation records
	// are deleted (piggybacked on an audit write).
	pruneEvery = 10 * time.Minute
	// pruneGrace keeps records this long past expiry, for clocks that
	// differ between nodes.
	pruneGrace = 10 * time.Minute
	// maxPruneOps bounds the deletes added to one audit write.
	maxPruneOps = 1000
)

// CertificateRecord is what the CA remembers of an issued certificate.
type CertificateRecord struct {
	Serial   *big.Int
	Identity string
	// TokenID is the ID of the token the certificate descends from (issued
	// with it, or renewed from one that was); "" for operator and node
	// issuances and for renewals of certificates without a record.
	TokenID string
	// Grant is the longest lifetime a renewal of this certificate may get.
	Grant    time.Duration
	NotAfter time.Time
	// Renews is the serial of the certificate this one renewed, if any.
	Renews string
	// Defaulted says the grant is Config.DefaultTTL because the renewed
	// certificate had no record (issued before serials were recorded).
	Defaulted bool
}

// certRecord is what the store holds under keyCerts+serial.
type certRecord struct {
	V         int       `json:"v"`
	Identity  string    `json:"identity"`
	Token     string    `json:"token,omitempty"`
	Grant     int64     `json:"grant"` // seconds
	NotAfter  time.Time `json:"notAfter"`
	Renews    string    `json:"renews,omitempty"`
	Defaulted bool      `json:"defaulted,omitempty"`
}

// maxGrantSeconds bounds a stored grant (about 100 years).
const maxGrantSeconds = 100 * 365 * 24 * 3600

// decodeCertRecord parses a stored certificate record; key is the whole
// store key.
func decodeCertRecord(key string, val []byte) (CertificateRecord, error) {
	serial, err := serialFromKey(key, keyCerts)
	if err != nil {
		return CertificateRecord{}, err
	}
	var r certRecord
	if err := strictJSON(val, &r); err != nil {
		return CertificateRecord{}, fmt.Errorf("%w: certificate %s: %v", ErrCorruptRecord, key, err)
	}
	if r.V != recordVersion {
		return CertificateRecord{}, fmt.Errorf("%w: certificate %s has version %d, want %d", ErrCorruptRecord, key, r.V, recordVersion)
	}
	if r.Grant <= 0 || r.Grant > maxGrantSeconds {
		return CertificateRecord{}, fmt.Errorf("%w: certificate %s has grant %d s, want 1-%d", ErrCorruptRecord, key, r.Grant, maxGrantSeconds)
	}
	if r.NotAfter.IsZero() {
		return CertificateRecord{}, fmt.Errorf("%w: certificate %s lacks notAfter", ErrCorruptRecord, key)
	}
	if r.Identity == "" {
		return CertificateRecord{}, fmt.Errorf("%w: certificate %s lacks identity", ErrCorruptRecord, key)
	}
	if err := checkRecordIDs(r.Identity, r.Token); err != nil {
		return CertificateRecord{}, fmt.Errorf("%w: certificate %s: %v", ErrCorruptRecord, key, err)
	}
	if r.Renews != "" {
		if n, err := ParseSerial(r.Renews); err != nil || serialKey(n) != r.Renews {
			return CertificateRecord{}, fmt.Errorf("%w: certificate %s renews %q, not a canonical serial", ErrCorruptRecord, key, r.Renews)
		}
	}
	return CertificateRecord{
		Serial: serial, Identity: r.Identity, TokenID: r.Token, Grant: time.Duration(r.Grant) * time.Second,
		NotAfter: r.NotAfter, Renews: r.Renews, Defaulted: r.Defaulted,
	}, nil
}

func (r CertificateRecord) encode() ([]byte, error) {
	g := int64((r.Grant + time.Second - 1) / time.Second)
	return json.Marshal(certRecord{
		V: recordVersion, Identity: r.Identity, Token: r.TokenID, Grant: g,
		NotAfter: r.NotAfter.UTC(), Renews: r.Renews, Defaulted: r.Defaulted,
	})
}

// CertificateRecord returns the CA's record of the certificate with this
// serial; ok is false when there is none (expired and pruned, from before
// serials were recorded, or not from this CA).
func (ca *CA) CertificateRecord(ctx context.Context, serial *big.Int) (CertificateRecord, bool, error) {
	key := keyCerts + serialKey(serial)
	raw, err := ca.store.Get(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return CertificateRecord{}, false, nil
	}
	if err != nil {
		return CertificateRecord{}, false, fmt.Errorf("pki: read certificate record: %w", err)
	}
	r, err := decodeCertRecord(key, raw)
	if err != nil {
		return CertificateRecord{}, false, err
	}
	return r, true, nil
}

// lifecycle is the CA's certificate-lifecycle state.
type lifecycle struct {
	pendMu  sync.Mutex // guards pending
	pending map[string]CertificateRecord

	lastPrune time.Time // audit goroutine only

	revoked atomic.Pointer[RevocationSet]

	crlMu     sync.Mutex // guards crl and crlNumber
	crl       *crlCache
	crlNumber int64

	mRevoked prometheus.Counter
	mLive    prometheus.Gauge
	mPruned  prometheus.Counter
}

func (l *lifecycle) init(reg prometheus.Registerer) {
	l.pending = map[string]CertificateRecord{}
	l.revoked.Store(NewRevocationSet(nil))
	l.mRevoked = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshgate_pki_revoked_total",
		Help: "Certificates revoked by this CA instance.",
	})
	l.mLive = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "meshgate_pki_revocations_serials",
		Help: "Revoked serials of unexpired certificates (the CRL's entries).",
	})
	l.mPruned = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshgate_pki_records_pruned_total",
		Help: "Certificate and revocation records deleted after their certificate expired.",
	})
	if reg != nil {
		l.mRevoked = promreg.MustRegister(reg, l.mRevoked)
		l.mLive = promreg.MustRegister(reg, l.mLive)
		l.mPruned = promreg.MustRegister(reg, l.mPruned)
	}
}

// expect remembers the record of a certificate whose audit record is
// about to be committed; serialOps writes it in the same batch.
func (l *lifecycle) expect(r CertificateRecord) {
	l.pendMu.Lock()
	l.pending[serialKey(r.Serial)] = r
	l.pendMu.Unlock()
}

// forget drops a pending record (after the commit, whatever its outcome).
func (l *lifecycle) forget(serial *big.Int) {
	l.pendMu.Lock()
	delete(l.pending, serialKey(serial))
	l.pendMu.Unlock()
}

// batchOps is the auditor's extraOps: token use counts, certificate
// records, and now and then the deletion of expired records. Called from
// the audit goroutine.
func (ca *CA) batchOps(batch []*auditEntry) []Op {
	ops := ca.tokenUseOps(batch)
	ops = append(ops, ca.serialOps(batch)...)
	return append(ops, ca.pruneOps(ca.now())...)
}

// serialOps writes the record of every certificate the batch issues. An
// issuance without a pending record (a node certificate) gets one with
// the default grant.
func (ca *CA) serialOps(batch []*auditEntry) []Op {
	var ops []Op
	ca.life.pendMu.Lock()
	defer ca.life.pendMu.Unlock()
	for _, e := range batch {
		if e.rec.Outcome != OutcomeIssued || e.rec.Serial == "" {
			continue
		}
		r, ok := ca.life.pending[e.rec.Serial]
		if !ok {
			serial, err := ParseSerial(e.rec.Serial)
			if err != nil || e.rec.Identity == "" {
				continue
			}
			r = CertificateRecord{Serial: serial, Identity: e.rec.Identity, Grant: ca.cfg.DefaultTTL, NotAfter: e.rec.NotAfter}
		}
		val, err := r.encode()
		if err != nil {
			ca.log.Warn("certificate record not written", "serial", e.rec.Serial, "err", err)
			continue
		}
		ops = append(ops, Op{Key: keyCerts + e.rec.Serial, Value: val})
	}
	return ops
}

// pruneOps deletes records of certificates that expired more than
// pruneGrace ago, at most maxPruneOps of them, at most every pruneEvery.
func (ca *CA) pruneOps(now time.Time) []Op {
	if !ca.life.lastPrune.IsZero() && now.Sub(ca.life.lastPrune) < pruneEvery {
		return nil
	}
	ca.life.lastPrune = now
	ops, err := ca.expiredOps(context.Background(), now, maxPruneOps)
	if err != nil {
		ca.log.Warn("pruning expired certificate records failed", "err", err)
	}
	if len(ops) > 0 {
		ca.life.mPruned.Add(float64(len(ops)))
	}
	return ops
}

// expiredOps lists the deletes of expired records (at most limit).
func (ca *CA) expiredOps(ctx context.Context, now time.Time, limit int) ([]Op, error) {
	cutoff := now.Add(-pruneGrace)
	var ops []Op
	for _, prefix := range []string{keyCerts, keyRevoked} {
		kvs, err := ca.store.List(ctx, prefix)
		if err != nil {
			return ops, fmt.Errorf("pki: list %s: %w", prefix, err)
		}
		for _, kv := range kvs {
			if len(ops) >= limit {
				return ops, nil
			}
			var notAfter time.Time
			if prefix == keyCerts {
				r, err := decodeCertRecord(kv.Key, kv.Value)
				if err != nil {
					continue // left for an operator to look at
				}
				notAfter = r.NotAfter
			} else {
				r, err := decodeRevocation(kv.Key, kv.Value)
				if err != nil {
					continue // fails closed: stays revoked
				}
				notAfter = r.NotAfter
			}
			if notAfter.Before(cutoff) {
				ops = append(ops, Op{Key: kv.Key, Delete: true})
			}
		}
	}
	return ops, nil
}

// Prune deletes the records of certificates (and revocations) that
// expired, now, in one store write, and returns how many it deleted. The
// CA also does this by itself every pruneEvery while it issues.
func (ca *CA) Prune(ctx context.Context) (int, error) {
	ops, err := ca.expiredOps(ctx, ca.now(), maxRevokeBatch)
	if err != nil {
		return 0, err
	}
	if len(ops) == 0 {
		return 0, nil
	}
	if err := ca.store.Apply(ctx, ops); err != nil {
		return 0, fmt.Errorf("pki: prune: %w", err)
	}
	ca.life.mPruned.Add(float64(len(ops)))
	if _, err := ca.ReloadRevocations(ctx); err != nil {
		ca.log.Warn("reloading revocations failed", "err", err)
	}
	return len(ops), nil
}

// issuance is what an authenticated request may get: the lifetime to
// sign and the grant to record.
type issuance struct {
	ttl    time.Duration
	record CertificateRecord // Serial and NotAfter are set after signing
}

// grantFor bounds an issuance by its grant. A bearer token's issuance
// sets the grant to the lifetime it allowed; a renewal (client
// certificate) inherits the renewed certificate's grant and gets at most
// that lifetime; an operator issuance's grant is its lifetime.
func (ca *CA) grantFor(ctx context.Context, cred Credential, tok *tokenGrant, id Identity, ttl time.Duration) (issuance, error) {
	is := issuance{ttl: ttl, record: CertificateRecord{Identity: id.String(), Grant: ttl}}
	if tok != nil {
		is.record.TokenID = tok.hash[:tokenIDLen]
		return is, nil
	}
	leaf := renewalLeaf(cred)
	if leaf == nil {
		return is, nil // operator
	}
	is.record.Renews = serialKey(leaf.SerialNumber)
	prev, ok, err := ca.CertificateRecord(ctx, leaf.SerialNumber)
	if err != nil && !errors.Is(err, ErrCorruptRecord) {
		return is, refuse(ReasonSigningFailed, ErrSigning, "certificate record lookup: %v", err)
	}
	if !ok {
		// No record: a certificate from before serials were recorded (or
		// a corrupt record). Bound it by the default lifetime.
		is.record.Grant, is.record.Defaulted = ca.cfg.DefaultTTL, true
	} else {
		is.record.TokenID, is.record.Grant = prev.TokenID, prev.Grant
		if prev.TokenID != "" {
			if err := ca.checkTokenCertsRevoked(ctx, prev.TokenID, leaf); err != nil {
				return is, err
			}
		}
	}
	is.ttl = min(is.ttl, is.record.Grant)
	return is, nil
}

// renewalLeaf returns the client certificate a renewal authenticated with
// (the caller of grantFor has already checked it), or nil.
func renewalLeaf(cred Credential) *x509.Certificate {
	switch c := cred.(type) {
	case PeerCertificates:
		if len(c) > 0 {
			return c[0]
		}
	case Credentials:
		if len(c.Peer) > 0 {
			return c.Peer[0]
		}
	}
	return nil
}

// checkTokenCertsRevoked refuses a renewal of a certificate whose token
// was revoked together with its certificates (closing the race with a
// renewal in flight during RevokeTokenCertificates).
func (ca *CA) checkTokenCertsRevoked(ctx context.Context, tokenID string, leaf *x509.Certificate) error {
	kvs, err := ca.store.List(ctx, keyTokens+tokenID)
	if err != nil {
		return refuse(ReasonSigningFailed, ErrSigning, "token lookup: %v", err)
	}
	for _, kv := range kvs {
		if !strings.HasPrefix(kv.Key, keyTokens+tokenID) {
			continue
		}
		var rec tokenRecord
		if json.Unmarshal(kv.Value, &rec) == nil && rec.CertsRevoked {
			return refuse(ReasonCertRevoked, ErrCertRevoked, "client certificate %s descends from token %s, which was revoked with its certificates", serialKey(leaf.SerialNumber), tokenID)
		}
	}
	return nil
}
