// Package hbone carries TCP streams between gateway nodes over HBONE, the
// tunnel Istio ambient speaks: one mutual-TLS HTTP/2 connection per peer
// gateway, and one CONNECT stream (RFC 9113 §8.5) per tunnelled
// connection, whose :authority names the destination service port as
// "<service hostname>:<port>".
//
// Server accepts tunnels on the bridge port (15008) from fleet gateway
// identities only and hands each stream's destination to a Connector,
// which resolves it against the node's own configuration and network: an
// address is never taken from the request. Pool is the client end: it
// keeps a small set of HTTP/2 connections per peer and opens streams on
// them, so a new tunnelled connection costs a stream, not a handshake.
//
// The subset of a destination travels in the request header
// SubsetHeader; ztunnel has no equivalent (its waypoints carry subsets in
// the authority's service name), so a ztunnel peer simply reaches the
// whole service.
package hbone
