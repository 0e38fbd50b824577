package acl

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Manager creates, lists, revokes and resolves tokens over a Store.
// It is safe for concurrent use.
type Manager struct {
	store Store
	now   func() time.Time
}

// Option configures a Manager.
type Option interface{ apply(*Manager) }

type optionFunc func(*Manager)

func (f optionFunc) apply(m *Manager) { f(m) }

// WithClock makes the manager read time from now (tests).
func WithClock(now func() time.Time) Option { return optionFunc(func(m *Manager) { m.now = now }) }

// NewManager returns a manager over store.
func NewManager(store Store, opts ...Option) *Manager {
	m := &Manager{store: store, now: time.Now}
	for _, o := range opts {
		o.apply(m)
	}
	return m
}

// Request describes a token to create.
type Request struct {
	Description string   `json:"description,omitempty"`
	Scopes      []Scope  `json:"scopes"`
	Services    []string `json:"services,omitempty"`
	Subsets     []string `json:"subsets,omitempty"`
	// TTL, when positive, makes the token expire TTL after creation.
	TTL time.Duration `json:"ttl,omitempty"`
}

// Create makes a token and returns its record and the secret, which is
// shown once and never stored.
func (m *Manager) Create(ctx context.Context, req Request) (Token, Credential, error) {
	return m.create(ctx, req, false)
}

func (m *Manager) create(ctx context.Context, req Request, first bool) (Token, Credential, error) {
	if req.TTL < 0 {
		return Token{}, Credential{}, fmt.Errorf("%w: ttl %v is negative", ErrInvalid, req.TTL)
	}
	cred, err := NewCredential()
	if err != nil {
		return Token{}, Credential{}, err
	}
	now := m.now().UTC().Truncate(time.Second)
	t := Token{
		ID: cred.ID, Hash: cred.Hash(), Description: req.Description,
		Scopes: slices.Compact(slices.Sorted(slices.Values(req.Scopes))), Services: req.Services, Subsets: req.Subsets, Created: now,
	}
	if req.TTL > 0 {
		t.Expires = now.Add(req.TTL)
	}
	if err := m.store.Create(ctx, t, first); err != nil {
		return Token{}, Credential{}, err
	}
	return t, cred, nil
}

// List returns every token record (never secrets).
func (m *Manager) List(ctx context.Context) ([]Token, error) { return m.store.Tokens(ctx) }

// Revoke deletes the token with id; it stops working at once on this node
// and, in a fleet, as soon as the deletion is applied at each node.
func (m *Manager) Revoke(ctx context.Context, id string) error { return m.store.Remove(ctx, id) }

// Resolve returns the token a presented credential belongs to:
// ErrUnknownToken when none matches, ErrExpired when it has expired.
func (m *Manager) Resolve(ctx context.Context, c Credential) (Token, error) {
	t, err := m.store.Token(ctx, c.ID)
	if errors.Is(err, ErrNotFound) {
		return Token{}, ErrUnknownToken
	}
	if err != nil {
		return Token{}, err
	}
	if !c.Matches(t) {
		return Token{}, ErrUnknownToken
	}
	if t.Expired(m.now()) {
		return Token{}, fmt.Errorf("%w at %s (token %s)", ErrExpired, t.Expires.Format(time.RFC3339), t.ID)
	}
	return t, nil
}

// OperatorTokenFile is the file, in a node's data dir, where the bootstrap
// operator token is written (mode 0600) and where the CLI looks for a
// token by default.
const OperatorTokenFile = "operator.token"

// Bootstrap makes the first operator token of the store and writes its
// secret to path (0600), unless one was made before (by this node or by
// another node of the fleet): then it returns ErrBootstrapped and writes
// nothing. A node that did not bootstrap gets a token from an operator:
// `meshgate acl token create --scope operator` at any node, written to
// its data dir's operator.token.
func (m *Manager) Bootstrap(ctx context.Context, path string) (Token, error) {
	if _, err := os.Stat(path); err == nil {
		return Token{}, ErrBootstrapped
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Token{}, fmt.Errorf("acl: %w", err)
	}
	t, cred, err := m.create(ctx, Request{Description: "bootstrap operator token", Scopes: []Scope{ScopeOperator}}, true)
	if err != nil {
		return Token{}, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return Token{}, fmt.Errorf("acl: %w", err)
	}
	if err := writeFileAtomic(path, []byte(cred.String()+"\n"), 0o600); err != nil {
		return Token{}, err
	}
	return t, nil
}
