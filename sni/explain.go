package sni

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Explanation says what one listener would do with a connection carrying
// a given SNI and ALPN list: which Gateway server and route match and
// which endpoints could be picked, or exactly why the connection would be
// refused. It is meant for JSON (the admin API and `meshgate get`).
type Explanation struct {
	Listener string   `json:"listener"`
	SNI      string   `json:"sni"`
	ALPN     []string `json:"alpn,omitempty"`
	// Match says how the SNI matched: "auto" (AUTO_PASSTHROUGH name),
	// "exact", "wildcard", "any" (the "*" host) or "tcp" (no SNI needed).
	Match   string `json:"match,omitempty"`
	Pattern string `json:"pattern,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	Server  string `json:"server,omitempty"`
	Mode    string `json:"mode,omitempty"`
	Route   string `json:"route,omitempty"`
	// Destinations are the weighted targets of the route (one for
	// AUTO_PASSTHROUGH), with their endpoints and live state.
	Destinations []ExplainedDestination `json:"destinations,omitempty"`
	// Reason and Detail are set when the connection would be refused:
	// by Resolve, or by Pick for every destination.
	Reason Reason `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// ExplainedDestination is one destination of a route.
type ExplainedDestination struct {
	Service      string              `json:"service"`
	Port         uint32              `json:"port"`
	Subset       string              `json:"subset,omitempty"`
	Weight       uint64              `json:"weight"`
	Cluster      string              `json:"cluster"`
	LoadBalancer string              `json:"load_balancer"`
	Policy       ExplainedPolicy     `json:"policy"`
	Active       int64               `json:"active"`
	Endpoints    []ExplainedEndpoint `json:"endpoints"`
	// Path is what a new connection would take now: "local endpoint",
	// "split horizon via <gateway 15443 addresses>", "bridge via
	// <gateway bridge addresses>" or "none"; PathWhy says why (own
	// network first, which networks, why a remote endpoint is not
	// eligible).
	Path    string `json:"path,omitempty"`
	PathWhy string `json:"path_why,omitempty"`
	// Reason and Detail are set when Pick would refuse now.
	Reason Reason `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// ExplainedPolicy is a ConnPolicy in readable units.
type ExplainedPolicy struct {
	ConnectTimeout        string `json:"connect_timeout"`
	IdleTimeout           string `json:"idle_timeout"`
	KeepAlive             string `json:"keepalive,omitempty"`
	KeepAliveInterval     string `json:"keepalive_interval,omitempty"`
	KeepAliveProbes       int    `json:"keepalive_probes,omitempty"`
	MaxConnections        int    `json:"max_connections,omitempty"`
	MaxConnectionDuration string `json:"max_connection_duration,omitempty"`
}

// ExplainedEndpoint is one endpoint with its live state.
type ExplainedEndpoint struct {
	Addr                string            `json:"addr"`
	Network             string            `json:"network,omitempty"`
	Local               bool              `json:"local"`
	Weight              uint32            `json:"weight"`
	Labels              map[string]string `json:"labels,omitempty"`
	Identity            string            `json:"identity,omitempty"`
	Active              int64             `json:"active"`
	ConsecutiveFailures uint32            `json:"consecutive_failures,omitempty"`
	Ejected             bool              `json:"ejected,omitempty"`
	EjectedFor          string            `json:"ejected_for,omitempty"`
	Ejections           uint64            `json:"ejections,omitempty"`
	// Gateway is set when Addr is a remote network's gateway standing
	// for Behind (summed weight of) endpoints of that network; Bridge is
	// its bridge address.
	Gateway bool   `json:"gateway,omitempty"`
	Bridge  string `json:"bridge,omitempty"`
	Behind  uint64 `json:"behind,omitempty"`
	// Path is how this connection would reach the endpoint: "local",
	// "split horizon via <addr>", "bridge via <bridge addr>", or "not
	// eligible: <why>".
	Path string `json:"path,omitempty"`
}

// Explain reports, for every listener in key order, what a connection
// with this SNI (case-insensitive; "" for none) and ALPN list would get.
// A name that is not a valid host name is reported as ReasonMalformed.
// It reads live state but changes nothing. Safe for concurrent use.
func (t *Table) Explain(sni string, alpn []string) []Explanation {
	if t == nil {
		return nil
	}
	name := strings.TrimSpace(sni)
	var bad error
	if tableLooksAuto(name) {
		if ap, err := ParseAutoPassthrough(name); err == nil {
			name = ap.String() // accept the outbound|port|subset|host spelling too
		}
	}
	if name != "" {
		n, err := ParseName(name)
		if err != nil {
			bad = err
		} else {
			name = string(n)
		}
	}
	now := t.env.mono()
	out := make([]Explanation, 0, len(t.specs))
	for _, spec := range t.specs {
		l := t.listeners[spec.Key]
		ex := Explanation{Listener: spec.Key, SNI: name, ALPN: alpn}
		if bad != nil {
			ex.Reason, ex.Detail = ReasonMalformed, bad.Error()
			out = append(out, ex)
			continue
		}
		m, rerr := l.match(name, alpn, name != "")
		if rerr != nil {
			ex.Reason, ex.Detail = rerr.Reason, rerr.Detail
			out = append(out, ex)
			continue
		}
		ex.Match, ex.Pattern = m.how, m.pattern
		if m.server != nil {
			ex.Gateway, ex.Server, ex.Mode = m.server.gateway, m.server.name, m.server.mode
		}
		via, viaWhy := t.explainVia(name, alpn, spec.NeedsHello)
		if m.auto != nil {
			ex.Route = m.auto.Route
			ed := explainDestination(m.auto, 1, now)
			if m.auto.Cluster != nil && m.auto.Cluster.localOnly {
				viaWhy = "AUTO_PASSTHROUGH with an Istio mesh ALPN: the client (an Istio sidecar) did split horizon itself, so this gateway serves only its own network and never forwards to another gateway"
			}
			explainPaths(&ed, m.auto.Cluster, via, viaWhy, now)
			ex.Destinations = []ExplainedDestination{ed}
		} else {
			ex.Route = m.route.name
			for i, d := range m.route.decs {
				ed := explainDestination(d, m.route.ws[i], now)
				explainPaths(&ed, d.Cluster, via, viaWhy, now)
				ex.Destinations = append(ex.Destinations, ed)
			}
		}
		refused := 0
		for _, d := range ex.Destinations {
			if d.Reason != "" {
				refused++
			}
		}
		if refused == len(ex.Destinations) && refused > 0 {
			ex.Reason = ex.Destinations[0].Reason
			ex.Detail = ex.Destinations[0].Detail
			if refused > 1 {
				ex.Detail = fmt.Sprintf("every destination refuses; first: %s", ex.Detail)
			}
		}
		out = append(out, ex)
	}
	return out
}

func explainDestination(d *Decision, w uint64, now int64) ExplainedDestination {
	c := d.Cluster
	ed := ExplainedDestination{Service: d.Service(), Port: d.Port(), Subset: d.Subset(), Weight: w, Cluster: c.Name(),
		LoadBalancer: c.pol.lb.String(), Policy: explainPolicy(c.pol.conn), Active: c.live.active.Load(),
		Endpoints: []ExplainedEndpoint{}}
	healthy := 0
	for i := range c.pools {
		for _, e := range c.pools[i].eps {
			x := explainEndpoint(e, now)
			if !x.Ejected {
				healthy++
			}
			ed.Endpoints = append(ed.Endpoints, x)
		}
	}
	switch {
	case c.size() == 0:
		r := c.emptyRefusal()
		ed.Reason, ed.Detail = r.Reason, r.Detail
	case c.pol.conn.MaxConnections > 0 && ed.Active >= int64(c.pol.conn.MaxConnections):
		ed.Reason = ReasonOverloaded
		ed.Detail = fmt.Sprintf("%s: %d active connections reached connectionPool.tcp.maxConnections %d", c.Name(), ed.Active, c.pol.conn.MaxConnections)
	case healthy == 0 && c.pol.outlier.minHealthPercent == 0:
		ed.Reason, ed.Detail = ReasonNoEndpoint, fmt.Sprintf("%s: all %d endpoints are ejected", c.Name(), c.size())
	}
	return ed
}

// explainVia is Server.via for explain: the bridge is assumed present
// when NodeInfo.Bridge says so. why says what decided it.
func (t *Table) explainVia(name string, alpn []string, hello bool) (tableVia, string) {
	switch {
	case hello && tableLooksAuto(name) && IsMeshALPN(alpn):
		return viaAny, "an AUTO_PASSTHROUGH name with an Istio mesh ALPN: the remote gateway's AUTO_PASSTHROUGH (15443) accepts the replayed ClientHello (split horizon, as Istio)"
	case t.node.Bridge && !hello:
		return viaBridge, "a plain TCP listener (no ClientHello to replay to a remote 15443): other networks are reached through the bridge tunnel"
	case t.node.Bridge:
		return viaBridge, "not an AUTO_PASSTHROUGH name with an Istio mesh ALPN, so the remote gateway's 15443 would refuse it: other networks are reached through the bridge tunnel"
	}
	return viaLocal, "not an AUTO_PASSTHROUGH name with an Istio mesh ALPN, and this node has no bridge: only endpoints of its own network are eligible"
}

// explainPaths fills the per-endpoint and destination paths of ed.
func explainPaths(ed *ExplainedDestination, c *Cluster, via tableVia, why string, now int64) {
	if c == nil {
		return
	}
	k := 0
	localHealthy, remoteEligible := 0, 0
	var paths []string
	for i := range c.pools {
		for _, e := range c.pools[i].eps {
			x := &ed.Endpoints[k]
			k++
			switch {
			case e.local:
				x.Path = "local"
				if !x.Ejected {
					localHealthy++
				}
				continue
			case c.localOnly:
				x.Path = "not eligible: AUTO_PASSTHROUGH with a mesh ALPN serves only this node's network"
				continue
			case !tableViaAllows(via, e) && via == viaLocal:
				x.Path = "not eligible: this node has no bridge, and the connection is not split-horizon traffic (AUTO_PASSTHROUGH name with an Istio mesh ALPN)"
				continue
			case !tableViaAllows(via, e):
				x.Path = "not eligible: the gateway publishes no bridge address (bridge_addr)"
				continue
			case via == viaBridge:
				x.Path = "bridge via " + e.bridge()
			default:
				x.Path = "split horizon via " + e.addr
			}
			if !x.Ejected {
				remoteEligible++
				if p := strings.TrimPrefix(strings.TrimPrefix(x.Path, "bridge via "), "split horizon via "); !slices.Contains(paths, p) {
					paths = append(paths, p)
				}
			}
		}
	}
	switch {
	case localHealthy > 0:
		ed.Path = "local endpoint"
		ed.PathWhy = fmt.Sprintf("own network first: %d healthy endpoints in this node's network; other networks only when none is healthy", localHealthy)
	case remoteEligible > 0 && via == viaBridge:
		ed.Path = "bridge via " + strings.Join(paths, ", ")
		ed.PathWhy = "no healthy endpoint in this node's network; " + why
	case remoteEligible > 0:
		ed.Path = "split horizon via " + strings.Join(paths, ", ")
		ed.PathWhy = "no healthy endpoint in this node's network; " + why
	default:
		ed.Path = "none"
		ed.PathWhy = "no healthy eligible endpoint; " + why
	}
}

// explainLabels formats labels for explain details and warnings as
// "k=v,k2=v2", sorted by key, never as Go's map syntax; "" when empty.
func explainLabels(labels map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(labels)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(labels[k])
	}
	return b.String()
}

func explainEndpoint(e *tableEndpoint, now int64) ExplainedEndpoint {
	x := ExplainedEndpoint{Addr: e.addr, Network: e.network(), Local: e.local, Weight: e.weight, Labels: e.labels, Identity: e.identity(),
		Active: e.live.active.Load(), ConsecutiveFailures: e.live.failures.Load(), Ejections: e.live.ejections(),
		Gateway: e.gateway, Bridge: e.bridge(), Behind: e.behind()}
	if u := e.live.ejectedUntil(); u != 0 && now < u {
		x.Ejected = true
		x.EjectedFor = time.Duration(u - now).String()
	}
	return x
}

func explainPolicy(p ConnPolicy) ExplainedPolicy {
	d := func(v time.Duration) string {
		if v == 0 {
			return ""
		}
		return v.String()
	}
	ep := ExplainedPolicy{ConnectTimeout: p.ConnectTimeout.String(), IdleTimeout: p.IdleTimeout.String(),
		KeepAlive: d(p.KeepAlive), KeepAliveInterval: d(p.KeepAliveInterval), KeepAliveProbes: p.KeepAliveProbes, MaxConnections: p.MaxConnections, MaxConnectionDuration: d(p.MaxConnectionDuration)}
	if p.IdleTimeout == 0 {
		ep.IdleTimeout = "none"
	}
	return ep
}

// Dump returns the whole table in a JSON-friendly form for /debug/routes:
// listeners with their servers, SNI routes and TCP route, the number of
// AUTO_PASSTHROUGH names each exports, every cluster with its policy and
// endpoints' live state, and the build warnings (duplicate SNI hosts,
// skipped servers...). Safe for concurrent use.
func (t *Table) Dump() any {
	if t == nil {
		return tableDump{Listeners: []dumpListener{}, Clusters: []dumpCluster{}, Warnings: []string{}}
	}
	now := t.env.mono()
	d := tableDump{
		Node: dumpNode{Name: t.node.Name, Network: t.node.Network, Labels: t.node.Labels,
			Bridge: t.node.Bridge, BridgeNamespace: t.node.bridgeNamespace()},
		BridgeNames: t.bridgeLen(),
		Listeners:   []dumpListener{},
		Clusters:    []dumpCluster{},
		Warnings:    slices.Clone(t.warnings),
	}
	if d.Warnings == nil {
		d.Warnings = []string{}
	}
	for _, spec := range t.specs {
		l := t.listeners[spec.Key]
		dl := dumpListener{Key: spec.Key, Network: spec.Network, Address: spec.Address, NeedsHello: spec.NeedsHello}
		for _, s := range l.servers {
			ds := dumpServer{Gateway: s.gateway, Name: s.name, Mode: s.mode, Port: s.port, Hosts: s.rawHosts}
			if s.mode == ModeAutoPassthrough {
				v := s.requireALPN
				ds.RequireMeshALPN = &v
			}
			dl.Servers = append(dl.Servers, ds)
		}
		var sni []*tableSNIRoute
		for _, r := range l.exact {
			sni = append(sni, r)
		}
		for _, r := range l.wild {
			sni = append(sni, r)
		}
		slices.SortFunc(sni, func(a, b *tableSNIRoute) int {
			aw, bw := strings.HasPrefix(a.pattern, "*"), strings.HasPrefix(b.pattern, "*")
			if aw != bw {
				if aw {
					return 1
				}
				return -1
			}
			return strings.Compare(a.pattern, b.pattern)
		})
		if l.any != nil {
			sni = append(sni, l.any)
		}
		for _, r := range sni {
			dl.SNI = append(dl.SNI, dumpSNI{Host: r.pattern, Gateway: r.server.gateway, Server: r.server.name, Mode: r.server.mode, Route: dumpRouteOf(r.route)})
		}
		if l.tcp != nil {
			r := dumpRouteOf(l.tcp)
			dl.TCP = &r
		}
		if len(l.autoServers) > 0 {
			dl.AutoPassthroughNames = l.autoLen()
		}
		d.Listeners = append(d.Listeners, dl)
	}
	type named struct {
		name string
		c    *Cluster
	}
	all := t.allClusters()
	cls := make([]named, 0, len(all))
	for _, c := range all {
		cls = append(cls, named{c.Name(), c})
	}
	slices.SortFunc(cls, func(a, b named) int { return strings.Compare(a.name, b.name) })
	for _, nc := range cls {
		c := nc.c
		problem, _ := c.problem()
		dc := dumpCluster{Name: nc.name, Service: c.service, Port: c.port, Subset: c.subset, LoadBalancer: c.pol.lb.String(),
			Policy: explainPolicy(c.pol.conn), Active: c.live.active.Load(), Problem: problem, Endpoints: []ExplainedEndpoint{}}
		if o := c.pol.outlier; o.enabled {
			dc.Outlier = &dumpOutlier{ConsecutiveFailures: o.threshold, Interval: o.interval.String(),
				BaseEjectionTime: o.baseEjection.String(), MaxEjectionPercent: o.maxPercent, MinHealthPercent: o.minHealthPercent}
		}
		for i := range c.pools {
			for _, e := range c.pools[i].eps {
				dc.Endpoints = append(dc.Endpoints, explainEndpoint(e, now))
			}
		}
		d.Clusters = append(d.Clusters, dc)
	}
	return d
}

func dumpRouteOf(r *tableRoute) dumpRoute {
	out := dumpRoute{Name: r.name}
	for i, d := range r.decs {
		out.Destinations = append(out.Destinations, dumpDestination{Cluster: d.Cluster.Name(), Weight: r.ws[i]})
	}
	return out
}

type tableDump struct {
	Node dumpNode `json:"node"`
	// BridgeNames counts the (service, port, subset) keys the bridge's
	// receiving side serves.
	BridgeNames int            `json:"bridge_names"`
	Listeners   []dumpListener `json:"listeners"`
	Clusters    []dumpCluster  `json:"clusters"`
	Warnings    []string       `json:"warnings"`
}

type dumpNode struct {
	Name    string            `json:"name,omitempty"`
	Network string            `json:"network,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	// Bridge: this node carries other networks' traffic through the
	// bridge; BridgeNamespace is whose exportTo view its receiving side
	// serves.
	Bridge          bool   `json:"bridge"`
	BridgeNamespace string `json:"bridge_namespace"`
}

type dumpListener struct {
	Key                  string       `json:"key"`
	Network              string       `json:"network"`
	Address              string       `json:"address"`
	NeedsHello           bool         `json:"needs_hello"`
	Servers              []dumpServer `json:"servers"`
	SNI                  []dumpSNI    `json:"sni,omitempty"`
	TCP                  *dumpRoute   `json:"tcp,omitempty"`
	AutoPassthroughNames int          `json:"auto_passthrough_names,omitempty"`
}

type dumpServer struct {
	Gateway         string   `json:"gateway"`
	Name            string   `json:"name"`
	Mode            string   `json:"mode"`
	Port            uint32   `json:"port"`
	Hosts           []string `json:"hosts"`
	RequireMeshALPN *bool    `json:"require_mesh_alpn,omitempty"`
}

type dumpSNI struct {
	Host    string    `json:"host"`
	Gateway string    `json:"gateway"`
	Server  string    `json:"server"`
	Mode    string    `json:"mode"`
	Route   dumpRoute `json:"route"`
}

type dumpRoute struct {
	Name         string            `json:"name"`
	Destinations []dumpDestination `json:"destinations"`
}

type dumpDestination struct {
	Cluster string `json:"cluster"`
	Weight  uint64 `json:"weight"`
}

type dumpCluster struct {
	Name         string              `json:"name"`
	Service      string              `json:"service"`
	Port         uint32              `json:"port"`
	Subset       string              `json:"subset,omitempty"`
	LoadBalancer string              `json:"load_balancer"`
	Policy       ExplainedPolicy     `json:"policy"`
	Outlier      *dumpOutlier        `json:"outlier_detection,omitempty"`
	Active       int64               `json:"active"`
	Problem      string              `json:"problem,omitempty"`
	Endpoints    []ExplainedEndpoint `json:"endpoints"`
}

type dumpOutlier struct {
	ConsecutiveFailures uint32 `json:"consecutive_failures"`
	Interval            string `json:"interval"`
	BaseEjectionTime    string `json:"base_ejection_time"`
	MaxEjectionPercent  int    `json:"max_ejection_percent"`
	MinHealthPercent    int    `json:"min_health_percent,omitempty"`
}
