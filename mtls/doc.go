// Package mtls builds the mutual-TLS configurations gateway nodes use
// between themselves (the raft transport, write forwarding and, later, the
// bridge tunnel) from a SPIFFE identity.
//
// A Source holds the node's current certificate and the trust bundle; both
// can be replaced at any time (renewal, root rotation) and every new
// handshake uses the latest, while connections already established keep
// running. MutualConfig turns a Source and an Authorizer into one
// *tls.Config usable on both ends of a connection: the peer must present a
// chain to the bundle whose leaf carries exactly one spiffe:// URI SAN in
// the Istio form, and the Authorizer must accept that identity.
package mtls
