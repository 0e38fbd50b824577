package cluster

import (
	"context"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshgate/meshgate/cluster/catalog"
)

// reconcileLoop is the node's membership goroutine: it advertises raft
// readiness in gossip, runs bootstrap_expect, and on the leader keeps the
// raft configuration in line with gossip (autopilot-lite).
func (n *Node) reconcileLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		n.reconcile()
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-n.cat.MembersChanged():
		case <-n.raft.LeaderCh():
		}
	}
}

func (n *Node) reconcile() {
	leader := n.raft.State() == raft.Leader
	if leader {
		n.m.leader.Set(1)
	} else {
		n.m.leader.Set(0)
	}
	n.m.applied.Set(float64(n.fsm.appliedIndex()))

	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	servers := f.Configuration().Servers
	ready := slices.ContainsFunc(servers, func(s raft.Server) bool { return s.ID == raft.ServerID(n.cfg.NodeName) })
	if ready != (n.cat.Meta().Flags&catalog.FlagRaftReady != 0) {
		err := n.cat.UpdateMeta(func(m *catalog.Meta) {
			if ready {
				m.Flags |= catalog.FlagRaftReady
			} else {
				m.Flags &^= catalog.FlagRaftReady
			}
		})
		if err != nil {
			n.log.Debug("cluster: update meta", "err", err)
		}
	}
	if len(servers) == 0 && n.cfg.BootstrapExpect > 0 {
		n.tryBootstrapExpect()
	}
	if leader {
		n.autopilot(servers)
	}
}

// tryBootstrapExpect bootstraps the configuration once BootstrapExpect
// raft-capable members are alive, none of them already part of a cluster,
// and this node's name sorts first among them. The candidate set must be
// stable for one reconcile interval, so late-arriving meta can still stop
// a second bootstrap.
func (n *Node) tryBootstrapExpect() {
	var names []string
	addrs := map[string]string{}
	for _, m := range n.cat.Members() {
		if m.Status != catalog.StatusAlive || m.Meta.RaftAddr == "" {
			continue
		}
		if m.Meta.Flags&catalog.FlagRaftReady != 0 {
			return // a cluster exists: wait to be added by its leader
		}
		names = append(names, m.Name)
		addrs[m.Name] = m.Meta.RaftAddr
	}
	if len(names) < n.cfg.BootstrapExpect {
		return
	}
	slices.Sort(names)
	names = names[:n.cfg.BootstrapExpect]
	if names[0] != n.cfg.NodeName {
		return
	}
	n.apMu.Lock()
	now := time.Now()
	if !slices.Equal(names, n.expectSet) {
		n.expectSet, n.expectSince = names, now
		n.apMu.Unlock()
		return
	}
	stable := now.Sub(n.expectSince) >= n.cfg.ReconcileInterval
	n.apMu.Unlock()
	if !stable {
		return
	}
	var c raft.Configuration
	for _, name := range names {
		c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(name), Address: raft.ServerAddress(addrs[name])})
	}
	n.log.Info("cluster: bootstrapping raft", "servers", names)
	if err := n.raft.BootstrapCluster(c).Error(); err != nil {
		n.log.Warn("cluster: bootstrap", "err", err)
	}
}

// autopilot runs on the leader. It adds alive raft-capable members as
// non-voters, promotes stable non-voters up to MaxVoters, replaces voters
// that failed for DeadServerTimeout by promoting a healthy non-voter first,
// removes servers that left, and follows address changes. One change per
// call: raft allows one configuration change in flight.
func (n *Node) autopilot(servers []raft.Server) {
	members := map[string]catalog.Member{}
	for _, m := range n.cat.Members() {
		members[m.Name] = m
	}
	now := time.Now()
	healthy := func(id raft.ServerID) bool {
		m, ok := members[string(id)]
		return ok && m.Status == catalog.StatusAlive
	}
	stable := func(id raft.ServerID) bool {
		return healthy(id) && now.Sub(members[string(id)].Since) >= n.cfg.StabilizationTime
	}
	self := raft.ServerID(n.cfg.NodeName)
	inConfig := map[raft.ServerID]raft.Server{}
	var voters, healthyVoters int
	for _, s := range servers {
		inConfig[s.ID] = s
		if s.Suffrage == raft.Voter {
			voters++
			if healthy(s.ID) || s.ID == self {
				healthyVoters++
			}
		}
	}
	timeout := 5 * time.Second
	do := func(action string, f raft.IndexFuture, id raft.ServerID) {
		if err := f.Error(); err != nil {
			n.log.Warn("cluster: autopilot", "action", action, "peer_id", string(id), "err", err)
			return
		}
		n.log.Info("cluster: autopilot", "action", action, "peer_id", string(id))
		n.m.autopilot.WithLabelValues(action).Inc()
	}

	// 1. Servers that left gracefully go at once.
	for _, s := range servers {
		if s.ID != self && members[string(s.ID)].Status == catalog.StatusLeft {
			do("remove", n.raft.RemoveServer(s.ID, 0, timeout), s.ID)
			return
		}
	}
	// 2. Follow a server's new raft address (restart elsewhere).
	for _, s := range servers {
		m, ok := members[string(s.ID)]
		if s.ID == self || !ok || m.Status != catalog.StatusAlive || m.Meta.RaftAddr == "" || m.Meta.RaftAddr == string(s.Address) {
			continue
		}
		if s.Suffrage == raft.Voter {
			do("readdress", n.raft.AddVoter(s.ID, raft.ServerAddress(m.Meta.RaftAddr), 0, timeout), s.ID)
		} else {
			do("readdress", n.raft.AddNonvoter(s.ID, raft.ServerAddress(m.Meta.RaftAddr), 0, timeout), s.ID)
		}
		return
	}
	// 3. Replace a voter that has been failed long enough.
	for _, s := range servers {
		m, ok := members[string(s.ID)]
		if s.ID == self || s.Suffrage != raft.Voter || !ok || m.Status != catalog.StatusFailed || now.Sub(m.Since) < n.cfg.DeadServerTimeout {
			continue
		}
		for _, c := range servers {
			if c.Suffrage != raft.Voter && stable(c.ID) {
				do("promote", n.raft.AddVoter(c.ID, c.Address, 0, timeout), c.ID)
				do("remove", n.raft.RemoveServer(s.ID, 0, timeout), s.ID)
				return
			}
		}
	}
	// 4. Remove non-voters that have been failed long enough.
	for _, s := range servers {
		m, ok := members[string(s.ID)]
		if s.ID != self && s.Suffrage != raft.Voter && ok && m.Status == catalog.StatusFailed && now.Sub(m.Since) >= n.cfg.DeadServerTimeout {
			do("remove", n.raft.RemoveServer(s.ID, 0, timeout), s.ID)
			return
		}
	}
	// 5. Promote stable non-voters while voters are below MaxVoters.
	if voters < n.cfg.MaxVoters {
		for _, s := range servers {
			if s.Suffrage != raft.Voter && stable(s.ID) {
				do("promote", n.raft.AddVoter(s.ID, s.Address, 0, timeout), s.ID)
				return
			}
		}
	}
	// 6. Add alive raft-capable members that are not servers yet.
	names := make([]string, 0, len(members))
	for name := range members {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		m := members[name]
		id := raft.ServerID(name)
		if _, ok := inConfig[id]; ok || m.Status != catalog.StatusAlive || m.Meta.RaftAddr == "" {
			continue
		}
		if err := n.probeRaft(m.Meta.RaftAddr); err != nil {
			n.warnRefused(name, err)
			continue
		}
		do("add", n.raft.AddNonvoter(id, raft.ServerAddress(m.Meta.RaftAddr), 0, timeout), id)
		return
	}
	_ = healthyVoters
}

// probeTimeout bounds the handshake autopilot makes with a candidate
// before adding it to raft.
const probeTimeout = 3 * time.Second

// probeRaft opens (and closes) one stream to a candidate's raft address,
// so a member whose certificate this node does not accept (another mesh,
// or a workload identity rather than a gateway's) is never made a raft
// server: gossip membership alone proves nothing about identity.
func (n *Node) probeRaft(addr string) error {
	ctx, cancel := context.WithTimeout(n.ctx, probeTimeout)
	defer cancel()
	c, err := n.streams.Dial(ctx, addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// warnRefused logs a refused candidate at most once a minute per member.
func (n *Node) warnRefused(name string, err error) {
	n.apMu.Lock()
	defer n.apMu.Unlock()
	if n.refusedAt == nil {
		n.refusedAt = map[string]time.Time{}
	}
	if last, ok := n.refusedAt[name]; ok && time.Since(last) < time.Minute {
		return
	}
	n.refusedAt[name] = time.Now()
	n.log.Warn("cluster: autopilot: not adding a member whose raft endpoint failed the mutual-TLS check", "peer_id", name, "err", err)
	n.m.autopilot.WithLabelValues("refused").Inc()
}
