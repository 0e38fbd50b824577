package sni

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshgate/meshgate/config"
)

// explainTestTable is tableTestMesh plus a connection limit of 1 on
// web and a reviews subset v3 that only has endpoints in another network.
func explainTestTable(t *testing.T) (*Table, *Builder) {
	t.Helper()
	set := tableTestMesh()
	set.DestinationRules = append(set.DestinationRules, tableTestDR("web/web", "web.web.svc.cluster.local",
		&networking.TrafficPolicy{ConnectionPool: &networking.ConnectionPoolSettings{Tcp: &networking.ConnectionPoolSettings_TCPSettings{MaxConnections: 1}}}))
	set.DestinationRules[0].Spec.Subsets = append(set.DestinationRules[0].Spec.Subsets,
		&networking.Subset{Name: "v3", Labels: map[string]string{"version": "v3"}})
	set.ServiceEntries[0].Spec.Endpoints = append(set.ServiceEntries[0].Spec.Endpoints,
		&networking.WorkloadEntry{Address: "10.9.0.3", Network: "net-b", Labels: map[string]string{"version": "v3"}})
	b, _ := tableTestBuilder(t)
	return tableTestBuild(t, b, set), b
}

func TestExplain(t *testing.T) {
	tbl, _ := explainTestTable(t)
	// Hold web's only connection slot.
	d, err := tbl.Resolve(tableTestPTKey, tableTestHello("web.web.svc.cluster.local"))
	if err != nil {
		t.Fatalf("Resolve(web) error = %v", err)
	}
	l, err := d.Cluster.Pick(nil)
	if err != nil {
		t.Fatalf("Pick(web) error = %v", err)
	}
	t.Cleanup(l.Release)

	for _, tc := range []struct {
		name     string
		sni      string
		alpn     []string
		listener string
		reason   Reason
		detail   string
		check    func(t *testing.T, ex Explanation)
	}{
		{name: "auto route", sni: "outbound_.9080_.v1_.reviews.default.svc.cluster.local", alpn: []string{"istio"}, listener: tableTestAutoKey,
			check: func(t *testing.T, ex Explanation) {
				if ex.Match != "auto" || ex.Mode != ModeAutoPassthrough || ex.Gateway != "istio-system/cross-network" || ex.Route != "istio-system/cross-network#servers[0]" {
					t.Fatalf("Explain auto = %+v", ex)
				}
				dst := ex.Destinations[0]
				if dst.Cluster != "outbound_.9080_.v1_.reviews.default.svc.cluster.local" || len(dst.Endpoints) != 1 || dst.Endpoints[0].Addr != "10.0.0.1:9080" || !dst.Endpoints[0].Local {
					t.Fatalf("Explain auto destination = %+v, want only the local v1 endpoint", dst)
				}
			}},
		{name: "envoy cluster spelling", sni: "outbound|9080|v1|reviews.default.svc.cluster.local", alpn: []string{"istio"}, listener: tableTestAutoKey,
			check: func(t *testing.T, ex Explanation) {
				if ex.Match != "auto" || ex.SNI != "outbound_.9080_.v1_.reviews.default.svc.cluster.local" {
					t.Fatalf("Explain(outbound|...) = %+v, want the auto route under the SNI spelling", ex)
				}
			}},
		{name: "passthrough exact", sni: "API.example.com.", listener: tableTestPTKey,
			check: func(t *testing.T, ex Explanation) {
				if ex.SNI != "api.example.com" || ex.Match != "exact" || ex.Pattern != "api.example.com" || ex.Route != "istio-system/ext#tls[0]" || ex.Destinations[0].Service != "api.example.com" {
					t.Fatalf("Explain passthrough = %+v", ex)
				}
				if p := ex.Destinations[0].Policy; p.ConnectTimeout != "10s" || p.IdleTimeout != "1h0m0s" {
					t.Fatalf("Explain policy = %+v, want Istio defaults", p)
				}
			}},
		{name: "tcp listener ignores sni", sni: "anything.example.org", listener: tableTestTCPKey,
			check: func(t *testing.T, ex Explanation) {
				if ex.Match != "tcp" || ex.Mode != ModeTCP || ex.Destinations[0].Service != "db.data.svc.cluster.local" {
					t.Fatalf("Explain tcp = %+v", ex)
				}
			}},
		{name: "unknown sni", sni: "nothing.example.org", listener: tableTestPTKey, reason: ReasonNoRoute, detail: "matches no server host"},
		{name: "unknown subset", sni: "outbound_.9080_.v9_.reviews.default.svc.cluster.local", alpn: []string{"istio"}, listener: tableTestAutoKey,
			reason: ReasonNoRoute, detail: "unknown subset v9 of reviews.default.svc.cluster.local: not defined in DestinationRule default/reviews (subsets [v1 v2 v3])"},
		{name: "missing mesh alpn", sni: "outbound_.9080_.v1_.reviews.default.svc.cluster.local", alpn: []string{"h2"}, listener: tableTestAutoKey, reason: ReasonALPN, detail: `client offered ["h2"]`},
		{name: "no local endpoint", sni: "outbound_.9080_.v3_.reviews.default.svc.cluster.local", alpn: []string{"istio"}, listener: tableTestAutoKey,
			reason: ReasonNoEndpoint, detail: "no endpoints in this node's network"},
		{name: "overloaded", sni: "web.web.svc.cluster.local", listener: tableTestPTKey, reason: ReasonOverloaded, detail: "maxConnections 1"},
		{name: "malformed", sni: "bad..name", listener: tableTestPTKey, reason: ReasonMalformed, detail: "empty label"},
		{name: "no sni", sni: "", listener: tableTestAutoKey, reason: ReasonNoSNI},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exs := tbl.Explain(tc.sni, tc.alpn)
			if len(exs) != len(tbl.Listeners()) {
				t.Fatalf("Explain(%q) returned %d explanations, want one per listener (%d)", tc.sni, len(exs), len(tbl.Listeners()))
			}
			var ex *Explanation
			for i := range exs {
				if exs[i].Listener == tc.listener {
					ex = &exs[i]
				}
			}
			if ex == nil {
				t.Fatalf("Explain(%q) has no entry for %s: %+v", tc.sni, tc.listener, exs)
			}
			if ex.Reason != tc.reason || !strings.Contains(ex.Detail, tc.detail) {
				t.Fatalf("Explain(%q) on %s: reason %q detail %q; want %q containing %q", tc.sni, tc.listener, ex.Reason, ex.Detail, tc.reason, tc.detail)
			}
			if tc.check != nil {
				tc.check(t, *ex)
			}
			if _, err := json.Marshal(exs); err != nil {
				t.Fatalf("json.Marshal(Explain(%q)) error = %v", tc.sni, err)
			}
			// Explain and Resolve agree on refusals.
			if tc.reason == ReasonNoRoute || tc.reason == ReasonALPN {
				_, err := tbl.Resolve(tc.listener, tableTestHello(tc.sni, tc.alpn...))
				tableTestRefusal(t, "Resolve("+tc.sni+")", err, tc.reason, "")
			}
		})
	}
}

func TestDump(t *testing.T) {
	tbl, _ := explainTestTable(t)
	raw, err := json.Marshal(tbl.Dump())
	if err != nil {
		t.Fatalf("json.Marshal(Dump()) error = %v", err)
	}
	var got struct {
		Node struct {
			Network string `json:"network"`
		} `json:"node"`
		Listeners []struct {
			Key     string `json:"key"`
			Servers []struct {
				Mode            string `json:"mode"`
				RequireMeshALPN *bool  `json:"require_mesh_alpn"`
			} `json:"servers"`
			SNI []struct {
				Host  string `json:"host"`
				Route struct {
					Name string `json:"name"`
				} `json:"route"`
			} `json:"sni"`
			TCP   *struct{ Name string } `json:"tcp"`
			Names int                    `json:"auto_passthrough_names"`
		} `json:"listeners"`
		Clusters []struct {
			Name      string `json:"name"`
			Endpoints []struct {
				Addr string `json:"addr"`
			} `json:"endpoints"`
		} `json:"clusters"`
		Warnings []string `json:"warnings"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("json.Unmarshal(Dump()) error = %v\n%s", err, raw)
	}
	if got.Node.Network != "net-a" || len(got.Listeners) != 3 {
		t.Fatalf("Dump() = %s; want node net-a and 3 listeners", raw)
	}
	byKey := map[string]int{}
	for i, l := range got.Listeners {
		byKey[l.Key] = i
	}
	auto := got.Listeners[byKey[tableTestAutoKey]]
	// reviews: 2 ports x (no subset + v1 v2 v3); web 1 port; db 1 port.
	if auto.Names != 10 || auto.Servers[0].RequireMeshALPN == nil || !*auto.Servers[0].RequireMeshALPN {
		t.Fatalf("Dump() auto listener = %+v, want 10 exported names and require_mesh_alpn true", auto)
	}
	pt := got.Listeners[byKey[tableTestPTKey]]
	if len(pt.SNI) != 2 || pt.SNI[0].Host != "api.example.com" || pt.SNI[1].Host != "web.web.svc.cluster.local" {
		t.Fatalf("Dump() passthrough SNI = %+v, want api.example.com and web.web.svc.cluster.local", pt.SNI)
	}
	if got.Listeners[byKey[tableTestTCPKey]].TCP == nil {
		t.Fatalf("Dump() tcp listener has no tcp route: %s", raw)
	}
	for i := 1; i < len(got.Clusters); i++ {
		if got.Clusters[i-1].Name >= got.Clusters[i].Name {
			t.Fatalf("Dump() clusters not sorted: %s before %s", got.Clusters[i-1].Name, got.Clusters[i].Name)
		}
	}
	if got.Warnings == nil {
		t.Fatalf("Dump() warnings = null, want []")
	}
}

// FuzzResolve feeds arbitrary names and ALPN lists to a fixed table: it
// must never panic, refuse only with *RefusedError, and route an
// AUTO_PASSTHROUGH name only to the service, port and subset the name
// says, through a mesh ALPN, to local endpoints.
func FuzzResolve(f *testing.F) {
	for _, s := range []string{
		"outbound_.9080_.v1_.reviews.default.svc.cluster.local",
		"outbound_.9080_._.reviews.default.svc.cluster.local",
		"outbound|9443|v2|reviews.default.svc.cluster.local",
		"outbound_.9080_.v3_.reviews.default.svc.cluster.local",
		"outbound_.443_._.api.example.com",
		"web.web.svc.cluster.local",
		"api.example.com",
		"x.example.com",
		"",
		"..",
		"outbound_.",
		"outbound_.0_._.",
		"outbound_.8443_._.secret.default.svc.cluster.local",
		"secret.example.com",
	} {
		f.Add(s, "istio")
		f.Add(s, "h2,http/1.1")
	}
	// A service exported to no one, and a VirtualService hidden from the
	// gateway routing to it: nothing may ever reach it.
	set := tableTestMesh()
	secret := tableTestSE("default/secret", true, []string{"secret.default.svc.cluster.local"}, []*networking.ServicePort{tableTestPort(8443, "tls")}, tableTestWE("10.3.0.1", nil))
	secret.Spec.ExportTo = []string{"~"}
	vsSecret := tableTestVS("istio-system/secret", []string{"secret.example.com"}, []string{"cross-network"})
	vsSecret.Spec.ExportTo = []string{"web"}
	vsSecret.Spec.Tls = []*networking.TLSRoute{tableTestTLS([]string{"secret.example.com"}, 443, tableTestDest("web.web.svc.cluster.local", 8443, "", 0))}
	set.ServiceEntries = append(set.ServiceEntries, secret)
	set.VirtualServices = append(set.VirtualServices, vsSecret)
	b := NewBuilder(DefaultBuilderConfig())
	tbl, err := b.Build(BuildInput{Config: set, Node: tableTestNode})
	if err != nil {
		f.Fatalf("Build() error = %v", err)
	}
	known := map[string]bool{"reviews.default.svc.cluster.local": true, "web.web.svc.cluster.local": true, "db.data.svc.cluster.local": true, "api.example.com": true}
	f.Fuzz(func(t *testing.T, name, alpnCSV string) {
		var alpn []string
		if alpnCSV != "" {
			alpn = strings.Split(alpnCSV, ",")
		}
		for _, spec := range tbl.Listeners() {
			d, err := tbl.Resolve(spec.Key, &Hello{ServerName: name, ALPN: alpn})
			if err != nil {
				var re *RefusedError
				if !errors.As(err, &re) || d != nil {
					t.Fatalf("Resolve(%s, %q) = %v, %v; want nil and a *RefusedError", spec.Key, name, d, err)
				}
				continue
			}
			if !known[d.Service()] {
				t.Fatalf("Resolve(%s, %q) routed to %s, which is not configured or not exported", spec.Key, name, d.Service())
			}
			if d.Route == "istio-system/secret#tls[0]" {
				t.Fatalf("Resolve(%s, %q) took VirtualService istio-system/secret, which is not exported to istio-system", spec.Key, name)
			}
			if d.Mode == ModeAutoPassthrough {
				ap, err := ParseAutoPassthrough(name)
				if err != nil || string(ap.Host) != d.Service() || ap.Port != d.Port() || ap.Subset != d.Subset() || !IsMeshALPN(alpn) {
					t.Fatalf("Resolve(%s, %q, %q) = AUTO %s:%d/%s; the name parses as %+v, %v", spec.Key, name, alpn, d.Service(), d.Port(), d.Subset(), ap, err)
				}
				for _, e := range d.Cluster.Endpoints() {
					if e.Network != "" {
						t.Fatalf("AUTO cluster %s holds remote endpoint %+v", d.Cluster.Name(), e)
					}
				}
			}
		}
		if got := tbl.Explain(name, alpn); len(got) != len(tbl.Listeners()) {
			t.Fatalf("Explain(%q) = %d entries, want %d", name, len(got), len(tbl.Listeners()))
		}
	})
}

// explainTestSetWithDuplicate is used by the warnings test below.
func TestWarningsLoggedOnce(t *testing.T) {
	var logs strings.Builder
	b, _ := tableTestBuilder(t)
	b.env.log = tableTestLogger(&logs)
	set := tableTestMesh()
	set.Gateways[0].Spec.Servers = append(set.Gateways[0].Spec.Servers, tableTestServer(80, "HTTP", "", "*"))
	tableTestBuild(t, b, set)
	tableTestBuild(t, b, set)
	if n := strings.Count(logs.String(), "not routed by SNI or TCP"); n != 1 {
		t.Fatalf("two identical builds logged the warning %d times, want once:\n%s", n, logs.String())
	}
	tableTestBuild(t, b, &config.Set{})
	tableTestBuild(t, b, set)
	if n := strings.Count(logs.String(), "not routed by SNI or TCP"); n != 2 {
		t.Fatalf("warning logged %d times after it went away and came back, want 2", n)
	}
}
