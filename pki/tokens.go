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
	// unlimited (within TTL). A use is consumed when the issuance's audit
	// batch is written, even if that write fails (the certificate is then
	// withheld); refused requests consume none. Each node counts its own
	// uses and reads the others' from the store, so two nodes issuing
	// with the same token at the same instant can together exceed Uses by
	// the number of nodes minus one.
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
	Used      int // summed over every node
	Revoked   bool
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
}

// tokenState is this node's view of one token: the parsed record (cached
// by its stored bytes) and this node's use counts.
type tokenState struct {
	raw      []byte
	rec      tokenRecord
	loaded   bool // mine holds this node's stored count
	mine     int  // uses committed by this node (the value it writes)
	reserved int  // uses authorized but not yet committed
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
		h, _, _ := strings.Cut(strings.TrimPrefix(kv.Key, keyTokenUses), "/")
		n, _ := strconv.Atoi(string(kv.Value))
		used[h] += n
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
// digits, unique). Revoking twice is not an error.
func (ca *CA) RevokeToken(ctx context.Context, id string) (TokenInfo, error) {
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
	if !rec.Revoked {
		rec.Revoked = true
		rec.RevokedAt = ca.now().UTC()
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

// authToken checks a bearer token and reserves one use of it. On success
// the caller must either hand the hash to the audit record (which turns
// the reservation into a committed use) or call releaseToken.
func (ca *CA) authToken(ctx context.Context, secret string, now time.Time) (Identity, string, error) {
	if !strings.HasPrefix(secret, tokenPrefix) || len(secret) > maxTokenLen {
		return Identity{}, "", refuse(ReasonBadToken, ErrUnauthenticated, "not a meshgate token")
	}
	h := tokenHash(secret)
	raw, err := ca.store.Get(ctx, keyTokens+h)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Identity{}, h, refuse(ReasonBadToken, ErrUnauthenticated, "unknown token")
		}
		return Identity{}, h, refuse(ReasonSigningFailed, ErrSigning, "token lookup: %v", err)
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
			return Identity{}, h, refuse(ReasonBadToken, ErrUnauthenticated, "stored token is corrupt")
		}
		ts.raw, ts.rec = raw, rec
	}
	rec, loaded := ts.rec, ts.loaded
	ca.tokMu.Unlock()

	id := Identity{TrustDomain: rec.TrustDomain, Namespace: rec.Namespace, ServiceAccount: rec.ServiceAccount}
	if rec.Revoked {
		return id, h, refuse(ReasonTokenRevoked, ErrTokenRevoked, "token %s was revoked", h[:tokenIDLen])
	}
	if !now.Before(rec.ExpiresAt) {
		return id, h, refuse(ReasonTokenExpired, ErrTokenExpired, "token %s expired at %s", h[:tokenIDLen], rec.ExpiresAt.Format(time.RFC3339))
	}

	// Use counting: this node's count lives in memory (and is written with
	// each audit batch); other nodes' counts are read from the store.
	others, mineStored := 0, 0
	if rec.Uses > 0 || !loaded {
		kvs, err := ca.store.List(ctx, keyTokenUses+h+"/")
		if err != nil {
			return id, h, refuse(ReasonSigningFailed, ErrSigning, "token use lookup: %v", err)
		}
		for _, kv := range kvs {
			n, _ := strconv.Atoi(string(kv.Value))
			if strings.TrimPrefix(kv.Key, keyTokenUses+h+"/") == ca.cfg.NodeID {
				mineStored = n
			} else {
				others += n
			}
		}
	}
	ca.tokMu.Lock()
	defer ca.tokMu.Unlock()
	if !ts.loaded {
		ts.mine = max(ts.mine, mineStored)
		ts.loaded = true
	}
	if rec.Uses > 0 && others+ts.mine+ts.reserved >= rec.Uses {
		return id, h, refuse(ReasonTokenUsedUp, ErrTokenUsedUp, "token %s has used all of its %d uses", h[:tokenIDLen], rec.Uses)
	}
	ts.reserved++
	return id, h, nil
}

// releaseToken gives back a use reserved by authToken.
func (ca *CA) releaseToken(h string) {
	ca.tokMu.Lock()
	if ts := ca.tokens[h]; ts != nil && ts.reserved > 0 {
		ts.reserved--
	}
	ca.tokMu.Unlock()
}

// tokenUseOps turns the reservations of a committing audit batch into
// committed uses and returns the writes of this node's new counts.
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
		if ts.reserved > 0 {
			ts.reserved--
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
		if ts.reserved == 0 && !now.Before(ts.rec.ExpiresAt) {
			delete(ca.tokens, h)
		}
	}
}
