package catalog_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/cluster/clustertest"
	"github.com/meshgate/meshgate/mtls"
	"github.com/meshgate/meshgate/pki"
)

const nodeID = "spiffe://cluster.local/ns/meshgate-system/sa/meshgate"

// signed returns a modifier giving node i a certificate from ca (its
// Source is kept in srcs[i]) and a verifier of ca's roots and the gateway
// identity.
func signed(t *testing.T, cas []*clustertest.CA, srcs []*mtls.Source) func(i int, c *catalog.Config) {
	id, err := pki.ParseIdentity(nodeID)
	if err != nil {
		t.Fatal(err)
	}
	return func(i int, c *catalog.Config) {
		src := mtls.NewSource(cas[i].NodeCertificate(t, c.Name, nodeID), cas[i].Pool())
		srcs[i] = src
		rec := mtls.NewRecords(src, mtls.AuthorizeOneOf(id))
		c.Signer, c.Verifier, c.Unsigned = rec, rec, false
	}
}

func trustOf(c *catalog.Catalog, name string) (bool, string, bool) {
	for _, m := range c.Members() {
		if m.Name == name {
			return m.Trusted, m.TrustReason, true
		}
	}
	return false, "", false
}

// A member whose chain comes from another CA (it signs its records with
// its own key, and would hold the gossip key just the same) contributes
// no endpoint and is listed untrusted; members with a valid identity work
// as before.
func TestUntrustedMemberContributesNothing(t *testing.T) {
	mesh, other := clustertest.NewCA(t), clustertest.NewCA(t)
	cas := []*clustertest.CA{mesh, mesh, mesh, other}
	srcs := make([]*mtls.Source, 4)
	tc := start(t, 4, signed(t, cas, srcs))
	for i, c := range tc.nodes {
		if err := c.Register(reg("r", fmt.Sprintf("10.0.0.%d:9080", i))); err != nil {
			t.Fatalf("node-%d Register error = %v", i, err)
		}
	}
	want := []string{"node-0/10.0.0.0:9080", "node-1/10.0.0.1:9080", "node-2/10.0.0.2:9080"}
	trusted := tc.nodes[:3]
	waitFor(t, "every trusted node holds the three trusted endpoints", func() bool {
		for _, c := range trusted {
			if !slices.Equal(addrsOf(c), want) {
				return false
			}
		}
		return true
	})
	waitFor(t, "every trusted node lists node-3 untrusted and its peers trusted", func() bool {
		for _, c := range trusted {
			for _, name := range []string{"node-0", "node-1", "node-2"} {
				if ok, _, _ := trustOf(c, name); !ok {
					return false
				}
			}
			if ok, reason, found := trustOf(c, "node-3"); !found || ok || !strings.Contains(reason, "does not chain") {
				return false
			}
		}
		return true
	})
	// The rogue's later changes stay out too, and are counted.
	if err := tc.nodes[3].Register(reg("r2", "10.6.6.6:9080")); err != nil {
		t.Fatalf("node-3 Register(r2) error = %v", err)
	}
	waitFor(t, "node-0 counting refused records of node-3", func() bool { return tc.nodes[0].Stats().DroppedUntrusted > 0 })
	for i, c := range trusted {
		if got := addrsOf(c); !slices.Equal(got, want) {
			t.Fatalf("node-%d entries = %v, want only the trusted %v", i, got, want)
		}
	}
}

// An owner renews its certificate (new key): its deltas no longer verify
// with the key peers cached, they ask for its state, which carries the new
// chain, and its endpoints keep flowing.
func TestRenewedCertificateKeepsEndpointsFlowing(t *testing.T) {
	mesh := clustertest.NewCA(t)
	cas := []*clustertest.CA{mesh, mesh, mesh}
	srcs := make([]*mtls.Source, 3)
	tc := start(t, 3, signed(t, cas, srcs))
	if err := tc.nodes[1].Register(reg("a", "10.0.1.1:9080")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every node holds node-1/a", everyoneSees(tc, []string{"node-1/10.0.1.1:9080"}))

	srcs[1].SetCertificate(mesh.NodeCertificate(t, "node-1", nodeID))
	if err := tc.nodes[1].Register(reg("b", "10.0.1.2:9080")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every node holds node-1/b, signed with the renewed key", everyoneSees(tc, []string{"node-1/10.0.1.1:9080", "node-1/10.0.1.2:9080"}))
	if err := tc.nodes[1].Deregister("a"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node-1/a withdrawn everywhere", everyoneSees(tc, []string{"node-1/10.0.1.2:9080"}))
}

// A peer's endpoint at one of this node's listeners is dropped from this
// node's view (and counted), while other nodes, whose listener it is not,
// keep it.
func TestPeerEndpointAtOwnListenerDropped(t *testing.T) {
	var ls catalog.Listeners
	ls.Set("admin", "127.0.0.1:15000")
	tc := start(t, 3, func(i int, c *catalog.Config) {
		if i == 0 {
			c.Reserved = &ls
		}
	})
	if err := tc.nodes[1].Register(reg("adm", "127.0.0.1:15000")); err != nil {
		t.Fatalf("node-1 Register(127.0.0.1:15000) error = %v; the address is not node-1's own", err)
	}
	if err := tc.nodes[1].Register(reg("ok", "10.0.0.1:9080")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node-2 holds both endpoints", func() bool {
		return slices.Equal(addrsOf(tc.nodes[2]), []string{"node-1/10.0.0.1:9080", "node-1/127.0.0.1:15000"})
	})
	waitFor(t, "node-0 holds only the one not at its admin listener", func() bool {
		return slices.Equal(addrsOf(tc.nodes[0]), []string{"node-1/10.0.0.1:9080"})
	})
	if tc.nodes[0].Stats().DroppedReserved == 0 {
		t.Fatal("node-0 dropped a peer's endpoint at its admin listener without counting it (DroppedReserved = 0)")
	}
	// A listener bound later filters the snapshot at once.
	ls.Set("proxy", "10.0.0.1:9080")
	if got := addrsOf(tc.nodes[0]); len(got) != 0 {
		t.Fatalf("node-0 entries after its listener 10.0.0.1:9080 was set = %v, want none", got)
	}
}
