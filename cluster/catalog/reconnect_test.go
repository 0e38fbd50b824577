package catalog_test

import (
	"testing"
	"time"

	"github.com/meshgate/meshgate/cluster/catalog"
)

// A member that crashed and came back with nobody to join is found again
// by the peers that saw it fail.
func TestPeersReconnectToRestartedMemberWithoutJoin(t *testing.T) {
	tc := start(t, 3, func(_ int, c *catalog.Config) {
		c.ReconnectInterval = 200 * time.Millisecond
		// Peers stop gossiping to node-0 right after it is declared dead,
		// as they do after 30s in production: it must be dialled.
		c.GossipToTheDeadTime = time.Millisecond
	})
	if err := tc.nodes[0].Register(reg("a", "10.9.0.1:9080")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every node holds node-0's endpoint", func() bool {
		for _, c := range tc.nodes {
			if len(c.Snapshot().Lookup("reviews.default.svc.cluster.local", 9080)) != 1 {
				return false
			}
		}
		return true
	})
	// Crash node-0: close its transport without a leave.
	tc.trs[0].SetDown(true)
	tc.nodes[0].Close()
	waitFor(t, "node-1 and node-2 see node-0 failed", func() bool {
		for _, c := range tc.nodes[1:] {
			if status(c, "node-0") != catalog.StatusFailed {
				return false
			}
		}
		return true
	})

	cfg := fastConfig(t, "node-0", "net-a")
	cfg.ReconnectInterval = 200 * time.Millisecond
	cfg.GossipToTheDeadTime = time.Millisecond
	cfg.Transport = tc.net.NewTransport("node-0") // its old address back
	c, err := catalog.New(cfg)
	if err != nil {
		t.Fatalf("catalog.New(node-0 again) error = %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Register(reg("a", "10.9.0.1:9080")); err != nil {
		t.Fatal(err)
	}
	// No Join: only the peers' reconnects can bring it back.
	waitFor(t, "all three alive everywhere and node-0's endpoint routed again", func() bool {
		for _, n := range []*catalog.Catalog{c, tc.nodes[1], tc.nodes[2]} {
			if alive(n) != 3 || len(n.Snapshot().Lookup("reviews.default.svc.cluster.local", 9080)) != 1 {
				return false
			}
		}
		return true
	})
}

// A join list that names only the node itself joins nobody and says so,
// instead of "succeeding" alone.
func TestJoinSkipsOwnAddress(t *testing.T) {
	tc := start(t, 1, nil)
	n, err := tc.nodes[0].Join(t.Context(), []string{tc.trs[0].Addr()})
	if err != nil || n != 0 {
		t.Fatalf("Join(own address) = %d, %v; want 0, nil", n, err)
	}
}

func TestReconnectConfigValidation(t *testing.T) {
	cfg := fastConfig(t, "x", "net-a")
	cfg.ReconnectInterval = 0
	if err := cfg.Validate(); err == nil {
		t.Fatal("Validate with ReconnectInterval 0 = nil; want an error naming ReconnectInterval")
	}
	cfg.ReconnectInterval = 200 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate with reconnecting off = %v; want nil", err)
	}
	cfg.ReconnectInterval, cfg.ReconnectTimeout = time.Second, 0
	if err := cfg.Validate(); err == nil {
		t.Fatal("Validate with ReconnectTimeout 0 = nil; want an error naming ReconnectTimeout")
	}
}

func status(c *catalog.Catalog, name string) catalog.Status {
	for _, m := range c.Members() {
		if m.Name == name {
			return m.Status
		}
	}
	return ""
}
