// Package catalog is a node's gossip membership (hashicorp/memberlist) and
// its view of the endpoint catalog: which workloads of which service live
// in which network, vouched for by which node.
//
// Each node owns the endpoints registered with it (Register, or the HTTP
// Handler on the admin listener) and publishes only healthy ones: a TTL
// lease that is not refreshed, or an active TCP check that fails, withdraws
// an endpoint. Changes travel as one small UDP broadcast each; a newer
// version of the same endpoint replaces an older one in the send queue,
// and every node that finds a change new gossips it on. Push-pull
// anti-entropy carries only the sender's own endpoints plus a digest of
// the versions it knows of everyone else; a node that sees it lags asks
// the owner for its full state over TCP. So the full view never travels
// in one message, however large the fleet grows.
//
// Versions are (incarnation, counter) per owner: a restart raises the
// incarnation, every change the counter. Deletes leave tombstones and a
// full state replaces an owner's set, so stale gossip never brings a
// withdrawn endpoint back. A node that gossip declares dead, or that
// announces its departure with a leave intent, loses all its endpoints on
// every node; Members tells a left node from a failed one.
//
//	c, err := catalog.New(cfg)
//	defer c.Close()
//	c.Join(ctx, []string{"10.0.0.1:7946"})
//	c.Register(catalog.Registration{ID: "reviews-1", Endpoint: catalog.Endpoint{
//		Service: "reviews.default.svc.cluster.local", Port: 9080, Addr: "10.1.0.7:9080"}, TTL: 30 * time.Second})
//	for range c.Changed() {
//		targets := catalog.SplitHorizon(c.Snapshot(), "net-a", "reviews.default.svc.cluster.local", 9080, nil)
//		... // rebuild the route table
//	}
//
// Gossip is encrypted when Keys are set (AES-GCM, memberlist's keyring);
// packets and streams that no installed key opens are dropped and counted
// before memberlist sees them (Stats, meshgate_catalog_dropped_total).
// Keyring rotates keys on one node; run the same steps on every node.
//
// Every record an owner originates is signed with its node key (Signer);
// full states carry its certificate chain. Receivers verify the chain
// (Verifier: mesh roots and allowed identities) and the signature before
// anything enters the view, so a member without a fleet identity is listed
// untrusted (Member.Trusted) and contributes nothing, even if it holds the
// gossip key. Deltas carry only a key ID: one whose key is not the cached
// one makes the receiver ask the owner for its state (a renewal). Node
// names are not bound to certificates (gateways share one identity), so a
// trusted node could publish under another trusted node's name; it gains
// nothing it could not publish under its own.
//
// Reserved keeps endpoints at the node's own listeners out of its view.
//
// All Catalog methods are safe for concurrent use.
package catalog
