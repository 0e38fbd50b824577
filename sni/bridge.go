package sni

// The bridge: how a connection reaches a service whose endpoints are in
// another network, other than Istio's split horizon.
//
// Sending side (Server.handle): when the endpoint picked for a
// connection belongs to another network, the path depends on the
// connection. A ClientHello with an AUTO_PASSTHROUGH name and an Istio
// mesh ALPN is what the remote gateway's 15443 accepts, so it is replayed
// there (split horizon, unchanged from Istio). Every other connection
// (PASSTHROUGH and TCP routes, AUTO_PASSTHROUGH names without a mesh ALPN)
// goes through ServerConfig.Bridge to the remote gateway's bridge
// address: the hello (if any) is replayed into the tunnel and a stream
// relay (streamrelay.go) carries the bytes. A remote endpoint whose
// gateway publishes no bridge address, or any remote endpoint when the
// server has no Bridge, is not eligible for those connections.
//
// Receiving side (Server.ConnectBridge): the tunnel names a service,
// port and subset; they are resolved like an AUTO_PASSTHROUGH name
// against the current table (only services exported to
// NodeInfo.BridgeNamespace, only this network's endpoints, never an
// address from the request), and an endpoint is dialled with the usual
// retries, connection limits and outlier accounting.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/meshgate/meshgate/config"
)

// BridgeDialer opens a tunnelled stream to another network's gateway.
// *hbone.Pool implements it. DialBridge must honour ctx (cancellation
// and deadline) and be safe for concurrent use. gateway is the remote
// gateway's bridge address ("host:port", gossiped as node meta
// bridge_addr); service, port and subset name the destination as the
// remote side resolves it. early, when not empty, is sent on the stream
// with the request, ahead of the peer's answer, so the client's hello
// does not wait a round trip for it; when DialBridge returns a conn, early
// is on its way, and DialBridge keeps no reference to the slice. The
// returned conn also implements CloseWrite() error (half-close); Close
// aborts the stream.
type BridgeDialer interface {
	DialBridge(ctx context.Context, gateway, service string, port uint32, subset string, early []byte) (net.Conn, error)
}

// ResolveBridge finds the decision the bridge's receiving side uses for
// service:port and subset ("" for none). Only tables built with
// NodeInfo.Bridge serve the bridge. The error is a *RefusedError:
// ReasonUnknownService (no such service here, or a name that is not a
// service host name, such as an IP address), ReasonNotExported (the
// service or its subset is not exported to the bridge namespace, or it is
// MESH_EXTERNAL), ReasonUnknownPort or ReasonUnknownSubset. Safe for
// concurrent use; it does not allocate when it finds a route.
func (t *Table) ResolveBridge(service string, port uint32, subset string) (*Decision, error) {
	if t == nil {
		return nil, &RefusedError{Reason: ReasonNoRoute, Detail: "no route table published"}
	}
	if !t.node.Bridge {
		return nil, &RefusedError{Reason: ReasonNoRoute, Detail: "bridge: this node's table was built without NodeInfo.Bridge"}
	}
	if dec, _ := t.autoTarget(tableBridgeKey, tableAutoKey{host: service, port: port, subset: subset}); dec != nil {
		return dec, nil
	}
	// Host names are case-insensitive and may end in a dot: retry with
	// the canonical form the table stores.
	if n, err := ParseName(service); err == nil && string(n) != service {
		if dec, _ := t.autoTarget(tableBridgeKey, tableAutoKey{host: string(n), port: port, subset: subset}); dec != nil {
			return dec, nil
		}
	}
	return nil, t.bridgeRefusal(service, port, subset)
}

// bridgeRefusal explains why ResolveBridge found nothing. It runs only
// on the refusal path.
func (t *Table) bridgeRefusal(service string, port uint32, subset string) *RefusedError {
	ns := t.node.bridgeNamespace()
	no := func(r Reason, format string, args ...any) *RefusedError {
		return &RefusedError{Reason: r, Detail: "bridge: " + fmt.Sprintf(format, args...)}
	}
	if _, err := netip.ParseAddr(strings.Trim(service, "[]")); err == nil {
		return no(ReasonUnknownService, "%q is an IP address, not a service name; the bridge never dials an address from the request", service)
	}
	name, err := ParseName(service)
	if err != nil {
		return no(ReasonUnknownService, "service %q: %v", service, err)
	}
	svc := t.service(string(name))
	switch {
	case svc == nil:
		return no(ReasonUnknownService, "unknown service %s: no ServiceEntry host or catalog endpoint", name)
	case !svc.internal:
		return no(ReasonNotExported, "service %s (%s) is MESH_EXTERNAL; the bridge serves only MESH_INTERNAL services", name, svc.source)
	case !config.ExportedTo(svc.exportTo, svc.namespace, ns):
		return no(ReasonNotExported, "service %s (%s) is not exported to the bridge namespace %s (exportTo %v)", name, svc.source, ns, svc.exportTo)
	}
	sp := svc.port(port)
	switch {
	case sp == nil:
		return no(ReasonUnknownPort, "service %s has no port %d (ports %v)", name, port, svc.portList())
	case sp.udp:
		return no(ReasonUnknownPort, "port %d of %s is UDP", port, name)
	}
	if subset != "" {
		dr := t.drs.lookup(svc.host, svc.namespace, ns)
		if all := t.drs.lookup(svc.host, svc.namespace); all != nil && all != dr && all.subsets[subset] != nil {
			return no(ReasonNotExported, "subset %s of %s: DestinationRule %s defines it but is not exported to the bridge namespace %s (exportTo %v)", subset, name, all.name, ns, all.exportTo)
		}
		if dr == nil {
			return no(ReasonUnknownSubset, "unknown subset %s of %s: no DestinationRule for the host", subset, name)
		}
		return no(ReasonUnknownSubset, "unknown subset %s of %s: not defined in DestinationRule %s (subsets %v)", subset, name, dr.name, dr.subsetNames)
	}
	return no(ReasonNoRoute, "no bridge route for %s:%d", name, port)
}

// ConnectBridge is the receiving side of the bridge tunnel: it resolves
// service:port and subset on the current table (Table.ResolveBridge),
// picks an endpoint of this node's own network and dials it with the
// route's connect timeout and keep-alive, trying up to MaxRetries other
// endpoints after a connect failure; connection limits
// (connectionPool.tcp.maxConnections) and outlier detection count it as
// any other connection. It returns the upstream connection and a release
// func that the caller must call exactly once (later calls do nothing)
// when the relay has ended; the caller owns and closes the connection.
//
// A refusal is a *RefusedError (errors.As with an interface
// { RefusalReason() string } works too) and is counted in
// meshgate_sni_refused_total by reason. ctx bounds the dial; Close and a
// forced Shutdown abort it. Safe for concurrent use.
func (s *Server) ConnectBridge(ctx context.Context, service string, port uint32, subset string) (net.Conn, func(), error) {
	s.mu.Lock()
	draining := s.state != stateRunning
	s.mu.Unlock()
	if draining {
		return nil, nil, s.bridgeRefused(&RefusedError{Reason: ReasonDraining, Detail: "bridge: node is shutting down"})
	}
	dec, err := s.router.Load().ResolveBridge(service, port, subset)
	if err != nil {
		var re *RefusedError
		if !errors.As(err, &re) {
			re = &RefusedError{Reason: ReasonNoRoute, Detail: err.Error()}
		}
		return nil, nil, s.bridgeRefused(re)
	}
	up, lease, _, reason, err := s.connect(ctx, dec, viaLocal, nil)
	if err != nil {
		re, ok := errors.AsType[*RefusedError](err)
		if !ok || re.Reason != reason {
			re = &RefusedError{Reason: reason, Detail: err.Error()}
		}
		return nil, nil, s.bridgeRefused(re)
	}
	var once sync.Once
	return up, func() { once.Do(lease.Release) }, nil
}

// bridgeRefused counts and logs one refused bridge request.
func (s *Server) bridgeRefused(re *RefusedError) error {
	s.m.refused.WithLabelValues(string(re.Reason)).Inc()
	s.log.Debug("sni: bridge request refused", "reason", string(re.Reason), "err", re)
	return re
}
