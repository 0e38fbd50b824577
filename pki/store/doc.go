// Package store has two implementations of pki.Store for tests and
// single-node use: Memory, a map, and File, an append-only journal on
// disk (mode 0600) with atomic batches and compaction by atomic rename.
// In a cluster the CA uses the raft-replicated store instead.
//
//	s, err := store.OpenFile("/var/lib/meshgate/pki.journal")
//	if err != nil { ... }
//	defer s.Close()
//	ca, err := pki.NewCA(ctx, cfg, s)
package store
