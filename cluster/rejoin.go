package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshgate/meshgate/cluster/catalog"
)

// Rejoining gossip through raft. A node that restarts keeps its raft
// configuration, so it knows its raft peers even when its join list is
// empty (the first node of a fleet) or names only dead nodes. While this
// node sees no other live gossip member, it asks each raft peer for its
// gossip address over the mutual-TLS forward API and joins through it.
// Its peers also dial it (catalog reconnect), whichever comes first.

// Rejoin back-off bounds.
const (
	rejoinMin = time.Second
	rejoinMax = 30 * time.Second
)

// rejoinLoop runs until Close.
func (n *Node) rejoinLoop() {
	defer n.wg.Done()
	delay := rejoinMin
	for {
		t := time.NewTimer(delay)
		select {
		case <-n.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if n.alivePeers() > 0 {
			delay = rejoinMin
			continue
		}
		peers := n.raftPeers()
		if len(peers) == 0 {
			delay = rejoinMin
			continue
		}
		if n.rejoinVia(peers) {
			delay = rejoinMin
			continue
		}
		delay = min(2*delay, rejoinMax)
	}
}

// alivePeers counts live gossip members other than this node.
func (n *Node) alivePeers() int {
	k := 0
	for _, m := range n.cat.Members() {
		if m.Name != n.cfg.NodeName && m.Status == catalog.StatusAlive {
			k++
		}
	}
	return k
}

// raftPeers lists the raft addresses of the other servers in the latest
// raft configuration this node holds.
func (n *Node) raftPeers() []string {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var out []string
	for _, s := range f.Configuration().Servers {
		if s.ID != raft.ServerID(n.cfg.NodeName) && s.Address != "" {
			out = append(out, string(s.Address))
		}
	}
	return out
}

// rejoinVia asks raft peers for their gossip addresses and joins through
// those that answered; it reports whether the join met anyone.
func (n *Node) rejoinVia(peers []string) bool {
	var addrs []string
	for _, p := range peers {
		ctx, cancel := context.WithTimeout(n.ctx, 3*time.Second)
		a, err := n.fwd.gossipAddr(ctx, p)
		cancel()
		if err != nil {
			n.log.Debug("cluster: raft peer did not give its gossip address", "peer", p, "err", err)
			continue
		}
		addrs = append(addrs, a)
	}
	if len(addrs) == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	k, err := n.cat.Join(ctx, addrs)
	if k > 0 {
		n.m.rejoins.Inc()
		n.log.Info("cluster: rejoined gossip through raft peers", "peers", addrs)
		return true
	}
	n.log.Debug("cluster: rejoin through raft peers failed", "peers", addrs, "err", err)
	return false
}

// joinGrace bounds how long JoinPending holds readiness back after start
// when no peer answers: a node whose whole fleet is down still serves
// what it has after that.
const joinGrace = 2 * time.Minute

// JoinPending says why this node should not report ready yet: it has raft
// peers or a join list but has not met a live gossip peer since it
// started, so it knows no other node's endpoints. It returns "" once a
// peer was met, when there is nobody to meet (a one-node fleet), or
// joinGrace after the start. Cheap; safe for concurrent use.
func (n *Node) JoinPending() string {
	if n.joined.Load() {
		return ""
	}
	if n.alivePeers() > 0 {
		n.joined.Store(true)
		return ""
	}
	if time.Since(n.started) > joinGrace {
		return ""
	}
	peers := n.raftPeers()
	others := 0
	for _, a := range n.cfg.Join {
		if r, err := catalog.ResolveAddr(a); err != nil || r != n.cat.Addr() {
			others++
		}
	}
	if len(peers) == 0 && others == 0 {
		return ""
	}
	return fmt.Sprintf("gossip: not joined yet (%d raft peers, %d join addresses, none answered)", len(peers), others)
}
