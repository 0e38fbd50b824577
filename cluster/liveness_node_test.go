package cluster_test

import (
	"testing"
	"time"

	"github.com/meshgate/meshgate/cluster/clustertest"
)

// TestAliveOnRunningNode: a node that applies writes is alive.
func TestAliveOnRunningNode(t *testing.T) {
	c := clustertest.New(t, 1, clustertest.Options{})
	n := c.WaitLeader(t)
	if err := n.Put(t.Context(), "k", []byte("v")); err != nil {
		t.Fatalf("Put() = %v", err)
	}
	if err := n.Alive(time.Second); err != nil {
		t.Fatalf("Alive(1s) on a node that just applied a write = %v, want nil", err)
	}
}
