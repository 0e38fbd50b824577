// Package clustertest runs meshgate cluster nodes inside one test process:
// an in-memory memberlist network (GossipNetwork), an in-memory stream
// network for forwarded writes (StreamNet), raft over raft.InmemTransport,
// a throwaway CA for node certificates (CA), and a harness (New) that
// starts, kills and restarts nodes and waits for conditions.
//
//	c := clustertest.New(t, 3, clustertest.Options{})
//	leader := c.WaitLeader(t)
//	leader.Put(t.Context(), "k", []byte("v"))
//	c.WaitAll(t, "replicated", func(n *cluster.Node) bool { _, ok := n.Get("k"); return ok })
//
// GossipNetwork follows memberlist's MockNetwork but is safe for
// concurrent use, buffers and drops packets like UDP, and stops delivering
// to a node that shut down instead of blocking its senders.
package clustertest
