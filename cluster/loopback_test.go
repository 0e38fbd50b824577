package cluster_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshgate/meshgate/cluster"
	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/cluster/clustertest"
)

// loopCluster runs nodes on real TLS sockets on 127.0.0.1 with raft state
// on disk, so they can be killed and restarted.
type loopCluster struct {
	t      testing.TB
	ca     *clustertest.CA
	dir    string
	n      int
	ports  []string // raft port of each node, fixed after the first start
	gports []string // gossip port of each node, fixed after the first start
	nodes  []*cluster.Node
	// modify, if set, adjusts each node's Config before it starts.
	modify func(*cluster.Config)
	// noJoin starts nodes without joining a running one.
	noJoin bool
}

func newLoopCluster(t *testing.T, n int) *loopCluster { return newLoopClusterTB(t, n) }

func newLoopClusterTB(t testing.TB, n int) *loopCluster {
	lc := &loopCluster{t: t, ca: clustertest.NewCA(t), dir: t.TempDir(), n: n, ports: make([]string, n), gports: make([]string, n), nodes: make([]*cluster.Node, n)}
	t.Cleanup(func() {
		for i := range lc.nodes {
			lc.kill(i)
		}
	})
	return lc
}

func (lc *loopCluster) start(i int) *cluster.Node {
	t := lc.t
	t.Helper()
	name := fmt.Sprintf("loop-%d", i)
	cfg := clustertest.FastConfig(t, name)
	cfg.TLS = lc.ca.NodeTLS(t, name)
	cfg.DataDir = filepath.Join(lc.dir, name)
	cfg.BootstrapExpect = lc.n
	port := lc.ports[i]
	if port == "" {
		port = "0"
	}
	cfg.RaftBind = net.JoinHostPort("127.0.0.1", port)
	gport := lc.gports[i]
	if gport == "" {
		gport = "0"
	}
	// A restart keeps its gossip address too, so peers take it back at
	// once instead of refusing a known name at a new address.
	cfg.Gossip.BindAddr = net.JoinHostPort("127.0.0.1", gport)
	// Real sockets under -race on a shared machine: give probes room.
	cfg.Gossip.ProbeTimeout = 150 * time.Millisecond
	if lc.modify != nil {
		lc.modify(&cfg)
	}
	n, err := cluster.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("cluster.New(%s on %s) error = %v", name, cfg.RaftBind, err)
	}
	_, lc.ports[i], _ = net.SplitHostPort(n.RaftAddr())
	_, lc.gports[i], _ = net.SplitHostPort(n.Catalog().Addr())
	for j, other := range lc.nodes {
		if other != nil && j != i && !lc.noJoin {
			if _, err := n.Join(t.Context(), []string{other.Catalog().Addr()}); err != nil {
				t.Fatalf("%s join %s error = %v", name, other.Name(), err)
			}
			break
		}
	}
	lc.nodes[i] = n
	return n
}

func (lc *loopCluster) kill(i int) {
	if n := lc.nodes[i]; n != nil {
		lc.nodes[i] = nil
		if err := n.Close(); err != nil {
			lc.t.Logf("close %s: %v", n.Name(), err)
		}
	}
}

func (lc *loopCluster) alive() []*cluster.Node {
	var out []*cluster.Node
	for _, n := range lc.nodes {
		if n != nil {
			out = append(out, n)
		}
	}
	return out
}

func (lc *loopCluster) waitAll(what string, cond func(*cluster.Node) bool) {
	lc.t.Helper()
	clustertest.WaitFor(lc.t, what, func() bool {
		for _, n := range lc.alive() {
			if !cond(n) {
				return false
			}
		}
		return true
	})
}

func (lc *loopCluster) leader() (int, *cluster.Node) {
	lc.t.Helper()
	idx := -1
	clustertest.WaitFor(lc.t, "a leader among the running nodes", func() bool {
		for i, n := range lc.nodes {
			if n != nil && n.IsLeader() {
				idx = i
				return true
			}
		}
		return false
	})
	return idx, lc.nodes[idx]
}

func TestLoopbackTLSCluster(t *testing.T) {
	lc := newLoopCluster(t, 3)
	for i := range 3 {
		lc.start(i)
	}
	li, leader := lc.leader()
	fi := (li + 1) % 3
	f := lc.nodes[fi]

	// Apply at a follower, read everywhere.
	if err := f.Put(t.Context(), "ca/root", []byte("v1")); err != nil {
		t.Fatalf("follower Put over TLS forwarding error = %v", err)
	}
	lc.waitAll("every node reads ca/root=v1", hasValue("ca/root", "v1"))

	// Every node owns one endpoint; everyone sees all three.
	for i, n := range lc.nodes {
		r := catalog.Registration{ID: "web", Endpoint: catalog.Endpoint{Service: "web.default.svc.cluster.local", Port: 80, Addr: fmt.Sprintf("10.0.0.%d:80", i+1)}}
		if err := n.Catalog().Register(r); err != nil {
			t.Fatal(err)
		}
	}
	lc.waitAll("every catalog has 3 endpoints", func(n *cluster.Node) bool { return len(n.Catalog().Snapshot().Entries) == 3 })

	// Kill the leader: writes continue, and its endpoint vanishes everywhere.
	lc.kill(li)
	_ = leader
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := f.Put(ctx, "ca/root", []byte("v2")); err != nil {
		t.Fatalf("Put after the leader died error = %v", err)
	}
	lc.waitAll("survivors read v2 and lost the dead node's endpoint", func(n *cluster.Node) bool {
		r, ok := n.Get("ca/root")
		if !ok || string(r.Value) != "v2" {
			return false
		}
		for _, e := range n.Catalog().Snapshot().Entries {
			if e.Owner == fmt.Sprintf("loop-%d", li) {
				return false
			}
		}
		return len(n.Catalog().Snapshot().Entries) == 2
	})

	// The dead node comes back on its old raft port and catches up.
	lc.start(li)
	lc.waitAll("restarted node caught up", hasValue("ca/root", "v2"))

	// Restart everything: state survives on disk.
	for i := range 3 {
		lc.kill(i)
	}
	for i := range 3 {
		lc.start(i)
	}
	lc.waitAll("state intact after a full restart", hasValue("ca/root", "v2"))
	_, leader = lc.leader()
	if err := leader.Put(t.Context(), "ca/root", []byte("v3")); err != nil {
		t.Fatalf("Put after full restart error = %v", err)
	}
	lc.waitAll("write after full restart replicated", hasValue("ca/root", "v3"))
}

func TestRaftPortRefusesStrangers(t *testing.T) {
	lc := newLoopCluster(t, 1)
	n := lc.start(0)
	lc.leader()
	other := clustertest.NewCA(t)
	stranger := &cluster.TLSNetwork{Config: other.NodeTLS(t, "stranger")}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := stranger.Dial(ctx, n.RaftAddr())
	if err == nil {
		// TLS 1.3 reports a refused client certificate on first read.
		c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Write([]byte("F"))
		if err == nil {
			_, err = c.Read(make([]byte, 1))
		}
		c.Close()
	}
	if err == nil {
		t.Fatalf("a client with a certificate from another CA talked to the raft port; want the handshake refused")
	}
}

// A node that restarts with nobody to join (the first node of a fleet)
// rejoins gossip through the raft peers it knows, even when its peers
// neither gossip to it nor dial it any more.
func TestRestartedNodeRejoinsThroughRaftPeers(t *testing.T) {
	lc := newLoopCluster(t, 3)
	lc.modify = func(c *cluster.Config) {
		c.Gossip.ReconnectInterval = -1
		c.Gossip.GossipToTheDeadTime = time.Millisecond
	}
	for i := range 3 {
		lc.start(i)
	}
	lc.leader()
	lc.waitAll("three alive gossip members everywhere", func(n *cluster.Node) bool { return aliveMembers(n) == 3 })
	lc.kill(0)
	lc.waitAll("the survivors see loop-0 failed", func(n *cluster.Node) bool { return aliveMembers(n) == 2 })
	lc.noJoin = true
	lc.start(0)
	lc.waitAll("loop-0 back in gossip, seen by all three", func(n *cluster.Node) bool { return aliveMembers(n) == 3 })
}

func aliveMembers(n *cluster.Node) int {
	k := 0
	for _, m := range n.Catalog().Members() {
		if m.Status == catalog.StatusAlive {
			k++
		}
	}
	return k
}
