package sni

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshgate/meshgate/config"
)

// bridgeTestHost is the service of the cross-network table tests.
const bridgeTestHost = "pay.apps.svc.cluster.local"

// bridgeTestSet is a gateway with a PASSTHROUGH route pay.example.com →
// pay:8443 (subset from the route), a TCP route on 9000 → pay:8443, and
// an AUTO_PASSTHROUGH server that does not require a mesh ALPN; pay is a
// catalog-only service with a DestinationRule defining v1 and v2.
func bridgeTestSet(subset string, tp *networking.TrafficPolicy) *config.Set {
	gw := tableTestGW("istio-system/cross-network", map[string]string{"istio": "eastwestgateway"},
		tableTestServer(15443, "TLS", "AUTO_PASSTHROUGH", "*.local"),
		tableTestServer(443, "TLS", "PASSTHROUGH", "*.example.com", "*.local"),
		tableTestServer(9000, "TCP", "", "*"),
	)
	gw.Labels = map[string]string{LabelRequireMeshALPN: "false"}
	vs := tableTestVS("istio-system/pay", []string{"*.example.com"}, []string{"cross-network"})
	vs.Spec.Tls = []*networking.TLSRoute{tableTestTLS([]string{"pay.example.com"}, 0, tableTestDest(bridgeTestHost, 8443, subset, 0))}
	tcp := tableTestVS("istio-system/pay-tcp", []string{"*"}, []string{"cross-network"})
	tcp.Spec.Tcp = []*networking.TCPRoute{tableTestTCP(9000, tableTestDest(bridgeTestHost, 8443, subset, 0))}
	// Istio sidecars may name the service by its AUTO_PASSTHROUGH name
	// on the PASSTHROUGH port too.
	mesh := tableTestVS("istio-system/pay-mesh", []string{"*.local"}, []string{"cross-network"})
	mesh.Spec.Tls = []*networking.TLSRoute{tableTestTLS([]string{"outbound_.8443_.v1_." + bridgeTestHost}, 0, tableTestDest(bridgeTestHost, 8443, "v1", 0))}
	dr := tableTestDR("apps/pay", bridgeTestHost, tp,
		&networking.Subset{Name: "v1", Labels: map[string]string{"version": "v1"}},
		&networking.Subset{Name: "v2", Labels: map[string]string{"version": "v2"}})
	return &config.Set{Gateways: []*config.Gateway{gw}, VirtualServices: []*config.VirtualService{vs, tcp, mesh}, DestinationRules: []*config.DestinationRule{dr}}
}

// bridgeTestBuild builds for tableTestNode with the bridge on.
func bridgeTestBuild(t testing.TB, b *Builder, set *config.Set, eps ...CatalogEndpoint) *Table {
	t.Helper()
	node := tableTestNode
	node.Bridge = true
	tbl, err := b.Build(BuildInput{Config: set, Node: node, Endpoints: eps})
	if err != nil {
		t.Fatalf("Build() error = %v, want nil", err)
	}
	return tbl
}

// bridgeTestGW is one remote network's gateway.
type bridgeTestGW struct{ network, addr, bridge string }

// bridgeTestRemote emits what the agent's Endpoints() emits for remote
// endpoints: one gateway entry per endpoint and gateway of its network.
func bridgeTestRemote(gws []bridgeTestGW, eps ...Endpoint) []CatalogEndpoint {
	var out []CatalogEndpoint
	for _, e := range eps {
		for _, g := range gws {
			if g.network != e.Network {
				continue
			}
			x := e
			x.Addr, x.Bridge, x.Gateway = g.addr, g.bridge, true
			out = append(out, CatalogEndpoint{Host: bridgeTestHost, Port: 8443, Endpoint: x})
		}
	}
	return out
}

func bridgeTestEP(network, version, zone string, weight uint32) Endpoint {
	return Endpoint{Addr: "unused", Network: network, Weight: weight, Labels: map[string]string{"app": "pay", "version": version, "zone": zone}}
}

// bridgeTestGateways: net-b has two gateways (b2 without a bridge
// address), net-c one.
var bridgeTestGateways = []bridgeTestGW{
	{"net-b", "192.0.2.11:15443", "192.0.2.11:15008"},
	{"net-b", "192.0.2.12:15443", ""},
	{"net-c", "192.0.2.21:15443", "192.0.2.21:15008"},
}

// bridgeTestRemoteEPs: net-b has three v1 endpoints over two zones and
// one v2 (weight 2); net-c one v1 endpoint.
func bridgeTestRemoteEPs() []CatalogEndpoint {
	return bridgeTestRemote(bridgeTestGateways,
		bridgeTestEP("net-b", "v1", "z1", 0), bridgeTestEP("net-b", "v1", "z2", 0), bridgeTestEP("net-b", "v1", "z2", 0),
		bridgeTestEP("net-b", "v2", "z3", 2),
		bridgeTestEP("net-c", "v1", "z1", 0))
}

// bridgeTestShares picks n times from c (leases released at once) and
// counts the picked addresses.
func bridgeTestShares(t *testing.T, c *Cluster, n int, via tableVia) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := range n {
		l, err := c.pick(nil, via, "")
		if err != nil {
			t.Fatalf("pick #%d (%s) error = %v", i, via, err)
		}
		got[l.Endpoint().Addr]++
		l.Release()
	}
	return got
}

// TestTableGatewayWeights: a remote network weighs the summed weight of
// its endpoints that match the subset (every zone, Istio #56355), split
// evenly across the network's gateways; entries of one gateway merge.
func TestTableGatewayWeights(t *testing.T) {
	for _, tc := range []struct {
		name    string
		subset  string
		weights map[string]uint32 // per gateway, exact
		behind  map[string]uint64
	}{
		// net-b: v1 3, v2 2 → 5; net-c 1. lcm(2, 1) = 2.
		{"no subset", "", map[string]uint32{"192.0.2.11:15443": 5, "192.0.2.12:15443": 5, "192.0.2.21:15443": 2},
			map[string]uint64{"192.0.2.11:15443": 5, "192.0.2.12:15443": 5, "192.0.2.21:15443": 1}},
		// v1: net-b 3 (zones z1 and z2 both count), net-c 1.
		{"subset v1", "v1", map[string]uint32{"192.0.2.11:15443": 3, "192.0.2.12:15443": 3, "192.0.2.21:15443": 2},
			map[string]uint64{"192.0.2.11:15443": 3, "192.0.2.12:15443": 3, "192.0.2.21:15443": 1}},
		// v2: only net-b, weight 2.
		{"subset v2", "v2", map[string]uint32{"192.0.2.11:15443": 2, "192.0.2.12:15443": 2},
			map[string]uint64{"192.0.2.11:15443": 2, "192.0.2.12:15443": 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := tableTestBuilder(t)
			tbl := tableTestBuild(t, b, bridgeTestSet(tc.subset, nil), bridgeTestRemoteEPs()...)
			d, err := tbl.Resolve(tableTestPTKey, tableTestHello("pay.example.com"))
			if err != nil {
				t.Fatalf("Resolve(pay.example.com) error = %v", err)
			}
			got := map[string]uint32{}
			for _, e := range d.Cluster.Endpoints() {
				if _, dup := got[e.Addr]; dup || !e.Gateway {
					t.Fatalf("cluster endpoints %+v: want one gateway entry per gateway", d.Cluster.Endpoints())
				}
				got[e.Addr] = e.Weight
			}
			if !maps.Equal(got, tc.weights) {
				t.Fatalf("gateway weights = %v, want %v", got, tc.weights)
			}
			// The exact shares over one schedule period.
			var sum int
			for _, w := range tc.weights {
				sum += int(w)
			}
			shares := bridgeTestShares(t, d.Cluster, 3*sum, viaAny)
			for addr, w := range tc.weights {
				if shares[addr] != 3*int(w) {
					t.Fatalf("picks over %d = %v, want %d for %s (weights %v)", 3*sum, shares, 3*w, addr, tc.weights)
				}
			}
			ex := tbl.Explain("pay.example.com", nil)
			for _, x := range ex {
				if x.Listener != tableTestPTKey {
					continue
				}
				for _, e := range x.Destinations[0].Endpoints {
					if e.Behind != tc.behind[e.Addr] {
						t.Fatalf("explain endpoint %s behind = %d, want %d", e.Addr, e.Behind, tc.behind[e.Addr])
					}
				}
			}
		})
	}
}

// TestTableGatewayWeightsManyGateways: when the lcm of the gateway
// counts exceeds the exact bound, shares are rounded up and stay
// roughly proportional.
func TestTableGatewayWeightsManyGateways(t *testing.T) {
	var gws []bridgeTestGW
	var eps []Endpoint
	for i, n := range []int{5, 7, 11} { // lcm 385 > 64
		net := fmt.Sprintf("net-%d", i)
		for g := range n {
			gws = append(gws, bridgeTestGW{net, fmt.Sprintf("192.0.%d.%d:15443", i+10, g+1), fmt.Sprintf("192.0.%d.%d:15008", i+10, g+1)})
		}
		for range 10 * n {
			eps = append(eps, bridgeTestEP(net, "v1", "z", 0))
		}
	}
	b, _ := tableTestBuilder(t)
	tbl := tableTestBuild(t, b, bridgeTestSet("", nil), bridgeTestRemote(gws, eps...)...)
	c := tbl.clusterFor(bridgeTestHost, 8443, "")
	for _, e := range c.Endpoints() {
		if e.Weight != 10 {
			t.Fatalf("gateway %s weight = %d, want 10 (10·n endpoints over n gateways)", e.Addr, e.Weight)
		}
	}
}

// TestTablePriorityFailover: own-network endpoints first; remote
// gateways only once no local endpoint is healthy (ejected by outlier
// detection), and local again when the ejection ends.
func TestTablePriorityFailover(t *testing.T) {
	b, clk := tableTestBuilder(t)
	local := CatalogEndpoint{Host: bridgeTestHost, Port: 8443, Endpoint: Endpoint{Addr: "10.0.0.5:8443", Network: "net-a", Labels: map[string]string{"version": "v1"}}}
	eps := append(bridgeTestRemoteEPs(), local)
	tbl := tableTestBuild(t, b, bridgeTestSet("v1", outlierTestPolicy(2, 100, 0)), eps...)
	d, err := tbl.Resolve(tableTestPTKey, tableTestHello("pay.example.com"))
	if err != nil {
		t.Fatalf("Resolve error = %v", err)
	}
	c := d.Cluster
	for via := range []tableVia{viaAny, viaBridge, viaLocal} {
		if got := bridgeTestShares(t, c, 20, tableVia(via)); !maps.Equal(got, map[string]int{"10.0.0.5:8443": 20}) {
			t.Fatalf("picks with a healthy local endpoint (%s) = %v, want only the local one", tableVia(via), got)
		}
	}
	for range 2 {
		l, err := c.pick(nil, viaBridge, "")
		if err != nil || l.Endpoint().Addr != "10.0.0.5:8443" {
			t.Fatalf("pick = %v, %v; want the local endpoint", l, err)
		}
		l.Dialed(errOutlierTest)
		l.Release()
	}
	// Local ejected: the bridge reaches net-b through its one gateway
	// with a bridge address (the other has none), net-c through its own,
	// by the networks' weights 3:1.
	if got := bridgeTestShares(t, c, 12, viaBridge); !maps.Equal(got, map[string]int{"192.0.2.11:15443": 9, "192.0.2.21:15443": 3}) {
		t.Fatalf("picks over the bridge with the local endpoint ejected = %v, want 192.0.2.11 ×9 and 192.0.2.21 ×3", got)
	}
	if got := bridgeTestShares(t, c, 8, viaAny); !maps.Equal(got, map[string]int{"192.0.2.11:15443": 3, "192.0.2.12:15443": 3, "192.0.2.21:15443": 2}) {
		t.Fatalf("split-horizon picks with the local endpoint ejected = %v, want 3:3:2", got)
	}
	_, err = c.pick(nil, viaLocal, "")
	tableTestRefusal(t, "pick(viaLocal) with the local endpoint ejected", err, ReasonNoEndpoint, "not eligible for this connection: this node has no bridge")
	clk.Advance(31 * time.Second)
	if got := bridgeTestShares(t, c, 5, viaBridge); !maps.Equal(got, map[string]int{"10.0.0.5:8443": 5}) {
		t.Fatalf("picks after the ejection ended = %v, want the local endpoint again", got)
	}
}

// TestTableBridgeRetryNextGateway: after a connect failure on a remote
// gateway, the retry goes to another gateway of the same network before
// any other network; the failed one is not tried again.
func TestTableBridgeRetryNextGateway(t *testing.T) {
	gws := []bridgeTestGW{
		{"net-b", "192.0.2.11:15443", "192.0.2.11:15008"},
		{"net-b", "192.0.2.12:15443", "192.0.2.12:15008"},
		{"net-c", "192.0.2.21:15443", "192.0.2.21:15008"},
	}
	eps := bridgeTestRemote(gws, bridgeTestEP("net-b", "v1", "z1", 0), bridgeTestEP("net-c", "v1", "z1", 5))
	b, _ := tableTestBuilder(t)
	tbl := tableTestBuild(t, b, bridgeTestSet("", nil), eps...)
	c := tbl.clusterFor(bridgeTestHost, 8443, "")
	for i := range 20 {
		first, err := c.pick(nil, viaBridge, "")
		if err != nil {
			t.Fatalf("pick #%d error = %v", i, err)
		}
		fe := first.Endpoint()
		first.Release()
		next, err := c.pick([]string{fe.Addr}, viaBridge, fe.Network)
		if err != nil {
			t.Fatalf("retry after %s error = %v", fe.Addr, err)
		}
		ne := next.Endpoint()
		next.Release()
		if ne.Addr == fe.Addr {
			t.Fatalf("retry after a failure on %s picked it again", fe.Addr)
		}
		if fe.Network == "net-b" && ne.Network != "net-b" {
			t.Fatalf("retry after a failure on net-b gateway %s went to %s (%s), want net-b's other gateway", fe.Addr, ne.Addr, ne.Network)
		}
	}
}

// TestTableGatewayGone: a gateway that gossip stops listing is gone from
// the next table; its network is reached through the others.
func TestTableGatewayGone(t *testing.T) {
	b, _ := tableTestBuilder(t)
	ep := bridgeTestEP("net-b", "v1", "z1", 0)
	tbl := tableTestBuild(t, b, bridgeTestSet("", nil), bridgeTestRemote(bridgeTestGateways[:2], ep)...)
	if n := len(tbl.clusterFor(bridgeTestHost, 8443, "").Endpoints()); n != 2 {
		t.Fatalf("endpoints with two gateways = %d, want 2", n)
	}
	tbl = tableTestBuild(t, b, bridgeTestSet("", nil), bridgeTestRemote(bridgeTestGateways[1:2], ep)...)
	got := tbl.clusterFor(bridgeTestHost, 8443, "").Endpoints()
	if len(got) != 1 || got[0].Addr != "192.0.2.12:15443" {
		t.Fatalf("endpoints after the first gateway died = %+v, want only 192.0.2.12:15443", got)
	}
}

// TestTableAutoPassthroughNetworks: on an AUTO_PASSTHROUGH server that
// does not require a mesh ALPN, a client without one may be carried to
// other networks (through the bridge); one with a mesh ALPN is an Istio
// sidecar that did split horizon itself, and gets only local endpoints.
func TestTableAutoPassthroughNetworks(t *testing.T) {
	b, _ := tableTestBuilder(t)
	tbl := tableTestBuild(t, b, bridgeTestSet("", nil), bridgeTestRemoteEPs()...)
	name := "outbound_.8443_.v1_." + bridgeTestHost
	d, err := tbl.Resolve(tableTestAutoKey, tableTestHello(name, "h2"))
	if err != nil {
		t.Fatalf("Resolve(%s, h2) error = %v", name, err)
	}
	if got := bridgeTestShares(t, d.Cluster, 5, viaBridge); got["192.0.2.11:15443"]+got["192.0.2.21:15443"] != 5 {
		t.Fatalf("AUTO_PASSTHROUGH without a mesh ALPN picks = %v, want bridged gateways", got)
	}
	d, err = tbl.Resolve(tableTestAutoKey, tableTestHello(name, tableTestMeshALPN...))
	if err != nil {
		t.Fatalf("Resolve(%s, mesh ALPN) error = %v", name, err)
	}
	_, err = d.Cluster.Pick(nil)
	tableTestRefusal(t, "AUTO_PASSTHROUGH with a mesh ALPN, remote endpoints only", err, ReasonNoEndpoint, "no endpoints in this node's network")
}

// TestTableResolveBridge: the receiving side resolves only services
// exported to the bridge namespace, with this network's endpoints only.
func TestTableResolveBridge(t *testing.T) {
	set := bridgeTestSet("", nil)
	set.ServiceEntries = []*config.ServiceEntry{
		tableTestSE("apps/pay", true, []string{bridgeTestHost}, []*networking.ServicePort{tableTestPort(8443, "tls")},
			tableTestWE("10.0.0.5", map[string]string{"version": "v1"}),
			&networking.WorkloadEntry{Address: "10.9.0.5", Network: "net-b", Labels: map[string]string{"version": "v1"}}),
		tableTestSE("apps/private", true, []string{"private.apps.svc.cluster.local"}, []*networking.ServicePort{tableTestPort(443, "tls")},
			tableTestWE("10.0.0.6", nil)),
		tableTestSE("apps/ext", false, []string{"api.example.com"}, []*networking.ServicePort{tableTestPort(443, "tls")}, tableTestWE("192.0.2.9", nil)),
		tableTestSE("apps/udp", true, []string{"dns.apps.svc.cluster.local"}, []*networking.ServicePort{{Number: 53, Name: "dns", Protocol: "UDP"}}, tableTestWE("10.0.0.7", nil)),
	}
	set.ServiceEntries[1].Spec.ExportTo = []string{"."}
	hidden := tableTestDR("apps/pay-hidden", "private.apps.svc.cluster.local", nil, &networking.Subset{Name: "v9", Labels: map[string]string{"version": "v9"}})
	hidden.Spec.ExportTo = []string{"."}
	set.DestinationRules = append(set.DestinationRules, hidden)
	b, _ := tableTestBuilder(t)
	_, err := tableTestBuild(t, b, set).ResolveBridge(bridgeTestHost, 8443, "v1")
	tableTestRefusal(t, "ResolveBridge on a table built without NodeInfo.Bridge", err, ReasonNoRoute, "without NodeInfo.Bridge")
	tbl := bridgeTestBuild(t, b, set)

	d, err := tbl.ResolveBridge(bridgeTestHost, 8443, "v1")
	if err != nil {
		t.Fatalf("ResolveBridge(pay, 8443, v1) error = %v", err)
	}
	if d.Mode != ModeBridge || d.Service() != bridgeTestHost || d.Subset() != "v1" {
		t.Fatalf("ResolveBridge decision = %+v, want mode BRIDGE for pay v1", d)
	}
	for i := range 10 {
		l, err := d.Cluster.Pick(nil)
		if err != nil || l.Endpoint().Addr != "10.0.0.5:8443" {
			t.Fatalf("bridge Pick #%d = %v, %v; want only the local endpoint 10.0.0.5:8443", i, l, err)
		}
		l.Release()
	}
	if d2, err := tbl.ResolveBridge(strings.ToUpper(bridgeTestHost)+".", 8443, ""); err != nil || d2.Service() != bridgeTestHost {
		t.Fatalf("ResolveBridge(upper case, trailing dot) = %v, %v; want pay", d2, err)
	}

	for _, tc := range []struct {
		name    string
		service string
		port    uint32
		subset  string
		reason  Reason
		detail  string
	}{
		{"unknown service", "nope.apps.svc.cluster.local", 8443, "", ReasonUnknownService, "unknown service"},
		{"IPv4 literal", "10.0.0.5", 8443, "", ReasonUnknownService, "is an IP address"},
		{"IPv6 literal", "[::1]", 8443, "", ReasonUnknownService, "is an IP address"},
		{"localhost", "localhost", 8443, "", ReasonUnknownService, "unknown service"},
		{"empty", "", 8443, "", ReasonUnknownService, "empty name"},
		{"not a host name", "pay/../etc", 8443, "", ReasonUnknownService, "service"},
		{"host:port", bridgeTestHost + ":8443", 8443, "", ReasonUnknownService, "service"},
		{"huge name", strings.Repeat("a", 300), 8443, "", ReasonUnknownService, "service"},
		{"port the service lacks", bridgeTestHost, 9999, "", ReasonUnknownPort, "has no port 9999"},
		{"port zero", bridgeTestHost, 0, "", ReasonUnknownPort, "has no port 0"},
		{"UDP port", "dns.apps.svc.cluster.local", 53, "", ReasonUnknownPort, "UDP"},
		{"unknown subset", bridgeTestHost, 8443, "v3", ReasonUnknownSubset, "not defined in DestinationRule"},
		{"subset of a service without rule", "nope.apps.svc.cluster.local", 8443, "v1", ReasonUnknownService, ""},
		{"unexported service", "private.apps.svc.cluster.local", 443, "", ReasonNotExported, "not exported to the bridge namespace istio-system"},
		{"MESH_EXTERNAL service", "api.example.com", 443, "", ReasonNotExported, "MESH_EXTERNAL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tbl.ResolveBridge(tc.service, tc.port, tc.subset)
			tableTestRefusal(t, fmt.Sprintf("ResolveBridge(%q, %d, %q)", tc.service, tc.port, tc.subset), err, tc.reason, tc.detail)
			var r interface{ RefusalReason() string }
			if !errors.As(err, &r) || r.RefusalReason() != string(tc.reason) {
				t.Fatalf("errors.As(RefusalReason) on %v = %v, want %s", err, r, tc.reason)
			}
		})
	}

	// Another bridge namespace sees the service exported only to apps.
	node := tableTestNode
	node.Bridge, node.BridgeNamespace = true, "apps"
	tbl2, err := b.Build(BuildInput{Config: set, Node: node})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tbl2.ResolveBridge("private.apps.svc.cluster.local", 443, ""); err != nil {
		t.Fatalf("ResolveBridge(private) with BridgeNamespace apps error = %v, want served", err)
	}
	_, err = tbl.ResolveBridge("private.apps.svc.cluster.local", 443, "v9")
	tableTestRefusal(t, "ResolveBridge(private, v9)", err, ReasonNotExported, "")
}

// TestExplainPaths: explain says which path a name takes and why.
func TestExplainPaths(t *testing.T) {
	b, clk := tableTestBuilder(t)
	_ = clk
	local := CatalogEndpoint{Host: bridgeTestHost, Port: 8443, Endpoint: Endpoint{Addr: "10.0.0.5:8443", Network: "net-a", Labels: map[string]string{"version": "v1"}}}
	build := func(bridge bool, eps ...CatalogEndpoint) *Table {
		node := tableTestNode
		node.Bridge = bridge
		tbl, err := b.Build(BuildInput{Config: bridgeTestSet("v1", nil), Node: node, Endpoints: eps})
		if err != nil {
			t.Fatal(err)
		}
		return tbl
	}
	dest := func(tbl *Table, listener, sni string, alpn ...string) ExplainedDestination {
		t.Helper()
		for _, x := range tbl.Explain(sni, alpn) {
			if x.Listener == listener {
				if len(x.Destinations) != 1 {
					t.Fatalf("Explain(%q) on %s = %+v, want one destination", sni, listener, x)
				}
				return x.Destinations[0]
			}
		}
		t.Fatalf("Explain(%q): no listener %s", sni, listener)
		return ExplainedDestination{}
	}
	auto := "outbound_.8443_.v1_." + bridgeTestHost
	remote := bridgeTestRemoteEPs()
	for _, tc := range []struct {
		name     string
		tbl      *Table
		listener string
		sni      string
		alpn     []string
		path     string
		why      string
		epPaths  map[string]string
	}{
		{"local first", build(true, append(slices.Clone(remote), local)...), tableTestPTKey, "pay.example.com", nil,
			"local endpoint", "own network first: 1 healthy endpoints", map[string]string{"10.0.0.5:8443": "local", "192.0.2.11:15443": "bridge via 192.0.2.11:15008"}},
		{"passthrough over the bridge", build(true, remote...), tableTestPTKey, "pay.example.com", nil,
			"bridge via 192.0.2.11:15008, 192.0.2.21:15008", "reached through the bridge tunnel",
			map[string]string{"192.0.2.12:15443": "not eligible: the gateway publishes no bridge address (bridge_addr)", "192.0.2.21:15443": "bridge via 192.0.2.21:15008"}},
		{"tcp over the bridge", build(true, remote...), tableTestTCPKey, "", nil,
			"bridge via 192.0.2.11:15008, 192.0.2.21:15008", "through the bridge tunnel", nil},
		{"no bridge on this node", build(false, remote...), tableTestPTKey, "pay.example.com", nil,
			"none", "this node has no bridge", map[string]string{"192.0.2.11:15443": "not eligible: this node has no bridge, and the connection is not split-horizon traffic (AUTO_PASSTHROUGH name with an Istio mesh ALPN)"}},
		{"auto name without mesh ALPN", build(true, remote...), tableTestAutoKey, auto, []string{"h2"},
			"bridge via 192.0.2.11:15008, 192.0.2.21:15008", "through the bridge tunnel", nil},
		{"auto name with mesh ALPN stays local", build(true, remote...), tableTestAutoKey, auto, tableTestMeshALPN,
			"none", "never forwards to another gateway", nil},
		{"plain TCP listener peeks no hello: bridge", build(true, remote...), tableTestTCPKey, auto, tableTestMeshALPN,
			"bridge via 192.0.2.11:15008, 192.0.2.21:15008", "through the bridge tunnel", nil},
		{"split horizon for a mesh client on a passthrough route", build(false, remote...), tableTestPTKey, auto, tableTestMeshALPN,
			"split horizon via 192.0.2.11:15443, 192.0.2.12:15443, 192.0.2.21:15443", "split horizon, as Istio",
			map[string]string{"192.0.2.12:15443": "split horizon via 192.0.2.12:15443"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := dest(tc.tbl, tc.listener, tc.sni, tc.alpn...)
			if d.Path != tc.path || !strings.Contains(d.PathWhy, tc.why) {
				t.Fatalf("Explain(%q, %v) path = %q (%s), want %q containing %q", tc.sni, tc.alpn, d.Path, d.PathWhy, tc.path, tc.why)
			}
			for addr, want := range tc.epPaths {
				found := false
				for _, e := range d.Endpoints {
					if e.Addr == addr {
						found = true
						if e.Path != want {
							t.Fatalf("endpoint %s path = %q, want %q", addr, e.Path, want)
						}
					}
				}
				if !found {
					t.Fatalf("explain endpoints %+v: no %s", d.Endpoints, addr)
				}
			}
		})
	}
}

// TestTableBridgePickAllocs: picking over the bridge pool allocates only
// the Lease, as Pick does.
func TestTableBridgePickAllocs(t *testing.T) {
	b, _ := tableTestBuilder(t)
	tbl := bridgeTestBuild(t, b, bridgeTestSet("v1", nil), bridgeTestRemoteEPs()...)
	c := tbl.clusterFor(bridgeTestHost, 8443, "v1")
	if n := testing.AllocsPerRun(100, func() {
		l, err := c.pick(nil, viaBridge, "net-b")
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
	}); n > 1 {
		t.Fatalf("pick(viaBridge) allocs = %v, want at most 1 (the Lease)", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = tbl.ResolveBridge(bridgeTestHost, 8443, "v1") }); n != 0 {
		t.Fatalf("ResolveBridge allocs = %v, want 0", n)
	}
}

// FuzzResolveBridge feeds arbitrary names, ports and subsets to the
// receiving side's resolver: it must never panic, and whatever it accepts
// must be a service, port and subset the table exports to the bridge,
// with endpoints of this network only.
func FuzzResolveBridge(f *testing.F) {
	for _, s := range []struct {
		svc    string
		port   uint32
		subset string
	}{
		{bridgeTestHost, 8443, "v1"}, {bridgeTestHost, 8443, ""}, {strings.ToUpper(bridgeTestHost) + ".", 8443, "v2"},
		{"10.0.0.5", 8443, ""}, {"[::1]", 8443, ""}, {"localhost", 0, ""}, {bridgeTestHost, 9999, "v3"},
		{"private.apps.svc.cluster.local", 443, ""}, {"", 0, ""}, {strings.Repeat("a.", 200), 1, "x"},
	} {
		f.Add(s.svc, s.port, s.subset)
	}
	b, _ := tableTestBuilder(f)
	local := CatalogEndpoint{Host: bridgeTestHost, Port: 8443, Endpoint: Endpoint{Addr: "10.0.0.5:8443", Network: "net-a", Labels: map[string]string{"version": "v1"}}}
	tbl := bridgeTestBuild(f, b, bridgeTestSet("", nil), append(bridgeTestRemoteEPs(), local)...)
	f.Fuzz(func(t *testing.T, svc string, port uint32, subset string) {
		d, err := tbl.ResolveBridge(svc, port, subset)
		if err != nil {
			var re *RefusedError
			if !errors.As(err, &re) || re.Reason == "" {
				t.Fatalf("ResolveBridge(%q, %d, %q) error %v is not a *RefusedError with a reason", svc, port, subset, err)
			}
			return
		}
		n, perr := ParseName(svc)
		if perr != nil || string(n) != bridgeTestHost || port != 8443 || (subset != "" && subset != "v1" && subset != "v2") {
			t.Fatalf("ResolveBridge(%q, %d, %q) = %+v, want a refusal", svc, port, subset, d)
		}
		for _, e := range d.Cluster.Endpoints() {
			if e.Network != "" || e.Gateway {
				t.Fatalf("ResolveBridge(%q) cluster holds %+v, want only this network's endpoints", svc, e)
			}
		}
	})
}

// BenchmarkBuildBridge is BenchmarkBuild for a node that runs the bridge
// (NodeInfo.Bridge: the receiving side's index is built too); compare the
// two in one run.
func BenchmarkBuildBridge(b *testing.B) {
	for _, n := range []int{100, 100_000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			in, _ := tableBenchInput(n)
			in.Node.Bridge = true
			builder := NewBuilder(DefaultBuilderConfig())
			if _, err := builder.Build(in); err != nil {
				b.Fatalf("Build() error = %v", err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := builder.Build(in); err != nil {
					b.Fatalf("Build() error = %v", err)
				}
			}
		})
	}
}
