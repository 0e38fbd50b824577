package agent

import (
	"crypto/x509"
	"testing"

	"github.com/meshgate/meshgate/cluster/clustertest"
	"github.com/meshgate/meshgate/mtls"
	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
)

// TestRevocationFeedFollowsReplicatedState revokes a node certificate on
// the CA of one node and waits until another node's mTLS source refuses it.
func TestRevocationFeedFollowsReplicatedState(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{})
	leader := c.WaitLeader(t)
	ca, err := pki.NewCA(t.Context(), pkitest.Config(t), NewRaftCAStore(leader))
	if err != nil {
		t.Fatalf("pki.NewCA(raft store) = %v", err)
	}
	t.Cleanup(func() { ca.Close() })
	id := pki.Identity{TrustDomain: "cluster.local", Namespace: "meshgate-system", ServiceAccount: "meshgate"}
	cert, err := ca.NodeCertificate(t.Context(), pki.NodeRequest{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	var follower = c.Node(0)
	if follower == leader {
		follower = c.Node(1)
	}
	src := mtls.NewSource(nil, ca.RootPool())
	feed := NewRevocationFeed(follower, nil, src)
	if err := feed.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { feed.Close() })
	if src.Revocations() == nil || src.Revocations().Revoked(cert.Leaf.SerialNumber) {
		t.Fatalf("after Start: revocations %v, want a set without serial %s", src.Revocations(), cert.Leaf.SerialNumber.Text(16))
	}
	if _, err := ca.RevokeCertificate(t.Context(), cert.Leaf.SerialNumber, pki.RevocationKeyCompromise); err != nil {
		t.Fatal(err)
	}
	clustertest.WaitFor(t, "the follower's source to hold the revoked serial", func() bool {
		r := src.Revocations()
		return r != nil && r.Revoked(cert.Leaf.SerialNumber)
	})
	if _, err := src.Verify([]*x509.Certificate{cert.Leaf}, mtls.AuthorizeOneOf(id)); err == nil {
		t.Fatal("Source.Verify(revoked node certificate) = nil, want a refusal")
	}
}
