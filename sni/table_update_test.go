package sni

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshgate/meshgate/config"
)

// tableUpdateSet is a configuration exercising what endpoint changes
// touch: AUTO_PASSTHROUGH with and without a required mesh ALPN, a
// wildcard DestinationRule with subsets and outlier detection, a
// passthrough route to a catalog service, a ServiceEntry the catalog adds
// to, and a service exported to one namespace only.
func tableUpdateSet() *config.Set {
	open := tableTestGW("istio-system/open", nil, tableTestServer(15444, "TLS", "AUTO_PASSTHROUGH", "*.local"))
	open.Meta.Labels = map[string]string{LabelRequireMeshALPN: "false"}
	vs := tableTestVS("default/routed", []string{"routed.example.com"}, []string{"istio-system/gw"})
	vs.Spec.Tls = []*networking.TLSRoute{tableTestTLS([]string{"routed.example.com"}, 0, tableTestDest("routed.local", 8080, "", 0))}
	hidden := tableTestSE("team/hidden", true, []string{"hidden.local"}, []*networking.ServicePort{tableTestPort(8080, "tls")}, tableTestWE("192.0.2.50", map[string]string{"version": "v1"}))
	hidden.Spec.ExportTo = []string{"."}
	return &config.Set{
		Gateways: []*config.Gateway{
			tableTestGW("istio-system/gw", nil, tableTestServer(15443, "TLS", "AUTO_PASSTHROUGH", "*.local"), tableTestServer(443, "TLS", "PASSTHROUGH", "*")),
			open,
		},
		VirtualServices: []*config.VirtualService{vs},
		DestinationRules: []*config.DestinationRule{tableTestDR("default/all", "*.local", outlierTestPolicy(2, 100, 0),
			&networking.Subset{Name: "v1", Labels: map[string]string{"version": "v1"}},
			&networking.Subset{Name: "v2", Labels: map[string]string{"version": "v2"}})},
		ServiceEntries: []*config.ServiceEntry{
			tableTestSE("default/se", true, []string{"se.local"}, []*networking.ServicePort{tableTestPort(8080, "tls")}, tableTestWE("192.0.2.40", map[string]string{"version": "v1"})),
			hidden,
		},
	}
}

// tableUpdateEndpoint returns one catalog endpoint of host, drawn from r:
// local, or a remote network's gateway entry (with or without a bridge).
func tableUpdateEndpoint(r *rand.Rand, host string) CatalogEndpoint {
	port := uint32(8080)
	if r.IntN(4) == 0 {
		port = 9090
	}
	labels := map[string]string{"version": []string{"v1", "v2"}[r.IntN(2)]}
	ep := Endpoint{Addr: fmt.Sprintf("10.0.%d.%d:%d", r.IntN(4), r.IntN(8), port), Labels: labels, Weight: uint32(r.IntN(3))}
	if r.IntN(4) == 0 {
		ep.Network, ep.Gateway = "net-b", true
		ep.Addr = fmt.Sprintf("198.51.100.%d:15443", 1+r.IntN(2))
		if r.IntN(2) == 0 {
			ep.Bridge = fmt.Sprintf("198.51.100.%d:15008", 1+r.IntN(2))
		}
	}
	return CatalogEndpoint{Host: host, Port: port, Endpoint: ep}
}

// tableUpdateCompare fails unless a and b route, explain and dump alike.
func tableUpdateCompare(t *testing.T, step string, a, b *Table, hosts []string) {
	t.Helper()
	js := func(v any) string {
		out, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		return string(out)
	}
	if da, db := js(a.Dump()), js(b.Dump()); da != db {
		t.Fatalf("%s: Dump of the updated table differs from a rebuild:\nupdated: %s\nrebuilt: %s", step, da, db)
	}
	if !slices.Equal(a.Warnings(), b.Warnings()) {
		t.Fatalf("%s: Warnings = %q, rebuild %q", step, a.Warnings(), b.Warnings())
	}
	res := func(d *Decision, err error) string {
		if err != nil {
			return "error: " + err.Error()
		}
		return fmt.Sprintf("%s %s %s %d %s %s %v %+v", d.Route, d.Service(), d.Subset(), d.Port(), d.Mode, d.Cluster.Name(), d.Cluster.Endpoints(), d.Policy())
	}
	for _, h := range hosts {
		for _, port := range []uint32{8080, 9090} {
			for _, sub := range []string{"", "v1", "v2", "nope"} {
				name := fmt.Sprintf("outbound_.%d_.%s_.%s", port, sub, h)
				for _, alpn := range [][]string{{"istio"}, nil} {
					if ea, eb := js(a.Explain(name, alpn)), js(b.Explain(name, alpn)); ea != eb {
						t.Fatalf("%s: Explain(%q, %q) differs:\nupdated: %s\nrebuilt: %s", step, name, alpn, ea, eb)
					}
					for _, key := range []string{tableTestAutoKey, "tcp/0.0.0.0:15444"} {
						ra, rb := res(a.Resolve(key, tableTestHello(name, alpn...))), res(b.Resolve(key, tableTestHello(name, alpn...)))
						if ra != rb {
							t.Fatalf("%s: Resolve(%s, %q, %q):\nupdated: %s\nrebuilt: %s", step, key, name, alpn, ra, rb)
						}
					}
				}
				if ra, rb := res(a.ResolveBridge(h, port, sub)), res(b.ResolveBridge(h, port, sub)); ra != rb {
					t.Fatalf("%s: ResolveBridge(%s, %d, %q):\nupdated: %s\nrebuilt: %s", step, h, port, sub, ra, rb)
				}
			}
		}
	}
	if ra, rb := res(a.Resolve(tableTestPTKey, tableTestHello("routed.example.com"))), res(b.Resolve(tableTestPTKey, tableTestHello("routed.example.com"))); ra != rb {
		t.Fatalf("%s: Resolve(routed.example.com):\nupdated: %s\nrebuilt: %s", step, ra, rb)
	}
}

// TestTableUpdateEqualsBuild applies random registrations, withdrawals,
// label and weight changes (as a health flip or a re-registration
// arrives from the catalog) with UpdateEndpoints and checks every step
// against a fresh Build of the same input by another Builder.
func TestTableUpdateEqualsBuild(t *testing.T) {
	set := tableUpdateSet()
	node := tableTestNode
	node.Bridge = true
	r := rand.New(rand.NewPCG(13, 1))
	var hosts []string
	for i := range 24 {
		hosts = append(hosts, fmt.Sprintf("h%d.local", i))
	}
	hosts = append(hosts, "routed.local", "se.local", "hidden.local", "absent.local")
	var eps []CatalogEndpoint
	for _, h := range hosts[:16] {
		for range 1 + r.IntN(3) {
			eps = append(eps, tableUpdateEndpoint(r, h))
		}
	}
	upd, reb := NewBuilder(DefaultBuilderConfig()), NewBuilder(DefaultBuilderConfig())
	cur, err := upd.Build(BuildInput{Config: set, Node: node, Endpoints: eps})
	if err != nil {
		t.Fatalf("Build() error = %v", err)
	}
	incremental := 0
	const steps = 300
	for step := range steps {
		var what string
		switch op := r.IntN(10); {
		case op < 3: // register
			h := hosts[r.IntN(len(hosts)-1)]
			eps = append(eps, tableUpdateEndpoint(r, h))
			what = "register on " + h
		case op < 5 && len(eps) > 0: // withdraw one
			i := r.IntN(len(eps))
			what = "withdraw " + eps[i].Endpoint.Addr + " of " + eps[i].Host
			eps = slices.Delete(eps, i, i+1)
		case op < 6 && len(eps) > 0: // withdraw a whole service
			h := eps[r.IntN(len(eps))].Host
			eps = slices.DeleteFunc(slices.Clone(eps), func(ce CatalogEndpoint) bool { return ce.Host == h })
			what = "withdraw all of " + h
		case op < 8 && len(eps) > 0: // health flip or relabel: the entry comes back changed
			i := r.IntN(len(eps))
			eps = slices.Clone(eps)
			ce := eps[i]
			ce.Endpoint.Labels = map[string]string{"version": []string{"v1", "v2"}[r.IntN(2)]}
			ce.Endpoint.Weight = uint32(r.IntN(4))
			eps[i] = ce
			what = "flip " + ce.Endpoint.Addr + " of " + ce.Host
		case op < 9: // an invalid entry comes and goes
			if i := slices.IndexFunc(eps, func(ce CatalogEndpoint) bool { return ce.Host == "" }); i >= 0 {
				eps = slices.Delete(slices.Clone(eps), i, i+1)
				what = "remove invalid entry"
			} else {
				eps = append(eps, CatalogEndpoint{Host: "", Port: 8080, Endpoint: Endpoint{Addr: "10.9.9.9:8080"}})
				what = "add invalid entry"
			}
		default: // nothing changed
			what = "no change"
		}
		name := fmt.Sprintf("step %d (%s)", step, what)
		next, err := upd.UpdateEndpoints(cur, eps)
		if err != nil {
			t.Fatalf("%s: UpdateEndpoints() error = %v", name, err)
		}
		if next.inc == cur.inc {
			incremental++
		}
		want, err := reb.Build(BuildInput{Config: set, Node: node, Endpoints: eps})
		if err != nil {
			t.Fatalf("%s: Build() error = %v", name, err)
		}
		tableUpdateCompare(t, name, next, want, hosts)
		cur = next
	}
	if incremental < steps/2 {
		t.Fatalf("only %d of %d steps were applied incrementally; most changes touch plain catalog services", incremental, steps)
	}
}

// TestTableUpdateSharesOtherServices checks that a change rebuilds only
// its service: every other service, its clusters and its decisions are
// the very objects of the previous table, and the previous table is
// unchanged.
func TestTableUpdateSharesOtherServices(t *testing.T) {
	in, _ := tableBenchInput3(2000)
	b := NewBuilder(DefaultBuilderConfig())
	prev, err := b.Build(in)
	if err != nil {
		t.Fatalf("Build() error = %v", err)
	}
	changed := tableBenchHost(7)
	next, err := b.UpdateServices(prev, map[string][]CatalogEndpoint{changed: tableBenchEndpoints(7, 1)})
	if err != nil {
		t.Fatalf("UpdateServices() error = %v", err)
	}
	other := tableBenchHost(8)
	if next.service(other) != prev.service(other) {
		t.Fatalf("service %s was rebuilt by a change to %s", other, changed)
	}
	name := "outbound_.8080_.v1_." + other
	dp, _ := prev.Resolve(tableTestAutoKey, tableTestHello(name, "istio"))
	dn, _ := next.Resolve(tableTestAutoKey, tableTestHello(name, "istio"))
	if dp == nil || dp != dn {
		t.Fatalf("Resolve(%s): decision %p in the old table, %p in the new; want the same", name, dp, dn)
	}
	name = "outbound_.8080_._." + changed
	dp, _ = prev.Resolve(tableTestAutoKey, tableTestHello(name, "istio"))
	dn, _ = next.Resolve(tableTestAutoKey, tableTestHello(name, "istio"))
	if dp == nil || dn == nil {
		t.Fatalf("Resolve(%s) = %v (old), %v (new); want routes in both", name, dp, dn)
	}
	if got, want := dp.Cluster.Endpoints()[0].Addr, tableBenchEndpoints(7, 0)[0].Endpoint.Addr; got != want {
		t.Fatalf("old table routes %s to %s after the update; want it unchanged (%s)", changed, got, want)
	}
	if got, want := dn.Cluster.Endpoints()[0].Addr, tableBenchEndpoints(7, 1)[0].Endpoint.Addr; got != want {
		t.Fatalf("new table routes %s to %s; want %s", changed, got, want)
	}
	if prev.services.len() != next.services.len() || prev.services.len() != 2000 {
		t.Fatalf("services: %d before, %d after; want 2000 in both", prev.services.len(), next.services.len())
	}
}

// TestTableUpdateKeepsLiveState ejects an endpoint and holds a lease,
// then changes the service's endpoints: the ejection, the failure count
// and the active connection carry over to the new table, and releasing
// the old lease is seen there.
func TestTableUpdateKeepsLiveState(t *testing.T) {
	b, _ := tableTestBuilder(t)
	set := tableUpdateSet()
	ep := func(addr string) CatalogEndpoint {
		return CatalogEndpoint{Host: "live.local", Port: 443, Endpoint: Endpoint{Addr: addr + ":443"}}
	}
	eps := []CatalogEndpoint{ep("10.1.0.1"), ep("10.1.0.2"), ep("10.1.0.3")}
	prev, err := b.Build(BuildInput{Config: set, Node: tableTestNode, Endpoints: eps})
	if err != nil {
		t.Fatalf("Build() error = %v", err)
	}
	dec, err := prev.Resolve(tableTestAutoKey, tableTestHello("outbound_.443_._.live.local", "istio"))
	if err != nil {
		t.Fatalf("Resolve() error = %v", err)
	}
	outlierTestFail(t, dec.Cluster, "10.1.0.1", 2)
	held := outlierTestLease(t, dec.Cluster, "10.1.0.2")
	if got := outlierTestEjected(t, dec.Cluster); !slices.Equal(got, []string{"10.1.0.1"}) {
		t.Fatalf("ejected before the update = %v, want [10.1.0.1]", got)
	}
	next, err := b.UpdateEndpoints(prev, append(slices.Clone(eps), ep("10.1.0.4")))
	if err != nil {
		t.Fatalf("UpdateEndpoints() error = %v", err)
	}
	if next.inc != prev.inc {
		t.Fatalf("adding an endpoint to a catalog service rebuilt the table")
	}
	nd, err := next.Resolve(tableTestAutoKey, tableTestHello("outbound_.443_._.live.local", "istio"))
	if err != nil {
		t.Fatalf("Resolve() on the new table error = %v", err)
	}
	if nd.Cluster == dec.Cluster || len(nd.Cluster.Endpoints()) != 4 {
		t.Fatalf("new cluster %p with %d endpoints; want a new cluster with 4", nd.Cluster, len(nd.Cluster.Endpoints()))
	}
	if got := outlierTestEjected(t, nd.Cluster); !slices.Equal(got, []string{"10.1.0.1"}) {
		t.Fatalf("ejected after the update = %v, want [10.1.0.1]", got)
	}
	if got := nd.Cluster.Active(); got != 1 {
		t.Fatalf("new cluster Active() = %d with one lease held from the old table, want 1", got)
	}
	held.Release()
	if got := nd.Cluster.Active(); got != 0 {
		t.Fatalf("new cluster Active() = %d after the old lease was released, want 0", got)
	}
	// Withdraw the ejected endpoint and bring it back: with no
	// connection on it, its state is dropped as a rebuild drops it.
	back, err := b.UpdateEndpoints(next, eps[1:])
	if err != nil {
		t.Fatalf("UpdateEndpoints(withdraw) error = %v", err)
	}
	back, err = b.UpdateEndpoints(back, eps)
	if err != nil {
		t.Fatalf("UpdateEndpoints(re-register) error = %v", err)
	}
	bd, _ := back.Resolve(tableTestAutoKey, tableTestHello("outbound_.443_._.live.local", "istio"))
	if got := outlierTestEjected(t, bd.Cluster); len(got) != 0 {
		t.Fatalf("ejected after withdraw and re-register = %v, want none (as after a rebuild)", got)
	}
}

// TestTableUpdateServicesRefuses lists the changes UpdateServices leaves
// to a rebuild.
func TestTableUpdateServicesRefuses(t *testing.T) {
	b := NewBuilder(DefaultBuilderConfig())
	set := tableUpdateSet()
	ok := CatalogEndpoint{Host: "h.local", Port: 8080, Endpoint: Endpoint{Addr: "10.0.0.1:8080"}}
	prev, err := b.Build(BuildInput{Config: set, Node: tableTestNode, Endpoints: []CatalogEndpoint{ok}})
	if err != nil {
		t.Fatalf("Build() error = %v", err)
	}
	other, _ := NewBuilder(DefaultBuilderConfig()).Build(BuildInput{Config: set, Node: tableTestNode})
	for _, tc := range []struct {
		name    string
		prev    *Table
		changed map[string][]CatalogEndpoint
	}{
		{"nil table", nil, map[string][]CatalogEndpoint{"h.local": nil}},
		{"table of another builder", other, map[string][]CatalogEndpoint{"h.local": nil}},
		{"host named by a VirtualService", prev, map[string][]CatalogEndpoint{"routed.local": {{Host: "routed.local", Port: 8080, Endpoint: Endpoint{Addr: "10.0.0.2:8080"}}}}},
		{"host of a ServiceEntry", prev, map[string][]CatalogEndpoint{"se.local": {{Host: "se.local", Port: 8080, Endpoint: Endpoint{Addr: "10.0.0.2:8080"}}}}},
		{"endpoint listed under another host", prev, map[string][]CatalogEndpoint{"h.local": {{Host: "x.local", Port: 8080, Endpoint: Endpoint{Addr: "10.0.0.2:8080"}}}}},
		{"invalid port", prev, map[string][]CatalogEndpoint{"h.local": {{Host: "h.local", Port: 70000, Endpoint: Endpoint{Addr: "10.0.0.2:8080"}}}}},
		{"empty host", prev, map[string][]CatalogEndpoint{"": {{Host: "", Port: 8080, Endpoint: Endpoint{Addr: "10.0.0.2:8080"}}}}},
		{"endpoint that warns", prev, map[string][]CatalogEndpoint{"h.local": {{Host: "h.local", Port: 8080, Endpoint: Endpoint{Addr: "not-host-port"}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := b.UpdateServices(tc.prev, tc.changed)
			if !errors.Is(err, ErrNeedsRebuild) || got != nil {
				t.Fatalf("UpdateServices() = %p, %v; want nil, ErrNeedsRebuild", got, err)
			}
		})
	}
	// prev still routes as built.
	if _, err := prev.Resolve(tableTestAutoKey, tableTestHello("outbound_.8080_._.h.local", "istio")); err != nil {
		t.Fatalf("Resolve(h.local) on the old table after refused updates: %v", err)
	}
}

// TestSlabSliceNeighbours: slices carved from one slab never write into
// each other, whatever is appended to them.
func TestSlabSliceNeighbours(t *testing.T) {
	var slab []int
	a := slabSlice(&slab, 8, 2)
	b := slabSlice(&slab, 8, 2)
	for i := range 5 {
		a = append(a, 100+i)
	}
	b = append(b, 1, 2)
	if want := []int{100, 101, 102, 103, 104}; !slices.Equal(a, want) {
		t.Fatalf("a = %v, want %v", a, want)
	}
	if want := []int{1, 2}; !slices.Equal(b, want) {
		t.Fatalf("b = %v, want %v (a's appends reached it)", b, want)
	}
	c := slabSlice(&slab, 8, 3)
	c = append(c, 7, 8, 9)
	if b[0] != 1 || b[1] != 2 || !slices.Equal(c, []int{7, 8, 9}) {
		t.Fatalf("b = %v c = %v after c's appends", b, c)
	}
}
