package sni

import (
	"fmt"
	"runtime"
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshgate/meshgate/config"
)

// tableBenchSizes are the service counts of the route table benchmarks.
var tableBenchSizes = []int{1_000, 10_000, 100_000}

// tableBenchHost names service i of the benchmark input.
func tableBenchHost(i int) string { return fmt.Sprintf("svc-%d.bench.svc.cluster.local", i) }

// tableBenchEndpoints returns the three catalog endpoints of service i;
// gen varies their addresses so a change can be made.
func tableBenchEndpoints(i, gen int) []CatalogEndpoint {
	labels := map[string]string{"version": "v1"}
	out := make([]CatalogEndpoint, 0, 3)
	for k := range 3 {
		out = append(out, CatalogEndpoint{Host: tableBenchHost(i), Port: 8080,
			Endpoint: Endpoint{Addr: fmt.Sprintf("10.%d.%d.%d:%d", i>>16&255, i>>8&255, i&255, 8080+k+3*gen), Labels: labels}})
	}
	return out
}

// tableBenchInput3 is n AUTO_PASSTHROUGH services of three catalog
// endpoints each (one port, a wildcard DestinationRule with subset v1),
// on a bridge node, and hellos spread over them.
func tableBenchInput3(n int) (BuildInput, []*Hello) {
	eps := make([]CatalogEndpoint, 0, 3*n)
	for i := range n {
		eps = append(eps, tableBenchEndpoints(i, 0)...)
	}
	set := &config.Set{
		Gateways:         []*config.Gateway{tableTestGW("istio-system/gw", nil, tableTestServer(15443, "TLS", "AUTO_PASSTHROUGH", "*.local"))},
		DestinationRules: []*config.DestinationRule{tableTestDR("bench/all", "*.bench.svc.cluster.local", nil, &networking.Subset{Name: "v1", Labels: map[string]string{"version": "v1"}})},
	}
	node := tableTestNode
	node.Bridge = true
	var hellos []*Hello
	for i := range 1024 {
		j := (i * 7919) % n
		sub := ""
		if i%2 == 0 {
			sub = "v1"
		}
		hellos = append(hellos, tableTestHello(fmt.Sprintf("outbound_.8080_.%s_.svc-%d.bench.svc.cluster.local", sub, j), "istio-peer-exchange", "istio"))
	}
	return BuildInput{Config: set, Node: node, Endpoints: eps}, hellos
}

// BenchmarkTableBuild is a full rebuild at n services x 3 endpoints by a
// Builder that already built them (live state reused), as on a
// configuration change.
func BenchmarkTableBuild(b *testing.B) {
	for _, n := range tableBenchSizes {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			in, _ := tableBenchInput3(n)
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

// tableBenchHellos returns 1024 hellos over hot services spread evenly
// across n (half of them for subset v1).
func tableBenchHellos(n, hot int) []*Hello {
	hellos := make([]*Hello, 0, 1024)
	for i := range 1024 {
		j := (i % hot) * (n / hot)
		sub := ""
		if i%2 == 0 {
			sub = "v1"
		}
		hellos = append(hellos, tableTestHello(fmt.Sprintf("outbound_.8080_.%s_.svc-%d.bench.svc.cluster.local", sub, j), "istio-peer-exchange", "istio"))
	}
	return hellos
}

// BenchmarkTableLookup resolves AUTO_PASSTHROUGH names; it must not
// allocate and must not grow with the table. hot is how many distinct
// services the names cover, spread over the whole table: hot=100 holds
// the working set fixed while the table grows (the table's own cost),
// hot=1024 shows what a wider working set adds through the caches.
func BenchmarkTableLookup(b *testing.B) {
	for _, n := range append([]int{100}, tableBenchSizes...) {
		in, _ := tableBenchInput3(n)
		tbl, err := NewBuilder(DefaultBuilderConfig()).Build(in)
		if err != nil {
			b.Fatalf("Build() error = %v", err)
		}
		for _, hot := range []int{100, 1024} {
			if hot > n {
				continue
			}
			hellos := tableBenchHellos(n, hot)
			b.Run(fmt.Sprintf("services=%d/hot=%d", n, hot), func(b *testing.B) { tableBenchResolve(b, tbl, hellos) })
		}
	}
}

// tableBenchResolve resolves the 1024 hellos on the AUTO_PASSTHROUGH
// listener in turn, each b.Loop iteration one.
func tableBenchResolve(b *testing.B, tbl *Table, hellos []*Hello) {
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := tbl.Resolve(tableTestAutoKey, hellos[i&1023]); err != nil {
			b.Fatalf("Resolve(%q) error = %v", hellos[i&1023].ServerName, err)
		}
		i++
	}
}

// BenchmarkTableMemory reports the heap a table and its builder hold, per
// service (the build input itself is not counted).
func BenchmarkTableMemory(b *testing.B) {
	for _, n := range tableBenchSizes {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			in, _ := tableBenchInput3(n)
			var per float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				builder := NewBuilder(DefaultBuilderConfig())
				tbl, err := builder.Build(in)
				if err != nil {
					b.Fatalf("Build() error = %v", err)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				per = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
				runtime.KeepAlive(tbl)
				runtime.KeepAlive(builder)
			}
			b.ReportMetric(per, "B/service")
		})
	}
}

// tableBenchChanged returns in with service i's endpoints replaced by
// generation gen of them.
func tableBenchChanged(in BuildInput, i, gen int) BuildInput {
	out := in
	out.Endpoints = append([]CatalogEndpoint(nil), in.Endpoints...)
	copy(out.Endpoints[3*i:], tableBenchEndpoints(i, gen))
	return out
}

// BenchmarkTableEndpointChange makes one service's endpoints change (a
// new address set) and measures the work until a table routing the new
// endpoints is ready: "delta" hands the changed service to
// UpdateServices (as the agent does with the catalog's per-service
// changes), "diff" hands the complete endpoint list to UpdateEndpoints
// (the agent's fallback when the changes are not known per service) and
// "rebuild" is a full Build of that list (as before incremental updates).
func BenchmarkTableEndpointChange(b *testing.B) {
	for _, n := range tableBenchSizes {
		in, _ := tableBenchInput3(n)
		ins := []BuildInput{tableBenchChanged(in, n/2, 1), tableBenchChanged(in, n/2, 2)}
		deltas := []map[string][]CatalogEndpoint{
			{tableBenchHost(n / 2): tableBenchEndpoints(n/2, 1)},
			{tableBenchHost(n / 2): tableBenchEndpoints(n/2, 2)},
		}
		for _, how := range []string{"delta", "diff", "rebuild"} {
			b.Run(fmt.Sprintf("services=%d/%s", n, how), func(b *testing.B) {
				builder := NewBuilder(DefaultBuilderConfig())
				cur, err := builder.Build(in)
				if err != nil {
					b.Fatalf("Build() error = %v", err)
				}
				b.ReportAllocs()
				k := 0
				for b.Loop() {
					var next *Table
					switch how {
					case "delta":
						next, err = builder.UpdateServices(cur, deltas[k&1])
					case "diff":
						next, err = builder.UpdateEndpoints(cur, ins[k&1].Endpoints)
					default:
						next, err = builder.Build(ins[k&1])
					}
					if err != nil {
						b.Fatalf("%s: error = %v", how, err)
					}
					if how != "rebuild" && next.inc != cur.inc {
						b.Fatalf("%s rebuilt the table", how)
					}
					cur = next
					k++
				}
			})
		}
	}
}
