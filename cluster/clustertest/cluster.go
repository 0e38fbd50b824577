package clustertest

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshgate/meshgate/cluster"
)

// Options tune New.
type Options struct {
	// Bootstrap makes node-0 bootstrap alone; the leader then adds the
	// others. The default is BootstrapExpect = n.
	Bootstrap bool
	// DataDir keeps raft state on disk under t.TempDir(), so Restart
	// resumes it.
	DataDir bool
	// Modify adjusts each node's Config before it starts.
	Modify func(i int, cfg *cluster.Config)
}

// Cluster is n in-process nodes wired together in memory: raft over
// raft.InmemTransport, forwarded writes over a StreamNet, gossip over a
// GossipNetwork. Methods may be called from the test goroutine only.
type Cluster struct {
	t       testing.TB
	opts    Options
	Gossip  *GossipNetwork
	Streams *StreamNet
	dirs    []string

	mu    sync.Mutex // guards nodes and trans
	nodes []*cluster.Node
	trans []*raft.InmemTransport
}

// FastConfig returns a node Config with timers tuned for tests: raft
// heartbeat and election 300ms, gossip every 20ms, probes every 200ms.
func FastConfig(t testing.TB, name string) cluster.Config {
	cfg := cluster.DefaultConfig()
	cfg.NodeName = name
	cfg.Network = "net-a"
	cfg.ReconcileInterval = 100 * time.Millisecond
	cfg.DeadServerTimeout = time.Second
	cfg.StabilizationTime = 300 * time.Millisecond
	cfg.Raft.HeartbeatTimeout = 300 * time.Millisecond
	cfg.Raft.ElectionTimeout = 300 * time.Millisecond
	cfg.Raft.LeaderLeaseTimeout = 150 * time.Millisecond
	cfg.Raft.CommitTimeout = 10 * time.Millisecond
	g := &cfg.Gossip
	g.GossipInterval = 20 * time.Millisecond
	g.ProbeInterval = 200 * time.Millisecond
	g.ProbeTimeout = 100 * time.Millisecond
	g.PushPullInterval = 2 * time.Second
	g.TCPTimeout = 2 * time.Second
	g.SyncInterval = 100 * time.Millisecond
	g.MaintenanceInterval = 20 * time.Millisecond
	g.Unsigned = true // record signing is tested in cluster/catalog and e2e
	level := slog.LevelWarn
	if os.Getenv("CLUSTERTEST_LOG") == "info" {
		level = slog.LevelInfo
	}
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
	return cfg
}

// New starts n nodes named node-0..node-<n-1>, joins them, and registers
// a Cleanup that closes them all and waits.
func New(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, opts: opts, Gossip: &GossipNetwork{}, Streams: &StreamNet{},
		nodes: make([]*cluster.Node, n), trans: make([]*raft.InmemTransport, n), dirs: make([]string, n)}
	if opts.DataDir {
		base := t.TempDir()
		for i := range c.dirs {
			c.dirs[i] = filepath.Join(base, fmt.Sprintf("node-%d", i))
		}
	}
	t.Cleanup(c.closeAll)
	for i := range n {
		c.Start(i)
	}
	return c
}

// RaftAddr is node i's raft address in the in-memory network.
func RaftAddr(i int) string { return fmt.Sprintf("10.0.0.%d:8300", i+1) }

// Start starts (or restarts) node i with fresh transports and joins it to
// a running node.
func (c *Cluster) Start(i int) *cluster.Node {
	c.t.Helper()
	name := fmt.Sprintf("node-%d", i)
	cfg := FastConfig(c.t, name)
	addr := raft.ServerAddress(RaftAddr(i))
	_, tr := raft.NewInmemTransportWithTimeout(addr, 2*time.Second)
	c.mu.Lock()
	for j, other := range c.trans {
		if other != nil && c.nodes[j] != nil && j != i {
			tr.Connect(other.LocalAddr(), other)
			other.Connect(addr, tr)
		}
	}
	c.trans[i] = tr
	n := len(c.nodes)
	c.mu.Unlock()

	cfg.RaftTransport = tr
	cfg.RaftAdvertise = string(addr)
	cfg.Streams = c.Streams
	cfg.DataDir = c.dirs[i]
	gt := c.Gossip.NewTransport(name)
	cfg.Gossip.Transport = gt
	if c.opts.Bootstrap {
		cfg.Bootstrap = i == 0
	} else {
		cfg.BootstrapExpect = n
	}
	if c.opts.Modify != nil {
		c.opts.Modify(i, &cfg)
	}
	node, err := cluster.New(c.t.Context(), cfg)
	if err != nil {
		c.t.Fatalf("clustertest: cluster.New(%s) error = %v", name, err)
	}
	c.mu.Lock()
	c.nodes[i] = node
	var peers []string
	for j, other := range c.nodes {
		if other != nil && j != i {
			peers = append(peers, other.Catalog().Addr())
		}
	}
	c.mu.Unlock()
	if len(peers) > 0 {
		if _, err := node.Join(c.t.Context(), peers[:1]); err != nil {
			c.t.Fatalf("clustertest: %s join error = %v", name, err)
		}
	}
	return node
}

// Kill stops node i without a leave, as a crash would, and cuts its raft
// transport off so peers do not wait on it.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	c.mu.Lock()
	node, tr := c.nodes[i], c.trans[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if node == nil {
		return
	}
	for j, other := range c.trans {
		if other != nil && j != i {
			other.Disconnect(tr.LocalAddr())
		}
	}
	if err := node.Close(); err != nil {
		c.t.Logf("clustertest: close node-%d: %v", i, err)
	}
}

// Forget marks node i gone after the test closed or left it itself.
func (c *Cluster) Forget(i int) {
	c.mu.Lock()
	tr := c.trans[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	for j, other := range c.trans {
		if other != nil && j != i && tr != nil {
			other.Disconnect(tr.LocalAddr())
		}
	}
}

// Node returns node i, or nil if it is stopped.
func (c *Cluster) Node(i int) *cluster.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// Alive returns the running nodes.
func (c *Cluster) Alive() []*cluster.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*cluster.Node
	for _, n := range c.nodes {
		if n != nil {
			out = append(out, n)
		}
	}
	return out
}

// WaitLeader waits until every running node agrees on one leader among
// them, and returns it.
func (c *Cluster) WaitLeader(t testing.TB) *cluster.Node {
	t.Helper()
	var leader *cluster.Node
	WaitFor(t, "one leader agreed on by every running node", func() bool {
		leader = nil
		alive := c.Alive()
		for _, n := range alive {
			if n.IsLeader() {
				leader = n
			}
		}
		if leader == nil {
			return false
		}
		for _, n := range alive {
			if name, _ := n.Leader(); name != leader.Name() {
				return false
			}
		}
		return true
	})
	return leader
}

// WaitAll waits until cond holds on every running node.
func (c *Cluster) WaitAll(t testing.TB, what string, cond func(*cluster.Node) bool) {
	t.Helper()
	WaitFor(t, what, func() bool {
		for _, n := range c.Alive() {
			if !cond(n) {
				return false
			}
		}
		return true
	})
}

// WaitFor polls cond every 10ms until it holds. The 30s cap only bounds a
// failing test; it is not a speed assertion.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *Cluster) closeAll() {
	var wg sync.WaitGroup
	for _, n := range c.Alive() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.Close()
		}()
	}
	wg.Wait()
}
