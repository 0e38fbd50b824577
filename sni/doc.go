// Package sni routes TLS connections by the server_name of their
// ClientHello without terminating TLS.
//
// A listener peeks at the ClientHello (Peek), resolves the name against an
// immutable route table (Table, published through a Router), dials one of
// the catalog endpoints the route allows and splices bytes both ways,
// replaying the peeked hello first. meshgate never dials an address taken
// from the SNI: only endpoints known to the table are ever dialled.
package sni
