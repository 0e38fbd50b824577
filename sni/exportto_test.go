package sni

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/sni/snitest"
)

// exportTestOutcome resolves sni on key and picks an endpoint; it returns
// "" when a connection would be routed, else the refusal's
// "reason: detail".
func exportTestOutcome(t *testing.T, tbl *Table, key, sni string, alpn ...string) string {
	t.Helper()
	var h *Hello
	if sni != "-" {
		h = tableTestHello(sni, alpn...)
	}
	d, err := tbl.Resolve(key, h)
	if err != nil {
		re := err.(*RefusedError)
		return string(re.Reason) + ": " + re.Detail
	}
	l, err := d.Cluster.Pick(nil)
	if err != nil {
		re := err.(*RefusedError)
		return string(re.Reason) + ": " + re.Detail
	}
	l.Release()
	return ""
}

func TestTableExportTo(t *testing.T) {
	const (
		webSNI  = "web.web.svc.cluster.local"
		autoSNI = "outbound_.9080_._.reviews.default.svc.cluster.local"
		autoV1  = "outbound_.9080_.v1_.reviews.default.svc.cluster.local"
	)
	se := func(set *config.Set, host string) *networking.ServiceEntry {
		for _, s := range set.ServiceEntries {
			if s.Spec.Hosts[0] == host {
				return s.Spec
			}
		}
		t.Fatalf("no ServiceEntry %s", host)
		return nil
	}
	vs := func(set *config.Set, name string) *networking.VirtualService {
		for _, v := range set.VirtualServices {
			if v.Namespace+"/"+v.Name == name {
				return v.Spec
			}
		}
		t.Fatalf("no VirtualService %s", name)
		return nil
	}
	for _, tc := range []struct {
		name   string
		mod    func(*config.Set)
		key    string
		sni    string // "-" = no ClientHello (plain TCP)
		refuse string // "" = routed; else a substring of the refusal
	}{
		// VirtualService exportTo: which Gateways bind it.
		{"vs default exported everywhere", nil, tableTestPTKey, webSNI, ""},
		{"vs exportTo * binds", func(s *config.Set) { vs(s, "web/web").ExportTo = []string{"*"} }, tableTestPTKey, webSNI, ""},
		{"vs exportTo . hides it from the gateway namespace", func(s *config.Set) { vs(s, "web/web").ExportTo = []string{"."} }, tableTestPTKey, webSNI,
			"not_exported: SNI \"web.web.svc.cluster.local\" matches no tls route on tcp/0.0.0.0:443: VirtualService web/web is not exported to namespace istio-system of Gateway istio-system/cross-network (exportTo [.])"},
		{"vs exportTo other namespace hides it", func(s *config.Set) { vs(s, "web/web").ExportTo = []string{"web", "shop"} }, tableTestPTKey, webSNI, "is not exported to namespace istio-system"},
		{"vs exportTo the gateway namespace binds", func(s *config.Set) { vs(s, "web/web").ExportTo = []string{".", "istio-system"} }, tableTestPTKey, webSNI, ""},
		{"vs exportTo . in the gateway namespace binds", func(s *config.Set) { vs(s, "istio-system/db").ExportTo = []string{"."} }, tableTestTCPKey, "-", ""},
		{"hidden tcp vs", func(s *config.Set) {
			vs(s, "istio-system/db").ExportTo = []string{"data"}
		}, tableTestTCPKey, "-", "not_exported: listener tcp/0.0.0.0:9000 has no VirtualService tcp route bound to its gateway server: VirtualService istio-system/db is not exported to namespace istio-system"},

		// ServiceEntry exportTo on PASSTHROUGH and TCP routes: both the
		// VirtualService's and the Gateway's namespace must see it.
		{"se exportTo . hidden from another namespace's gateway", func(s *config.Set) { se(s, webSNI).ExportTo = []string{"."} }, tableTestPTKey, webSNI,
			"not_exported: outbound|8443||web.web.svc.cluster.local: service web.web.svc.cluster.local (ServiceEntry web/web) is not exported to namespace istio-system (exportTo [.])"},
		{"se exportTo gateway namespace only: the vs cannot see it", func(s *config.Set) { se(s, webSNI).ExportTo = []string{"istio-system"} }, tableTestPTKey, webSNI, "not_exported: outbound|8443||web.web.svc.cluster.local: service web.web.svc.cluster.local (ServiceEntry web/web) is not exported to namespace web (exportTo [istio-system])"},
		{"se exported to both", func(s *config.Set) { se(s, webSNI).ExportTo = []string{".", "istio-system"} }, tableTestPTKey, webSNI, ""},
		{"se exportTo ~ on a tcp route", func(s *config.Set) { se(s, "db.data.svc.cluster.local").ExportTo = []string{"~"} }, tableTestTCPKey, "-", "is not exported to namespace istio-system (exportTo [~])"},
		{"se exportTo * on a tcp route", func(s *config.Set) { se(s, "db.data.svc.cluster.local").ExportTo = []string{"*"} }, tableTestTCPKey, "-", ""},

		// ServiceEntry exportTo on AUTO_PASSTHROUGH: the Gateway's namespace.
		{"auto default", nil, tableTestAutoKey, autoSNI, ""},
		{"auto se exportTo . hidden", func(s *config.Set) { se(s, "reviews.default.svc.cluster.local").ExportTo = []string{"."} }, tableTestAutoKey, autoSNI,
			"not_exported: SNI \"outbound_.9080_._.reviews.default.svc.cluster.local\" on tcp/0.0.0.0:15443: service reviews.default.svc.cluster.local (ServiceEntry default/reviews) is not exported to namespace [istio-system] of the AUTO_PASSTHROUGH Gateway (exportTo [.])"},
		{"auto se exportTo ~ hidden", func(s *config.Set) { se(s, "reviews.default.svc.cluster.local").ExportTo = []string{"~"} }, tableTestAutoKey, autoV1, "is not exported to namespace [istio-system]"},
		{"auto se exportTo gateway namespace", func(s *config.Set) { se(s, "reviews.default.svc.cluster.local").ExportTo = []string{"istio-system"} }, tableTestAutoKey, autoV1, ""},
		{"auto se exportTo .: gateway in the same namespace sees it", func(s *config.Set) {
			se(s, "reviews.default.svc.cluster.local").ExportTo = []string{"."}
			s.Gateways[0].Namespace = "default"
		}, tableTestAutoKey, autoV1, ""},

		// DestinationRule exportTo: subsets it defines exist only where it is visible.
		{"dr exportTo . hides its subsets from the gateway", func(s *config.Set) { s.DestinationRules[0].Spec.ExportTo = []string{"."} }, tableTestAutoKey, autoV1,
			"not_exported: SNI \"outbound_.9080_.v1_.reviews.default.svc.cluster.local\" on tcp/0.0.0.0:15443: unknown subset v1 of reviews.default.svc.cluster.local: DestinationRule default/reviews defines it but is not exported to namespace istio-system of Gateway istio-system/cross-network (exportTo [.])"},
		{"dr exportTo . leaves the service itself", func(s *config.Set) { s.DestinationRules[0].Spec.ExportTo = []string{"."} }, tableTestAutoKey, autoSNI, ""},
		{"dr exported to the gateway", func(s *config.Set) { s.DestinationRules[0].Spec.ExportTo = []string{"istio-system"} }, tableTestAutoKey, autoV1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := tableTestMesh()
			if tc.mod != nil {
				tc.mod(set)
			}
			b, _ := tableTestBuilder(t)
			tbl := tableTestBuild(t, b, set)
			got := exportTestOutcome(t, tbl, tc.key, tc.sni, "istio")
			switch {
			case tc.refuse == "" && got != "":
				t.Fatalf("%s %q refused (%s), want it routed", tc.key, tc.sni, got)
			case tc.refuse != "" && !strings.Contains(got, tc.refuse):
				t.Fatalf("%s %q outcome = %q, want a refusal containing %q", tc.key, tc.sni, got, tc.refuse)
			}
			// Explain says the same thing as the connection path.
			if tc.sni != "-" && tc.refuse != "" {
				for _, ex := range tbl.Explain(tc.sni, []string{"istio"}) {
					if ex.Listener != tc.key {
						continue
					}
					if !strings.Contains(ex.Detail, "exportTo") {
						t.Fatalf("Explain(%q) on %s detail = %q, want it to name exportTo", tc.sni, tc.key, ex.Detail)
					}
				}
			}
		})
	}
}

// TestTableExportToSubsetRoute: a VirtualService route to a subset that
// only a hidden DestinationRule defines is refused with the reason, and a
// second, visible rule in the VirtualService's namespace takes over.
func TestTableExportToSubsetRoute(t *testing.T) {
	set := tableTestMesh()
	set.DestinationRules[0].Spec.ExportTo = []string{"."}
	v := tableTestVS("istio-system/rev", []string{"reviews.example.com"}, []string{"cross-network"})
	v.Spec.Tls = []*networking.TLSRoute{tableTestTLS([]string{"reviews.example.com"}, 443, tableTestDest("reviews.default.svc.cluster.local", 9443, "v2", 0))}
	set.VirtualServices = append(set.VirtualServices, v)
	b, _ := tableTestBuilder(t)
	got := exportTestOutcome(t, tableTestBuild(t, b, set), tableTestPTKey, "reviews.example.com")
	if want := "not_exported: outbound|9443|v2|reviews.default.svc.cluster.local: unknown subset v2 of reviews.default.svc.cluster.local: DestinationRule default/reviews defines it but is not exported here (exportTo [.])"; !strings.Contains(got, want) {
		t.Fatalf("route to hidden subset: outcome %q, want it to contain %q", got, want)
	}
	set.DestinationRules = append(set.DestinationRules, tableTestDR("istio-system/reviews", "reviews.default.svc.cluster.local", nil,
		&networking.Subset{Name: "v2", Labels: map[string]string{"version": "v2"}}))
	tbl := tableTestBuild(t, b, set)
	if got := exportTestOutcome(t, tbl, tableTestPTKey, "reviews.example.com"); got != "" {
		t.Fatalf("route with a visible DestinationRule refused: %s", got)
	}
	d, _ := tbl.Resolve(tableTestPTKey, tableTestHello("reviews.example.com"))
	if eps := d.Cluster.pools[0].eps; len(eps) != 1 || eps[0].addr != "10.0.0.2:9443" {
		t.Fatalf("subset v2 endpoints = %+v, want only 10.0.0.2:9443", eps)
	}
}

func TestTableSourceMatch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ns     string
		labels map[string]string
		routed bool
	}{
		{"no source", "", nil, true},
		{"sourceNamespace of the gateway", "istio-system", nil, true},
		{"sourceNamespace of another namespace", "web", nil, false},
		{"sourceLabels among the node's labels", "", map[string]string{"zone": "z1"}, true},
		{"sourceLabels all of the node's", "", map[string]string{"zone": "z1", "istio": "eastwestgateway"}, true},
		{"sourceLabels not the node's", "", map[string]string{"zone": "z2"}, false},
		{"sourceLabels key the node lacks", "", map[string]string{"rack": "r1"}, false},
		{"both matching", "istio-system", map[string]string{"zone": "z1"}, true},
		{"namespace matches, labels do not", "istio-system", map[string]string{"zone": "z2"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := tableTestMesh()
			m := set.VirtualServices[0].Spec.Tls[0].Match[0]
			m.SourceNamespace, m.SourceLabels = tc.ns, tc.labels
			tm := &networking.L4MatchAttributes{Port: 9000, SourceNamespace: tc.ns, SourceLabels: tc.labels}
			set.VirtualServices[2].Spec.Tcp[0].Match = []*networking.L4MatchAttributes{tm}
			b, _ := tableTestBuilder(t)
			tbl := tableTestBuild(t, b, set)
			for _, c := range []struct{ key, sni string }{{tableTestPTKey, "web.web.svc.cluster.local"}, {tableTestTCPKey, "-"}} {
				got := exportTestOutcome(t, tbl, c.key, c.sni)
				if tc.routed != (got == "") {
					t.Fatalf("%s %q: outcome %q, want routed=%v", c.key, c.sni, got, tc.routed)
				}
				if !tc.routed && !strings.HasPrefix(got, string(ReasonNoRoute)) {
					t.Fatalf("%s %q: outcome %q, want %s", c.key, c.sni, got, ReasonNoRoute)
				}
			}
		})
	}
}

func TestTableKeepalivePolicy(t *testing.T) {
	for _, tc := range []struct {
		name string
		ka   *networking.ConnectionPoolSettings_TCPSettings_TcpKeepalive
		want ConnPolicy
		kc   string
	}{
		{"time interval probes", &networking.ConnectionPoolSettings_TCPSettings_TcpKeepalive{Time: durationpb.New(30 * time.Second), Interval: durationpb.New(5 * time.Second), Probes: 4},
			ConnPolicy{KeepAlive: 30 * time.Second, KeepAliveInterval: 5 * time.Second, KeepAliveProbes: 4, KeepAliveSet: true}, "{Enable:true Idle:30s Interval:5s Count:4}"},
		{"interval only", &networking.ConnectionPoolSettings_TCPSettings_TcpKeepalive{Interval: durationpb.New(7 * time.Second)},
			ConnPolicy{KeepAliveInterval: 7 * time.Second, KeepAliveSet: true}, "{Enable:true Idle:-1ns Interval:7s Count:-1}"},
		{"probes only", &networking.ConnectionPoolSettings_TCPSettings_TcpKeepalive{Probes: 2},
			ConnPolicy{KeepAliveProbes: 2, KeepAliveSet: true}, "{Enable:true Idle:-1ns Interval:-1ns Count:2}"},
		{"empty block keeps the OS settings", &networking.ConnectionPoolSettings_TCPSettings_TcpKeepalive{},
			ConnPolicy{KeepAliveSet: true}, "{Enable:true Idle:-1ns Interval:-1ns Count:-1}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := tableTestMesh()
			set.DestinationRules[0].Spec.TrafficPolicy = &networking.TrafficPolicy{ConnectionPool: &networking.ConnectionPoolSettings{
				Tcp: &networking.ConnectionPoolSettings_TCPSettings{TcpKeepalive: tc.ka}}}
			b, _ := tableTestBuilder(t)
			d, err := tableTestBuild(t, b, set).Resolve(tableTestAutoKey, tableTestHello("outbound_.9080_._.reviews.default.svc.cluster.local", "istio"))
			if err != nil {
				t.Fatalf("Resolve error = %v", err)
			}
			tc.want.ConnectTimeout, tc.want.IdleTimeout = DefaultConnectTimeout, DefaultIdleTimeout
			if d.Policy() != tc.want {
				t.Fatalf("policy = %+v, want %+v", d.Policy(), tc.want)
			}
			if got := fmt.Sprintf("%+v", serverKeepAlive(d.Policy())); got != tc.kc {
				t.Fatalf("serverKeepAlive = %s, want %s", got, tc.kc)
			}
		})
	}
}

func TestTableEndpointIdentity(t *testing.T) {
	set := tableTestMesh()
	set.ServiceEntries[0].Spec.Endpoints[0].ServiceAccount = "reviews-v1"
	b, _ := tableTestBuilder(t)
	tbl := tableTestBuild(t, b, set)
	ex := tbl.Explain("outbound_.9080_.v1_.reviews.default.svc.cluster.local", []string{"istio"})
	var found bool
	for _, e := range ex {
		if e.Listener != tableTestAutoKey {
			continue
		}
		raw, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(raw), `"identity":"ns/default/sa/reviews-v1"`) {
			t.Fatalf("Explain = %s, want the endpoint identity ns/default/sa/reviews-v1", raw)
		}
		found = true
	}
	if !found {
		t.Fatalf("Explain has no %s entry", tableTestAutoKey)
	}
}

// TestServerExportTo runs exportTo over real sockets: a visible service
// is reached through the gateway, a hidden one is refused with
// not_exported and its backend never sees a connection.
func TestServerExportTo(t *testing.T) {
	snitest.CheckNoLeaks(t)
	ca := snitest.NewCA(t)
	open := snitest.NewTLSBackend(t, ca, "open.example.com")
	private := snitest.NewTLSBackend(t, ca, "private.example.com")
	mesh := snitest.NewTLSBackend(t, ca, "secret.private.svc.cluster.local")

	set := serverPassthroughSet(t, []uint32{15443}, map[string][]string{"open.example.com": {open.Addr()}, "private.example.com": {private.Addr()}}, ConnPolicy{})
	// serverPassthroughSet names services svc<i> in SNI order: svc1 is
	// private.example.com's. Move it to namespace private, exported to
	// itself only.
	hidden := set.ServiceEntries[1]
	hidden.Meta.Namespace = "private"
	hidden.Spec.ExportTo = []string{"."}
	secret := serverServiceEntry(t, "secret", "secret.private.svc.cluster.local", 9443, "TLS", true, []string{mesh.Addr()}, nil)
	secret.Meta.Namespace = "private"
	secret.Spec.ExportTo = []string{"~"}
	set.ServiceEntries = append(set.ServiceEntries, secret)
	set.Gateways = append(set.Gateways, &config.Gateway{Meta: serverMeta("auto"),
		Spec: serverGateway("TLS", networking.ServerTLSSettings_AUTO_PASSTHROUGH, []string{"*.local"}, 15444).Spec})
	tbl := serverBuild(t, set)

	h := newServerHarness(t, nil)
	h.apply(t, tbl)
	ptAddr := h.addr(t, "tcp/0.0.0.0:15443")
	autoAddr := h.addr(t, "tcp/0.0.0.0:15444")

	if got, _ := serverTLSEcho(t, ptAddr, ca.ClientConfig("open.example.com"), "ping"); got != "ping" {
		t.Fatalf("echo through the visible route = %q, want ping", got)
	}
	for _, tc := range []struct {
		name, addr, sni string
		alpn            []string
	}{
		{"passthrough to a service exported to its own namespace only", ptAddr, "private.example.com", nil},
		{"auto passthrough to a service exported to no one", autoAddr, "outbound_.9443_._.secret.private.svc.cluster.local", []string{"istio"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.refused(t, ReasonNotExported)
			serverExpectRefused(t, tc.addr, snitest.ClientHello(t, tc.sni, tc.alpn...))
			snitest.WaitFor(t, "refused_total{reason=not_exported}", func() bool { return h.refused(t, ReasonNotExported) == before+1 })
		})
	}
	if n := private.Accepts() + mesh.Accepts(); n != 0 {
		t.Fatalf("hidden backends accepted %d connections, want 0", n)
	}
	if n := open.Accepts(); n != 1 {
		t.Fatalf("visible backend accepted %d connections, want 1", n)
	}
}
