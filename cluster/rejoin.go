package cluster

import (
	"context"
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
