package sni

import (
	"fmt"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshgate/meshgate/config"
)

// Gateway server modes, as reported in Decision.Mode. The TLS modes carry
// the names of Istio's ServerTLSSettings.mode; ModeTCP is a server with
// protocol TCP and no tls block.
const (
	ModePassthrough     = "PASSTHROUGH"
	ModeAutoPassthrough = "AUTO_PASSTHROUGH"
	ModeSimple          = "SIMPLE"
	ModeMutual          = "MUTUAL"
	ModeIstioMutual     = "ISTIO_MUTUAL"
	ModeOptionalMutual  = "OPTIONAL_MUTUAL"
	ModeTCP             = "TCP"
	// ModeBridge is the receiving side of the bridge tunnel
	// (Server.ConnectBridge); it is not a Gateway server mode.
	ModeBridge = "BRIDGE"
)

// DefaultBridgeNamespace is the namespace the bridge's receiving side
// consumes services as when NodeInfo.BridgeNamespace is empty: the
// namespace of Istio's east-west gateway.
const DefaultBridgeNamespace = "istio-system"

// LabelRequireMeshALPN is the Gateway metadata label that lets the
// AUTO_PASSTHROUGH servers of that Gateway accept connections whose
// ClientHello offers no Istio mesh ALPN ("istio", "istio-peer-exchange",
// "istio-http/1.0", "istio-http/1.1", "istio-h2"). Only the value "false"
// turns the check off; by default, as in Istio, a mesh ALPN is required so
// that only mTLS clients reach the exported services.
const LabelRequireMeshALPN = "meshgate.io/require-mesh-alpn"

// NodeInfo describes the gateway node a Table is built for.
type NodeInfo struct {
	// Name of the node, for logs and dumps.
	Name string
	// Network this node serves. Endpoints whose network is empty or equal
	// to it are local; AUTO_PASSTHROUGH only ever routes to local ones.
	Network string
	// Labels are matched against Gateway selectors: a Gateway applies when
	// every key/value of its selector is among these labels.
	Labels map[string]string
	// Bridge says this node runs the bridge tunnel: it carries
	// connections to other networks through it (set it exactly when the
	// Server has a ServerConfig.Bridge; explain reads it, the server
	// decides from its own config) and accepts tunnels from other
	// networks' gateways (Server.ConnectBridge). Without it the table
	// has no bridge index (Table.ResolveBridge refuses everything with
	// ReasonNoRoute), which keeps the build of non-bridge nodes as cheap
	// as before, and explain reports remote endpoints as not eligible
	// for routes other than split horizon.
	Bridge bool
	// BridgeNamespace is the namespace on whose behalf the bridge's
	// receiving side (Server.ConnectBridge) resolves services: only
	// services (and DestinationRules) whose exportTo makes them visible
	// there are served over the bridge. "" = DefaultBridgeNamespace.
	BridgeNamespace string
}

// bridgeNamespace returns BridgeNamespace or its default.
func (n NodeInfo) bridgeNamespace() string {
	if n.BridgeNamespace == "" {
		return DefaultBridgeNamespace
	}
	return n.BridgeNamespace
}

// CatalogEndpoint is one endpoint learned outside the configuration (the
// gossip endpoint catalog) for service Host, service port Port.
type CatalogEndpoint struct {
	Host     string
	Port     uint32
	Endpoint Endpoint
}

// BuildInput is everything a Table is built from.
type BuildInput struct {
	// Config is the validated configuration. It is only read.
	Config *config.Set
	// Node is the node the table serves.
	Node NodeInfo
	// Endpoints are extra endpoints from the catalog; they join the
	// ServiceEntry endpoints of the same host and port.
	Endpoints []CatalogEndpoint
}

// Decision is the outcome of resolving one connection: which rule matched
// and which Cluster to pick an endpoint from. Decisions are built with the
// Table and shared between connections: callers must not modify them.
type Decision struct {
	// Origin names the route and the Gateway server; the decisions of
	// one route or server share it. Never nil. Read only.
	*Origin
	// Cluster holds the endpoints; call Cluster.Pick. It also names the
	// destination (Service, Subset, Port), so a decision is two words:
	// a table holds several per service.
	Cluster *Cluster
}

// Service is the destination host.
func (d *Decision) Service() string { return d.Cluster.service }

// Subset is the DestinationRule subset ("" for none).
func (d *Decision) Subset() string { return d.Cluster.subset }

// Port is the service port.
func (d *Decision) Port() uint32 { return d.Cluster.port }

// Origin says which rule matched a connection and which Gateway server
// accepted it.
type Origin struct {
	// Route names the rule that matched: "ns/vs#tls[0]" or "ns/vs#tcp[1]"
	// for VirtualService routes, "ns/gateway#server" for AUTO_PASSTHROUGH.
	Route string
	// Mode is the gateway server mode (ModePassthrough, ...).
	Mode string
	// Gateway ("ns/name") and Server (server name, or "servers[i]") say
	// which Gateway server accepted the connection.
	Gateway string
	Server  string
	// TLS is the server's tls block for the terminating modes (SIMPLE,
	// MUTUAL, ISTIO_MUTUAL, OPTIONAL_MUTUAL) and nil otherwise. Read only.
	TLS *networking.ServerTLSSettings
	// server is, for AUTO_PASSTHROUGH decisions, the server whose keys
	// they are (its mesh ALPN rule).
	server *tableServer
}

// Policy is the connection policy of d's cluster.
func (d *Decision) Policy() ConnPolicy { return d.Cluster.pol.conn }

// Table is an immutable route table built by Builder.Build. All methods
// are safe for concurrent use; Resolve never blocks and does not allocate
// when it finds a route. A nil *Table routes nothing.
type Table struct {
	node      NodeInfo
	specs     []ListenerSpec
	listeners map[string]*tableListener
	services  *tableShardMap[string, *tableService]
	// clusters are the clusters of hosts that have no service (routes to
	// unknown hosts) and refused ones; the others are in their
	// service's tableService.clusters.
	clusters []*Cluster
	warnings []string
	env      *tableEnv
	drs      tableDRIndex
	// inc is what an endpoint change needs to update the table in
	// place of a rebuild (Builder.UpdateEndpoints).
	inc *tableIncState
}

// service returns the service of host, or nil.
func (t *Table) service(host string) *tableService {
	svc, _ := t.services.get(host, host)
	return svc
}

// allClusters returns every cluster of the table, in no order.
func (t *Table) allClusters() []*Cluster {
	out := slices.Clone(t.clusters)
	t.services.all(func(_ string, svc *tableService) { out = append(out, svc.clusters...) })
	return out
}

// clusterCount returns the number of clusters.
func (t *Table) clusterCount() int {
	n := len(t.clusters)
	t.services.all(func(_ string, svc *tableService) { n += len(svc.clusters) })
	return n
}

// tableListener is one socket and everything routed through it.
type tableListener struct {
	table *Table
	spec  ListenerSpec
	port  uint32
	// servers in configuration order (Gateway order, then server order).
	servers []*tableServer
	// SNI routes: exact names, "*."-wildcards keyed by their suffix
	// including the leading dot, and "*".
	exact map[string]*tableSNIRoute
	wild  map[string]*tableSNIRoute
	any   *tableSNIRoute
	// owners records which rule defined each SNI host, for duplicates.
	owners map[string]string
	// AUTO_PASSTHROUGH servers. The exported (host, port, subset) keys
	// are kept by each service (tableService.keys) under idx, the
	// listener's position in build order.
	autoServers []*tableServer
	idx         int32
	// Plain TCP route (no SNI), also the fallback for TLS connections whose
	// SNI matched nothing, as Envoy's chain without server_names.
	tcp       *tableRoute
	tcpServer *tableServer
	// hidden are routes of VirtualServices not exported to the gateway's
	// namespace, kept only to explain refusals.
	hidden []tableHidden
}

// tableHidden is an SNI pattern (or, with pattern "", a tcp route) that
// exportTo kept off a listener, and why.
type tableHidden struct {
	pattern string
	why     string
}

// hiddenWhy returns why exportTo hid the route name would have taken
// ("" for a tcp route when name is ""), or "".
func (l *tableListener) hiddenWhy(name string) string {
	for _, h := range l.hidden {
		if (name == "" && h.pattern == "") || (name != "" && h.pattern != "" && tableHostMatch(h.pattern, name)) {
			return h.why
		}
	}
	return ""
}

// tableServer is one Gateway server placed on a listener.
type tableServer struct {
	gateway     string // ns/name
	gatewayNS   string
	name        string
	mode        string
	port        uint32
	hosts       []string // lower-case, namespace stripped
	rawHosts    []string // as written, lower-case
	tls         *networking.ServerTLSSettings
	requireALPN bool
	route       string // Decision.Route for AUTO_PASSTHROUGH
	// auto is the Origin of the server's AUTO_PASSTHROUGH decisions.
	auto *Origin
}

// tableSNIRoute is one sniHost (or server host) on a listener.
type tableSNIRoute struct {
	pattern string
	server  *tableServer
	route   *tableRoute
}

type tableAutoKey struct {
	host   string
	port   uint32
	subset string
}

// tableMatch is what a listener matched for one name.
type tableMatch struct {
	how     string // "auto", "exact", "wildcard", "any", "tcp"
	pattern string
	server  *tableServer
	auto    *Decision
	route   *tableRoute
}

// Listeners returns the sockets the table wants served, sorted by Key.
// The slice is a copy.
func (t *Table) Listeners() []ListenerSpec {
	if t == nil {
		return nil
	}
	return slices.Clone(t.specs)
}

// Warnings returns the configuration problems found while building the
// table (skipped servers, duplicate SNI hosts, unsupported settings),
// sorted. The slice is a copy.
func (t *Table) Warnings() []string {
	if t == nil {
		return nil
	}
	return slices.Clone(t.warnings)
}

// Node returns the node the table was built for.
func (t *Table) Node() NodeInfo {
	if t == nil {
		return NodeInfo{}
	}
	return t.node
}

// Resolve routes one connection accepted on the listener whose
// ListenerSpec.Key is listenerKey. h is the peeked ClientHello; it is nil
// when the listener's NeedsHello is false. The error is always a
// *RefusedError (ReasonNoRoute, ReasonALPN or ReasonNoSNI).
//
// Resolve is safe for concurrent use, takes no locks and does not
// allocate when a route is found.
func (t *Table) Resolve(listenerKey string, h *Hello) (*Decision, error) {
	if t == nil {
		return nil, &RefusedError{Reason: ReasonNoRoute, Detail: "no route table published"}
	}
	l := t.listeners[listenerKey]
	if l == nil {
		return nil, &RefusedError{Reason: ReasonNoRoute, Detail: fmt.Sprintf("unknown listener %q", listenerKey)}
	}
	var name string
	var alpn []string
	if h != nil {
		name, alpn = h.ServerName, h.ALPN
	}
	m, rerr := l.match(name, alpn, h != nil)
	if rerr != nil {
		return nil, rerr
	}
	if m.auto != nil {
		return m.auto, nil
	}
	return m.route.pick(), nil
}

// match finds the rule for one connection. Only refusals allocate.
func (l *tableListener) match(name string, alpn []string, hello bool) (tableMatch, *RefusedError) {
	if !l.spec.NeedsHello || !hello {
		if l.tcp != nil {
			return tableMatch{how: "tcp", server: l.tcpServer, route: l.tcp}, nil
		}
		if l.spec.NeedsHello {
			return tableMatch{}, &RefusedError{Reason: ReasonNoSNI, Detail: fmt.Sprintf("listener %s routes by SNI and the connection sent none", l.spec.Key)}
		}
		if why := l.hiddenWhy(""); why != "" {
			return tableMatch{}, &RefusedError{Reason: ReasonNotExported, Detail: fmt.Sprintf("listener %s has no VirtualService tcp route bound to its gateway server: %s", l.spec.Key, why)}
		}
		return tableMatch{}, &RefusedError{Reason: ReasonNoRoute, Detail: fmt.Sprintf("listener %s has no VirtualService tcp route bound to its gateway server", l.spec.Key)}
	}
	autoName := false
	var ap tableAutoKey
	var apErr error
	if l.autoServers != nil && tableLooksAuto(name) {
		ap, apErr = tableParseAuto(name)
		if apErr == nil {
			autoName = true
			if dec, open := l.table.autoTarget(l.idx, ap); dec != nil {
				mesh := IsMeshALPN(alpn)
				srv := dec.server
				if srv.requireALPN && !mesh {
					return tableMatch{}, &RefusedError{Reason: ReasonALPN, Detail: fmt.Sprintf("SNI %q on %s: AUTO_PASSTHROUGH requires an Istio mesh ALPN (istio, istio-peer-exchange, istio-http/1.0, istio-http/1.1, istio-h2); client offered %q", name, l.spec.Key, tableFirst(alpn, 4))}
				}
				// With a mesh ALPN the client is an Istio sidecar that
				// did split horizon itself: this node is its network's
				// gateway and serves only its own network (never a
				// hairpin to another gateway, as Istio's
				// REQUESTED_NETWORK_VIEW). Without one, other networks
				// are reached through the bridge.
				if !mesh && open != nil {
					return tableMatch{how: "auto", pattern: name, server: srv, auto: open}, nil
				}
				return tableMatch{how: "auto", pattern: name, server: srv, auto: dec}, nil
			}
		}
	}
	if r, how := l.lookupSNI(name); r != nil {
		if !tableHostsMatchAny(r.server.hosts, name) {
			return tableMatch{}, &RefusedError{Reason: ReasonNoRoute, Detail: fmt.Sprintf("SNI %q on %s matches tls route %s (sniHost %s) but none of the hosts %v of gateway %s server %s", name, l.spec.Key, r.route.name, r.pattern, r.server.rawHosts, r.server.gateway, r.server.name)}
		}
		return tableMatch{how: how, pattern: r.pattern, server: r.server, route: r.route}, nil
	}
	if l.tcp != nil {
		return tableMatch{how: "tcp", server: l.tcpServer, route: l.tcp}, nil
	}
	if autoName {
		return tableMatch{}, l.autoRefusal(name, ap)
	}
	if apErr != nil {
		return tableMatch{}, &RefusedError{Reason: ReasonNoRoute, Detail: fmt.Sprintf("SNI %q on %s is not a valid AUTO_PASSTHROUGH name: %v", name, l.spec.Key, apErr)}
	}
	if why := l.hiddenWhy(name); why != "" {
		return tableMatch{}, &RefusedError{Reason: ReasonNotExported, Detail: fmt.Sprintf("SNI %q matches no tls route on %s: %s", name, l.spec.Key, why)}
	}
	return tableMatch{}, &RefusedError{Reason: ReasonNoRoute, Detail: fmt.Sprintf("SNI %q matches no server host or tls route on %s", name, l.spec.Key)}
}

// lookupSNI applies Envoy's server_names precedence: the exact name, then
// the longest "*." wildcard, then "*".
func (l *tableListener) lookupSNI(name string) (*tableSNIRoute, string) {
	if r, ok := l.exact[name]; ok {
		return r, "exact"
	}
	if len(l.wild) > 0 {
		for i := 0; i < len(name); i++ {
			if name[i] == '.' {
				if r, ok := l.wild[name[i:]]; ok {
					return r, "wildcard"
				}
			}
		}
	}
	if l.any != nil {
		return l.any, "any"
	}
	return nil, ""
}

// autoRefusal explains why a well-formed AUTO_PASSTHROUGH name has no
// route on l. It runs only on the refusal path.
func (l *tableListener) autoRefusal(name string, k tableAutoKey) *RefusedError {
	no := func(format string, args ...any) *RefusedError {
		return &RefusedError{Reason: ReasonNoRoute, Detail: fmt.Sprintf("SNI %q on %s: ", name, l.spec.Key) + fmt.Sprintf(format, args...)}
	}
	hidden := func(format string, args ...any) *RefusedError {
		re := no(format, args...)
		re.Reason = ReasonNotExported
		return re
	}
	var hosts []string
	var srv *tableServer
	for _, s := range l.autoServers {
		hosts = append(hosts, s.rawHosts...)
		if srv == nil && tableHostsMatchAny(s.hosts, k.host) {
			srv = s
		}
	}
	if srv == nil {
		return no("host %s is not exported by the AUTO_PASSTHROUGH server hosts %v", k.host, hosts)
	}
	t := l.table
	if t == nil {
		return no("no route")
	}
	svc := t.service(k.host)
	if svc != nil && svc.exportTo != nil {
		srv = nil
		var nss []string
		for _, s := range l.autoServers {
			if tableHostsMatchAny(s.hosts, k.host) {
				nss = append(nss, s.gatewayNS)
				if srv == nil && config.ExportedTo(svc.exportTo, svc.namespace, s.gatewayNS) {
					srv = s
				}
			}
		}
		if srv == nil {
			return hidden("service %s (%s) is not exported to namespace %v of the AUTO_PASSTHROUGH Gateway (exportTo %v)", k.host, svc.source, slices.Compact(nss), svc.exportTo)
		}
	}
	var dr *tableDR
	if svc != nil {
		dr = t.drs.lookup(svc.host, svc.namespace, srv.gatewayNS)
	}
	switch {
	case svc == nil:
		return no("unknown service %s: no ServiceEntry host or catalog endpoint", k.host)
	case !svc.internal:
		return no("service %s (%s) is MESH_EXTERNAL; AUTO_PASSTHROUGH exports only MESH_INTERNAL services", k.host, svc.source)
	case svc.port(k.port) == nil:
		return no("service %s has no port %d (ports %v)", k.host, k.port, svc.portList())
	case k.subset != "" && (dr == nil || dr.subsets[k.subset] == nil):
		if all := t.drs.lookup(svc.host, svc.namespace); all != nil && all != dr && all.subsets[k.subset] != nil {
			return hidden("unknown subset %s of %s: DestinationRule %s defines it but is not exported to namespace %s of Gateway %s (exportTo %v)", k.subset, k.host, all.name, srv.gatewayNS, srv.gateway, all.exportTo)
		}
		if dr == nil {
			return no("unknown subset %s of %s: no DestinationRule for the host", k.subset, k.host)
		}
		return no("unknown subset %s of %s: not defined in DestinationRule %s (subsets %v)", k.subset, k.host, dr.name, dr.subsetNames)
	case svc.port(k.port).udp:
		return no("port %d of %s is UDP", k.port, k.host)
	}
	return no("no AUTO_PASSTHROUGH route")
}

// tableLooksAuto reports whether name is shaped like an Istio SNI-DNAT
// cluster name.
func tableLooksAuto(name string) bool {
	return strings.HasPrefix(name, "outbound_.") || strings.HasPrefix(name, "outbound|")
}

// tableParseAuto decodes an AUTO_PASSTHROUGH name into a lookup key.
func tableParseAuto(name string) (tableAutoKey, error) {
	ap, err := ParseAutoPassthrough(name)
	if err != nil {
		return tableAutoKey{}, err
	}
	return tableAutoKey{host: string(ap.Host), port: ap.Port, subset: ap.Subset}, nil
}

// tableHostMatch reports whether two host names or patterns overlap, as
// Istio's host.Name.Matches: "*" matches everything, "*.foo.com" matches
// every name that ends in ".foo.com" (not "foo.com" itself), and two
// wildcards match when one suffix contains the other.
func tableHostMatch(a, b string) bool {
	aw := strings.HasPrefix(a, "*")
	bw := strings.HasPrefix(b, "*")
	switch {
	case aw && bw:
		as, bs := a[1:], b[1:]
		if len(as) > len(bs) {
			return strings.HasSuffix(as, bs)
		}
		return strings.HasSuffix(bs, as)
	case aw:
		return strings.HasSuffix(b, a[1:])
	case bw:
		return strings.HasSuffix(a, b[1:])
	}
	return a == b
}

// tableHostsMatchAny reports whether name matches one of patterns.
func tableHostsMatchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if tableHostMatch(p, name) {
			return true
		}
	}
	return false
}

// tableSplitServerHost splits a Gateway server host "ns/host" into its
// namespace ("*" when absent) and lower-cased host.
func tableSplitServerHost(h string) (ns, host string) {
	h = strings.ToLower(strings.TrimSpace(h))
	if i := strings.IndexByte(h, '/'); i >= 0 {
		return h[:i], h[i+1:]
	}
	return "*", h
}

// tableFirst returns at most n elements of s, for messages that quote
// client input.
func tableFirst(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// tableSvcKey is one key a service answers: an AUTO_PASSTHROUGH
// (port, subset) on the listener numbered li, or with li
// tableBridgeKey, a key of the bridge's receiving side. The port and
// subset are those of dec's cluster.
//
// An AUTO_PASSTHROUGH key of a server that does not require a mesh ALPN
// is followed by its open key (li|tableOpenKey): the decision for a
// connection without a mesh ALPN, whose cluster also holds other
// networks' endpoints, reached through the bridge. Keeping it as a key
// of its own, not a pointer in every key, leaves a key three words.
type tableSvcKey struct {
	li int32
	// port is dec's, held here too (it fits beside li) so that a scan
	// compares it without following the cluster pointer.
	port uint32
	dec  Decision
}

// tableBridgeKey is tableSvcKey.li of bridge keys.
const tableBridgeKey = -1

// tableOpenKey marks, in tableSvcKey.li, the open key that follows the
// key of the same listener. Listener numbers stay below it, and bridge
// keys have no open key.
const tableOpenKey = 1 << 30

// key returns the decision of (li, port, subset), or nil, and the open
// decision that goes with it (nil when the server requires a mesh ALPN).
// A service has a few keys (ports x subsets x listeners): a scan beats a
// map.
func (s *tableService) key(li int32, port uint32, subset string) (dec, open *Decision) {
	for i := range s.keys {
		k := &s.keys[i]
		if k.li == li && k.port == port && k.dec.Cluster.subset == subset {
			if i+1 < len(s.keys) && li != tableBridgeKey && s.keys[i+1].li == li|tableOpenKey {
				open = &s.keys[i+1].dec
			}
			return &k.dec, open
		}
	}
	return nil, nil
}

// autoTarget looks an AUTO_PASSTHROUGH key up for listener li, as key.
// It does not allocate.
func (t *Table) autoTarget(li int32, k tableAutoKey) (dec, open *Decision) {
	svc := t.service(k.host)
	if svc == nil {
		return nil, nil
	}
	return svc.key(li, k.port, k.subset)
}

// countKeys returns the number of keys of listener li (tableBridgeKey:
// bridge keys).
func (t *Table) countKeys(li int32) int {
	n := 0
	t.services.all(func(_ string, svc *tableService) {
		for i := range svc.keys {
			if svc.keys[i].li == li {
				n++
			}
		}
	})
	return n
}

// bridgeLen returns the number of bridge keys (0 without a bridge index).
func (t *Table) bridgeLen() int {
	if !t.node.Bridge {
		return 0
	}
	return t.countKeys(tableBridgeKey)
}

// autoLen returns the number of AUTO_PASSTHROUGH keys of l.
func (l *tableListener) autoLen() int {
	if len(l.autoServers) == 0 {
		return 0
	}
	return l.table.countKeys(l.idx)
}
