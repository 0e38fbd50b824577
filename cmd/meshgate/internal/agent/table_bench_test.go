package agent

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/sni"
)

// benchGateway is the configuration of the endpoint-change benchmark: one
// AUTO_PASSTHROUGH server exporting every service, and a DestinationRule
// with one subset.
const benchGateway = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: eastwest, namespace: istio-system}
spec:
  selector: {}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: all, namespace: bench}
spec:
  host: "*.bench.svc.cluster.local"
  subsets:
  - {name: v1, labels: {version: v1}}
`

// benchCatalog is a catalog alone on loopback holding n services of
// three endpoints each, registered by this node.
func benchCatalog(tb testing.TB, n int) *catalog.Catalog {
	tb.Helper()
	cfg := catalog.DefaultConfig()
	cfg.Name = "bench"
	cfg.Network = "net-a"
	cfg.BindAddr = "127.0.0.1:0"
	cfg.Unsigned = true
	cfg.MaxEndpoints = 3*n + 64
	cfg.MaintenanceInterval = time.Hour
	cat, err := catalog.New(cfg)
	if err != nil {
		tb.Fatalf("catalog.New() error = %v", err)
	}
	tb.Cleanup(func() { cat.Close() })
	for i := range n {
		for k := range 3 {
			if err := cat.Register(benchRegistration(i, k, 0)); err != nil {
				tb.Fatalf("Register() error = %v", err)
			}
		}
	}
	return cat
}

// benchRegistration is endpoint k of service i; gen moves its port
// (consecutive gens differ).
func benchRegistration(i, k, gen int) catalog.Registration {
	return catalog.Registration{ID: fmt.Sprintf("s%d-%d", i, k), Endpoint: catalog.Endpoint{
		Service: fmt.Sprintf("svc-%d.bench.svc.cluster.local", i), Port: 8080,
		Addr:   fmt.Sprintf("10.%d.%d.%d:%d", i>>16&255, i>>8&255, i&255, 1024+(k+3*gen)%60000),
		Labels: map[string]string{"version": "v1"},
	}}
}

// BenchmarkEndpointChange measures what the agent does for one endpoint
// change, from the catalog change to the table published to the router:
// Register (the change) plus, for "events", updateTable (the catalog's
// change log, UpdateServices) and, for "diff", the previous path (the
// whole split-horizon list, UpdateEndpoints). Each op moves one endpoint
// of one service.
func BenchmarkEndpointChange(b *testing.B) {
	set, err := config.Parse("bench.yaml", []byte(benchGateway))
	if err != nil {
		b.Fatalf("config.Parse() error = %v", err)
	}
	for _, n := range []int{1_000, 10_000, 100_000} {
		cat := benchCatalog(b, n)
		src := catalogEndpoints{cat: cat, network: "net-a"}
		gen := 0 // across both cells, so every op changes an endpoint
		for _, how := range []string{"events", "diff"} {
			b.Run(fmt.Sprintf("services=%d/%s", n, how), func(b *testing.B) {
				builder := sni.NewBuilder(sni.DefaultBuilderConfig())
				cursor := src.changes(0).Cursor
				cur, err := builder.Build(sni.BuildInput{Config: set, Node: sni.NodeInfo{Name: "bench", Network: "net-a", Bridge: true}, Endpoints: src.endpoints()})
				if err != nil {
					b.Fatalf("Build() error = %v", err)
				}
				var router sni.Router
				router.Publish(cur)
				b.ReportAllocs()
				for b.Loop() {
					gen++
					i := (gen * 7919) % n
					if err := cat.Register(benchRegistration(i, 0, gen)); err != nil {
						b.Fatalf("Register() error = %v", err)
					}
					var next *sni.Table
					if how == "events" {
						next, cursor, err = updateTable(builder, cur, src, cursor)
					} else {
						next, err = builder.UpdateEndpoints(cur, src.endpoints())
					}
					if err != nil {
						b.Fatalf("%s: error = %v", how, err)
					}
					if next == cur {
						b.Fatalf("%s: the change did not make a new table", how)
					}
					router.Publish(next)
					cur = next
				}
			})
		}
	}
}
