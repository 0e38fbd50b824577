package pki

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"time"
)

// Revocation errors.
var (
	// ErrInvalidSerial: a certificate serial is not positive hexadecimal of
	// at most 20 octets.
	ErrInvalidSerial = errors.New("pki: invalid certificate serial")
	// ErrInvalidRevocation: a revocation request is malformed (unknown or
	// unsupported reason).
	ErrInvalidRevocation = errors.New("pki: invalid revocation request")
	// ErrCertRevoked: the client certificate presented for a renewal was
	// revoked. It wraps ErrUnauthenticated, so errors.Is(err,
	// ErrUnauthenticated) holds as well.
	ErrCertRevoked = fmt.Errorf("%w: certificate revoked", ErrUnauthenticated)
	// ErrCorruptRecord: a stored certificate or revocation record does not
	// decode or fails its checks.
	ErrCorruptRecord = errors.New("pki: corrupt stored record")
	// ErrNoCRL: the CA cannot sign a CRL (its signing certificate lacks
	// the cRLSign key usage).
	ErrNoCRL = errors.New("pki: CRL unavailable")
)

// ReasonCertRevoked is the refusal reason of a renewal with a revoked
// client certificate (or of one whose grant's token was revoked with its
// certificates).
const ReasonCertRevoked Reason = "cert_revoked"

// RevocationReason is an RFC 5280 CRLReason code.
type RevocationReason int

// The reasons meshgate accepts. certificateHold (6) and removeFromCRL (8)
// are refused: a revocation is final. aACompromise (10) does not apply to
// workload certificates.
const (
	RevocationUnspecified          RevocationReason = 0
	RevocationKeyCompromise        RevocationReason = 1
	RevocationCACompromise         RevocationReason = 2
	RevocationAffiliationChanged   RevocationReason = 3
	RevocationSuperseded           RevocationReason = 4
	RevocationCessationOfOperation RevocationReason = 5
	RevocationPrivilegeWithdrawn   RevocationReason = 9
)

var revocationNames = map[RevocationReason]string{
	RevocationUnspecified:          "unspecified",
	RevocationKeyCompromise:        "keyCompromise",
	RevocationCACompromise:         "cACompromise",
	RevocationAffiliationChanged:   "affiliationChanged",
	RevocationSuperseded:           "superseded",
	RevocationCessationOfOperation: "cessationOfOperation",
	RevocationPrivilegeWithdrawn:   "privilegeWithdrawn",
}

// String returns the RFC 5280 name ("keyCompromise").
func (r RevocationReason) String() string {
	if s, ok := revocationNames[r]; ok {
		return s
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// valid reports whether r is one of the accepted reasons.
func (r RevocationReason) valid() bool { _, ok := revocationNames[r]; return ok }

// ParseRevocationReason reads an RFC 5280 reason name, case-insensitive
// ("keyCompromise", "key-compromise" and "key_compromise" too); "" is
// unspecified.
func ParseRevocationReason(s string) (RevocationReason, error) {
	norm := strings.ToLower(strings.NewReplacer("-", "", "_", "", " ", "").Replace(strings.TrimSpace(s)))
	if norm == "" {
		return RevocationUnspecified, nil
	}
	for r, name := range revocationNames {
		if strings.ToLower(name) == norm {
			return r, nil
		}
	}
	switch norm {
	case "certificatehold", "removefromcrl":
		return 0, fmt.Errorf("%w: reason %q is not supported: a revocation is final", ErrInvalidRevocation, s)
	}
	return 0, fmt.Errorf("%w: unknown reason %q (want one of unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn)", ErrInvalidRevocation, s)
}

// Revocation is one revoked certificate.
type Revocation struct {
	Serial *big.Int
	// Identity and TokenID come from the certificate's record; they are
	// empty for a certificate the CA has no record of (issued before
	// meshgate recorded serials, or by another CA).
	Identity  string
	TokenID   string
	Reason    RevocationReason
	RevokedAt time.Time
	// NotAfter is when the certificate expires; the revocation is kept
	// (and listed in the CRL) until then. Without a record of the
	// certificate it is RevokedAt plus Config.MaxTTL, the longest a
	// certificate of this CA can live.
	NotAfter time.Time
	// Recorded says the CA had a record of the certificate.
	Recorded bool
}

// revocationRecord is what the store holds under keyRevoked+serial.
type revocationRecord struct {
	V         int              `json:"v"`
	Identity  string           `json:"identity,omitempty"`
	Token     string           `json:"token,omitempty"`
	Reason    RevocationReason `json:"reason"`
	RevokedAt time.Time        `json:"revokedAt"`
	NotAfter  time.Time        `json:"notAfter"`
	Recorded  bool             `json:"recorded,omitempty"`
}

// recordVersion is the version of the certificate and revocation records.
const recordVersion = 1

// decodeRevocation parses a stored revocation: key is the whole store key.
func decodeRevocation(key string, val []byte) (Revocation, error) {
	serial, err := serialFromKey(key, keyRevoked)
	if err != nil {
		return Revocation{}, err
	}
	var r revocationRecord
	if err := strictJSON(val, &r); err != nil {
		return Revocation{Serial: serial}, fmt.Errorf("%w: revocation %s: %v", ErrCorruptRecord, key, err)
	}
	if r.V != recordVersion {
		return Revocation{Serial: serial}, fmt.Errorf("%w: revocation %s has version %d, want %d", ErrCorruptRecord, key, r.V, recordVersion)
	}
	if !r.Reason.valid() {
		return Revocation{Serial: serial}, fmt.Errorf("%w: revocation %s has reason %d", ErrCorruptRecord, key, r.Reason)
	}
	if r.RevokedAt.IsZero() || r.NotAfter.IsZero() {
		return Revocation{Serial: serial}, fmt.Errorf("%w: revocation %s lacks revokedAt or notAfter", ErrCorruptRecord, key)
	}
	if err := checkRecordIDs(r.Identity, r.Token); err != nil {
		return Revocation{Serial: serial}, fmt.Errorf("%w: revocation %s: %v", ErrCorruptRecord, key, err)
	}
	return Revocation{
		Serial: serial, Identity: r.Identity, TokenID: r.Token, Reason: r.Reason,
		RevokedAt: r.RevokedAt, NotAfter: r.NotAfter, Recorded: r.Recorded,
	}, nil
}

// serialFromKey reads the serial at the end of a store key.
func serialFromKey(key, prefix string) (*big.Int, error) {
	s, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return nil, fmt.Errorf("%w: key %q is not under %s", ErrCorruptRecord, key, prefix)
	}
	n, err := ParseSerial(s)
	if err != nil || serialKey(n) != s {
		return nil, fmt.Errorf("%w: key %q does not end in a canonical serial", ErrCorruptRecord, key)
	}
	return n, nil
}

// checkRecordIDs checks the identity and token ID fields of a record.
func checkRecordIDs(identity, token string) error {
	if identity != "" {
		if _, err := ParseIdentity(identity); err != nil {
			return err
		}
	}
	if token != "" {
		if len(token) != tokenIDLen || strings.Trim(token, "0123456789abcdef") != "" {
			return fmt.Errorf("token ID %q is not %d lowercase hex digits", token, tokenIDLen)
		}
	}
	return nil
}

// strictJSON decodes exactly one JSON object into v, refusing unknown
// fields and trailing data.
func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// RevocationSet is an immutable snapshot of the revoked serials, read on
// every handshake (it satisfies mtls.Revocations). A nil *RevocationSet
// holds nothing. Safe for concurrent use.
type RevocationSet struct {
	bySerial map[string]int // serial's big-endian bytes -> index in list
	list     []Revocation   // by serial
}

// Revoked reports whether serial is in the set. It does not allocate.
func (s *RevocationSet) Revoked(serial *big.Int) bool {
	if s == nil || serial == nil || len(s.bySerial) == 0 || serial.Sign() <= 0 {
		return false
	}
	n := (serial.BitLen() + 7) / 8
	if n > maxSerialBytes {
		return false // never stored: ParseSerial refuses such serials
	}
	var buf [maxSerialBytes]byte
	_, ok := s.bySerial[string(serial.FillBytes(buf[:n]))]
	return ok
}

// Lookup returns the revocation of serial, if any.
func (s *RevocationSet) Lookup(serial *big.Int) (Revocation, bool) {
	if !s.Revoked(serial) {
		return Revocation{}, false
	}
	return s.list[s.bySerial[string(serial.Bytes())]], true
}

// Len is the number of revoked serials.
func (s *RevocationSet) Len() int {
	if s == nil {
		return 0
	}
	return len(s.list)
}

// List returns the revocations, ordered by serial.
func (s *RevocationSet) List() []Revocation {
	if s == nil {
		return nil
	}
	return append([]Revocation(nil), s.list...)
}

// NewRevocationSet builds a set from revocations (later duplicates of a
// serial are ignored).
func NewRevocationSet(revs []Revocation) *RevocationSet {
	s := &RevocationSet{bySerial: make(map[string]int, len(revs))}
	sorted := append([]Revocation(nil), revs...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Serial.Cmp(sorted[j].Serial) < 0 })
	for _, r := range sorted {
		if r.Serial == nil || r.Serial.Sign() <= 0 {
			continue
		}
		k := string(r.Serial.Bytes())
		if _, dup := s.bySerial[k]; dup {
			continue
		}
		s.bySerial[k] = len(s.list)
		s.list = append(s.list, r)
	}
	return s
}

// LoadRevocations reads the revoked serials from st, leaving out those
// whose certificates expired before now. It needs no CA key: every node of
// a fleet, CA or not, calls it to refuse revoked peers. A record whose
// value is corrupt but whose key names a serial is kept, as revoked for
// an unknown reason (failing closed), and reported in the returned error
// (wrapping ErrCorruptRecord) beside a usable set.
func LoadRevocations(ctx context.Context, st Store, now time.Time) (*RevocationSet, error) {
	kvs, err := st.List(ctx, keyRevoked)
	if err != nil {
		return nil, fmt.Errorf("pki: list revocations: %w", err)
	}
	revs := make([]Revocation, 0, len(kvs))
	var errs []error
	for _, kv := range kvs {
		r, err := decodeRevocation(kv.Key, kv.Value)
		if err != nil {
			errs = append(errs, err)
			if r.Serial == nil {
				continue
			}
			r.Reason, r.RevokedAt, r.NotAfter = RevocationUnspecified, now, now.Add(24*time.Hour)
		} else if r.NotAfter.Before(now) {
			continue
		}
		revs = append(revs, r)
	}
	return NewRevocationSet(revs), errors.Join(errs...)
}

// ReloadRevocations re-reads the revoked serials from the store and makes
// them the CA's current set (the CRL's contents). The node calls it when
// the store reports a change under "pki/revoked/"; RevokeCertificate calls
// it itself. Renewals do not depend on it: they read the store.
func (ca *CA) ReloadRevocations(ctx context.Context) (*RevocationSet, error) {
	set, err := LoadRevocations(ctx, ca.store, ca.now())
	if set == nil {
		return nil, err
	}
	if err != nil {
		ca.log.Warn("corrupt revocation records; their serials stay revoked", "err", err)
	}
	ca.life.revoked.Store(set)
	ca.life.mLive.Set(float64(set.Len()))
	return set, nil
}

// Revocations returns the CA's current revocation set (see
// ReloadRevocations).
func (ca *CA) Revocations() *RevocationSet { return ca.life.revoked.Load() }

// RevokeCertificate revokes the certificate with this serial: renewals
// with it are refused, every meshgate mTLS handshake that is fed the
// revocation set refuses it, and the CRL lists it until it expires.
// Revoking twice keeps the first revocation. A serial the CA has no
// record of is revoked too (a certificate from before meshgate recorded
// serials), kept for Config.MaxTTL. Safe for concurrent use.
func (ca *CA) RevokeCertificate(ctx context.Context, serial *big.Int, reason RevocationReason) (Revocation, error) {
	if serial == nil || serial.Sign() <= 0 || len(serial.Bytes()) > maxSerialBytes {
		return Revocation{}, fmt.Errorf("%w: serial must be positive and at most %d octets", ErrInvalidSerial, maxSerialBytes)
	}
	if !reason.valid() {
		return Revocation{}, fmt.Errorf("%w: reason %d", ErrInvalidRevocation, reason)
	}
	revs, err := ca.revoke(ctx, []*big.Int{serial}, reason, nil)
	if err != nil {
		return Revocation{}, err
	}
	return revs[0], nil
}

// revoke writes revocations of serials (in batches of maxRevokeBatch
// ops). known, when set, gives the records of serials already looked up.
func (ca *CA) revoke(ctx context.Context, serials []*big.Int, reason RevocationReason, known map[string]CertificateRecord) ([]Revocation, error) {
	now := ca.now().UTC()
	out := make([]Revocation, 0, len(serials))
	var ops []Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		if err := ca.store.Apply(ctx, ops); err != nil {
			return fmt.Errorf("pki: store revocations: %w", err)
		}
		ca.life.mRevoked.Add(float64(len(ops)))
		ops = ops[:0]
		return nil
	}
	for _, serial := range serials {
		key := keyRevoked + serialKey(serial)
		if raw, err := ca.store.Get(ctx, key); err == nil {
			if r, err := decodeRevocation(key, raw); err == nil {
				out = append(out, r) // already revoked: keep the first
				continue
			}
		} else if !errors.Is(err, ErrNotFound) {
			return out, fmt.Errorf("pki: read revocation: %w", err)
		}
		rec, ok := known[serialKey(serial)]
		if !ok {
			var err error
			rec, ok, err = ca.CertificateRecord(ctx, serial)
			if err != nil && !errors.Is(err, ErrCorruptRecord) {
				return out, err
			}
		}
		r := Revocation{Serial: serial, Reason: reason, RevokedAt: now, NotAfter: now.Add(ca.cfg.MaxTTL)}
		if ok {
			r.Identity, r.TokenID, r.NotAfter, r.Recorded = rec.Identity, rec.TokenID, rec.NotAfter, true
		}
		val, err := json.Marshal(revocationRecord{
			V: recordVersion, Identity: r.Identity, Token: r.TokenID, Reason: r.Reason,
			RevokedAt: r.RevokedAt, NotAfter: r.NotAfter.UTC(), Recorded: r.Recorded,
		})
		if err != nil {
			return out, fmt.Errorf("pki: revocation: %w", err)
		}
		ops = append(ops, Op{Key: key, Value: val})
		out = append(out, r)
		ca.log.Info("certificate revoked", "serial", serialKey(serial), "identity", r.Identity, "token", r.TokenID, "reason", reason.String())
		if len(ops) == maxRevokeBatch {
			if err := flush(); err != nil {
				return out, err
			}
		}
	}
	if err := flush(); err != nil {
		return out, err
	}
	if _, err := ca.ReloadRevocations(ctx); err != nil {
		ca.log.Warn("reloading revocations failed", "err", err)
	}
	return out, nil
}

// maxRevokeBatch bounds the revocations written in one store write (one
// raft entry of about 200 bytes per revocation).
const maxRevokeBatch = 1000

// RevokeTokenCertificates revokes the token whose ID starts with id (as
// RevokeToken) and every unexpired certificate issued with it, including
// renewals of those certificates. The token is marked first, so that a
// renewal in flight of one of its certificates is refused; the listing is
// then made twice, to catch a renewal that committed between the mark and
// the first listing.
func (ca *CA) RevokeTokenCertificates(ctx context.Context, id string, reason RevocationReason) (TokenInfo, []Revocation, error) {
	if !reason.valid() {
		return TokenInfo{}, nil, fmt.Errorf("%w: reason %d", ErrInvalidRevocation, reason)
	}
	info, err := ca.revokeToken(ctx, id, true)
	if err != nil {
		return TokenInfo{}, nil, err
	}
	var all []Revocation
	seen := map[string]bool{}
	for pass := 0; pass < 2; pass++ {
		recs, err := ca.tokenCertificates(ctx, info.ID)
		if err != nil {
			return info, all, err
		}
		var serials []*big.Int
		known := map[string]CertificateRecord{}
		for _, r := range recs {
			k := serialKey(r.Serial)
			if seen[k] {
				continue
			}
			seen[k] = true
			serials = append(serials, r.Serial)
			known[k] = r
		}
		if len(serials) == 0 {
			continue
		}
		revs, err := ca.revoke(ctx, serials, reason, known)
		all = append(all, revs...)
		if err != nil {
			return info, all, err
		}
	}
	return info, all, nil
}

// tokenCertificates lists the unexpired certificates granted by token id.
func (ca *CA) tokenCertificates(ctx context.Context, id string) ([]CertificateRecord, error) {
	kvs, err := ca.store.List(ctx, keyCerts)
	if err != nil {
		return nil, fmt.Errorf("pki: list certificates: %w", err)
	}
	now := ca.now()
	var out []CertificateRecord
	for _, kv := range kvs {
		r, err := decodeCertRecord(kv.Key, kv.Value)
		if err != nil {
			ca.log.Warn("skipping a corrupt certificate record", "key", kv.Key, "err", err)
			continue
		}
		if r.TokenID == id && now.Before(r.NotAfter) {
			out = append(out, r)
		}
	}
	return out, nil
}

// checkRevoked refuses a client certificate whose serial is revoked,
// reading the store (the local replica): renewals never depend on a
// cached set.
func (ca *CA) checkRevoked(ctx context.Context, serial *big.Int) error {
	if serial == nil || serial.Sign() <= 0 {
		return nil
	}
	key := keyRevoked + serialKey(serial)
	raw, err := ca.store.Get(ctx, key)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return refuse(ReasonSigningFailed, ErrSigning, "revocation lookup: %v", err)
	}
	r, derr := decodeRevocation(key, raw)
	if derr != nil {
		return refuse(ReasonCertRevoked, ErrCertRevoked, "client certificate %s is revoked (its revocation record is unreadable)", serialKey(serial))
	}
	return refuse(ReasonCertRevoked, ErrCertRevoked, "client certificate %s was revoked at %s (%s)", serialKey(serial), r.RevokedAt.Format(time.RFC3339), r.Reason)
}
