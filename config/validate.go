package config

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"
)

// This file checks each resource the way Istio's validation webhook does
// (pkg/config/validation), and refuses, with ErrUnsupported, the valid
// Istio settings meshgate does not implement yet, instead of ignoring
// them. Deliberate differences from Istio are noted where they are made.

// istioProtocols are the port protocols Istio knows (case-insensitive).
var istioProtocols = []string{"HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "HTTP_PROXY", "MONGO", "REDIS", "MYSQL", "TCP", "TLS", "UDP"}

func isIstioProtocol(p string) bool { return slices.Contains(istioProtocols, strings.ToUpper(p)) }

// validateResource runs the checks for one resource's spec.
func validateResource(c *collector, kind Kind, m *Meta, spec proto.Message) {
	switch s := spec.(type) {
	case *networking.Gateway:
		validateGateway(c, s)
	case *networking.VirtualService:
		validateVirtualService(c, m, s)
	case *networking.DestinationRule:
		validateDestinationRule(c, m, s)
	case *networking.ServiceEntry:
		validateServiceEntry(c, m, s)
	case *networking.WorkloadEntry:
		validateWorkloadEntry(c, "spec", s, workloadStandalone, nil)
	default:
		c.invalid("spec", "spec of type %T does not belong to kind %s", spec, kind)
	}
}

// ---- Gateway ----

// isUnixBind reports whether a server bind names a unix socket: Istio's
// "unix:///path" and "unix://@abstract", or the shorter "/path" and
// "@abstract" meshgate also accepts.
func isUnixBind(b string) bool {
	return strings.HasPrefix(b, "unix://") || strings.HasPrefix(b, "/") || strings.HasPrefix(b, "@")
}

func checkUnixPath(p string) string {
	p = strings.TrimPrefix(p, "unix://")
	switch {
	case strings.HasPrefix(p, "@"):
		if len(p) == 1 {
			return "abstract socket name after \"@\" must not be empty"
		}
		if len(p) > 107 {
			return "abstract socket name is longer than 107 bytes"
		}
	case !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/"):
		return fmt.Sprintf("%q is not an absolute path to a socket file", p)
	case len(p) > 107:
		return "socket path is longer than 107 bytes (the kernel limit)"
	}
	return ""
}

func validateGateway(c *collector, g *networking.Gateway) {
	checkLabels(c, "spec.selector", g.GetSelector())
	if len(g.GetServers()) == 0 {
		c.invalid("spec.servers", "at least one server is required")
		return
	}
	portNames := map[string]int{}
	serverNames := map[string]int{}
	for i, s := range g.GetServers() {
		p := fieldIndex("spec.servers", i)
		if s == nil {
			c.invalid(p, "server must not be null")
			continue
		}
		if s.GetPort() != nil && s.GetPort().GetName() != "" {
			if j, dup := portNames[s.GetPort().GetName()]; dup {
				c.invalid(p+".port.name", "port name %q is already used by spec.servers[%d]; Istio requires unique port names in a Gateway", s.GetPort().GetName(), j)
			} else {
				portNames[s.GetPort().GetName()] = i
			}
		}
		if s.GetName() != "" {
			if j, dup := serverNames[s.GetName()]; dup {
				c.invalid(p+".name", "server name %q is already used by spec.servers[%d]", s.GetName(), j)
			} else {
				serverNames[s.GetName()] = i
			}
		}
		validateServer(c, p, s)
	}
}

func validateServer(c *collector, p string, s *networking.Server) {
	if len(s.GetHosts()) == 0 {
		c.invalid(p+".hosts", "at least one host is required")
	}
	for j, h := range s.GetHosts() {
		if msg := checkGatewayHost(h); msg != "" {
			c.invalid(fieldIndex(p+".hosts", j), "%s", msg)
		}
	}
	unix := isUnixBind(s.GetBind())
	if b := s.GetBind(); b != "" {
		if unix {
			if msg := checkUnixPath(b); msg != "" {
				c.invalid(p+".bind", "%s", msg)
			}
		} else if _, ok := parseIP(b); !ok {
			c.invalid(p+".bind", "bind %q must be an IP address or a unix socket (unix:///path, /path or @abstract)", b)
		}
	}
	if s.GetDefaultEndpoint() != "" {
		c.unsupported(p+".defaultEndpoint", "defaultEndpoint is not supported (it applies to sidecars, not gateways)")
	}

	port := s.GetPort()
	if port == nil {
		c.invalid(p+".port", "port is required")
		return
	}
	switch n := port.GetNumber(); {
	case unix && n != 0:
		c.invalid(p+".port.number", "port number must be 0 when bind is a unix socket, got %d", n)
	case !unix && (n < 1 || n > 65535):
		c.invalid(p+".port.number", "port number %d must be in 1..65535 (0 only with a unix socket bind)", n)
	}
	if port.GetName() == "" {
		c.invalid(p+".port.name", "port name is required")
	}
	//lint:ignore SA1019 the deprecated field is read only to refuse it
	if port.GetTargetPort() != 0 {
		c.invalid(p+".port.targetPort", "targetPort has no effect on a Gateway")
	}
	proto := strings.ToUpper(port.GetProtocol())
	switch {
	case proto == "":
		c.invalid(p+".port.protocol", "protocol is required (TLS, HTTPS or TCP)")
		return
	case !isIstioProtocol(proto):
		c.invalid(p+".port.protocol", "invalid protocol %q (Istio's protocols: %s)", port.GetProtocol(), strings.Join(istioProtocols, ", "))
		return
	case proto != "TLS" && proto != "HTTPS" && proto != "TCP":
		c.unsupported(p+".port.protocol", "protocol %s is not supported yet (supported: TLS, HTTPS, TCP); meshgate routes TLS by SNI and plain TCP", proto)
		return
	}

	tls := s.GetTls()
	if proto == "TCP" {
		if tls != nil {
			c.invalid(p+".tls", "tls settings are only allowed on TLS and HTTPS servers; a TCP server routes plain connections with VirtualService tcp routes")
		}
		return
	}
	if tls == nil {
		c.invalid(p+".tls", "tls is required for protocol %s (use mode PASSTHROUGH or AUTO_PASSTHROUGH)", proto)
		return
	}
	switch mode := tls.GetMode(); mode {
	case networking.ServerTLSSettings_PASSTHROUGH, networking.ServerTLSSettings_AUTO_PASSTHROUGH:
		if mode == networking.ServerTLSSettings_AUTO_PASSTHROUGH && proto != "TLS" {
			c.invalid(p+".tls.mode", "mode AUTO_PASSTHROUGH requires protocol TLS, got %s", proto)
		}
		// Nothing but the mode means anything when the TLS connection
		// is not terminated. Istio warns and ignores; meshgate refuses,
		// so a setting never silently does nothing.
		tls.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
			if fd.Name() != "mode" {
				c.invalid(p+".tls."+fd.JSONName(), "%s has no effect with mode %s (the TLS connection is passed through, not terminated); remove it", fd.JSONName(), mode)
			}
			return true
		})
	case networking.ServerTLSSettings_ISTIO_MUTUAL:
		// Terminated with the node's mesh certificate; the client must
		// present one from the mesh CA. As Istio says, every other field
		// is empty: the certificates are the mesh's.
		if proto != "TLS" {
			c.unsupported(p+".tls.mode", "mode ISTIO_MUTUAL with protocol %s would need HTTP routing, which meshgate does not do; use protocol TLS and a VirtualService tcp route", proto)
		}
		tls.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
			switch fd.Name() {
			case "mode", "subject_alt_names":
			default:
				c.invalid(p+".tls."+fd.JSONName(), "%s must be empty with mode ISTIO_MUTUAL (the node's mesh certificate and roots are used); remove it", fd.JSONName())
			}
			return true
		})
		for i, san := range tls.GetSubjectAltNames() {
			if msg := checkSPIFFEID(san); msg != "" {
				c.invalid(fieldIndex(p+".tls.subjectAltNames", i), "%s", msg)
			}
		}
	case networking.ServerTLSSettings_SIMPLE, networking.ServerTLSSettings_MUTUAL,
		networking.ServerTLSSettings_OPTIONAL_MUTUAL:
		c.unsupported(p+".tls.mode", "mode %s is not supported yet (supported: PASSTHROUGH, AUTO_PASSTHROUGH, ISTIO_MUTUAL)", mode)
	default:
		c.invalid(p+".tls.mode", "unknown mode %d", mode)
	}
}

// checkGatewayHost validates a Gateway server host "[namespace/]dnsName".
// The namespace may be "*", "." (the Gateway's own), "~" (none) or a DNS
// label; the dnsName "*", "*.suffix" or a host name.
func checkGatewayHost(h string) string {
	ns, name, ok := splitNamespaced(h)
	if !ok {
		ns, name = "", h
	} else {
		switch {
		case ns == "":
			return fmt.Sprintf("host %q: namespace before \"/\" must not be empty", h)
		case ns == "*", ns == ".", ns == "~":
		case !isDNS1123Label(ns):
			return fmt.Sprintf("host %q: namespace %q must be *, ., ~ or a lowercase DNS-1123 label", h, ns)
		}
	}
	if err := checkHost(name, true, true); err != nil {
		return err.Error()
	}
	return ""
}

// ---- VirtualService ----

func validateVirtualService(c *collector, m *Meta, vs *networking.VirtualService) {
	for i, g := range vs.GetGateways() {
		if msg := checkGatewayRef(g); msg != "" {
			c.invalid(fieldIndex("spec.gateways", i), "%s", msg)
		}
	}
	// As in Istio, the catch-all host "*" is only allowed when the
	// VirtualService applies to gateways alone (not to "mesh").
	toGateway := len(vs.GetGateways()) > 0 && !slices.Contains(vs.GetGateways(), "mesh")
	hosts := vs.GetHosts()
	if len(hosts) == 0 {
		c.invalid("spec.hosts", "at least one host is required (delegate VirtualServices are not supported)")
	}
	valid := true
	for i, h := range hosts {
		if _, ok := parseIP(h); ok {
			continue
		}
		if err := checkHost(h, true, toGateway); err != nil {
			c.invalid(fieldIndex("spec.hosts", i), "%v", err)
			valid = false
		}
	}
	if valid {
		for i := range hosts {
			for j := i + 1; j < len(hosts); j++ {
				if hostsOverlap(hosts[i], hosts[j]) {
					c.invalid(fieldIndex("spec.hosts", j), "host %q overlaps spec.hosts[%d] %q", hosts[j], i, hosts[i])
				}
			}
		}
	}
	if len(vs.GetHttp()) > 0 {
		c.unsupported("spec.http", "http routes are not supported by meshgate (it does not terminate TLS on this listener)")
	}
	if len(vs.GetHttp()) == 0 && len(vs.GetTls()) == 0 && len(vs.GetTcp()) == 0 {
		c.invalid("spec", "at least one tls or tcp route is required")
	}
	for i, r := range vs.GetTls() {
		p := fieldIndex("spec.tls", i)
		if r == nil {
			c.invalid(p, "route must not be null")
			continue
		}
		if len(r.GetMatch()) == 0 {
			c.invalid(p+".match", "at least one match with sniHosts is required")
		}
		for j, mt := range r.GetMatch() {
			mp := fieldIndex(p+".match", j)
			if mt == nil {
				c.invalid(mp, "match must not be null")
				continue
			}
			if len(mt.GetSniHosts()) == 0 {
				c.invalid(mp+".sniHosts", "at least one SNI host is required")
			}
			for k, sni := range mt.GetSniHosts() {
				sp := fieldIndex(mp+".sniHosts", k)
				if _, ok := parseIP(sni); ok {
					c.invalid(sp, "%q is an IP address; TLS clients never send one as SNI", sni)
					continue
				}
				if err := checkHost(sni, true, true); err != nil {
					c.invalid(sp, "%v", err)
					continue
				}
				if !slices.ContainsFunc(hosts, func(h string) bool { return hostSubsetOf(sni, h) }) {
					c.invalid(sp, "SNI host %q is not a compatible subset of any of the virtual service hosts: [%s]", sni, strings.Join(hosts, ", "))
				}
			}
			checkL4Match(c, mp, mt.GetDestinationSubnets(), mt.GetPort(), mt.GetSourceLabels(), mt.GetGateways(), mt.GetSourceNamespace(), "")
		}
		checkRoutes(c, p+".route", r.GetRoute())
	}
	for i, r := range vs.GetTcp() {
		p := fieldIndex("spec.tcp", i)
		if r == nil {
			c.invalid(p, "route must not be null")
			continue
		}
		for j, mt := range r.GetMatch() {
			mp := fieldIndex(p+".match", j)
			if mt == nil {
				c.invalid(mp, "match must not be null")
				continue
			}
			checkL4Match(c, mp, mt.GetDestinationSubnets(), mt.GetPort(), mt.GetSourceLabels(), mt.GetGateways(), mt.GetSourceNamespace(), mt.GetSourceSubnet())
		}
		checkRoutes(c, p+".route", r.GetRoute())
	}
	checkExportTo(c, vs.GetExportTo(), m.Namespace, false)
}

// checkGatewayRef validates a VirtualService gateway reference: "mesh",
// "name" (the VirtualService's namespace) or "namespace/name". Istio also
// accepts a dotted legacy form with a warning; meshgate refuses it.
func checkGatewayRef(g string) string {
	if g == "mesh" {
		return ""
	}
	ns, name, ok := splitNamespaced(g)
	if !ok {
		if !isDNS1123Label(g) {
			return fmt.Sprintf("gateway %q must be \"mesh\", a Gateway name or \"namespace/name\" (lowercase DNS-1123 labels)", g)
		}
		return ""
	}
	if !isDNS1123Label(ns) {
		return fmt.Sprintf("gateway %q: namespace %q must be a lowercase DNS-1123 label", g, ns)
	}
	if !isDNS1123Label(name) {
		return fmt.Sprintf("gateway %q: name %q must be a lowercase DNS-1123 label", g, name)
	}
	return ""
}

// checkL4Match validates the L4 part of a tls or tcp match.
//
// sourceLabels and sourceNamespace are implemented with Istio's meaning
// for a route bound to a gateway: the source workload is the gateway
// itself, so sourceLabels must be among the node's labels (node.yaml) and
// sourceNamespace must be the namespace of the Gateway the route is
// placed on. destinationSubnets and sourceSubnet would need the
// connection's addresses at route time, which the route table does not
// look at; they are refused rather than ignored.
func checkL4Match(c *collector, p string, subnets []string, port uint32, sourceLabels map[string]string, gateways []string, sourceNS, sourceSubnet string) {
	for i, s := range subnets {
		if err := checkSubnet(s); err != nil {
			c.invalid(fieldIndex(p+".destinationSubnets", i), "%v", err)
		}
	}
	if len(subnets) > 0 {
		c.unsupported(p+".destinationSubnets", "destinationSubnets is not supported yet: meshgate matches routes by SNI, port, gateway, sourceLabels and sourceNamespace, not by the address the client connected to (bind a Gateway server to that address instead)")
	}
	if port > 65535 {
		c.invalid(p+".port", "port %d must be in 1..65535", port)
	}
	checkLabels(c, p+".sourceLabels", sourceLabels)
	for i, g := range gateways {
		if msg := checkGatewayRef(g); msg != "" {
			c.invalid(fieldIndex(p+".gateways", i), "%s", msg)
		}
	}
	if sourceNS != "" && !isDNS1123Label(sourceNS) {
		c.invalid(p+".sourceNamespace", "sourceNamespace %q must be a lowercase DNS-1123 label", sourceNS)
	}
	if sourceSubnet != "" {
		if err := checkSubnet(sourceSubnet); err != nil {
			c.invalid(p+".sourceSubnet", "%v", err)
		} else {
			c.unsupported(p+".sourceSubnet", "sourceSubnet is not supported yet: meshgate does not match routes by the client's address")
		}
	}
}

// checkRoutes validates L4 route destinations and their weights.
//
// Weights follow istio.io/api v1.31: a weight is a relative proportion
// (a destination gets weight/sum of the traffic), each weight must be
// >= 0, and when there is more than one destination the weights must not
// all be 0. Istio releases before 1.20 instead required a sum of exactly
// 100; every such configuration is still accepted here.
func checkRoutes(c *collector, p string, routes []*networking.RouteDestination) {
	if len(routes) == 0 {
		c.invalid(p, "at least one route destination is required")
		return
	}
	var total int64
	for i, r := range routes {
		rp := fieldIndex(p, i)
		if r == nil {
			c.invalid(rp, "route destination must not be null")
			continue
		}
		checkDestination(c, rp+".destination", r.GetDestination())
		if w := r.GetWeight(); w < 0 {
			c.invalid(rp+".weight", "weight %d must not be negative", w)
		} else {
			total += int64(w)
		}
	}
	switch {
	case len(routes) > 1 && total == 0:
		c.invalid(p, "the weights of %d destinations add up to 0; give at least one a positive weight", len(routes))
	case total > math.MaxInt32:
		c.invalid(p, "the weights add up to %d, more than %d", total, math.MaxInt32)
	}
}

func checkDestination(c *collector, p string, d *networking.Destination) {
	if d == nil {
		c.invalid(p, "destination is required")
		return
	}
	switch h := d.GetHost(); {
	case h == "":
		c.invalid(p+".host", "host is required")
	case h == "*":
		c.invalid(p+".host", "destination host must not be \"*\"")
	case strings.HasPrefix(h, "*"):
		if err := checkHost(h, true, false); err != nil {
			c.invalid(p+".host", "%v", err)
		} else {
			c.unsupported(p+".host", "wildcard destination host %q is not supported: meshgate only dials endpoints of a named service", h)
		}
	default:
		if err := checkHost(h, false, false); err != nil {
			c.invalid(p+".host", "%v", err)
		}
	}
	if s := d.GetSubset(); s != "" && !isDNS1123Label(s) {
		c.invalid(p+".subset", "subset %q must be a lowercase DNS-1123 label", s)
	}
	if d.GetPort() != nil {
		if n := d.GetPort().GetNumber(); n < 1 || n > 65535 {
			c.invalid(p+".port.number", "port number %d must be in 1..65535", n)
		}
	}
}

// checkExportTo validates exportTo: ".", "*", a namespace, or (for a
// ServiceEntry) "~"; no duplicates; "*" and "~" only alone.
func checkExportTo(c *collector, list []string, namespace string, serviceEntry bool) {
	seen := map[string]bool{}
	for i, e := range list {
		p := fieldIndex("spec.exportTo", i)
		key := e
		if e == "." {
			key = namespace
		}
		switch {
		case e == "." || e == "*":
		case e == "~" && serviceEntry:
		case e == "~":
			c.invalid(p, "\"~\" is only allowed in a ServiceEntry")
			continue
		case !isDNS1123Label(e):
			c.invalid(p, "%q must be \".\", \"*\" or a namespace (lowercase DNS-1123 label)", e)
			continue
		}
		if seen[key] {
			c.invalid(p, "duplicate exportTo entry %q", e)
		}
		seen[key] = true
	}
	if len(list) > 1 && (seen["*"] || seen["~"]) {
		c.invalid("spec.exportTo", "\"*\" and \"~\" must be the only entry")
	}
}

// ---- DestinationRule ----

func validateDestinationRule(c *collector, m *Meta, dr *networking.DestinationRule) {
	if h := dr.GetHost(); h == "" {
		c.invalid("spec.host", "host is required")
	} else if err := checkHost(h, true, true); err != nil {
		c.invalid("spec.host", "%v", err)
	}
	if dr.GetTrafficPolicy() != nil {
		checkTrafficPolicy(c, "spec.trafficPolicy", dr.GetTrafficPolicy())
	}
	names := map[string]int{}
	for i, s := range dr.GetSubsets() {
		p := fieldIndex("spec.subsets", i)
		if s == nil {
			c.invalid(p, "subset must not be null")
			continue
		}
		switch n := s.GetName(); {
		case n == "":
			c.invalid(p+".name", "subset name is required")
		case !isDNS1123Label(n):
			c.invalid(p+".name", "subset name %q must be a lowercase DNS-1123 label", n)
		default:
			if j, dup := names[n]; dup {
				c.invalid(p+".name", "subset name %q is already used by spec.subsets[%d]", n, j)
			}
			names[n] = i
		}
		checkLabels(c, p+".labels", s.GetLabels())
		if s.GetTrafficPolicy() != nil {
			checkTrafficPolicy(c, p+".trafficPolicy", s.GetTrafficPolicy())
		}
	}
	checkExportTo(c, dr.GetExportTo(), m.Namespace, false)
	if dr.GetWorkloadSelector() != nil {
		c.unsupported("spec.workloadSelector", "workloadSelector is not supported (it scopes the rule to sidecars of selected workloads)")
	}
}

func checkTrafficPolicy(c *collector, p string, tp *networking.TrafficPolicy) {
	if !hasAnyField(tp) {
		c.invalid(p, "trafficPolicy must set at least one field")
		return
	}
	checkPolicyParts(c, p, tp.GetLoadBalancer(), tp.GetConnectionPool(), tp.GetOutlierDetection(), tp.GetTls())
	ports := map[uint32]int{}
	for i, pl := range tp.GetPortLevelSettings() {
		pp := fieldIndex(p+".portLevelSettings", i)
		if pl == nil {
			c.invalid(pp, "port traffic policy must not be null")
			continue
		}
		if pl.GetPort() == nil {
			c.invalid(pp+".port", "port is required")
		} else if n := pl.GetPort().GetNumber(); n < 1 || n > 65535 {
			c.invalid(pp+".port.number", "port number %d must be in 1..65535", n)
		} else if j, dup := ports[n]; dup {
			c.invalid(pp+".port.number", "port %d already has settings at %s[%d]", n, p+".portLevelSettings", j)
		} else {
			ports[n] = i
		}
		if pl.GetLoadBalancer() == nil && pl.GetConnectionPool() == nil && pl.GetOutlierDetection() == nil && pl.GetTls() == nil {
			c.invalid(pp, "port traffic policy must set at least one of loadBalancer, connectionPool, outlierDetection, tls")
			continue
		}
		checkPolicyParts(c, pp, pl.GetLoadBalancer(), pl.GetConnectionPool(), pl.GetOutlierDetection(), pl.GetTls())
	}
	if tp.GetTunnel() != nil {
		c.unsupported(p+".tunnel", "tunnel is not supported yet")
	}
	if tp.GetProxyProtocol() != nil {
		c.unsupported(p+".proxyProtocol", "proxyProtocol is not supported yet")
	}
	if tp.GetRetryBudget() != nil {
		c.unsupported(p+".retryBudget", "retryBudget is not supported (it applies to HTTP retries)")
	}
}

func hasAnyField(m proto.Message) bool {
	any := false
	m.ProtoReflect().Range(func(protoreflect.FieldDescriptor, protoreflect.Value) bool {
		any = true
		return false
	})
	return any
}

func checkPolicyParts(c *collector, p string, lb *networking.LoadBalancerSettings, pool *networking.ConnectionPoolSettings,
	od *networking.OutlierDetection, tls *networking.ClientTLSSettings,
) {
	if lb != nil {
		checkLoadBalancer(c, p+".loadBalancer", lb)
	}
	if pool != nil {
		checkConnectionPool(c, p+".connectionPool", pool)
	}
	if od != nil {
		checkOutlierDetection(c, p+".outlierDetection", od)
	}
	if tls != nil {
		checkClientTLS(c, p+".tls", tls)
	}
}

func checkLoadBalancer(c *collector, p string, lb *networking.LoadBalancerSettings) {
	switch lb.GetLbPolicy().(type) {
	case *networking.LoadBalancerSettings_Simple:
		switch s := lb.GetSimple(); s {
		case networking.LoadBalancerSettings_UNSPECIFIED, networking.LoadBalancerSettings_ROUND_ROBIN,
			networking.LoadBalancerSettings_LEAST_REQUEST, networking.LoadBalancerSettings_RANDOM,
			//lint:ignore SA1019 accepted as the deprecated alias of LEAST_REQUEST, as in Istio
			networking.LoadBalancerSettings_LEAST_CONN:
		case networking.LoadBalancerSettings_PASSTHROUGH:
			c.unsupported(p+".simple", "simple %s is not supported yet (supported: ROUND_ROBIN, LEAST_REQUEST, RANDOM)", s)
		default:
			c.invalid(p+".simple", "unknown load balancer %d", s)
		}
	case *networking.LoadBalancerSettings_ConsistentHash:
		c.unsupported(p+".consistentHash", "consistentHash is not supported yet (supported: simple ROUND_ROBIN, LEAST_REQUEST, RANDOM)")
	}
	if lb.GetLocalityLbSetting() != nil {
		c.unsupported(p+".localityLbSetting", "localityLbSetting is not supported: meshgate fails over by network priority (own network first, other networks only when no local endpoint is healthy) and has no locality or by-weight spreading (distribute, failover, failoverPriority)")
	}
	if lb.GetZoneAwareLbSetting() != nil {
		c.unsupported(p+".zoneAwareLbSetting", "zoneAwareLbSetting is not supported yet")
	}
	if lb.GetWarmupDurationSecs() != nil {
		c.unsupported(p+".warmupDurationSecs", "warmupDurationSecs is not supported yet")
	}
	if lb.GetWarmup() != nil {
		c.unsupported(p+".warmup", "warmup is not supported yet")
	}
}

// checkDuration applies Istio's rule for durations: at least 1ms and a
// whole number of milliseconds.
func checkDuration(c *collector, p string, d *durationpb.Duration) {
	if d == nil {
		return
	}
	if err := d.CheckValid(); err != nil {
		c.invalid(p, "invalid duration: %v", err)
		return
	}
	v := d.AsDuration()
	switch {
	case v < time.Millisecond:
		c.invalid(p, "duration %v must be at least 1ms", v)
	case v%time.Millisecond != 0:
		c.invalid(p, "duration %v must be a whole number of milliseconds", v)
	}
}

func checkConnectionPool(c *collector, p string, pool *networking.ConnectionPoolSettings) {
	if pool.GetTcp() == nil && pool.GetHttp() == nil {
		c.invalid(p, "connectionPool must set tcp")
		return
	}
	if pool.GetHttp() != nil {
		c.unsupported(p+".http", "connectionPool.http is not supported: meshgate routes TCP connections and never sees HTTP requests (use connectionPool.tcp)")
	}
	tcp := pool.GetTcp()
	if tcp == nil {
		return
	}
	if n := tcp.GetMaxConnections(); n < 0 {
		c.invalid(p+".tcp.maxConnections", "maxConnections %d must not be negative", n)
	}
	checkDuration(c, p+".tcp.connectTimeout", tcp.GetConnectTimeout())
	checkDuration(c, p+".tcp.maxConnectionDuration", tcp.GetMaxConnectionDuration())
	if it := tcp.GetIdleTimeout(); it != nil && (it.GetSeconds() != 0 || it.GetNanos() != 0) {
		// 0s turns the idle timeout off, as in Istio.
		checkDuration(c, p+".tcp.idleTimeout", it)
	}
	if ka := tcp.GetTcpKeepalive(); ka != nil {
		checkDuration(c, p+".tcp.tcpKeepalive.time", ka.GetTime())
		checkDuration(c, p+".tcp.tcpKeepalive.interval", ka.GetInterval())
		// The kernel takes at most 127 probes (TCP_KEEPCNT); more would
		// fail every upstream dial.
		if n := ka.GetProbes(); n > maxKeepaliveProbes {
			c.invalid(p+".tcp.tcpKeepalive.probes", "probes %d must be at most %d (the kernel's TCP_KEEPCNT limit)", n, maxKeepaliveProbes)
		}
	}
}

// maxKeepaliveProbes is the largest TCP_KEEPCNT Linux accepts.
const maxKeepaliveProbes = 127

func checkOutlierDetection(c *collector, p string, od *networking.OutlierDetection) {
	//lint:ignore SA1019 deprecated, still checked as Istio does
	if n := od.GetConsecutiveErrors(); n < 0 {
		c.invalid(p+".consecutiveErrors", "consecutiveErrors %d must not be negative", n)
	}
	if od.GetConsecutiveLocalOriginFailures().GetValue() > 0 && !od.GetSplitExternalLocalOriginErrors() {
		c.invalid(p+".consecutiveLocalOriginFailures", "consecutiveLocalOriginFailures needs splitExternalLocalOriginErrors: true")
	}
	checkDuration(c, p+".interval", od.GetInterval())
	checkDuration(c, p+".baseEjectionTime", od.GetBaseEjectionTime())
	if n := od.GetMaxEjectionPercent(); n < 0 || n > 100 {
		c.invalid(p+".maxEjectionPercent", "maxEjectionPercent %d must be in 0..100", n)
	}
	if n := od.GetMinHealthPercent(); n < 0 || n > 100 {
		c.invalid(p+".minHealthPercent", "minHealthPercent %d must be in 0..100", n)
	}
	if len(od.GetOutlierDetectionHttpErrorCodes()) > 0 {
		c.unsupported(p+".outlierDetectionHttpErrorCodes", "outlierDetectionHttpErrorCodes is not supported: meshgate never sees HTTP responses")
	}
}

// checkClientTLS accepts DISABLE and ISTIO_MUTUAL. meshgate never
// originates TLS to an upstream: with passthrough the client's own (mutual)
// TLS reaches the endpoint unchanged, which is what ISTIO_MUTUAL asks for
// (Istio's own cross-network gateway ignores this setting the same way).
// SIMPLE and MUTUAL ask the gateway to originate TLS and are refused.
func checkClientTLS(c *collector, p string, tls *networking.ClientTLSSettings) {
	switch mode := tls.GetMode(); mode {
	case networking.ClientTLSSettings_DISABLE, networking.ClientTLSSettings_ISTIO_MUTUAL:
	case networking.ClientTLSSettings_SIMPLE, networking.ClientTLSSettings_MUTUAL:
		c.unsupported(p+".mode", "mode %s is not supported yet: meshgate does not originate TLS to upstreams (supported: DISABLE, ISTIO_MUTUAL)", mode)
		return
	default:
		c.invalid(p+".mode", "unknown mode %d", mode)
		return
	}
	tls.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if fd.Name() != "mode" {
			c.unsupported(p+"."+fd.JSONName(), "%s is not supported yet: meshgate does not originate TLS to upstreams", fd.JSONName())
		}
		return true
	})
}

// ---- ServiceEntry and WorkloadEntry ----

// workloadContext says where a WorkloadEntry shape is checked.
type workloadContext int

const (
	workloadStandalone workloadContext = iota // a WorkloadEntry resource
	workloadStatic                            // ServiceEntry endpoint, resolution STATIC
	workloadDNS                               // ServiceEntry endpoint, resolution DNS
)

func validateServiceEntry(c *collector, m *Meta, se *networking.ServiceEntry) {
	if len(se.GetHosts()) == 0 {
		c.invalid("spec.hosts", "at least one host is required")
	}
	for i, h := range se.GetHosts() {
		if err := checkHost(h, true, false); err != nil {
			c.invalid(fieldIndex("spec.hosts", i), "%v", err)
		}
	}
	res := se.GetResolution()
	for i, a := range se.GetAddresses() {
		p := fieldIndex("spec.addresses", i)
		if err := checkSubnet(a); err != nil {
			c.invalid(p, "%v", err)
		} else if strings.Contains(a, "/") && res != networking.ServiceEntry_STATIC && res != networking.ServiceEntry_NONE {
			c.invalid(p, "CIDR addresses are only allowed with resolution STATIC")
		}
	}
	portNames := map[string]int{}
	portNumbers := map[uint32]int{}
	onlyL7 := true
	for i, port := range se.GetPorts() {
		p := fieldIndex("spec.ports", i)
		if port == nil {
			c.invalid(p, "port must not be null")
			continue
		}
		if n := port.GetNumber(); n < 1 || n > 65535 {
			c.invalid(p+".number", "port number %d must be in 1..65535", n)
		} else if j, dup := portNumbers[n]; dup {
			c.invalid(p+".number", "port %d is already defined by spec.ports[%d]", n, j)
		} else {
			portNumbers[n] = i
		}
		switch n := port.GetName(); {
		case n == "":
			c.invalid(p+".name", "port name is required")
		case !isDNS1123Label(n):
			c.invalid(p+".name", "port name %q must be a lowercase DNS-1123 label", n)
		default:
			if j, dup := portNames[n]; dup {
				c.invalid(p+".name", "port name %q is already defined by spec.ports[%d]", n, j)
			}
			portNames[n] = i
		}
		pr := strings.ToUpper(port.GetProtocol())
		if pr != "" && !isIstioProtocol(pr) {
			c.invalid(p+".protocol", "invalid protocol %q (Istio's protocols: %s)", port.GetProtocol(), strings.Join(istioProtocols, ", "))
		}
		switch pr {
		case "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "HTTP_PROXY", "TLS":
		default:
			onlyL7 = false
		}
		if t := port.GetTargetPort(); t > 65535 {
			c.invalid(p+".targetPort", "targetPort %d must be in 1..65535", t)
		}
	}
	if len(se.GetHosts()) > 1 && !onlyL7 && res != networking.ServiceEntry_NONE {
		c.invalid("spec.hosts", "several hosts need HTTP or TLS ports: on a plain TCP port nothing tells the hosts apart")
	}

	var ctx workloadContext
	switch res {
	case networking.ServiceEntry_STATIC:
		ctx = workloadStatic
	case networking.ServiceEntry_DNS:
		ctx = workloadDNS
		if len(se.GetEndpoints()) == 0 {
			for i, h := range se.GetHosts() {
				if strings.HasPrefix(h, "*") {
					c.invalid(fieldIndex("spec.hosts", i), "host %q must not be a wildcard with resolution DNS and no endpoints (meshgate resolves the host itself)", h)
				}
			}
		}
	case networking.ServiceEntry_NONE:
		c.unsupported("spec.resolution", "resolution NONE is not supported yet (supported: STATIC, DNS); NONE is what an unset resolution means")
		return
	default:
		c.unsupported("spec.resolution", "resolution %s is not supported yet (supported: STATIC, DNS)", res)
		return
	}
	if len(se.GetSubjectAltNames()) > 0 {
		c.unsupported("spec.subjectAltNames", "subjectAltNames is not supported: meshgate passes TLS through and never originates TLS to an endpoint, so it cannot verify the endpoint's certificate; the client's own mTLS checks it")
	}
	if se.GetWorkloadSelector() != nil && len(se.GetEndpoints()) > 0 {
		c.invalid("spec.workloadSelector", "only one of workloadSelector and endpoints may be set")
	}
	if ws := se.GetWorkloadSelector(); ws != nil {
		checkSelector(c, "spec.workloadSelector.labels", ws.GetLabels())
	}
	for i, ep := range se.GetEndpoints() {
		p := fieldIndex("spec.endpoints", i)
		if ep == nil {
			c.invalid(p, "endpoint must not be null")
			continue
		}
		validateWorkloadEntry(c, p, ep, ctx, portNames)
	}
	checkExportTo(c, se.GetExportTo(), m.Namespace, true)
}

// validateWorkloadEntry checks a WorkloadEntry resource or a ServiceEntry
// endpoint. ports, when not nil, are the ServiceEntry's port names.
func validateWorkloadEntry(c *collector, p string, we *networking.WorkloadEntry, ctx workloadContext, ports map[string]int) {
	switch a := we.GetAddress(); {
	case a == "":
		c.invalid(p+".address", "address is required")
	case strings.HasPrefix(a, "unix://"):
		c.unsupported(p+".address", "unix socket endpoints are not supported")
	default:
		if _, ok := parseIP(a); ok {
			break
		}
		if ctx == workloadStatic {
			c.invalid(p+".address", "address %q must be an IP address with resolution STATIC", a)
		} else if err := checkHost(a, false, false); err != nil {
			c.invalid(p+".address", "address %q is neither an IP address nor a valid host name", a)
		}
	}
	for _, name := range sortedKeys(we.GetPorts()) {
		pp := mapField(p+".ports", name)
		if !isDNS1123Label(name) {
			c.invalid(pp, "port name %q must be a lowercase DNS-1123 label", name)
		} else if ports != nil {
			if _, ok := ports[name]; !ok {
				c.invalid(pp, "port %q is not defined in the ServiceEntry's ports", name)
			}
		}
		if n := we.GetPorts()[name]; n < 1 || n > 65535 {
			c.invalid(pp, "port number %d must be in 1..65535", n)
		}
	}
	checkLabels(c, p+".labels", we.GetLabels())
	if n := we.GetNetwork(); n != "" && !isLabelValue(n) {
		c.invalid(p+".network", "network %q must be at most 63 characters of [A-Za-z0-9._-], starting and ending alphanumeric", n)
	}
	if sa := we.GetServiceAccount(); sa != "" && !isDNS1123Subdomain(sa) {
		c.invalid(p+".serviceAccount", "serviceAccount %q must be a lowercase DNS-1123 subdomain", sa)
	}
	if l := we.GetLocality(); strings.ContainsAny(l, " \t\r\n") {
		c.invalid(p+".locality", "locality %q must be region/zone/subzone without spaces", l)
	} else if l != "" {
		c.unsupported(p+".locality", "locality is not supported yet: meshgate has no locality-aware load balancing (localityLbSetting is refused too), so it would have no effect")
	}
}

// checkSet runs the checks that span resources: duplicate names, and
// Gateway server names that must be unique across all Gateways.
func checkSet(s *Set, errs *Errors) {
	type key struct {
		kind     Kind
		ns, name string
	}
	seen := map[key]*Meta{}
	servers := map[string]string{}
	s.each(func(kind Kind, m *Meta, spec proto.Message) {
		c := &collector{at: where{file: m.Source, index: m.Index + 1, kind: kind, name: m.Namespace + "/" + m.Name}, errs: errs}
		if m.Source == "" {
			c.at.index = 0
		}
		k := key{kind, m.Namespace, m.Name}
		if first, dup := seen[k]; dup {
			c.add(ErrDuplicate, "metadata.name", "duplicate %s %s/%s: already defined %s", kind, m.Namespace, m.Name, origin(first))
		} else {
			seen[k] = m
		}
		if gw, ok := spec.(*networking.Gateway); ok {
			for i, srv := range gw.GetServers() {
				if n := srv.GetName(); n != "" {
					here := fmt.Sprintf("Gateway %s/%s spec.servers[%d]", m.Namespace, m.Name, i)
					if other, dup := servers[n]; dup && !strings.HasPrefix(other, fmt.Sprintf("Gateway %s/%s ", m.Namespace, m.Name)) {
						c.invalid(fieldIndex("spec.servers", i)+".name", "server name %q is already used by %s; server names must be unique across all Gateways", n, other)
					} else if !dup {
						servers[n] = here
					}
				}
			}
		}
	})
}

// origin describes where a resource came from, for messages.
func origin(m *Meta) string {
	if m.Source == "" {
		return "earlier in the same input"
	}
	return "in " + m.Source + " document " + strconv.Itoa(m.Index+1)
}

// checkSPIFFEID checks an ISTIO_MUTUAL subjectAltNames entry: a workload
// identity in the exact form the node compares client certificates by,
// spiffe://<trust domain>/ns/<namespace>/sa/<service account>.
func checkSPIFFEID(s string) string {
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return fmt.Sprintf("%q: want spiffe://<trust domain>/ns/<namespace>/sa/<service account> (client certificates are matched by their SPIFFE ID)", s)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" {
		return fmt.Sprintf("%q: the path must be /ns/<namespace>/sa/<service account>", s)
	}
	for _, p := range []string{parts[0], parts[2], parts[4]} {
		if p == "" || strings.ContainsAny(p, "%?#@: \t") {
			return fmt.Sprintf("%q: trust domain, namespace and service account must be non-empty and hold no %%, ?, #, @, : or spaces", s)
		}
	}
	return ""
}
