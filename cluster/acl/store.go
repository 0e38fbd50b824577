package acl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/meshgate/meshgate/cluster"
)

// Store keeps token records. Implementations are safe for concurrent use.
type Store interface {
	// Token returns the record with id, or ErrNotFound.
	Token(ctx context.Context, id string) (Token, error)
	// Tokens returns every record, in ID order.
	Tokens(ctx context.Context) ([]Token, error)
	// Create stores a new record. When first is true it succeeds only if no
	// operator token was ever created in this store (the bootstrap token).
	Create(ctx context.Context, t Token, first bool) error
	// Remove deletes the record with id, or returns ErrNotFound.
	Remove(ctx context.Context, id string) error
}

// ErrBootstrapped is returned by Store.Create with first set when an
// operator token was already made.
var ErrBootstrapped = errors.New("acl: an operator token was already bootstrapped")

// KV is the part of cluster.Node that KVStore uses.
type KV interface {
	Get(key string) (cluster.Record, bool)
	List(prefix string) []cluster.Record
	Apply(ctx context.Context, ops ...cluster.Op) (uint64, error)
}

var _ KV = (*cluster.Node)(nil)

// Keys of the replicated store.
const (
	// KeyPrefix holds one record per token: acl/tokens/<id>.
	KeyPrefix = "acl/tokens/"
	// BootstrapKey marks that the bootstrap operator token was made.
	BootstrapKey = "acl/bootstrap"
)

// KVStore keeps tokens in the raft-replicated store, so every node of the
// fleet resolves them. Reads come from this node's state.
type KVStore struct{ kv KV }

var _ Store = (*KVStore)(nil)

// NewKVStore returns a store over kv (a *cluster.Node).
func NewKVStore(kv KV) *KVStore { return &KVStore{kv: kv} }

// Token implements Store.
func (s *KVStore) Token(_ context.Context, id string) (Token, error) {
	if !validID(id) {
		return Token{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	r, ok := s.kv.Get(KeyPrefix + id)
	if !ok {
		return Token{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return DecodeRecord(r.Value)
}

// Tokens implements Store. A record that does not decode is an error.
func (s *KVStore) Tokens(context.Context) ([]Token, error) {
	var out []Token
	for _, r := range s.kv.List(KeyPrefix) {
		t, err := DecodeRecord(r.Value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.Key, err)
		}
		out = append(out, t)
	}
	return out, nil
}

// Create implements Store; first is made atomic with a check on
// BootstrapKey in the same raft entry.
func (s *KVStore) Create(ctx context.Context, t Token, first bool) error {
	b, err := EncodeRecord(t)
	if err != nil {
		return err
	}
	ops := []cluster.Op{cluster.Check(KeyPrefix+t.ID, 0), cluster.Put(KeyPrefix+t.ID, b)}
	if first {
		ops = append(ops, cluster.Check(BootstrapKey, 0), cluster.Put(BootstrapKey, []byte(t.ID)))
	}
	_, err = s.kv.Apply(ctx, ops...)
	if first && errors.Is(err, cluster.ErrConflict) {
		return ErrBootstrapped
	}
	if err != nil {
		return fmt.Errorf("acl: store token %s: %w", t.ID, err)
	}
	return nil
}

// Remove implements Store.
func (s *KVStore) Remove(ctx context.Context, id string) error {
	r, ok := s.kv.Get(KeyPrefix + id)
	if !validID(id) || !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if _, err := s.kv.Apply(ctx, cluster.Check(r.Key, r.ModIndex), cluster.Delete(r.Key)); err != nil {
		return fmt.Errorf("acl: remove token %s: %w", id, err)
	}
	return nil
}

// FileStore keeps tokens in one JSON file (mode 0600) for a node outside
// any fleet.
type FileStore struct {
	path string
	// mu guards the file.
	mu sync.Mutex
}

var _ Store = (*FileStore)(nil)

// TokensFile is the FileStore file name in a data dir.
const TokensFile = "acl-tokens.json"

// NewFileStore returns a store in dir/TokensFile.
func NewFileStore(dir string) *FileStore { return &FileStore{path: filepath.Join(dir, TokensFile)} }

type fileState struct {
	Bootstrapped bool    `json:"bootstrapped"`
	Tokens       []Token `json:"tokens"`
}

func (s *FileStore) read() (fileState, error) {
	var st fileState
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("acl: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%w: %s: %v", ErrMalformed, s.path, err)
	}
	for _, t := range st.Tokens {
		if err := t.Validate(); err != nil {
			return st, fmt.Errorf("%s: %w", s.path, err)
		}
	}
	return st, nil
}

func (s *FileStore) write(st fileState) error {
	sort.Slice(st.Tokens, func(i, j int) bool { return st.Tokens[i].ID < st.Tokens[j].ID })
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return fmt.Errorf("acl: %w", err)
	}
	return writeFileAtomic(s.path, b, 0o600)
}

// Token implements Store.
func (s *FileStore) Token(_ context.Context, id string) (Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.read()
	if err != nil {
		return Token{}, err
	}
	for _, t := range st.Tokens {
		if t.ID == id {
			return t, nil
		}
	}
	return Token{}, fmt.Errorf("%w: %s", ErrNotFound, id)
}

// Tokens implements Store.
func (s *FileStore) Tokens(context.Context) ([]Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.read()
	return st.Tokens, err
}

// Create implements Store.
func (s *FileStore) Create(_ context.Context, t Token, first bool) error {
	if err := t.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.read()
	if err != nil {
		return err
	}
	if first && st.Bootstrapped {
		return ErrBootstrapped
	}
	for _, x := range st.Tokens {
		if x.ID == t.ID {
			return fmt.Errorf("%w: token id %s exists", ErrInvalid, t.ID)
		}
	}
	st.Tokens = append(st.Tokens, t)
	st.Bootstrapped = st.Bootstrapped || first
	return s.write(st)
}

// Remove implements Store.
func (s *FileStore) Remove(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.read()
	if err != nil {
		return err
	}
	for i, t := range st.Tokens {
		if t.ID == id {
			st.Tokens = append(st.Tokens[:i], st.Tokens[i+1:]...)
			return s.write(st)
		}
	}
	return fmt.Errorf("%w: %s", ErrNotFound, id)
}

// writeFileAtomic writes data to path through a temporary file and rename.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("acl: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("acl: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("acl: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("acl: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("acl: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("acl: %w", err)
	}
	return nil
}
