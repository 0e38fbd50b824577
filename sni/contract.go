package sni

// This file holds the types shared by the route table (table.go,
// balance.go, outlier.go, explain.go) and the proxy server (server.go,
// splice.go): refusal reasons, endpoints, connection policies and
// listener specs.

import (
	"fmt"
	"time"
)

// Reason says why a connection was refused. Each is a label value of
// meshgate_sni_refused_total{reason=...}.
type Reason string

// Refusal reasons.
const (
	ReasonNotTLS     Reason = "not_tls"
	ReasonNoSNI      Reason = "no_sni"
	ReasonTooLarge   Reason = "too_large"
	ReasonMalformed  Reason = "malformed"
	ReasonTimeout    Reason = "timeout"
	ReasonNoRoute    Reason = "no_route"    // SNI/port matches no server or route
	ReasonALPN       Reason = "alpn"        // AUTO_PASSTHROUGH without an Istio mesh ALPN
	ReasonNoEndpoint Reason = "no_endpoint" // route found, but no healthy endpoint
	// ReasonNotExported: the route or service exists, but exportTo hides it
	// from the gateway (or the VirtualService) that would use it.
	ReasonNotExported Reason = "not_exported"
	ReasonOverloaded  Reason = "overloaded" // connectionPool.tcp.maxConnections reached
	ReasonUpstream    Reason = "upstream"   // every endpoint tried failed to connect
	ReasonDraining    Reason = "draining"   // node is shutting down
	// ReasonUnknownService, ReasonUnknownSubset and ReasonUnknownPort
	// refuse a bridge request (Server.ConnectBridge) naming a service
	// this node does not know (or an IP address, or a malformed name), a
	// subset its DestinationRule does not define, or a port the service
	// does not have.
	ReasonUnknownService Reason = "unknown_service"
	ReasonUnknownSubset  Reason = "unknown_subset"
	ReasonUnknownPort    Reason = "unknown_port"
)

// RefusedError is returned when a connection cannot be routed. Detail is
// safe to log: of what the client sent it only quotes the SNI and at most
// four ALPN protocol names; the rest comes from configuration.
type RefusedError struct {
	Reason Reason
	Detail string
}

// Error returns "sni: refused (<reason>): <detail>".
func (e *RefusedError) Error() string {
	return fmt.Sprintf("sni: refused (%s): %s", e.Reason, e.Detail)
}

// RefusalReason returns the reason as a string, so that packages that
// must not import sni (sni/hbone) can read it through a one-method
// interface with errors.As.
func (e *RefusedError) RefusalReason() string { return string(e.Reason) }

// Endpoint is one dialable backend. Addr always comes from configuration
// or the endpoint catalog, never from a client.
type Endpoint struct {
	Addr    string            // "host:port" (IPv6 in brackets)
	Labels  map[string]string // workload labels; subsets match against these
	Network string            // "" = the node's own network
	Weight  uint32            // 0 means 1
	// Identity is the workload's identity from WorkloadEntry
	// serviceAccount, "ns/<namespace>/sa/<serviceAccount>" (the path of
	// its SPIFFE ID); "" when none was given. It is shown by explain and
	// /debug/endpoints; meshgate passes TLS through, so the client, not
	// the gateway, verifies it.
	Identity string
	// Bridge is, for an endpoint of another network reached through that
	// network's gateway, the gateway's bridge (HBONE) address; Addr is
	// then the gateway's AUTO_PASSTHROUGH (15443) address. "" when the
	// gateway publishes no bridge address, and for local endpoints.
	Bridge string
	// Gateway marks a split-horizon entry: Addr (and Bridge) belong to a
	// gateway of Network that stands for one endpoint there, whose
	// Labels and Weight it carries. Such entries are emitted once per
	// gateway of the network for every endpoint behind it; the table
	// merges the entries of one gateway (summing the weights of those
	// that match a subset) and splits a network's weight evenly across
	// its gateways.
	Gateway bool
}

// ConnPolicy is the per-route connection policy from DestinationRule
// connectionPool.tcp. Zero durations mean "no limit" except ConnectTimeout
// (default 10s, as Istio).
type ConnPolicy struct {
	ConnectTimeout time.Duration
	IdleTimeout    time.Duration // default 1h (Envoy's tcp_proxy default); an explicit 0s disables it
	KeepAlive      time.Duration // idle time before the first probe; 0 = OS default, <0 = disabled
	// KeepAliveInterval is the time between probes
	// (connectionPool.tcp.tcpKeepalive.interval); 0 = OS default.
	KeepAliveInterval time.Duration
	// KeepAliveProbes is how many unanswered probes close the connection
	// (connectionPool.tcp.tcpKeepalive.probes); 0 = OS default.
	KeepAliveProbes int
	// KeepAliveSet says the DestinationRule has a tcpKeepalive block, so
	// the upstream socket gets SO_KEEPALIVE even when the block sets no
	// value (the OS's settings then apply). Without a block, and with no
	// value above, no keep-alive is set.
	KeepAliveSet   bool
	MaxConnections int // 0 = unlimited
	// MaxConnectionDuration closes a connection this long after it was
	// accepted (connectionPool.tcp.maxConnectionDuration). 0 = unlimited.
	MaxConnectionDuration time.Duration
}

// ListenerSpec is one socket the table wants served.
type ListenerSpec struct {
	Key     string // unique and stable across reloads: "tcp/0.0.0.0:15443", "unix//run/x.sock", "unix/@abstract"
	Network string // "tcp" or "unix"
	Address string // for net.Listen
	// NeedsHello is false when every server on the listener routes plain
	// TCP (no SNI peek).
	NeedsHello bool
}
