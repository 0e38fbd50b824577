package store

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/meshgate/meshgate/pki"
)

// Memory is an in-memory pki.Store. Safe for concurrent use. Values are
// copied in and out.
type Memory struct {
	mu      sync.RWMutex // guards data and applies
	data    map[string][]byte
	applies int
}

var _ pki.Store = (*Memory)(nil)

// NewMemory returns an empty store.
func NewMemory() *Memory { return &Memory{data: map[string][]byte{}} }

// Get implements pki.Store.
func (m *Memory) Get(ctx context.Context, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	v, ok := m.data[key]
	m.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("store: %s: %w", key, pki.ErrNotFound)
	}
	return append([]byte(nil), v...), nil
}

// List implements pki.Store.
func (m *Memory) List(ctx context.Context, prefix string) ([]pki.KV, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return list(m.data, prefix), nil
}

// Apply implements pki.Store.
func (m *Memory) Apply(ctx context.Context, ops []pki.Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := conflicts(m.data, ops); err != nil {
		return err
	}
	apply(m.data, ops)
	m.applies++
	return nil
}

// Applies returns how many Apply calls succeeded (one per replicated write
// in a real cluster store).
func (m *Memory) Applies() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.applies
}

// Len returns the number of keys stored.
func (m *Memory) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.data)
}

func list(data map[string][]byte, prefix string) []pki.KV {
	var out []pki.KV
	for k, v := range data {
		if strings.HasPrefix(k, prefix) {
			out = append(out, pki.KV{Key: k, Value: append([]byte(nil), v...)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// conflicts checks the IfAbsent ops of a batch against data.
func conflicts(data map[string][]byte, ops []pki.Op) error {
	for _, op := range ops {
		if op.Key == "" {
			return fmt.Errorf("store: empty key")
		}
		if op.IfAbsent {
			if _, ok := data[op.Key]; ok {
				return fmt.Errorf("store: %s: %w", op.Key, pki.ErrConflict)
			}
		}
	}
	return nil
}

func apply(data map[string][]byte, ops []pki.Op) {
	for _, op := range ops {
		if op.Delete {
			delete(data, op.Key)
			continue
		}
		data[op.Key] = append([]byte(nil), op.Value...)
	}
}
