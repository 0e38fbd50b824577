package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshgate/meshgate/cluster"
	"github.com/meshgate/meshgate/mtls"
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

// revocationRefresh re-reads the revocation set this often even without a
// change, so entries of expired certificates leave it.
const revocationRefresh = 10 * time.Minute

// RevocationFeed keeps the revocation set of the node's mTLS sources (raft
// transport, write forwarding, and whatever else verifies peers through
// them) and of its CA (the CRL) equal to the replicated CA state: it
// loads the revoked serials at Start and again whenever the store changes
// under pki.RevokedPrefix. It needs no CA key, so nodes without a CA are
// fed too.
type RevocationFeed struct {
	n    *cluster.Node
	st   pki.Store
	srcs []*mtls.Source
	log  *slog.Logger
	ca   atomic.Pointer[pki.CA]

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

var _ Component = (*RevocationFeed)(nil)

// NewRevocationFeed feeds srcs from n's replicated store.
func NewRevocationFeed(n *cluster.Node, log *slog.Logger, srcs ...*mtls.Source) *RevocationFeed {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &RevocationFeed{n: n, st: NewRaftCAStore(n), srcs: srcs, log: log, stop: make(chan struct{})}
}

// AttachCA makes the feed refresh ca's revocation set (its CRL) too.
func (f *RevocationFeed) AttachCA(ca *pki.CA) {
	f.ca.Store(ca)
	f.refresh(context.Background())
}

// Start loads the set once and follows the store until Close.
func (f *RevocationFeed) Start(ctx context.Context) error {
	ch, cancel := f.n.Watch(pki.RevokedPrefix)
	f.refresh(ctx)
	f.wg.Go(func() {
		defer cancel()
		t := time.NewTicker(revocationRefresh)
		defer t.Stop()
		for {
			select {
			case <-f.stop:
				return
			case <-ch:
			case <-t.C:
			}
			f.refresh(context.Background())
		}
	})
	return nil
}

// refresh loads the set and hands it to every source and the CA.
func (f *RevocationFeed) refresh(ctx context.Context) {
	var set *pki.RevocationSet
	var err error
	if ca := f.ca.Load(); ca != nil {
		set, err = ca.ReloadRevocations(ctx)
	} else {
		set, err = pki.LoadRevocations(ctx, f.st, time.Now())
	}
	if err != nil {
		f.log.Warn("revocation set", "err", err)
	}
	if set == nil {
		return // keep the previous set
	}
	for _, s := range f.srcs {
		s.SetRevocations(set)
	}
}

// Close stops following the store. Idempotent.
func (f *RevocationFeed) Close() error {
	f.once.Do(func() { close(f.stop) })
	f.wg.Wait()
	return nil
}
