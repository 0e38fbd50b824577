// Package sni routes TLS connections by the server_name of their
// ClientHello without terminating TLS.
//
// A listener peeks at the ClientHello (Peek), resolves the name against an
// immutable route table (Table, published through a Router), dials one of
// the catalog endpoints the route allows and splices bytes both ways,
// replaying the peeked hello first. meshgate never dials an address taken
// from the SNI: only endpoints known to the table are ever dialled.
//
// Endpoints of other networks are reached through their network's
// gateways, after every local endpoint (priority failover): by Istio's
// split horizon (the hello replayed to the gateway's 15443) for sidecar
// traffic, and through a BridgeDialer (ServerConfig.Bridge) for everything
// else; Server.ConnectBridge is the receiving side of that tunnel. See
// bridge.go.
package sni
