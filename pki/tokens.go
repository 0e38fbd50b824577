package pki

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Token limits.
const (
	// DefaultTokenTTL is the lifetime of a token created with TTL 0.
	DefaultTokenTTL = time.Hour
	// MaxTokenTTL is the longest token lifetime accepted.
	MaxTokenTTL = 365 * 24 * time.Hour
	// tokenPrefix starts every token secret, so that a secret found in a
	// log or a file is recognisable.
	tokenPrefix = "mgt."
	// tokenIDLen is the length of a token's ID: a hex prefix of its hash.
	tokenIDLen = 16
	// maxTokenLen bounds what is hashed from a request.
	maxTokenLen = 256
)

// TokenRequest asks for a bearer token that authorizes certificates for
// one identity.
type TokenRequest struct {
	Namespace      string
	ServiceAccount string
	// TTL is how long the token is valid. 0 means DefaultTokenTTL.
	TTL time.Duration
	// Uses caps how many certificates the token may obtain. 0 means
	// unlimited (within TTL).
	//
	// The cap is exact across a fleet: after every other check has passed
	// and before the certificate is signed, the issuance claims one of the
	// token's Uses use slots with a conditional store write (create the
	// slot's key if absent), so however many CA instances share the store,
	// each slot is claimed once and at most Uses certificates are issued.
	// Requests refused before the claim consume no use. A use claimed and
	// then not needed because signing failed is given back; a use whose
	// certificate was withheld because its audit record could not be
	// written stays consumed, and so does one whose claim write failed
	// with an unknown outcome: uses can be lost, never granted twice.
	// Each issuance with a limited token costs one extra store write.
	//
	// Uses of an unlimited token are only counted (per node, written with
	// the audit batch), for TokenInfo.Used.
	Uses int
}

// TokenInfo describes a token; it never contains the secret.
type TokenInfo struct {
	// ID is the first 16 hex digits of the token's SHA-256 hash; token
	// list shows it and token revoke takes it (or a unique prefix of at
	// least 8 digits).
	ID        string
	Identity  Identity
	CreatedAt time.Time
	ExpiresAt time.Time
	Uses      int // 0 = unlimited
	Used      int // uses consumed, over every node
	Revoked   bool
	// CertsRevoked says the token was revoked with every certificate it
	// produced (RevokeTokenCertificates): renewals of them are refused.
	CertsRevoked bool
}

// tokenRecord is what the store holds under keyTokens+hash.
type tokenRecord struct {
	TrustDomain    string    `json:"td"`
	Namespace      string    `json:"ns"`
	ServiceAccount string    `json:"sa"`
	CreatedAt      time.Time `json:"created"`
	ExpiresAt      time.Time `json:"expires"`
	Uses           int       `json:"uses,omitempty"`
	Revoked        bool      `json:"revoked,omitempty"`
	RevokedAt      time.Time `json:"revokedAt,omitzero"`
	// CertsRevoked: revoked with its certificates (see TokenInfo).
	CertsRevoked bool `json:"certsRevoked,omitempty"`
}

// tokenState is this node's view of one token: the parsed record (cached
// by its stored bytes), this node's use count of an unlimited token, and
// the use slots of a limited token that requests on this node are
// claiming right now.
type tokenState struct {
	raw      []byte
	rec      tokenRecord
	loaded   bool         // mine holds this node's stored count
	mine     int          // unlimited token: uses counted by this node (the value it writes)
	claiming map[int]bool // limited token: slots being claimed
}

func tokenHash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// CreateToken makes a bearer token for spiffe://<td>/ns/<ns>/sa/<sa> and
// returns its secret, which is shown once: the store keeps only its
// SHA-256 hash. Safe for concurrent use.
func (ca *CA) CreateToken(ctx context.Context, req TokenRequest) (string, TokenInfo, error) {
	id, err := NewIdentity(ca.cfg.TrustDomain, req.Namespace, req.ServiceAccount)
	if err != nil {
		return "", TokenInfo{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < 0 || ttl > MaxTokenTTL {
		return "", TokenInfo{}, fmt.Errorf("%w: TTL %v is outside (0, %v]", ErrInvalidToken, req.TTL, MaxTokenTTL)
	}
	if req.Uses < 0 {
		return "", TokenInfo{}, fmt.Errorf("%w: uses %d is negative", ErrInvalidToken, req.Uses)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", TokenInfo{}, fmt.Errorf("pki: token: %w", err)
	}
	secret := tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	now := ca.now().UTC()
	rec := tokenRecord{
		TrustDomain:    id.TrustDomain,
		Namespace:      id.Namespace,
		ServiceAccount: id.ServiceAccount,
		CreatedAt:      now,
		ExpiresAt:      now.Add(ttl),
		Uses:           req.Uses,
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return "", TokenInfo{}, fmt.Errorf("pki: token: %w", err)
	}
	h := tokenHash(secret)
	if err := ca.store.Apply(ctx, []Op{{Key: keyTokens + h, Value: val, IfAbsent: true}}); err != nil {
		return "", TokenInfo{}, fmt.Errorf("pki: store token: %w", err)
	}
	ca.pruneTokens(now)
	return secret, rec.info(h, 0), nil
}

func (r tokenRecord) info(hash string, used int) TokenInfo {
	return TokenInfo{
		ID:        hash[:tokenIDLen],
		Identity:  Identity{TrustDomain: r.TrustDomain, Namespace: r.Namespace, ServiceAccount: r.ServiceAccount},
		CreatedAt: r.CreatedAt,
		ExpiresAt: r.ExpiresAt,
		Uses:      r.Uses,
		Used:      used,
		Revoked:   r.Revoked,

		CertsRevoked: r.CertsRevoked,
	}
}

// Tokens lists every token (expired and revoked ones too), oldest first.
func (ca *CA) Tokens(ctx context.Context) ([]TokenInfo, error) {
	kvs, err := ca.store.List(ctx, keyTokens)
	if err != nil {
		return nil, fmt.Errorf("pki: list tokens: %w", err)
	}
	uses, err := ca.store.List(ctx, keyTokenUses)
	if err != nil {
		return nil, fmt.Errorf("pki: list token uses: %w", err)
	}
	used := map[string]int{}
	for _, kv := range uses {
		h, rest, _ := strings.Cut(strings.TrimPrefix(kv.Key, keyTokenUses), "/")
		if strings.HasPrefix(rest, slotMark) {
			used[h]++
			continue
		}
		if n, err := strconv.Atoi(string(kv.Value)); err == nil && n > 0 {
			used[h] += n
		}
	}
	out := make([]TokenInfo, 0, len(kvs))
	for _, kv := range kvs {
		var rec tokenRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return nil, fmt.Errorf("pki: token %s: %w", kv.Key, err)
		}
		h := strings.TrimPrefix(kv.Key, keyTokens)
		if len(h) < tokenIDLen {
			continue
		}
		out = append(out, rec.info(h, used[h]))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// RevokeToken revokes the token whose ID starts with id (at least 8 hex
// digits, unique). Revoking twice is not an error. Certificates already
// issued with the token stay valid until they expire (and may be renewed,
// each renewal bounded by the token's grant); RevokeTokenCertificates
// revokes them too.
func (ca *CA) RevokeToken(ctx context.Context, id string) (TokenInfo, error) {
	return ca.revokeToken(ctx, id, false)
}

// revokeToken revokes a token; certs also marks it CertsRevoked.
func (ca *CA) revokeToken(ctx context.Context, id string, certs bool) (TokenInfo, error) {
	id = strings.ToLower(id)
	if len(id) < 8 || len(id) > 64 {
		return TokenInfo{}, fmt.Errorf("%w: token ID %q must be 8-64 hex digits", ErrInvalidToken, id)
	}
	if _, err := hex.DecodeString(id[:len(id)&^1]); err != nil {
		return TokenInfo{}, fmt.Errorf("%w: token ID %q is not hex", ErrInvalidToken, id)
	}
	kvs, err := ca.store.List(ctx, keyTokens+id)
	if err != nil {
		return TokenInfo{}, fmt.Errorf("pki: list tokens: %w", err)
	}
	switch len(kvs) {
	case 0:
		return TokenInfo{}, fmt.Errorf("%w: %s", ErrTokenNotFound, id)
	case 1:
	default:
		return TokenInfo{}, fmt.Errorf("%w: token ID %q matches %d tokens; give more digits", ErrInvalidToken, id, len(kvs))
	}
	var rec tokenRecord
	if err := json.Unmarshal(kvs[0].Value, &rec); err != nil {
		return TokenInfo{}, fmt.Errorf("pki: token %s: %w", kvs[0].Key, err)
	}
	h := strings.TrimPrefix(kvs[0].Key, keyTokens)
	if !rec.Revoked || (certs && !rec.CertsRevoked) {
		if !rec.Revoked {
			rec.Revoked = true
			rec.RevokedAt = ca.now().UTC()
		}
		rec.CertsRevoked = rec.CertsRevoked || certs
		val, err := json.Marshal(rec)
		if err != nil {
			return TokenInfo{}, fmt.Errorf("pki: token: %w", err)
		}
		if err := put(ctx, ca.store, kvs[0].Key, val); err != nil {
			return TokenInfo{}, fmt.Errorf("pki: revoke token: %w", err)
		}
	}
	return rec.info(h, 0), nil
}

// tokenGrant is what an authenticated bearer token allows one issuance.
type tokenGrant struct {
	hash string
	// limited: the token has a use cap; the issuance must claim a use
	// slot (claimUse) before it signs.
	limited bool
	// limit is the highest slot number that may be claimed: the token's
	// Uses minus uses counted in legacy per-node counters.
	limit int
	// legacy is that legacy count (added to slot numbers in audit records).
	legacy int
	// taken are slots seen written (in the store listing, or by a
	// conflicting claim).
	taken map[int]bool
	// slot is the slot this issuance claimed (0: none yet).
	slot int
}

// authToken checks a bearer token. For a use-limited token it lists the
// uses already claimed and refuses a token with none left; the use itself
// is claimed later by claimUse, once every other check has passed.
func (ca *CA) authToken(ctx context.Context, secret string, now time.Time) (Identity, *tokenGrant, error) {
	if !strings.HasPrefix(secret, tokenPrefix) || len(secret) > maxTokenLen {
		return Identity{}, nil, refuse(ReasonBadToken, ErrUnauthenticated, "not a meshgate token")
	}
	h := tokenHash(secret)
	g := &tokenGrant{hash: h}
	raw, err := ca.store.Get(ctx, keyTokens+h)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Identity{}, g, refuse(ReasonBadToken, ErrUnauthenticated, "unknown token")
		}
		return Identity{}, g, refuse(ReasonSigningFailed, ErrSigning, "token lookup: %v", err)
	}

	ca.tokMu.Lock()
	ts := ca.tokens[h]
	if ts == nil {
		ts = &tokenState{}
		ca.tokens[h] = ts
	}
	if !bytes.Equal(ts.raw, raw) {
		var rec tokenRecord
		if err := json.Unmarshal(raw, &rec); err != nil {
			ca.tokMu.Unlock()
			return Identity{}, g, refuse(ReasonBadToken, ErrUnauthenticated, "stored token is corrupt")
		}
		ts.raw, ts.rec = raw, rec
	}
	rec, loaded := ts.rec, ts.loaded
	ca.tokMu.Unlock()

	id := Identity{TrustDomain: rec.TrustDomain, Namespace: rec.Namespace, ServiceAccount: rec.ServiceAccount}
	if rec.Revoked {
		return id, g, refuse(ReasonTokenRevoked, ErrTokenRevoked, "token %s was revoked", h[:tokenIDLen])
	}
	if !now.Before(rec.ExpiresAt) {
		return id, g, refuse(ReasonTokenExpired, ErrTokenExpired, "token %s expired at %s", h[:tokenIDLen], rec.ExpiresAt.Format(time.RFC3339))
	}
	if rec.Uses == 0 && loaded {
		// Fast path: an unlimited token whose count this node knows. Its
		// use is counted in the issuance's audit batch.
		return id, g, nil
	}

	kvs, err := ca.store.List(ctx, keyTokenUses+h+"/")
	if err != nil {
		return id, g, refuse(ReasonSigningFailed, ErrSigning, "token use lookup: %v", err)
	}
	u := parseUses(kvs, len(keyTokenUses)+len(h)+1, ca.cfg.NodeID)
	if rec.Uses == 0 {
		ca.tokMu.Lock()
		if !ts.loaded {
			ts.mine = max(ts.mine, u.mine)
			ts.loaded = true
		}
		ca.tokMu.Unlock()
		return id, g, nil
	}
	g.limited = true
	g.legacy = u.counted
	g.limit = rec.Uses - u.counted
	g.taken = u.slots
	if u.counted+len(u.slots) >= rec.Uses {
		return id, g, usedUp(h, rec.Uses)
	}
	return id, g, nil
}

func usedUp(h string, uses int) error {
	return refuse(ReasonTokenUsedUp, ErrTokenUsedUp, "token %s has used all of its %d uses", h[:tokenIDLen], uses)
}

// tokenUses is a parsed listing of keyTokenUses+hash+"/".
type tokenUses struct {
	slots   map[int]bool // claimed use slots of a use-limited token
	counted int          // sum of the per-node counters
	mine    int          // this node's counter
}

// parseUses reads a token's use records; skip is the length of the
// listing's prefix. Slot keys are "#" + decimal slot number; any other
// suffix is a node's decimal counter.
func parseUses(kvs []KV, skip int, node string) tokenUses {
	u := tokenUses{slots: map[int]bool{}}
	for _, kv := range kvs {
		rest := kv.Key[skip:]
		if n, ok := strings.CutPrefix(rest, slotMark); ok {
			if i, err := strconv.Atoi(n); err == nil && i > 0 {
				u.slots[i] = true
			}
			continue
		}
		n, _ := strconv.Atoi(string(kv.Value))
		if n < 0 {
			n = 0
		}
		u.counted += n
		if rest == node {
			u.mine = n
		}
	}
	return u
}

// slotMark starts the last segment of a use slot key; node IDs (DNS
// names) never contain it.
const slotMark = "#"

func slotKey(h string, slot int) string {
	return keyTokenUses + h + "/" + slotMark + fmt.Sprintf("%010d", slot)
}

// claimUse consumes one use of a use-limited token with a conditional
// store write: it creates the key of the lowest free use slot, IfAbsent,
// so of all the CA instances sharing the store exactly one can claim each
// of the token's slots, and a token with N uses gets at most N claims.
// A conflict means another caller (on any node) took that slot; the next
// one is tried. Slots that concurrent callers on this node are claiming
// are skipped, so they do not all race for the same one.
//
// A store error other than a conflict refuses the issuance; the use may
// or may not have been recorded (a timed-out replicated write can still
// commit), and it is not given back: a use can be lost, never granted
// twice.
func (ca *CA) claimUse(ctx context.Context, g *tokenGrant) error {
	val := []byte(ca.cfg.NodeID)
	for {
		ca.tokMu.Lock()
		ts := ca.tokens[g.hash]
		if ts == nil { // pruned meanwhile
			ts = &tokenState{}
			ca.tokens[g.hash] = ts
		}
		slot := 0
		for i := 1; i <= g.limit; i++ {
			if !g.taken[i] && !ts.claiming[i] {
				slot = i
				break
			}
		}
		if slot != 0 {
			if ts.claiming == nil {
				ts.claiming = map[int]bool{}
			}
			ts.claiming[slot] = true
		}
		ca.tokMu.Unlock()
		if slot == 0 {
			// Every free slot is taken, or being claimed by a concurrent
			// request on this node.
			return usedUp(g.hash, g.limit+g.legacy)
		}

		err := ca.store.Apply(ctx, []Op{{Key: slotKey(g.hash, slot), Value: val, IfAbsent: true}})

		ca.tokMu.Lock()
		delete(ts.claiming, slot)
		ca.tokMu.Unlock()
		switch {
		case err == nil:
			g.slot = slot
			return nil
		case errors.Is(err, ErrConflict):
			g.taken[slot] = true
		default:
			return refuse(ReasonSigningFailed, ErrSigning, "token %s: recording the use: %v", g.hash[:tokenIDLen], err)
		}
	}
}

// unclaimUse gives back the use slot an issuance claimed but did not use
// (the signer failed before any certificate existed). Best effort: if the
// delete fails the use stays consumed.
func (ca *CA) unclaimUse(ctx context.Context, g *tokenGrant) {
	if g == nil || g.slot == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ca.cfg.AuditTimeout)
	defer cancel()
	if err := ca.store.Apply(ctx, []Op{{Key: slotKey(g.hash, g.slot), Delete: true}}); err != nil {
		ca.log.Warn("giving back a token use failed; it stays consumed", "token", g.hash[:tokenIDLen], "err", err)
	}
	g.slot = 0
}

// tokenUseOps counts the uses of unlimited tokens that a committing
// audit batch records and returns the writes of this node's new counts.
// Called from the audit goroutine.
func (ca *CA) tokenUseOps(batch []*auditEntry) []Op {
	var ops []Op
	ca.tokMu.Lock()
	defer ca.tokMu.Unlock()
	for _, e := range batch {
		if e.token == "" {
			continue
		}
		ts := ca.tokens[e.token]
		if ts == nil {
			continue
		}
		ts.mine++
		ops = append(ops, Op{Key: keyTokenUses + e.token + "/" + ca.cfg.NodeID, Value: []byte(strconv.Itoa(ts.mine))})
	}
	// A token used several times in one batch wrote several ops for its
	// key; the last (highest) wins, as Apply applies ops in order.
	return ops
}

// pruneTokens forgets the in-memory state of expired tokens once the map
// grows (their counts are in the store).
func (ca *CA) pruneTokens(now time.Time) {
	ca.tokMu.Lock()
	defer ca.tokMu.Unlock()
	if len(ca.tokens) < 1024 {
		return
	}
	for h, ts := range ca.tokens {
		if len(ts.claiming) == 0 && !now.Before(ts.rec.ExpiresAt) {
			delete(ca.tokens, h)
		}
	}
}
