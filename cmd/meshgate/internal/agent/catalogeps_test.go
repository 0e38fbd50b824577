package agent

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/sni"
)

// TestEventUpdatesEqualBuild walks a catalog through random
// registrations, moves and withdrawals and, after each step, applies
// the catalog's change events to the running table (updateTable, the
// agent's endpoint path) and checks the result against a fresh Build of
// the whole endpoint list: same dump, warnings and AUTO_PASSTHROUGH and
// bridge answers for every name.
func TestEventUpdatesEqualBuild(t *testing.T) {
	set, err := config.Parse("bench.yaml", []byte(benchGateway))
	if err != nil {
		t.Fatalf("config.Parse() error = %v", err)
	}
	cat := benchCatalog(t, 16)
	src := catalogEndpoints{cat: cat, network: "net-a"}
	node := sni.NodeInfo{Name: "n", Network: "net-a", Bridge: true}
	rng := rand.New(rand.NewPCG(3, 11))
	hosts := []string{"Mixed.bench.svc.cluster.local"}
	for i := range 10 {
		hosts = append(hosts, fmt.Sprintf("svc-%d.bench.svc.cluster.local", i))
	}
	upd := sni.NewBuilder(sni.DefaultBuilderConfig())
	cursor := src.changes(0).Cursor
	cur, err := upd.Build(sni.BuildInput{Config: set, Node: node, Endpoints: src.endpoints()})
	if err != nil {
		t.Fatalf("Build() error = %v", err)
	}
	dump := func(tb *sni.Table) string {
		b, err := json.Marshal(tb.Dump())
		if err != nil {
			t.Fatalf("json.Marshal(Dump()) error = %v", err)
		}
		return string(b)
	}
	events := 0
	const steps = 200
	for step := range steps {
		id := fmt.Sprintf("r%d", rng.IntN(24))
		what := "deregister " + id
		if rng.IntN(4) == 0 {
			_ = cat.Deregister(id)
		} else {
			ep := catalog.Endpoint{Service: hosts[rng.IntN(len(hosts))], Port: 8080 + uint32(rng.IntN(2)),
				Addr: fmt.Sprintf("10.0.0.%d:%d", rng.IntN(6), 9000+rng.IntN(3)), Weight: uint32(rng.IntN(3))}
			if rng.IntN(2) == 0 {
				ep.Labels = map[string]string{"version": "v1"}
			}
			if rng.IntN(8) == 0 {
				ep.Network = "net-b" // remote, with no gateway: left out
			}
			what = fmt.Sprintf("register %s as %+v", id, ep)
			if err := cat.Register(catalog.Registration{ID: id, Endpoint: ep}); err != nil {
				t.Fatalf("step %d: Register() error = %v", step, err)
			}
		}
		if d := src.changes(cursor); !d.Full {
			events++
		}
		next, c, err := updateTable(upd, cur, src, cursor)
		if err != nil {
			t.Fatalf("step %d (%s): updateTable() error = %v", step, what, err)
		}
		cur, cursor = next, c
		want, err := sni.NewBuilder(sni.DefaultBuilderConfig()).Build(sni.BuildInput{Config: set, Node: node, Endpoints: src.endpoints()})
		if err != nil {
			t.Fatalf("Build() error = %v", err)
		}
		if g, w := dump(cur), dump(want); g != w {
			t.Fatalf("step %d (%s): table from change events dumps\n%s\nfresh Build dumps\n%s", step, what, g, w)
		}
		if g, w := cur.Warnings(), want.Warnings(); !slices.Equal(g, w) {
			t.Fatalf("step %d (%s): Warnings() = %q; fresh Build %q", step, what, g, w)
		}
		for _, h := range hosts {
			for _, port := range []uint32{8080, 8081} {
				for _, sub := range []string{"", "v1"} {
					name := fmt.Sprintf("outbound_.%d_.%s_.%s", port, sub, h)
					hello := &sni.Hello{ServerName: name, ALPN: []string{"istio"}}
					gd, gerr := cur.Resolve("tcp/0.0.0.0:15443", hello)
					wd, werr := want.Resolve("tcp/0.0.0.0:15443", hello)
					if fmt.Sprint(gerr) != fmt.Sprint(werr) || (gd == nil) != (wd == nil) || (gd != nil && !reflect.DeepEqual(gd.Cluster.Endpoints(), wd.Cluster.Endpoints())) {
						t.Fatalf("step %d (%s): Resolve(%s) = %v, %v; fresh Build %v, %v", step, what, name, gd, gerr, wd, werr)
					}
					gb, gberr := cur.ResolveBridge(h, port, sub)
					wb, wberr := want.ResolveBridge(h, port, sub)
					if fmt.Sprint(gberr) != fmt.Sprint(wberr) || (gb == nil) != (wb == nil) || (gb != nil && !reflect.DeepEqual(gb.Cluster.Endpoints(), wb.Cluster.Endpoints())) {
						t.Fatalf("step %d (%s): ResolveBridge(%s, %d, %q) = %v, %v; fresh Build %v, %v", step, what, h, port, sub, gb, gberr, wb, wberr)
					}
				}
			}
		}
	}
	if events < steps/2 {
		t.Fatalf("%d of %d steps went through change events; want most (the rest fall back to the whole list)", events, steps)
	}
}
