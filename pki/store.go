package pki

import "context"

// Store is the replicated key/value state the CA keeps everything in: the
// CA certificates, the CA key sealed with the key-encryption key, token
// hashes, token use counts and audit batches. In a cluster it is backed by
// the raft-replicated store; pki/store has an in-memory and a file-backed
// implementation for tests and single-node use.
//
// Implementations must be safe for concurrent use. Reads may be served
// from the local replica. Keys are printable ASCII without spaces.
type Store interface {
	// Get returns the value of key, or an error wrapping ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// List returns every pair whose key starts with prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]KV, error)
	// Apply applies ops atomically and in order: all or none. If an op has
	// IfAbsent set and its key exists, nothing is applied and the error
	// wraps ErrConflict. One Apply is one replicated write; the audit log
	// relies on this to commit many records at once. The IfAbsent check
	// must be made against the committed state, atomically with the write
	// (in a replicated store: when the write is applied, in log order, not
	// on a possibly stale replica): a use-limited token's uses are claimed
	// with IfAbsent writes, and the cap is only as exact as this check.
	Apply(ctx context.Context, ops []Op) error
}

// Op is one write in a Store.Apply batch.
type Op struct {
	// Key is the key written or deleted.
	Key string
	// Value is the new value (ignored when Delete is set). The store
	// keeps its own copy.
	Value []byte
	// Delete removes Key (a missing key is not an error).
	Delete bool
	// IfAbsent makes the whole batch fail with ErrConflict if Key exists.
	IfAbsent bool
}

// KV is one key/value pair returned by Store.List.
type KV struct {
	Key   string
	Value []byte
}

// Store key layout. Everything the CA writes lives under "pki/".
const (
	keyState  = "pki/ca/state"
	keyTokens = "pki/token/" // + sha256(secret) hex -> tokenRecord JSON
	// keyTokenUses + hash + "/#" + 10-digit slot -> node ID: one claimed
	// use of a use-limited token (created IfAbsent before signing);
	// keyTokenUses + hash + "/" + node -> decimal count of an unlimited
	// token's uses on that node (written with the audit batches).
	keyTokenUses = "pki/token-use/"
	keyAudit     = "pki/audit/" // + node + "/" + 20-digit unix nanos + "-" + seq -> []AuditRecord JSON
)

func put(ctx context.Context, s Store, key string, val []byte) error {
	return s.Apply(ctx, []Op{{Key: key, Value: val}})
}
