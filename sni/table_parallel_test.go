package sni

import (
	"encoding/json"
	"fmt"
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshgate/meshgate/config"
)

// tableParallelInput is n AUTO_PASSTHROUGH services on a bridge node, with
// what the keys phase touches: two listeners (one for mesh clients, one
// open to any client, so open keys and bridge pools are made), local
// endpoints of two versions, split-horizon entries of another network
// through two gateways on every third service, and a DestinationRule
// with subsets, port-level settings and a field that warns.
func tableParallelInput(n int) (BuildInput, []*Hello) {
	mesh := tableTestGW("istio-system/mesh", nil, tableTestServer(15443, "TLS", "AUTO_PASSTHROUGH", "*.local"))
	open := tableTestGW("istio-system/open", nil, tableTestServer(15444, "TLS", "AUTO_PASSTHROUGH", "*.par.svc.cluster.local"))
	open.Meta.Labels = map[string]string{LabelRequireMeshALPN: "false"}
	hash := &networking.TrafficPolicy{LoadBalancer: &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_ConsistentHash{
		ConsistentHash: &networking.LoadBalancerSettings_ConsistentHashLB{}}}}
	tp := &networking.TrafficPolicy{
		PortLevelSettings: []*networking.TrafficPolicy_PortTrafficPolicy{{
			Port:         &networking.PortSelector{Number: 8080},
			LoadBalancer: &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: networking.LoadBalancerSettings_LEAST_REQUEST}},
		}},
	}
	set := &config.Set{
		Gateways: []*config.Gateway{mesh, open},
		DestinationRules: []*config.DestinationRule{tableTestDR("par/all", "*.par.svc.cluster.local", tp,
			&networking.Subset{Name: "v1", Labels: map[string]string{"version": "v1"}},
			&networking.Subset{Name: "v2", Labels: map[string]string{"version": "v2"}, TrafficPolicy: hash})},
	}
	var eps []CatalogEndpoint
	var hellos []*Hello
	for i := range n {
		host := fmt.Sprintf("svc-%d.par.svc.cluster.local", i)
		for k := range 2 {
			eps = append(eps, CatalogEndpoint{Host: host, Port: 8080, Endpoint: Endpoint{
				Addr: fmt.Sprintf("10.%d.%d.%d:%d", i>>16&255, i>>8&255, i&255, 8080+k), Labels: map[string]string{"version": fmt.Sprintf("v%d", k+1)}}})
		}
		if i%3 == 0 {
			for g := range 2 {
				eps = append(eps, CatalogEndpoint{Host: host, Port: 8080, Endpoint: Endpoint{
					Addr: fmt.Sprintf("192.0.2.%d:15443", g+1), Bridge: fmt.Sprintf("192.0.2.%d:15008", g+1), Network: "net-b",
					Gateway: true, Weight: uint32(1 + i%4), Labels: map[string]string{"version": "v1"}}})
			}
		}
		if i%7 == 0 {
			for _, sub := range []string{"", "v1", "v2", "v3"} {
				name := fmt.Sprintf("outbound_.8080_.%s_.%s", sub, host)
				hellos = append(hellos, tableTestHello(name, "istio-peer-exchange", "istio"), tableTestHello(name))
			}
		}
	}
	node := tableTestNode
	node.Bridge = true
	return BuildInput{Config: set, Node: node, Endpoints: eps}, hellos
}

// tableOutcome is what a table says about a hello: the decision's
// origin and cluster, or the refusal.
func tableOutcome(tbl *Table, key string, h *Hello) string {
	dec, err := tbl.Resolve(key, h)
	if err != nil {
		return "error: " + err.Error()
	}
	return fmt.Sprintf("%s %s %s/%s %s", dec.Origin.Route, dec.Origin.Mode, dec.Cluster.Name(), dec.Subset(), dec.Cluster.pol.lb)
}

// TestTableParallelKeysMatchSerial builds one input with one keys worker
// and with three (keysParallel), twice each so the second build takes
// over live states, and asserts the tables are the same: the whole dump
// (clusters, endpoints, weights, policies, name counts, warnings) and
// the decision for every hello on every listener and on the bridge.
func TestTableParallelKeysMatchSerial(t *testing.T) {
	in, hellos := tableParallelInput(2*tableShardCount + 37)
	var tables [2][2]*Table
	for i, workers := range []int{1, 3} {
		b, _ := tableTestBuilder(t)
		b.keyWorkers = workers
		for round := range 2 {
			tbl, err := b.Build(in)
			if err != nil {
				t.Fatalf("Build(workers=%d) error = %v", workers, err)
			}
			tables[i][round] = tbl
		}
	}
	for round := range 2 {
		serial, par := tables[0][round], tables[1][round]
		sd, err := json.Marshal(serial.Dump())
		if err != nil {
			t.Fatal(err)
		}
		pd, err := json.Marshal(par.Dump())
		if err != nil {
			t.Fatal(err)
		}
		if string(sd) != string(pd) {
			t.Fatalf("round %d: dump with 3 key workers differs from 1 worker (%d vs %d bytes)", round, len(pd), len(sd))
		}
		if len(serial.Warnings()) == 0 {
			t.Fatalf("round %d: Warnings() empty, want the consistentHash warning", round)
		}
		if n := serial.bridgeLen(); n == 0 || n != par.bridgeLen() {
			t.Fatalf("round %d: bridge names serial %d, parallel %d", round, n, par.bridgeLen())
		}
		resolved := 0
		for _, spec := range serial.Listeners() {
			for _, h := range hellos {
				s, p := tableOutcome(serial, spec.Key, h), tableOutcome(par, spec.Key, h)
				if s != p {
					t.Fatalf("round %d: Resolve(%s, %q %v): 1 worker %q, 3 workers %q", round, spec.Key, h.ServerName, h.ALPN, s, p)
				}
				if _, err := serial.Resolve(spec.Key, h); err == nil {
					resolved++
				}
			}
		}
		if resolved < len(hellos) {
			t.Fatalf("round %d: %d of %d hellos resolved on some listener, want most of them", round, resolved, 2*len(hellos))
		}
		for _, h := range hellos[:64] {
			ap, err := ParseAutoPassthrough(h.ServerName)
			if err != nil {
				t.Fatalf("ParseAutoPassthrough(%q) error = %v", h.ServerName, err)
			}
			host, port, sub := ap.Host.String(), ap.Port, ap.Subset
			sdec, serr := serial.ResolveBridge(host, port, sub)
			pdec, perr := par.ResolveBridge(host, port, sub)
			if fmt.Sprint(serr) != fmt.Sprint(perr) || (serr == nil && sdec.Cluster.Name() != pdec.Cluster.Name()) {
				t.Fatalf("round %d: ResolveBridge(%s, %d, %q): 1 worker %v %v, 3 workers %v %v", round, host, port, sub, sdec, serr, pdec, perr)
			}
		}
	}
}
