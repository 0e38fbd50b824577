package sni

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshgate/meshgate/config"
)

// ---- test helpers (prefixed: other files of the package have theirs) ----

var tableTestNode = NodeInfo{Name: "gw-a", Network: "net-a", Labels: map[string]string{"istio": "eastwestgateway", "zone": "z1"}}

// tableTestClock is an injected clock for outlier detection.
type tableTestClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *tableTestClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *tableTestClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// tableTestRand is a deterministic, concurrency-safe random source.
func tableTestRand(seed uint64) func() uint64 {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func() uint64 {
		mu.Lock()
		defer mu.Unlock()
		return r.Uint64()
	}
}

func tableTestBuilder(t testing.TB, mod ...func(*BuilderConfig)) (*Builder, *tableTestClock) {
	t.Helper()
	clk := &tableTestClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg := DefaultBuilderConfig()
	cfg.Now = clk.Now
	cfg.Rand = tableTestRand(1)
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	for _, m := range mod {
		m(&cfg)
	}
	return NewBuilder(cfg), clk
}

func tableTestBuild(t testing.TB, b *Builder, set *config.Set, eps ...CatalogEndpoint) *Table {
	t.Helper()
	tbl, err := b.Build(BuildInput{Config: set, Node: tableTestNode, Endpoints: eps})
	if err != nil {
		t.Fatalf("Build() error = %v, want nil", err)
	}
	return tbl
}

func tableTestMeta(nsName string) config.Meta {
	ns, name, ok := strings.Cut(nsName, "/")
	if !ok {
		return config.Meta{Namespace: "default", Name: nsName}
	}
	return config.Meta{Namespace: ns, Name: name}
}

func tableTestGW(nsName string, selector map[string]string, servers ...*networking.Server) *config.Gateway {
	return &config.Gateway{Meta: tableTestMeta(nsName), Spec: &networking.Gateway{Selector: selector, Servers: servers}}
}

// tableTestServer makes a Gateway server; mode "" means no tls block.
func tableTestServer(port uint32, proto, mode string, hosts ...string) *networking.Server {
	s := &networking.Server{Port: &networking.Port{Number: port, Protocol: proto, Name: fmt.Sprintf("%s-%d", strings.ToLower(proto), port)}, Hosts: hosts}
	if mode != "" {
		s.Tls = &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_TLSmode(networking.ServerTLSSettings_TLSmode_value[mode])}
	}
	return s
}

func tableTestPort(n uint32, name string) *networking.ServicePort {
	return &networking.ServicePort{Number: n, Name: name, Protocol: "TLS"}
}

func tableTestWE(addr string, labels map[string]string) *networking.WorkloadEntry {
	return &networking.WorkloadEntry{Address: addr, Labels: labels}
}

func tableTestSE(nsName string, internal bool, hosts []string, ports []*networking.ServicePort, eps ...*networking.WorkloadEntry) *config.ServiceEntry {
	loc := networking.ServiceEntry_MESH_EXTERNAL
	if internal {
		loc = networking.ServiceEntry_MESH_INTERNAL
	}
	return &config.ServiceEntry{Meta: tableTestMeta(nsName), Spec: &networking.ServiceEntry{
		Hosts: hosts, Ports: ports, Location: loc, Resolution: networking.ServiceEntry_STATIC, Endpoints: eps}}
}

func tableTestVS(nsName string, hosts, gateways []string) *config.VirtualService {
	return &config.VirtualService{Meta: tableTestMeta(nsName), Spec: &networking.VirtualService{Hosts: hosts, Gateways: gateways}}
}

func tableTestTLS(sniHosts []string, port uint32, dests ...*networking.RouteDestination) *networking.TLSRoute {
	return &networking.TLSRoute{Match: []*networking.TLSMatchAttributes{{SniHosts: sniHosts, Port: port}}, Route: dests}
}

func tableTestTCP(port uint32, dests ...*networking.RouteDestination) *networking.TCPRoute {
	r := &networking.TCPRoute{Route: dests}
	if port != 0 {
		r.Match = []*networking.L4MatchAttributes{{Port: port}}
	}
	return r
}

func tableTestDest(host string, port uint32, subset string, weight int32) *networking.RouteDestination {
	d := &networking.RouteDestination{Destination: &networking.Destination{Host: host, Subset: subset}, Weight: weight}
	if port != 0 {
		d.Destination.Port = &networking.PortSelector{Number: port}
	}
	return d
}

func tableTestDR(nsName, host string, tp *networking.TrafficPolicy, subsets ...*networking.Subset) *config.DestinationRule {
	return &config.DestinationRule{Meta: tableTestMeta(nsName), Spec: &networking.DestinationRule{Host: host, TrafficPolicy: tp, Subsets: subsets}}
}

func tableTestHello(sni string, alpn ...string) *Hello { return &Hello{ServerName: sni, ALPN: alpn} }

// tableTestRefusal asserts err is a *RefusedError with reason want.
func tableTestRefusal(t *testing.T, call string, err error, want Reason, detail string) {
	t.Helper()
	var re *RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("%s error = %v, want *RefusedError(%s)", call, err, want)
	}
	if re.Reason != want {
		t.Fatalf("%s reason = %s (%s), want %s", call, re.Reason, re.Detail, want)
	}
	if detail != "" && !strings.Contains(re.Detail, detail) {
		t.Fatalf("%s detail = %q, want it to contain %q", call, re.Detail, detail)
	}
}

// tableTestMesh is a small mesh: an AUTO_PASSTHROUGH server on 15443 for
// *.local, a PASSTHROUGH server on 443 and a TCP server on 9000.
func tableTestMesh() *config.Set {
	reviews := tableTestSE("default/reviews", true, []string{"reviews.default.svc.cluster.local"},
		[]*networking.ServicePort{tableTestPort(9080, "http"), tableTestPort(9443, "tls")},
		tableTestWE("10.0.0.1", map[string]string{"app": "reviews", "version": "v1"}),
		tableTestWE("10.0.0.2", map[string]string{"app": "reviews", "version": "v2"}),
		&networking.WorkloadEntry{Address: "10.9.0.1", Network: "net-b", Labels: map[string]string{"app": "reviews", "version": "v1"}},
	)
	ext := tableTestSE("default/ext", false, []string{"api.example.com"}, []*networking.ServicePort{tableTestPort(443, "tls")},
		tableTestWE("192.0.2.10", nil))
	web := tableTestSE("web/web", true, []string{"web.web.svc.cluster.local"}, []*networking.ServicePort{tableTestPort(8443, "tls")},
		tableTestWE("10.1.0.1", map[string]string{"app": "web"}), tableTestWE("10.1.0.2", map[string]string{"app": "web"}))
	db := tableTestSE("data/db", true, []string{"db.data.svc.cluster.local"}, []*networking.ServicePort{tableTestPort(5432, "tcp")},
		tableTestWE("10.2.0.1", nil))
	dr := tableTestDR("default/reviews", "reviews", nil,
		&networking.Subset{Name: "v1", Labels: map[string]string{"version": "v1"}},
		&networking.Subset{Name: "v2", Labels: map[string]string{"version": "v2"}})
	gw := tableTestGW("istio-system/cross-network", map[string]string{"istio": "eastwestgateway"},
		tableTestServer(15443, "TLS", "AUTO_PASSTHROUGH", "*.local"),
		tableTestServer(443, "TLS", "PASSTHROUGH", "*.example.com", "web/*.web.svc.cluster.local"),
		tableTestServer(9000, "TCP", "", "*"),
	)
	vsWeb := tableTestVS("web/web", []string{"web.web.svc.cluster.local"}, []string{"istio-system/cross-network"})
	vsWeb.Spec.Tls = []*networking.TLSRoute{tableTestTLS([]string{"web.web.svc.cluster.local"}, 443, tableTestDest("web", 8443, "", 0))}
	vsExt := tableTestVS("istio-system/ext", []string{"*.example.com"}, []string{"cross-network"})
	vsExt.Spec.Tls = []*networking.TLSRoute{tableTestTLS([]string{"api.example.com"}, 0, tableTestDest("api.example.com", 443, "", 0))}
	vsDB := tableTestVS("istio-system/db", []string{"*"}, []string{"cross-network"})
	vsDB.Spec.Tcp = []*networking.TCPRoute{tableTestTCP(9000, tableTestDest("db.data.svc.cluster.local", 5432, "", 0))}
	return &config.Set{
		Gateways:         []*config.Gateway{gw},
		VirtualServices:  []*config.VirtualService{vsWeb, vsExt, vsDB},
		DestinationRules: []*config.DestinationRule{dr},
		ServiceEntries:   []*config.ServiceEntry{reviews, ext, web, db},
	}
}

var (
	tableTestMeshALPN = []string{"istio-peer-exchange", "istio"}
	tableTestAutoKey  = "tcp/0.0.0.0:15443"
	tableTestPTKey    = "tcp/0.0.0.0:443"
	tableTestTCPKey   = "tcp/0.0.0.0:9000"
)

// ---- tests ----

func TestTableListeners(t *testing.T) {
	for _, tc := range []struct {
		name    string
		bind    string // BuilderConfig.DefaultBind
		servers []*networking.Server
		want    []ListenerSpec
		warn    string
	}{
		{name: "default bind", servers: []*networking.Server{tableTestServer(15443, "TLS", "AUTO_PASSTHROUGH", "*.local")},
			want: []ListenerSpec{{Key: "tcp/0.0.0.0:15443", Network: "tcp", Address: "0.0.0.0:15443", NeedsHello: true}}},
		{name: "loopback default", bind: "127.0.0.1", servers: []*networking.Server{tableTestServer(15443, "TLS", "AUTO_PASSTHROUGH", "*.local")},
			want: []ListenerSpec{{Key: "tcp/127.0.0.1:15443", Network: "tcp", Address: "127.0.0.1:15443", NeedsHello: true}}},
		{name: "explicit ipv6 bind", servers: []*networking.Server{func() *networking.Server {
			s := tableTestServer(443, "TLS", "PASSTHROUGH", "*")
			s.Bind = "::1"
			return s
		}()}, want: []ListenerSpec{{Key: "tcp/[::1]:443", Network: "tcp", Address: "[::1]:443", NeedsHello: true}}},
		{name: "unix path and abstract", servers: []*networking.Server{func() *networking.Server {
			s := tableTestServer(0, "TCP", "", "*")
			s.Bind = "unix:///run/mg.sock"
			return s
		}(), func() *networking.Server {
			s := tableTestServer(0, "TLS", "PASSTHROUGH", "*")
			s.Bind = "unix://@mg"
			return s
		}()}, want: []ListenerSpec{
			{Key: "unix//run/mg.sock", Network: "unix", Address: "/run/mg.sock"},
			{Key: "unix/@mg", Network: "unix", Address: "@mg", NeedsHello: true},
		}},
		{name: "short unix path and abstract forms", servers: []*networking.Server{func() *networking.Server {
			s := tableTestServer(0, "TCP", "", "*")
			s.Bind = "/run/mg.sock"
			return s
		}(), func() *networking.Server {
			s := tableTestServer(0, "TLS", "PASSTHROUGH", "*")
			s.Bind = "@mg"
			return s
		}()}, want: []ListenerSpec{
			{Key: "unix//run/mg.sock", Network: "unix", Address: "/run/mg.sock"},
			{Key: "unix/@mg", Network: "unix", Address: "@mg", NeedsHello: true},
		}},
		{name: "tcp and tls share a port", servers: []*networking.Server{tableTestServer(9000, "TCP", "", "*"), tableTestServer(9000, "TLS", "PASSTHROUGH", "*")},
			want: []ListenerSpec{{Key: "tcp/0.0.0.0:9000", Network: "tcp", Address: "0.0.0.0:9000", NeedsHello: true}}},
		{name: "plain tcp needs no hello", servers: []*networking.Server{tableTestServer(9000, "TCP", "", "*")},
			want: []ListenerSpec{{Key: "tcp/0.0.0.0:9000", Network: "tcp", Address: "0.0.0.0:9000"}}},
		{name: "hostile bind", servers: []*networking.Server{func() *networking.Server {
			s := tableTestServer(443, "TLS", "PASSTHROUGH", "*")
			s.Bind = "example.com"
			return s
		}()}, warn: "not an IP address"},
		{name: "relative unix path", servers: []*networking.Server{func() *networking.Server {
			s := tableTestServer(443, "TLS", "PASSTHROUGH", "*")
			s.Bind = "unix://relative.sock"
			return s
		}()}, warn: "unix:///absolute/path"},
		{name: "port out of range", servers: []*networking.Server{tableTestServer(70000, "TLS", "PASSTHROUGH", "*")}, warn: "out of range"},
		{name: "http server skipped", servers: []*networking.Server{tableTestServer(80, "HTTP", "", "*")}, warn: "not routed by SNI or TCP"},
		{name: "terminated https skipped", servers: []*networking.Server{tableTestServer(443, "HTTPS", "SIMPLE", "*")}, warn: "not routed by SNI or TCP"},
		{name: "no port", servers: []*networking.Server{{Hosts: []string{"*"}}}, warn: "no port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := tableTestBuilder(t, func(c *BuilderConfig) { c.DefaultBind = tc.bind })
			tbl := tableTestBuild(t, b, &config.Set{Gateways: []*config.Gateway{tableTestGW("istio-system/gw", nil, tc.servers...)}})
			got := tbl.Listeners()
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("Listeners() = %+v, want %+v", got, tc.want)
			}
			if tc.warn != "" && !strings.Contains(strings.Join(tbl.Warnings(), "\n"), tc.warn) {
				t.Fatalf("Warnings() = %q, want one containing %q", tbl.Warnings(), tc.warn)
			}
		})
	}
}

func TestTableSelector(t *testing.T) {
	for _, tc := range []struct {
		name     string
		selector map[string]string
		want     int
	}{
		{"empty selector applies everywhere", nil, 1},
		{"subset of node labels", map[string]string{"istio": "eastwestgateway"}, 1},
		{"all node labels", map[string]string{"istio": "eastwestgateway", "zone": "z1"}, 1},
		{"other value", map[string]string{"istio": "ingressgateway"}, 0},
		{"extra key", map[string]string{"istio": "eastwestgateway", "app": "x"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := tableTestBuilder(t)
			set := &config.Set{Gateways: []*config.Gateway{tableTestGW("istio-system/gw", tc.selector, tableTestServer(15443, "TLS", "AUTO_PASSTHROUGH", "*.local"))}}
			if got := len(tableTestBuild(t, b, set).Listeners()); got != tc.want {
				t.Fatalf("selector %v on node labels %v: %d listeners, want %d", tc.selector, tableTestNode.Labels, got, tc.want)
			}
		})
	}
}

func TestTablePassthroughPrecedence(t *testing.T) {
	svc := func(name string) *config.ServiceEntry {
		return tableTestSE("default/"+name, false, []string{name + ".svc"}, []*networking.ServicePort{tableTestPort(443, "tls")}, tableTestWE("192.0.2.1", nil))
	}
	routes := map[string]string{
		"a.example.com":   "exact",
		"*.example.com":   "wild",
		"*.b.example.com": "longwild",
		"*":               "any",
	}
	build := func(t *testing.T, withAny bool) *Table {
		vs := tableTestVS("default/vs", []string{"*"}, []string{"istio-system/gw"})
		for _, sni := range []string{"a.example.com", "*.example.com", "*.b.example.com", "*"} {
			if sni == "*" && !withAny {
				continue
			}
			vs.Spec.Tls = append(vs.Spec.Tls, tableTestTLS([]string{sni}, 0, tableTestDest(routes[sni]+".svc", 443, "", 0)))
		}
		set := &config.Set{
			Gateways:        []*config.Gateway{tableTestGW("istio-system/gw", nil, tableTestServer(443, "TLS", "PASSTHROUGH", "*"))},
			VirtualServices: []*config.VirtualService{vs},
			ServiceEntries:  []*config.ServiceEntry{svc("exact"), svc("wild"), svc("longwild"), svc("any")},
		}
		b, _ := tableTestBuilder(t)
		return tableTestBuild(t, b, set)
	}
	for _, tc := range []struct {
		name    string
		sni     string
		withAny bool
		want    string // service, "" = refused
	}{
		{"exact beats wildcards", "a.example.com", true, "exact.svc"},
		{"longest wildcard", "x.b.example.com", true, "longwild.svc"},
		{"deeper name, longest wildcard", "y.x.b.example.com", true, "longwild.svc"},
		{"shorter wildcard", "x.example.com", true, "wild.svc"},
		{"wildcard covers its first label", "b.example.com", true, "wild.svc"},
		{"wildcard never matches its suffix", "example.com", true, "any.svc"},
		{"star last", "other.org", true, "any.svc"},
		{"no star: refused", "other.org", false, ""},
		{"no star: bare suffix refused", "example.com", false, ""},
		{"auto-looking name without auto server", "outbound_.443_._.exact.svc", false, ""},
		{"hostile: dotted tail", "a.example.com.evil.org", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl := build(t, tc.withAny)
			d, err := tbl.Resolve(tableTestPTKey, tableTestHello(tc.sni))
			if tc.want == "" {
				tableTestRefusal(t, fmt.Sprintf("Resolve(%q)", tc.sni), err, ReasonNoRoute, tc.sni)
				return
			}
			if err != nil {
				t.Fatalf("Resolve(%q) error = %v, want service %s", tc.sni, err, tc.want)
			}
			if d.Service() != tc.want || d.Mode != ModePassthrough {
				t.Fatalf("Resolve(%q) = service %s mode %s, want %s PASSTHROUGH", tc.sni, d.Service(), d.Mode, tc.want)
			}
		})
	}
}

func TestTablePassthroughBinding(t *testing.T) {
	dest := tableTestDest("web.web.svc.cluster.local", 8443, "", 0)
	for _, tc := range []struct {
		name     string
		vsNS     string
		gateways []string
		vsHosts  []string
		match    *networking.TLSMatchAttributes
		srvHosts []string
		sni      string
		want     bool
	}{
		{name: "ns/name reference", vsNS: "web", gateways: []string{"istio-system/gw"}, want: true},
		{name: "short name in gateway namespace", vsNS: "istio-system", gateways: []string{"gw"}, want: true},
		{name: "short name in another namespace", vsNS: "web", gateways: []string{"gw"}},
		{name: "mesh only", vsNS: "web", gateways: []string{"mesh"}},
		{name: "no gateways", vsNS: "web"},
		{name: "other gateway", vsNS: "web", gateways: []string{"istio-system/other"}},
		{name: "server host namespace admits", vsNS: "web", gateways: []string{"istio-system/gw"}, srvHosts: []string{"web/*.svc.cluster.local"}, want: true},
		{name: "server host namespace refuses", vsNS: "web", gateways: []string{"istio-system/gw"}, srvHosts: []string{"db/*.svc.cluster.local"}},
		{name: "server host dot is gateway namespace", vsNS: "web", gateways: []string{"istio-system/gw"}, srvHosts: []string{"./*.svc.cluster.local"}},
		{name: "vs hosts outside server hosts", vsNS: "web", gateways: []string{"istio-system/gw"}, vsHosts: []string{"web.example.org"}, srvHosts: []string{"*.svc.cluster.local"}},
		{name: "match gateways narrows", vsNS: "web", gateways: []string{"istio-system/gw", "istio-system/other"},
			match: &networking.TLSMatchAttributes{SniHosts: []string{"web.web.svc.cluster.local"}, Gateways: []string{"istio-system/other"}}},
		{name: "match gateways admits", vsNS: "web", gateways: []string{"istio-system/gw"},
			match: &networking.TLSMatchAttributes{SniHosts: []string{"web.web.svc.cluster.local"}, Gateways: []string{"istio-system/gw"}}, want: true},
		{name: "match port admits", vsNS: "web", gateways: []string{"istio-system/gw"},
			match: &networking.TLSMatchAttributes{SniHosts: []string{"web.web.svc.cluster.local"}, Port: 443}, want: true},
		{name: "match port refuses", vsNS: "web", gateways: []string{"istio-system/gw"},
			match: &networking.TLSMatchAttributes{SniHosts: []string{"web.web.svc.cluster.local"}, Port: 8443}},
		{name: "sni outside server hosts", vsNS: "web", gateways: []string{"istio-system/gw"}, vsHosts: []string{"*"}, srvHosts: []string{"*.svc.cluster.local"},
			match: &networking.TLSMatchAttributes{SniHosts: []string{"*"}}, sni: "evil.example.org"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srvHosts := tc.srvHosts
			if srvHosts == nil {
				srvHosts = []string{"*"}
			}
			vsHosts := tc.vsHosts
			if vsHosts == nil {
				vsHosts = []string{"web.web.svc.cluster.local"}
			}
			m := tc.match
			if m == nil {
				m = &networking.TLSMatchAttributes{SniHosts: []string{"web.web.svc.cluster.local"}}
			}
			vs := tableTestVS(tc.vsNS+"/web", vsHosts, tc.gateways)
			vs.Spec.Tls = []*networking.TLSRoute{{Match: []*networking.TLSMatchAttributes{m}, Route: []*networking.RouteDestination{dest}}}
			set := tableTestMesh()
			set.Gateways = []*config.Gateway{tableTestGW("istio-system/gw", nil, tableTestServer(443, "TLS", "PASSTHROUGH", srvHosts...))}
			set.VirtualServices = []*config.VirtualService{vs}
			b, _ := tableTestBuilder(t)
			tbl := tableTestBuild(t, b, set)
			sni := tc.sni
			if sni == "" {
				sni = "web.web.svc.cluster.local"
			}
			d, err := tbl.Resolve(tableTestPTKey, tableTestHello(sni))
			if !tc.want {
				tableTestRefusal(t, fmt.Sprintf("Resolve(%q)", sni), err, ReasonNoRoute, "")
				return
			}
			if err != nil || d.Service() != "web.web.svc.cluster.local" || d.Route != tc.vsNS+"/web#tls[0]" || d.Gateway != "istio-system/gw" {
				t.Fatalf("Resolve(%q) = %+v, %v; want web.web.svc.cluster.local via %s/web#tls[0]", sni, d, err, tc.vsNS)
			}
		})
	}
}

func TestTablePortFilter(t *testing.T) {
	vs := tableTestVS("default/vs", []string{"*"}, []string{"istio-system/gw"})
	vs.Spec.Tls = []*networking.TLSRoute{
		tableTestTLS([]string{"a.example.com"}, 443, tableTestDest("one.svc", 443, "", 0)),
		tableTestTLS([]string{"a.example.com"}, 8443, tableTestDest("two.svc", 443, "", 0)),
		tableTestTLS([]string{"b.example.com"}, 9999, tableTestDest("one.svc", 443, "", 0)),
	}
	set := &config.Set{
		Gateways: []*config.Gateway{tableTestGW("istio-system/gw", nil,
			tableTestServer(443, "TLS", "PASSTHROUGH", "*"), tableTestServer(8443, "TLS", "PASSTHROUGH", "*"))},
		VirtualServices: []*config.VirtualService{vs},
		ServiceEntries: []*config.ServiceEntry{
			tableTestSE("default/one", false, []string{"one.svc"}, []*networking.ServicePort{tableTestPort(443, "tls")}, tableTestWE("192.0.2.1", nil)),
			tableTestSE("default/two", false, []string{"two.svc"}, []*networking.ServicePort{tableTestPort(443, "tls")}, tableTestWE("192.0.2.2", nil)),
		},
	}
	b, _ := tableTestBuilder(t)
	tbl := tableTestBuild(t, b, set)
	for _, tc := range []struct {
		key, sni, want string
	}{
		{"tcp/0.0.0.0:443", "a.example.com", "one.svc"},
		{"tcp/0.0.0.0:8443", "a.example.com", "two.svc"},
		{"tcp/0.0.0.0:443", "b.example.com", ""},
		{"tcp/0.0.0.0:8443", "b.example.com", ""},
		{"tcp/0.0.0.0:1", "a.example.com", ""},
	} {
		d, err := tbl.Resolve(tc.key, tableTestHello(tc.sni))
		if tc.want == "" {
			tableTestRefusal(t, fmt.Sprintf("Resolve(%s, %q)", tc.key, tc.sni), err, ReasonNoRoute, "")
			continue
		}
		if err != nil || d.Service() != tc.want {
			t.Fatalf("Resolve(%s, %q) = %v, %v; want %s", tc.key, tc.sni, d, err, tc.want)
		}
	}
}

func TestTableDuplicateSNI(t *testing.T) {
	first := tableTestVS("default/first", []string{"*"}, []string{"istio-system/gw"})
	first.Spec.Tls = []*networking.TLSRoute{tableTestTLS([]string{"a.example.com"}, 0, tableTestDest("one.svc", 443, "", 0))}
	second := tableTestVS("default/second", []string{"*"}, []string{"istio-system/gw"})
	second.Spec.Tls = []*networking.TLSRoute{tableTestTLS([]string{"a.example.com", "b.example.com"}, 0, tableTestDest("two.svc", 443, "", 0))}
	set := &config.Set{
		Gateways:        []*config.Gateway{tableTestGW("istio-system/gw", nil, tableTestServer(443, "TLS", "PASSTHROUGH", "*"))},
		VirtualServices: []*config.VirtualService{first, second},
		ServiceEntries: []*config.ServiceEntry{
			tableTestSE("default/one", false, []string{"one.svc"}, []*networking.ServicePort{tableTestPort(443, "tls")}, tableTestWE("192.0.2.1", nil)),
			tableTestSE("default/two", false, []string{"two.svc"}, []*networking.ServicePort{tableTestPort(443, "tls")}, tableTestWE("192.0.2.2", nil)),
		},
	}
	b, _ := tableTestBuilder(t)
	tbl := tableTestBuild(t, b, set)
	if d, err := tbl.Resolve(tableTestPTKey, tableTestHello("a.example.com")); err != nil || d.Service() != "one.svc" {
		t.Fatalf("Resolve(a.example.com) = %v, %v; want one.svc (first definition wins)", d, err)
	}
	// Istio skips the whole match that carries a duplicate.
	_, err := tbl.Resolve(tableTestPTKey, tableTestHello("b.example.com"))
	tableTestRefusal(t, "Resolve(b.example.com)", err, ReasonNoRoute, "")
	dump := tbl.Dump().(tableDump)
	found := false
	for _, w := range dump.Warnings {
		if strings.Contains(w, "VirtualService default/second tls[0].match[0]") && strings.Contains(w, "a.example.com (defined by VirtualService default/first tls[0].match[0])") {
			found = true
		}
	}
	if !found {
		t.Fatalf("Dump().Warnings = %q, want the duplicate a.example.com reported", dump.Warnings)
	}
}

func TestTableWeights(t *testing.T) {
	ses := []*config.ServiceEntry{
		tableTestSE("default/one", false, []string{"one.svc"}, []*networking.ServicePort{tableTestPort(443, "tls")}, tableTestWE("192.0.2.1", nil)),
		tableTestSE("default/two", false, []string{"two.svc"}, []*networking.ServicePort{tableTestPort(443, "tls")}, tableTestWE("192.0.2.2", nil)),
		tableTestSE("default/three", false, []string{"three.svc"}, []*networking.ServicePort{tableTestPort(443, "tls")}, tableTestWE("192.0.2.3", nil)),
	}
	for _, tc := range []struct {
		name    string
		weights []int32
		n       int
		want    map[string]int
	}{
		{"80/20", []int32{80, 20, 0}, 100, map[string]int{"one.svc": 80, "two.svc": 20}},
		{"80/20 over ten cycles", []int32{80, 20, 0}, 1000, map[string]int{"one.svc": 800, "two.svc": 200}},
		{"thirds", []int32{1, 1, 1}, 300, map[string]int{"one.svc": 100, "two.svc": 100, "three.svc": 100}},
		{"unset weights share equally", []int32{0, 0, 0}, 30, map[string]int{"one.svc": 10, "two.svc": 10, "three.svc": 10}},
		{"uneven", []int32{50, 30, 20}, 100, map[string]int{"one.svc": 50, "two.svc": 30, "three.svc": 20}},
		{"negative weight carries nothing", []int32{-5, 10, 0}, 20, map[string]int{"two.svc": 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vs := tableTestVS("default/vs", []string{"*"}, []string{"istio-system/gw"})
			var dests []*networking.RouteDestination
			for i, h := range []string{"one.svc", "two.svc", "three.svc"} {
				dests = append(dests, tableTestDest(h, 443, "", tc.weights[i]))
			}
			vs.Spec.Tls = []*networking.TLSRoute{tableTestTLS([]string{"a.example.com"}, 0, dests...)}
			set := &config.Set{Gateways: []*config.Gateway{tableTestGW("istio-system/gw", nil, tableTestServer(443, "TLS", "PASSTHROUGH", "*"))},
				VirtualServices: []*config.VirtualService{vs}, ServiceEntries: ses}
			b, _ := tableTestBuilder(t)
			tbl := tableTestBuild(t, b, set)
			got := map[string]int{}
			for range tc.n {
				d, err := tbl.Resolve(tableTestPTKey, tableTestHello("a.example.com"))
				if err != nil {
					t.Fatalf("Resolve(a.example.com) error = %v", err)
				}
				got[d.Service()]++
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("after %d Resolve calls with weights %v: %v, want %v", tc.n, tc.weights, got, tc.want)
			}
		})
	}
}

func TestTableSmoothSplit(t *testing.T) {
	// 80/20 interleaves: never more than 4 in a row to the heavy side.
	s := tableSchedule([]uint64{80, 20})
	if len(s) != 5 {
		t.Fatalf("tableSchedule(80, 20) = %v, want 5 slots after gcd reduction", s)
	}
	run := 0
	for _, i := range append(s, s...) {
		if i == 0 {
			run++
		} else {
			run = 0
		}
		if run > 4 {
			t.Fatalf("tableSchedule(80, 20) = %v: more than 4 consecutive picks of index 0", s)
		}
	}
	if got := tableSchedule([]uint64{3, 3, 3}); got != nil {
		t.Fatalf("tableSchedule(3, 3, 3) = %v, want nil (plain rotation)", got)
	}
	big := tableSchedule([]uint64{1 << 30, 1})
	ones := 0
	for _, i := range big {
		if i == 1 {
			ones++
		}
	}
	if len(big) > tableMaxSchedule+2 || ones != 1 {
		t.Fatalf("tableSchedule(2^30, 1): %d slots with %d of index 1, want at most %d slots and exactly one of index 1", len(big), ones, tableMaxSchedule+2)
	}
}

func TestTableAutoPassthrough(t *testing.T) {
	set := tableTestMesh()
	optOut := tableTestGW("istio-system/no-alpn", nil, tableTestServer(15444, "TLS", "AUTO_PASSTHROUGH", "*.local"))
	optOut.Labels = map[string]string{LabelRequireMeshALPN: "false"}
	set.Gateways = append(set.Gateways, optOut)
	b, _ := tableTestBuilder(t)
	tbl := tableTestBuild(t, b, set)
	for _, tc := range []struct {
		name   string
		key    string
		sni    string
		alpn   []string
		want   Reason // "" = routed
		detail string
		subset string
		port   uint32
	}{
		{name: "no subset", sni: "outbound_.9080_._.reviews.default.svc.cluster.local", alpn: tableTestMeshALPN, port: 9080},
		{name: "subset v1", sni: "outbound_.9080_.v1_.reviews.default.svc.cluster.local", alpn: []string{"istio"}, subset: "v1", port: 9080},
		{name: "second port", sni: "outbound_.9443_.v2_.reviews.default.svc.cluster.local", alpn: []string{"h2", "istio-h2"}, subset: "v2", port: 9443},
		{name: "missing mesh alpn", sni: "outbound_.9080_.v1_.reviews.default.svc.cluster.local", alpn: []string{"h2", "http/1.1"}, want: ReasonALPN, detail: "mesh ALPN"},
		{name: "no alpn at all", sni: "outbound_.9080_.v1_.reviews.default.svc.cluster.local", want: ReasonALPN},
		{name: "alpn opt-out", key: "tcp/0.0.0.0:15444", sni: "outbound_.9080_.v1_.reviews.default.svc.cluster.local", subset: "v1", port: 9080},
		{name: "unknown subset", sni: "outbound_.9080_.v3_.reviews.default.svc.cluster.local", alpn: tableTestMeshALPN, want: ReasonNoRoute, detail: "unknown subset v3 of reviews.default.svc.cluster.local"},
		{name: "unknown port", sni: "outbound_.9999_._.reviews.default.svc.cluster.local", alpn: tableTestMeshALPN, want: ReasonNoRoute, detail: "has no port 9999"},
		{name: "unknown service", sni: "outbound_.9080_._.ratings.default.svc.cluster.local", alpn: tableTestMeshALPN, want: ReasonNoRoute, detail: "unknown service ratings.default.svc.cluster.local"},
		{name: "host outside server hosts", sni: "outbound_.443_._.api.example.com", alpn: tableTestMeshALPN, want: ReasonNoRoute, detail: "not exported"},
		{name: "subset of host without rule", sni: "outbound_.8443_.v1_.web.web.svc.cluster.local", alpn: tableTestMeshALPN, want: ReasonNoRoute, detail: "no DestinationRule"},
		{name: "malformed port", sni: "outbound_.99999_._.reviews.default.svc.cluster.local", alpn: tableTestMeshALPN, want: ReasonNoRoute, detail: "not a valid AUTO_PASSTHROUGH name"},
		{name: "not an auto name", sni: "reviews.default.svc.cluster.local", alpn: tableTestMeshALPN, want: ReasonNoRoute},
		{name: "empty subset label", sni: "outbound_.9080__.reviews.default.svc.cluster.local", alpn: tableTestMeshALPN, want: ReasonNoRoute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := tc.key
			if key == "" {
				key = tableTestAutoKey
			}
			d, err := tbl.Resolve(key, tableTestHello(tc.sni, tc.alpn...))
			if tc.want != "" {
				tableTestRefusal(t, fmt.Sprintf("Resolve(%s, %q, %q)", key, tc.sni, tc.alpn), err, tc.want, tc.detail)
				return
			}
			if err != nil {
				t.Fatalf("Resolve(%s, %q, %q) error = %v, want a route", key, tc.sni, tc.alpn, err)
			}
			if d.Mode != ModeAutoPassthrough || d.Service() != "reviews.default.svc.cluster.local" || d.Subset() != tc.subset || d.Port() != tc.port {
				t.Fatalf("Resolve(%q) = %+v, want AUTO_PASSTHROUGH reviews subset %q port %d", tc.sni, d, tc.subset, tc.port)
			}
		})
	}
	// A MESH_EXTERNAL service is never exported, even when its host matches.
	set2 := tableTestMesh()
	set2.Gateways[0].Spec.Servers[0].Hosts = []string{"*"}
	tbl2 := tableTestBuild(t, b, set2)
	_, err := tbl2.Resolve(tableTestAutoKey, tableTestHello("outbound_.443_._.api.example.com", tableTestMeshALPN...))
	tableTestRefusal(t, "Resolve(outbound_.443_._.api.example.com) with hosts *", err, ReasonNoRoute, "MESH_EXTERNAL")
}

func TestTableSubsetEndpoints(t *testing.T) {
	set := tableTestMesh()
	set.ServiceEntries[0].Spec.Endpoints = append(set.ServiceEntries[0].Spec.Endpoints,
		tableTestWE("10.0.0.3", map[string]string{"app": "reviews", "version": "v1", "canary": "yes"}),
		tableTestWE("10.0.0.4", map[string]string{"app": "reviews"}))
	set.DestinationRules[0].Spec.Subsets = append(set.DestinationRules[0].Spec.Subsets,
		&networking.Subset{Name: "canary", Labels: map[string]string{"version": "v1", "canary": "yes"}},
		&networking.Subset{Name: "none", Labels: map[string]string{"version": "v9"}})
	b, _ := tableTestBuilder(t)
	tbl := tableTestBuild(t, b, set)
	for _, tc := range []struct {
		subset string
		want   string
	}{
		{"", "10.0.0.1:9080 10.0.0.2:9080 10.0.0.3:9080 10.0.0.4:9080"},
		{"v1", "10.0.0.1:9080 10.0.0.3:9080"},
		{"v2", "10.0.0.2:9080"},
		{"canary", "10.0.0.3:9080"},
		{"none", ""},
	} {
		sni := "outbound_.9080_." + tc.subset + "_.reviews.default.svc.cluster.local"
		d, err := tbl.Resolve(tableTestAutoKey, tableTestHello(sni, "istio"))
		if err != nil {
			t.Fatalf("Resolve(%q) error = %v", sni, err)
		}
		var got []string
		for _, e := range d.Cluster.Endpoints() {
			got = append(got, e.Addr)
		}
		if strings.Join(got, " ") != tc.want {
			t.Fatalf("Resolve(%q).Cluster.Endpoints() = %v, want %s", sni, got, tc.want)
		}
		if tc.want == "" {
			_, err := d.Cluster.Pick(nil)
			tableTestRefusal(t, "Pick() on empty subset", err, ReasonNoEndpoint, "no endpoints match the labels")
		}
	}
}

func TestTableNetworks(t *testing.T) {
	set := tableTestMesh()
	// reviews v1 has 10.0.0.1 (net-a, local) and 10.9.0.1 (net-b).
	b, _ := tableTestBuilder(t)
	tbl := tableTestBuild(t, b, set)
	d, err := tbl.Resolve(tableTestAutoKey, tableTestHello("outbound_.9080_.v1_.reviews.default.svc.cluster.local", "istio"))
	if err != nil {
		t.Fatalf("Resolve(v1) error = %v", err)
	}
	for i := range 50 {
		l, err := d.Cluster.Pick(nil)
		if err != nil {
			t.Fatalf("Pick #%d error = %v", i, err)
		}
		if ep := l.Endpoint(); ep.Addr != "10.0.0.1:9080" || ep.Network != "" {
			t.Fatalf("AUTO_PASSTHROUGH Pick #%d = %+v, want only the local endpoint 10.0.0.1:9080", i, ep)
		}
		l.Release()
	}
	// Local endpoint tried already: AUTO_PASSTHROUGH must not hairpin.
	_, err = d.Cluster.Pick([]string{"10.0.0.1:9080"})
	tableTestRefusal(t, "AUTO Pick(tried local)", err, ReasonNoEndpoint, "")

	// Only remote endpoints: refused for AUTO_PASSTHROUGH.
	set.ServiceEntries[0].Spec.Endpoints = []*networking.WorkloadEntry{{Address: "10.9.0.1", Network: "net-b", Labels: map[string]string{"version": "v1"}}}
	tbl = tableTestBuild(t, b, set)
	d, err = tbl.Resolve(tableTestAutoKey, tableTestHello("outbound_.9080_.v1_.reviews.default.svc.cluster.local", "istio"))
	if err != nil {
		t.Fatalf("Resolve(v1) error = %v", err)
	}
	_, err = d.Cluster.Pick(nil)
	tableTestRefusal(t, "AUTO Pick() with only remote endpoints", err, ReasonNoEndpoint, "no endpoints in this node's network")

	// Catalog endpoints of the node's own network count as local.
	tbl = tableTestBuild(t, b, set, CatalogEndpoint{Host: "reviews.default.svc.cluster.local", Port: 9080,
		Endpoint: Endpoint{Addr: "10.0.0.7:9080", Network: "net-a", Labels: map[string]string{"version": "v1"}}})
	d, _ = tbl.Resolve(tableTestAutoKey, tableTestHello("outbound_.9080_.v1_.reviews.default.svc.cluster.local", "istio"))
	l, err := d.Cluster.Pick(nil)
	if err != nil || l.Endpoint().Addr != "10.0.0.7:9080" {
		t.Fatalf("AUTO Pick() = %v, %v; want catalog endpoint 10.0.0.7:9080", l, err)
	}
	l.Release()
}

func TestTablePassthroughRemoteFallback(t *testing.T) {
	set := tableTestMesh()
	vs := tableTestVS("istio-system/rev", []string{"*.example.com"}, []string{"cross-network"})
	vs.Spec.Tls = []*networking.TLSRoute{tableTestTLS([]string{"reviews.example.com"}, 0, tableTestDest("reviews.default.svc.cluster.local", 9080, "v1", 0))}
	set.VirtualServices = append(set.VirtualServices, vs)
	b, _ := tableTestBuilder(t)
	tbl := tableTestBuild(t, b, set)
	d, err := tbl.Resolve(tableTestPTKey, tableTestHello("reviews.example.com"))
	if err != nil {
		t.Fatalf("Resolve(reviews.example.com) error = %v", err)
	}
	l, err := d.Cluster.Pick(nil)
	if err != nil || l.Endpoint().Addr != "10.0.0.1:9080" {
		t.Fatalf("Pick() = %v, %v; want the local endpoint first", l, err)
	}
	l2, err := d.Cluster.Pick([]string{"10.0.0.1:9080"})
	if err != nil || l2.Endpoint().Addr != "10.9.0.1:9080" || l2.Endpoint().Network != "net-b" {
		t.Fatalf("Pick(tried local) = %v, %v; want the net-b endpoint as fallback", l2, err)
	}
	l.Release()
	l2.Release()
}

func TestTableTCP(t *testing.T) {
	set := tableTestMesh()
	first := tableTestVS("istio-system/first", []string{"*"}, []string{"cross-network"})
	first.Spec.Tcp = []*networking.TCPRoute{
		tableTestTCP(9999, tableTestDest("web.web.svc.cluster.local", 8443, "", 0)),
		tableTestTCP(9000, tableTestDest("reviews.default.svc.cluster.local", 9080, "", 0)),
	}
	set.VirtualServices = append([]*config.VirtualService{first}, set.VirtualServices...)
	b, _ := tableTestBuilder(t)
	tbl := tableTestBuild(t, b, set)
	d, err := tbl.Resolve(tableTestTCPKey, nil)
	if err != nil || d.Service() != "reviews.default.svc.cluster.local" || d.Mode != ModeTCP || d.Route != "istio-system/first#tcp[1]" {
		t.Fatalf("Resolve(%s, nil) = %+v, %v; want reviews via istio-system/first#tcp[1] (first port match wins)", tableTestTCPKey, d, err)
	}
	// A hello on a TCP listener is ignored.
	if d2, err := tbl.Resolve(tableTestTCPKey, tableTestHello("whatever.example.com")); err != nil || d2 != d {
		t.Fatalf("Resolve(%s, hello) = %v, %v; want the same TCP decision", tableTestTCPKey, d2, err)
	}
	// No route bound: refused, with a warning.
	set.VirtualServices = nil
	tbl = tableTestBuild(t, b, set)
	_, err = tbl.Resolve(tableTestTCPKey, nil)
	tableTestRefusal(t, "Resolve(tcp, nil) without routes", err, ReasonNoRoute, "no VirtualService tcp route")
	// Unknown listener.
	_, err = tbl.Resolve("tcp/0.0.0.0:1", nil)
	tableTestRefusal(t, "Resolve(unknown listener)", err, ReasonNoRoute, "unknown listener")
	// A TLS listener given no hello.
	_, err = tbl.Resolve(tableTestAutoKey, nil)
	tableTestRefusal(t, "Resolve(auto listener, nil)", err, ReasonNoSNI, "")
}

func TestTableTerminatingServer(t *testing.T) {
	set := tableTestMesh()
	srv := tableTestServer(15012, "TLS", "ISTIO_MUTUAL", "*.example.com")
	set.Gateways[0].Spec.Servers = append(set.Gateways[0].Spec.Servers, srv)
	vs := tableTestVS("istio-system/ca", []string{"*.example.com"}, []string{"cross-network"})
	vs.Spec.Tcp = []*networking.TCPRoute{tableTestTCP(15012, tableTestDest("web.web.svc.cluster.local", 8443, "", 0))}
	set.VirtualServices = append(set.VirtualServices, vs)
	b, _ := tableTestBuilder(t)
	tbl := tableTestBuild(t, b, set)
	d, err := tbl.Resolve("tcp/0.0.0.0:15012", tableTestHello("ca.example.com"))
	if err != nil || d.Mode != ModeIstioMutual || d.TLS == nil || d.Service() != "web.web.svc.cluster.local" {
		t.Fatalf("Resolve(15012, ca.example.com) = %+v, %v; want ISTIO_MUTUAL with the server tls block", d, err)
	}
	_, err = tbl.Resolve("tcp/0.0.0.0:15012", tableTestHello("ca.example.org"))
	tableTestRefusal(t, "Resolve(15012, ca.example.org)", err, ReasonNoRoute, "")
}

func TestTableNilAndZero(t *testing.T) {
	var tbl *Table
	_, err := tbl.Resolve("tcp/0.0.0.0:15443", tableTestHello("x"))
	tableTestRefusal(t, "(*Table)(nil).Resolve", err, ReasonNoRoute, "no route table")
	if tbl.Listeners() != nil || tbl.Explain("x", nil) != nil || tbl.Warnings() != nil {
		t.Fatalf("nil table accessors returned data")
	}
	if _, ok := tbl.Dump().(tableDump); !ok {
		t.Fatalf("(*Table)(nil).Dump() = %T, want tableDump", tbl.Dump())
	}
	var c *Cluster
	_, err = c.Pick(nil)
	tableTestRefusal(t, "(*Cluster)(nil).Pick", err, ReasonNoEndpoint, "")
	b, _ := tableTestBuilder(t)
	if _, err := b.Build(BuildInput{}); !errors.Is(err, ErrNoConfig) {
		t.Fatalf("Build(no config) error = %v, want ErrNoConfig", err)
	}
	bad := NewBuilder(BuilderConfig{DefaultBind: "localhost"})
	if _, err := bad.Build(BuildInput{Config: &config.Set{}}); !errors.Is(err, ErrInvalidBuilderConfig) {
		t.Fatalf("Build() with DefaultBind localhost error = %v, want ErrInvalidBuilderConfig", err)
	}
	if err := (BuilderConfig{DefaultBind: "::"}).Validate(); err != nil {
		t.Fatalf("Validate(DefaultBind ::) = %v, want nil", err)
	}
}

func TestTableEndpoints(t *testing.T) {
	se := tableTestSE("apps/pay", true, []string{"pay.apps.svc.cluster.local"},
		[]*networking.ServicePort{{Number: 443, Name: "https", TargetPort: 8443}, {Number: 80, Name: "http"}})
	se.Spec.WorkloadSelector = &networking.WorkloadSelector{Labels: map[string]string{"app": "pay"}}
	dns := tableTestSE("apps/dns", true, []string{"dns.example.net"}, []*networking.ServicePort{tableTestPort(443, "tls")})
	dns.Spec.Resolution = networking.ServiceEntry_DNS
	set := &config.Set{
		ServiceEntries: []*config.ServiceEntry{se, dns},
		WorkloadEntries: []*config.WorkloadEntry{
			{Meta: tableTestMeta("apps/pay-1"), Spec: &networking.WorkloadEntry{Address: "10.3.0.1", Labels: map[string]string{"app": "pay"}, Ports: map[string]uint32{"https": 9443}, Weight: 3}},
			{Meta: tableTestMeta("apps/pay-2"), Spec: &networking.WorkloadEntry{Address: "10.3.0.2", Labels: map[string]string{"app": "pay", "v": "2"}}},
			{Meta: tableTestMeta("other/pay-3"), Spec: &networking.WorkloadEntry{Address: "10.3.0.3", Labels: map[string]string{"app": "pay"}}},
			{Meta: tableTestMeta("apps/bill"), Spec: &networking.WorkloadEntry{Address: "10.3.0.4", Labels: map[string]string{"app": "bill"}}},
			{Meta: tableTestMeta("apps/pay-remote"), Spec: &networking.WorkloadEntry{Address: "10.3.0.5", Labels: map[string]string{"app": "pay"}, Network: "net-b"}},
			{Meta: tableTestMeta("apps/pay-uds"), Spec: &networking.WorkloadEntry{Address: "unix:///run/pay.sock", Labels: map[string]string{"app": "pay"}}},
		},
		Gateways: []*config.Gateway{tableTestGW("istio-system/gw", nil, tableTestServer(443, "TLS", "PASSTHROUGH", "*"))},
	}
	vs := tableTestVS("apps/all", []string{"*"}, []string{"istio-system/gw"})
	vs.Spec.Tls = []*networking.TLSRoute{
		tableTestTLS([]string{"a.example.com"}, 0, tableTestDest("pay.apps.svc.cluster.local", 443, "", 0)),
		tableTestTLS([]string{"b.example.com"}, 0, tableTestDest("pay", 80, "", 0)), // short name, resolved in apps
		tableTestTLS([]string{"c.example.com"}, 0, tableTestDest("dns.example.net", 443, "", 0)),
	}
	set.VirtualServices = []*config.VirtualService{vs}
	b, _ := tableTestBuilder(t)
	tbl := tableTestBuild(t, b, set,
		CatalogEndpoint{Host: "pay.apps.svc.cluster.local", Port: 443, Endpoint: Endpoint{Addr: "10.3.1.1:8443"}},
		CatalogEndpoint{Host: "pay.apps.svc.cluster.local", Port: 443, Endpoint: Endpoint{Addr: "10.3.0.2:8443"}}, // duplicate of the WorkloadEntry
		CatalogEndpoint{Host: "pay.apps.svc.cluster.local", Port: 443, Endpoint: Endpoint{Addr: "no-port"}},
	)
	for _, tc := range []struct {
		host string
		port uint32
		want string
	}{
		{"pay.apps.svc.cluster.local", 443, "10.3.0.1:9443/3 10.3.0.2:8443/1 10.3.1.1:8443/1 | 10.3.0.5:8443/1@net-b"},
		{"pay.apps.svc.cluster.local", 80, "10.3.0.1:80/3 10.3.0.2:80/1 | 10.3.0.5:80/1@net-b"},
		{"dns.example.net", 443, "dns.example.net:443/1"},
	} {
		c := tbl.clusterFor(tc.host, tc.port, "")
		if c == nil {
			t.Fatalf("no cluster for %s:%d", tc.host, tc.port)
		}
		var parts []string
		for i, p := range c.pools {
			if i > 0 {
				parts = append(parts, "|")
			}
			for _, e := range p.eps {
				s := fmt.Sprintf("%s/%d", e.addr, e.weight)
				if e.network() != "" {
					s += "@" + e.network()
				}
				parts = append(parts, s)
			}
		}
		if got := strings.Join(parts, " "); got != tc.want {
			t.Fatalf("endpoints of %s:%d = %s, want %s", tc.host, tc.port, got, tc.want)
		}
	}
	w := strings.Join(tbl.Warnings(), "\n")
	for _, want := range []string{"unix socket", `"no-port"`} {
		if !strings.Contains(w, want) {
			t.Fatalf("Warnings() = %q, want one mentioning %s", w, want)
		}
	}
}

func TestTableEndpointDedup(t *testing.T) {
	var eps []CatalogEndpoint
	for round := range 2 {
		for i := range 20 {
			eps = append(eps, CatalogEndpoint{Host: "big.test.local", Port: 443, Endpoint: Endpoint{Addr: fmt.Sprintf("10.5.0.%d:443", i), Weight: uint32(round + 1)}})
		}
	}
	set := &config.Set{Gateways: []*config.Gateway{tableTestGW("istio-system/gw", nil, tableTestServer(15443, "TLS", "AUTO_PASSTHROUGH", "*.local"))}}
	b, _ := tableTestBuilder(t)
	tbl := tableTestBuild(t, b, set, eps...)
	d, err := tbl.Resolve(tableTestAutoKey, tableTestHello("outbound_.443_._.big.test.local", "istio"))
	if err != nil {
		t.Fatalf("Resolve(big.test.local) error = %v", err)
	}
	got := d.Cluster.Endpoints()
	if len(got) != 20 || got[0].Weight != 1 {
		t.Fatalf("40 catalog endpoints over 20 addresses gave %d endpoints (first weight %d), want 20 with the first copy (weight 1) kept", len(got), got[0].Weight)
	}
}

// clusterFor finds the cluster of host:port/subset that is not
// AUTO_PASSTHROUGH-only, building nothing (tests).
func (t *Table) clusterFor(host string, port uint32, subset string) *Cluster {
	for _, c := range t.allClusters() {
		if c.service == host && c.port == port && c.subset == subset && !c.localOnly {
			return c
		}
	}
	for _, c := range t.allClusters() {
		if c.service == host && c.port == port && c.subset == subset {
			return c
		}
	}
	return nil
}

func TestTablePolicy(t *testing.T) {
	tp := &networking.TrafficPolicy{
		LoadBalancer: &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: networking.LoadBalancerSettings_RANDOM}},
		ConnectionPool: &networking.ConnectionPoolSettings{Tcp: &networking.ConnectionPoolSettings_TCPSettings{
			MaxConnections: 7, ConnectTimeout: durationpb.New(2 * time.Second), IdleTimeout: durationpb.New(0),
			TcpKeepalive:          &networking.ConnectionPoolSettings_TCPSettings_TcpKeepalive{Time: durationpb.New(30 * time.Second)},
			MaxConnectionDuration: durationpb.New(time.Hour)}},
		OutlierDetection: &networking.OutlierDetection{Consecutive_5XxErrors: wrapperspb.UInt32(3)},
		PortLevelSettings: []*networking.TrafficPolicy_PortTrafficPolicy{{
			Port:         &networking.PortSelector{Number: 9443},
			LoadBalancer: &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: networking.LoadBalancerSettings_LEAST_REQUEST}},
		}},
	}
	set := tableTestMesh()
	set.DestinationRules[0].Spec.TrafficPolicy = tp
	set.DestinationRules[0].Spec.Subsets[1].TrafficPolicy = &networking.TrafficPolicy{
		ConnectionPool: &networking.ConnectionPoolSettings{Tcp: &networking.ConnectionPoolSettings_TCPSettings{MaxConnections: 1}},
	}
	b, _ := tableTestBuilder(t)
	tbl := tableTestBuild(t, b, set)
	for _, tc := range []struct {
		sni     string
		lb      string
		policy  ConnPolicy
		outlier uint32
	}{
		{"outbound_.9080_._.reviews.default.svc.cluster.local", "RANDOM",
			ConnPolicy{ConnectTimeout: 2 * time.Second, KeepAlive: 30 * time.Second, KeepAliveSet: true, MaxConnections: 7, MaxConnectionDuration: time.Hour}, 3},
		{"outbound_.9443_._.reviews.default.svc.cluster.local", "LEAST_REQUEST",
			ConnPolicy{ConnectTimeout: 2 * time.Second, KeepAlive: 30 * time.Second, KeepAliveSet: true, MaxConnections: 7, MaxConnectionDuration: time.Hour}, 3},
		{"outbound_.9080_.v2_.reviews.default.svc.cluster.local", "RANDOM",
			ConnPolicy{ConnectTimeout: DefaultConnectTimeout, IdleTimeout: DefaultIdleTimeout, MaxConnections: 1}, 3},
		{"outbound_.8443_._.web.web.svc.cluster.local", "ROUND_ROBIN",
			ConnPolicy{ConnectTimeout: DefaultConnectTimeout, IdleTimeout: DefaultIdleTimeout}, 0},
	} {
		d, err := tbl.Resolve(tableTestAutoKey, tableTestHello(tc.sni, "istio"))
		if err != nil {
			t.Fatalf("Resolve(%q) error = %v", tc.sni, err)
		}
		if d.Policy() != tc.policy || d.Cluster.LoadBalancer() != tc.lb || d.Cluster.pol.outlier.threshold != tc.outlier {
			t.Fatalf("Resolve(%q): policy %+v lb %s outlier threshold %d; want %+v %s %d", tc.sni, d.Policy(), d.Cluster.LoadBalancer(), d.Cluster.pol.outlier.threshold, tc.policy, tc.lb, tc.outlier)
		}
	}
}

func TestTableOutlierConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		od   *networking.OutlierDetection
		want tableOutlier
	}{
		{"absent", nil, tableOutlier{}},
		{"defaults", &networking.OutlierDetection{}, tableOutlier{enabled: true, threshold: 5, interval: 10 * time.Second, baseEjection: 30 * time.Second, maxEjection: 300 * time.Second, maxPercent: 10}},
		{"5xx disabled", &networking.OutlierDetection{Consecutive_5XxErrors: wrapperspb.UInt32(0)}, tableOutlier{interval: 10 * time.Second, baseEjection: 30 * time.Second, maxEjection: 300 * time.Second, maxPercent: 10}},
		{"gateway errors lower", &networking.OutlierDetection{ConsecutiveGatewayErrors: wrapperspb.UInt32(2), Interval: durationpb.New(time.Second), BaseEjectionTime: durationpb.New(10 * time.Minute), MaxEjectionPercent: 150, MinHealthPercent: 50},
			tableOutlier{enabled: true, threshold: 2, interval: time.Second, baseEjection: 10 * time.Minute, maxEjection: 10 * time.Minute, maxPercent: 100, minHealthPercent: 50}},
		{"gateway errors only", &networking.OutlierDetection{Consecutive_5XxErrors: wrapperspb.UInt32(0), ConsecutiveGatewayErrors: wrapperspb.UInt32(4)},
			tableOutlier{enabled: true, threshold: 4, interval: 10 * time.Second, baseEjection: 30 * time.Second, maxEjection: 300 * time.Second, maxPercent: 10}},
		//lint:ignore SA1019 the deprecated field must keep working
		{"deprecated consecutiveErrors", &networking.OutlierDetection{ConsecutiveErrors: 8},
			tableOutlier{enabled: true, threshold: 8, interval: 10 * time.Second, baseEjection: 30 * time.Second, maxEjection: 300 * time.Second, maxPercent: 10}},
		{"local origin split", &networking.OutlierDetection{SplitExternalLocalOriginErrors: true, ConsecutiveLocalOriginFailures: wrapperspb.UInt32(1)},
			tableOutlier{enabled: true, threshold: 1, interval: 10 * time.Second, baseEjection: 30 * time.Second, maxEjection: 300 * time.Second, maxPercent: 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tableOutlierFrom(tc.od); got != tc.want {
				t.Fatalf("tableOutlierFrom(%v) = %+v, want %+v", tc.od, got, tc.want)
			}
		})
	}
}

func tableTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// ---- benchmarks ----

// tableBenchInput is n AUTO_PASSTHROUGH services (catalog endpoints, one
// port, a wildcard DestinationRule with subset v1) and hellos spread over
// them.
func tableBenchInput(n int) (BuildInput, []*Hello) {
	labels := map[string]string{"version": "v1"}
	eps := make([]CatalogEndpoint, 0, n)
	for i := range n {
		eps = append(eps, CatalogEndpoint{Host: fmt.Sprintf("svc-%d.bench.svc.cluster.local", i), Port: 8080,
			Endpoint: Endpoint{Addr: fmt.Sprintf("10.%d.%d.%d:8080", i>>16&255, i>>8&255, i&255), Labels: labels}})
	}
	set := &config.Set{
		Gateways:         []*config.Gateway{tableTestGW("istio-system/gw", nil, tableTestServer(15443, "TLS", "AUTO_PASSTHROUGH", "*.local"))},
		DestinationRules: []*config.DestinationRule{tableTestDR("bench/all", "*.bench.svc.cluster.local", nil, &networking.Subset{Name: "v1", Labels: labels})},
	}
	var hellos []*Hello
	for i := range 1024 {
		j := (i * 7919) % n
		sub := ""
		if i%2 == 0 {
			sub = "v1"
		}
		hellos = append(hellos, tableTestHello(fmt.Sprintf("outbound_.8080_.%s_.svc-%d.bench.svc.cluster.local", sub, j), "istio-peer-exchange", "istio"))
	}
	return BuildInput{Config: set, Node: tableTestNode, Endpoints: eps}, hellos
}

func tableBenchAuto(b *testing.B, n int) (*Table, []*Hello) {
	b.Helper()
	in, hellos := tableBenchInput(n)
	tbl, err := NewBuilder(DefaultBuilderConfig()).Build(in)
	if err != nil {
		b.Fatalf("Build() error = %v", err)
	}
	return tbl, hellos
}

func BenchmarkResolveAutoPassthrough(b *testing.B) {
	for _, n := range []int{100, 100_000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			tbl, hellos := tableBenchAuto(b, n)
			tableBenchResolve(b, tbl, hellos)
		})
	}
}

func BenchmarkResolvePassthroughWildcard(b *testing.B) {
	vs := tableTestVS("default/vs", []string{"*"}, []string{"istio-system/gw"})
	var ses []*config.ServiceEntry
	for i := range 1000 {
		host := fmt.Sprintf("backend-%d.svc", i)
		ses = append(ses, tableTestSE("default/"+host, false, []string{host}, []*networking.ServicePort{tableTestPort(443, "tls")}, tableTestWE("192.0.2.1", nil)))
		vs.Spec.Tls = append(vs.Spec.Tls,
			tableTestTLS([]string{fmt.Sprintf("exact-%d.example.com", i)}, 0, tableTestDest(host, 443, "", 0)),
			tableTestTLS([]string{fmt.Sprintf("*.tenant-%d.example.com", i)}, 0, tableTestDest(host, 443, "", 0)))
	}
	vs.Spec.Tls = append(vs.Spec.Tls, tableTestTLS([]string{"*"}, 0, tableTestDest("backend-0.svc", 443, "", 0)))
	set := &config.Set{Gateways: []*config.Gateway{tableTestGW("istio-system/gw", nil, tableTestServer(443, "TLS", "PASSTHROUGH", "*"))},
		VirtualServices: []*config.VirtualService{vs}, ServiceEntries: ses}
	tbl, err := NewBuilder(DefaultBuilderConfig()).Build(BuildInput{Config: set, Node: tableTestNode})
	if err != nil {
		b.Fatalf("Build() error = %v", err)
	}
	for _, tc := range []struct{ name, sni string }{
		{"exact", "exact-500.example.com"},
		{"wildcard", "app.eu.tenant-500.example.com"},
		{"any", "unknown.example.org"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := tableTestHello(tc.sni)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tbl.Resolve(tableTestPTKey, h); err != nil {
					b.Fatalf("Resolve(%q) error = %v", tc.sni, err)
				}
			}
		})
	}
}

// BenchmarkBuild measures a rebuild by a Builder that already built the
// same services (live state reused), as on a catalog change.
func BenchmarkBuild(b *testing.B) {
	for _, n := range []int{100, 100_000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			in, _ := tableBenchInput(n)
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
