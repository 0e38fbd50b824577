package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/meshgate/meshgate/cluster"
	"github.com/meshgate/meshgate/pki"
)

// raftCAStore keeps the CA's state (sealed key, certificates, token hashes,
// audit records) in the raft-replicated store, so every node of a fleet
// signs with the same CA and a token's uses are counted fleet-wide. Writes
// on a follower are forwarded to the leader by the cluster node; reads are
// served from the local replica.
type raftCAStore struct{ n *cluster.Node }

var _ pki.Store = raftCAStore{}

// NewRaftCAStore adapts a cluster node to pki.Store.
func NewRaftCAStore(n *cluster.Node) pki.Store { return raftCAStore{n: n} }

func (s raftCAStore) Get(_ context.Context, key string) ([]byte, error) {
	r, ok := s.n.Get(key)
	if !ok {
		return nil, fmt.Errorf("%w: %s", pki.ErrNotFound, key)
	}
	return r.Value, nil
}

func (s raftCAStore) List(_ context.Context, prefix string) ([]pki.KV, error) {
	recs := s.n.List(prefix)
	out := make([]pki.KV, 0, len(recs))
	for _, r := range recs {
		out = append(out, pki.KV{Key: r.Key, Value: r.Value})
	}
	return out, nil
}

// Apply writes ops as one raft log entry: all or nothing.
func (s raftCAStore) Apply(ctx context.Context, ops []pki.Op) error {
	cops := make([]cluster.Op, 0, len(ops)+1)
	for _, op := range ops {
		switch {
		case op.Delete:
			cops = append(cops, cluster.Delete(op.Key))
		default:
			if op.IfAbsent {
				cops = append(cops, cluster.Check(op.Key, 0))
			}
			cops = append(cops, cluster.Put(op.Key, op.Value))
		}
	}
	if _, err := s.n.Apply(ctx, cops...); err != nil {
		if errors.Is(err, cluster.ErrConflict) {
			return fmt.Errorf("%w: %v", pki.ErrConflict, err)
		}
		return fmt.Errorf("agent: ca store: %w", err)
	}
	return nil
}
