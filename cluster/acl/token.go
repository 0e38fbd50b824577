package acl

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Scope is one permission a token grants.
type Scope string

// The scopes. ScopeOperator implies every other scope.
const (
	// ScopeNone marks a request that needs no token (health probes, or a
	// route with its own credential such as cfssl's HMAC authsign).
	ScopeNone Scope = ""
	// ScopeRead allows reads of the admin API.
	ScopeRead Scope = "read"
	// ScopeEndpointsWrite allows registering and deregistering endpoints,
	// limited by Token.Services and Token.Subsets.
	ScopeEndpointsWrite Scope = "endpoints:write"
	// ScopeOperator allows everything.
	ScopeOperator Scope = "operator"
)

// ParseScope reads a scope name as the CLI and the API take it.
func ParseScope(s string) (Scope, error) {
	switch sc := Scope(s); sc {
	case ScopeRead, ScopeEndpointsWrite, ScopeOperator:
		return sc, nil
	}
	return "", fmt.Errorf("%w: scope %q is not read, endpoints:write or operator", ErrInvalid, s)
}

// Limits of a token record, bounding what a decoder accepts.
const (
	// MaxRecordBytes bounds one stored token record.
	MaxRecordBytes = 16 << 10
	// MaxDescription bounds Token.Description.
	MaxDescription = 256
	// MaxRestrictions bounds Token.Services and Token.Subsets each.
	MaxRestrictions = 64
	// maxRestrictionLen bounds one service or subset entry.
	maxRestrictionLen = 253 + 1 + 63
)

// Token is one stored admin token. The secret itself is never stored.
type Token struct {
	// ID names the token in list and revoke; it is part of the secret too,
	// so a presented secret is looked up by ID and compared by hash.
	ID string `json:"id"`
	// Hash is the hex SHA-256 of the secret part of the credential.
	Hash string `json:"hash"`
	// Description is free text for operators.
	Description string `json:"description,omitempty"`
	// Scopes the token grants.
	Scopes []Scope `json:"scopes"`
	// Services an endpoints:write token may register (exact service host
	// names); empty means any service the configuration declares.
	Services []string `json:"services,omitempty"`
	// Subsets an endpoints:write token may claim with its labels, as
	// "service/subset" or "*" for all; empty means none. Operator tokens
	// may claim every subset.
	Subsets []string `json:"subsets,omitempty"`
	// Created is when the token was made.
	Created time.Time `json:"created"`
	// Expires is when the token stops working; zero means never.
	Expires time.Time `json:"expires,omitzero"`
}

// Has reports whether t grants scope s (operator grants all).
func (t Token) Has(s Scope) bool {
	if s == ScopeNone {
		return true
	}
	return slices.Contains(t.Scopes, ScopeOperator) || slices.Contains(t.Scopes, s)
}

// Expired reports whether t has expired at now.
func (t Token) Expired(now time.Time) bool { return !t.Expires.IsZero() && !now.Before(t.Expires) }

// Validate reports the first field of t that is not usable.
func (t Token) Validate() error {
	if !validID(t.ID) {
		return fmt.Errorf("%w: id %q is not %d hex digits", ErrMalformed, t.ID, idLen)
	}
	if len(t.Hash) != 2*sha256.Size {
		return fmt.Errorf("%w: token %s: hash is %d characters, want %d", ErrMalformed, t.ID, len(t.Hash), 2*sha256.Size)
	}
	if _, err := hex.DecodeString(t.Hash); err != nil {
		return fmt.Errorf("%w: token %s: hash is not hex", ErrMalformed, t.ID)
	}
	if len(t.Description) > MaxDescription {
		return fmt.Errorf("%w: token %s: description longer than %d bytes", ErrInvalid, t.ID, MaxDescription)
	}
	if len(t.Scopes) == 0 {
		return fmt.Errorf("%w: token %s: no scopes", ErrInvalid, t.ID)
	}
	for _, s := range t.Scopes {
		if _, err := ParseScope(string(s)); err != nil {
			return fmt.Errorf("token %s: %w", t.ID, err)
		}
	}
	if (len(t.Services) > 0 || len(t.Subsets) > 0) && !slices.Contains(t.Scopes, ScopeEndpointsWrite) {
		return fmt.Errorf("%w: token %s: services and subsets restrict endpoints:write; the token does not have it", ErrInvalid, t.ID)
	}
	if len(t.Services) > MaxRestrictions || len(t.Subsets) > MaxRestrictions {
		return fmt.Errorf("%w: token %s: more than %d services or subsets", ErrInvalid, t.ID, MaxRestrictions)
	}
	for _, s := range t.Services {
		if s == "" || len(s) > maxRestrictionLen || strings.ContainsAny(s, "/ \t\r\n") {
			return fmt.Errorf("%w: token %s: service %q must be a host name", ErrInvalid, t.ID, s)
		}
	}
	for _, s := range t.Subsets {
		svc, sub, ok := strings.Cut(s, "/")
		if s != "*" && (!ok || svc == "" || sub == "" || len(s) > maxRestrictionLen || strings.ContainsAny(s, " \t\r\n") || strings.Contains(sub, "/")) {
			return fmt.Errorf("%w: token %s: subset %q must be service/subset or *", ErrInvalid, t.ID, s)
		}
	}
	if !t.Expires.IsZero() && t.Expires.Before(t.Created) {
		return fmt.Errorf("%w: token %s: expires before it was created", ErrInvalid, t.ID)
	}
	return nil
}

// AllowsSubset reports whether t may claim subset sub of service svc.
func (t Token) AllowsSubset(svc, sub string) bool {
	if slices.Contains(t.Scopes, ScopeOperator) {
		return true
	}
	return slices.Contains(t.Subsets, "*") || slices.Contains(t.Subsets, svc+"/"+sub)
}

// AllowsService reports whether t may register service svc.
func (t Token) AllowsService(svc string) bool {
	if slices.Contains(t.Scopes, ScopeOperator) {
		return true
	}
	return len(t.Services) == 0 || slices.Contains(t.Services, svc)
}

// Credential format: "mgt." + 16 hex digits of ID + "." + 43 characters of
// unpadded base64url (32 random bytes).
const (
	credPrefix = "mgt."
	idLen      = 16
	secretLen  = 43
	// CredentialLen is the length of every credential NewCredential makes.
	CredentialLen = len(credPrefix) + idLen + 1 + secretLen
)

// Credential is a decoded bearer secret: the token ID and the secret part.
type Credential struct {
	ID     string
	secret string
}

// String returns the full credential as a client presents it.
func (c Credential) String() string { return credPrefix + c.ID + "." + c.secret }

// Hash is the hex SHA-256 of the secret part, as Token.Hash stores it.
func (c Credential) Hash() string {
	h := sha256.Sum256([]byte(c.secret))
	return hex.EncodeToString(h[:])
}

// Matches reports in constant time whether c is the secret of t.
func (c Credential) Matches(t Token) bool {
	return c.ID == t.ID && subtle.ConstantTimeCompare([]byte(c.Hash()), []byte(t.Hash)) == 1
}

// NewCredential makes a random credential.
func NewCredential() (Credential, error) {
	id := make([]byte, idLen/2)
	sec := make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		return Credential{}, fmt.Errorf("acl: %w", err)
	}
	if _, err := rand.Read(sec); err != nil {
		return Credential{}, fmt.Errorf("acl: %w", err)
	}
	return Credential{ID: hex.EncodeToString(id), secret: base64.RawURLEncoding.EncodeToString(sec)}, nil
}

// ParseCredential decodes a presented secret (surrounding white space, as
// a token file has, is trimmed). The error says which part is wrong and
// never echoes the secret.
func ParseCredential(s string) (Credential, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Credential{}, ErrNoCredential
	}
	if len(s) != CredentialLen {
		return Credential{}, fmt.Errorf("%w: %d characters, want %d", ErrMalformed, len(s), CredentialLen)
	}
	if !strings.HasPrefix(s, credPrefix) {
		return Credential{}, fmt.Errorf("%w: does not start with %q", ErrMalformed, credPrefix)
	}
	rest := s[len(credPrefix):]
	id, sec := rest[:idLen], rest[idLen:]
	if !validID(id) {
		return Credential{}, fmt.Errorf("%w: id is not %d lower-case hex digits", ErrMalformed, idLen)
	}
	if sec[0] != '.' {
		return Credential{}, fmt.Errorf("%w: no '.' after the id", ErrMalformed)
	}
	sec = sec[1:]
	b, err := base64.RawURLEncoding.Strict().DecodeString(sec)
	if err != nil || len(b) != 32 {
		return Credential{}, fmt.Errorf("%w: secret is not 32 bytes of unpadded base64url", ErrMalformed)
	}
	return Credential{ID: id, secret: sec}, nil
}

// ParseAuthorization decodes an Authorization header value
// ("Bearer <secret>"). An empty header is ErrNoCredential.
func ParseAuthorization(h string) (Credential, error) {
	if h == "" {
		return Credential{}, ErrNoCredential
	}
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return Credential{}, fmt.Errorf("%w: Authorization header is not \"Bearer <token>\"", ErrMalformed)
	}
	c, err := ParseCredential(rest)
	if err == ErrNoCredential {
		return Credential{}, fmt.Errorf("%w: Authorization header has an empty bearer token", ErrMalformed)
	}
	return c, err
}

func validID(s string) bool {
	if len(s) != idLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// EncodeRecord encodes t as the store keeps it.
func EncodeRecord(t Token) ([]byte, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(t)
}

// DecodeRecord decodes and validates one stored token record. Unknown
// fields and trailing data are refused.
func DecodeRecord(b []byte) (Token, error) {
	if len(b) > MaxRecordBytes {
		return Token{}, fmt.Errorf("%w: record is %d bytes, limit %d", ErrMalformed, len(b), MaxRecordBytes)
	}
	var t Token
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return Token{}, fmt.Errorf("%w: record: %v", ErrMalformed, err)
	}
	if dec.More() {
		return Token{}, fmt.Errorf("%w: record: trailing data after the JSON object", ErrMalformed)
	}
	if err := t.Validate(); err != nil {
		return Token{}, err
	}
	return t, nil
}
