// Package cluster makes meshgate nodes one fleet: a raft-replicated store
// for the mesh config (and the CA's state), and a gossip membership that
// carries the endpoint catalog (package cluster/catalog).
//
// # Replicated store
//
// The state machine is an ordered map of keys to records. Keys are
// namespaced with "/": config resources live under
// "config/<Kind>/<namespace>/<name>" as one YAML document each (see
// ApplyConfig and ConfigSet), the CA keeps its state under "ca/". A write
// is a batch of Ops applied atomically in one raft log entry; OpCheck
// makes compare-and-set possible ("this token is unused", "the serial is
// still N").
//
//	n, err := cluster.New(ctx, cfg)
//	defer n.Close()
//	_, err = n.Apply(ctx, cluster.Check("ca/token/abc", 0), cluster.Put("ca/token/abc", used))
//	rec, ok := n.Get("ca/root")      // local read, may lag
//	err = n.Sync(ctx)                // read barrier: local state catches up with the leader
//
// Any node accepts writes. A follower forwards the encoded batch to the
// leader over an HTTP/1.1 API served on the raft listener: each stream on
// that listener starts with one byte that says whether it carries raft
// RPCs or a forwarded request, so both share one port and its mutual TLS.
//
// Storage: the raft log and stable store are one bbolt file
// (raft-boltdb/v2, DataDir/raft/raft.db) behind a 512-entry log cache, and
// snapshots are files (DataDir/raft/snapshots, two kept). Snapshots stream
// the whole map with a CRC; restore replaces the state only if the
// snapshot decodes completely.
//
// # Membership
//
// New nodes find each other through gossip. With Bootstrap a node starts a
// one-node cluster; with BootstrapExpect = N the node whose name sorts
// first among the first N raft-capable members bootstraps all N once the
// set has been stable for a reconcile interval and no member reports being
// part of a cluster already. The leader then keeps the raft configuration
// in line with gossip: new members join as non-voters and are promoted up
// to MaxVoters (5); a voter that failed for DeadServerTimeout is replaced
// by a healthy non-voter; a server that left gracefully is removed.
//
// Close stops a node so that it can restart from DataDir; Leave departs
// for good (leadership handed off, removed from raft, endpoints withdrawn,
// leave intent gossiped).
//
// # Concurrency
//
// Every Node method is safe for concurrent use. A Node owns its goroutines
// (raft, gossip, the forwarding server, the reconcile loop); Close stops
// them all and waits.
package cluster
