package catalog

import (
	"reflect"
	"testing"
)

func TestSplitHorizon(t *testing.T) {
	member := func(name, network, gw string, st Status) Member {
		return Member{Name: name, Status: st, Meta: Meta{Network: network, GatewayAddr: gw}, Trusted: true}
	}
	entry := func(network, addr string, weight uint32, labels map[string]string) Entry {
		return Entry{Owner: "x", ID: addr, Endpoint: Endpoint{Service: "svc", Port: 80, Addr: addr, Network: network, Weight: weight, Labels: labels}}
	}
	v1 := map[string]string{"version": "v1"}
	v2 := map[string]string{"version": "v2"}
	for _, tc := range []struct {
		name    string
		members []Member
		entries []Entry
		subset  map[string]string
		want    []Target
	}{
		{"empty", nil, nil, nil, nil},
		{"local only",
			[]Member{member("a", "A", "gw-a:15443", StatusAlive)},
			[]Entry{entry("A", "10.0.0.1:80", 0, v1), entry("A", "10.0.0.2:80", 2, nil)}, nil,
			[]Target{{Addr: "10.0.0.1:80", Network: "A", Weight: 1, Labels: v1}, {Addr: "10.0.0.2:80", Network: "A", Weight: 2}}},
		{"remote via its gateway, weighted by endpoint count",
			[]Member{member("a", "A", "gw-a:15443", StatusAlive), member("b", "B", "gw-b:15443", StatusAlive)},
			[]Entry{entry("A", "10.0.0.1:80", 0, nil), entry("B", "10.1.0.1:80", 0, nil), entry("B", "10.1.0.2:80", 0, nil), entry("B", "10.1.0.3:80", 0, nil)}, nil,
			[]Target{{Addr: "10.0.0.1:80", Network: "A", Weight: 1}, {Addr: "gw-b:15443", Network: "B", Weight: 3, Gateway: true}}},
		{"two gateways share their network's weight exactly",
			[]Member{member("b1", "B", "gw-b1:15443", StatusAlive), member("b2", "B", "gw-b2:15443", StatusAlive)},
			[]Entry{entry("A", "10.0.0.1:80", 0, nil), entry("B", "10.1.0.1:80", 0, nil), entry("B", "10.1.0.2:80", 0, nil), entry("B", "10.1.0.3:80", 0, nil)}, nil,
			[]Target{{Addr: "10.0.0.1:80", Network: "A", Weight: 2}, {Addr: "gw-b1:15443", Network: "B", Weight: 3, Gateway: true}, {Addr: "gw-b2:15443", Network: "B", Weight: 3, Gateway: true}}},
		{"dead gateway and gateway-less network are skipped",
			[]Member{member("b", "B", "gw-b:15443", StatusFailed), member("c", "C", "", StatusAlive)},
			[]Entry{entry("B", "10.1.0.1:80", 0, nil), entry("C", "10.2.0.1:80", 0, nil)}, nil,
			nil},
		{"subset filters local endpoints and remote weights",
			[]Member{member("b", "B", "gw-b:15443", StatusAlive)},
			[]Entry{entry("A", "10.0.0.1:80", 0, v1), entry("A", "10.0.0.2:80", 0, v2), entry("B", "10.1.0.1:80", 0, v1), entry("B", "10.1.0.2:80", 0, v2), entry("B", "10.1.0.3:80", 0, v2)}, v2,
			[]Target{{Addr: "10.0.0.2:80", Network: "A", Weight: 1, Labels: v2}, {Addr: "gw-b:15443", Network: "B", Weight: 2, Gateway: true}}},
		{"same gateway address announced twice counts once",
			[]Member{member("b1", "B", "gw-b:15443", StatusAlive), member("b2", "B", "gw-b:15443", StatusAlive)},
			[]Entry{entry("B", "10.1.0.1:80", 0, nil)}, nil,
			[]Target{{Addr: "gw-b:15443", Network: "B", Weight: 1, Gateway: true}}},
		{"untrusted member's gateway address ignored",
			[]Member{{Name: "rogue", Status: StatusAlive, Meta: Meta{Network: "B", GatewayAddr: "rogue:15443"}, TrustReason: "chain refused"}, member("b", "B", "gw-b:15443", StatusAlive)},
			[]Entry{entry("B", "10.1.0.1:80", 0, nil)}, nil,
			[]Target{{Addr: "gw-b:15443", Network: "B", Weight: 1, Gateway: true}}},
		{"bridge address travels with the gateway; zones do not split a network's weight",
			[]Member{{Name: "b1", Status: StatusAlive, Trusted: true, Meta: Meta{Network: "B", GatewayAddr: "gw-b1:15443", BridgeAddr: "gw-b1:15008"}},
				{Name: "b2", Status: StatusAlive, Trusted: true, Meta: Meta{Network: "B", GatewayAddr: "gw-b2:15443"}}},
			[]Entry{entry("B", "10.1.0.1:80", 0, map[string]string{"zone": "z1"}), entry("B", "10.1.0.2:80", 0, map[string]string{"zone": "z2"}),
				entry("B", "10.1.0.3:80", 0, map[string]string{"zone": "z2"}), entry("B", "10.1.0.4:80", 0, map[string]string{"zone": "z3"})}, nil,
			[]Target{{Addr: "gw-b1:15443", Network: "B", Weight: 4, Gateway: true, Bridge: "gw-b1:15008"}, {Addr: "gw-b2:15443", Network: "B", Weight: 4, Gateway: true}}},
		{"other service ignored",
			[]Member{member("b", "B", "gw-b:15443", StatusAlive)},
			[]Entry{{Endpoint: Endpoint{Service: "other", Port: 80, Addr: "1.1.1.1:80", Network: "B"}}}, nil,
			nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Snapshot{Members: tc.members, Entries: tc.entries}
			slicesSortEntries(s.Entries)
			got := SplitHorizon(s, "A", "svc", 80, tc.subset)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("SplitHorizon(A, svc:80, %v) =\n%+v\nwant\n%+v", tc.subset, got, tc.want)
			}
		})
	}
}

func slicesSortEntries(e []Entry) {
	for i := 1; i < len(e); i++ {
		for j := i; j > 0 && compareEntries(e[j-1], e[j]) > 0; j-- {
			e[j-1], e[j] = e[j], e[j-1]
		}
	}
}

func TestGateways(t *testing.T) {
	s := &Snapshot{Members: []Member{
		{Name: "b2", Status: StatusAlive, Trusted: true, Meta: Meta{Network: "B", GatewayAddr: "gw-b2:15443", BridgeAddr: "gw-b2:15008"}},
		{Name: "b1", Status: StatusAlive, Trusted: true, Meta: Meta{Network: "B", GatewayAddr: "gw-b1:15443", BridgeAddr: "gw-b1:15008"}},
		{Name: "b3", Status: StatusFailed, Trusted: true, Meta: Meta{Network: "B", GatewayAddr: "gw-b3:15443", BridgeAddr: "gw-b3:15008"}},
		{Name: "b4", Status: StatusLeft, Trusted: true, Meta: Meta{Network: "B", GatewayAddr: "gw-b4:15443"}},
		{Name: "rogue", Status: StatusAlive, Meta: Meta{Network: "B", GatewayAddr: "rogue:15443", BridgeAddr: "rogue:15008"}},
		{Name: "a1", Status: StatusAlive, Trusted: true, Meta: Meta{Network: "A", GatewayAddr: "gw-a1:15443"}},
		{Name: "c1", Status: StatusAlive, Trusted: true, Meta: Meta{Network: "C", BridgeAddr: "c1:15008"}},
	}}
	got := Gateways(s, "A")
	want := map[string][]Gateway{"B": {
		{Node: "b1", Network: "B", Addr: "gw-b1:15443", Bridge: "gw-b1:15008"},
		{Node: "b2", Network: "B", Addr: "gw-b2:15443", Bridge: "gw-b2:15008"},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Gateways(A) = %+v, want %+v (alive, trusted, with a gateway address, other networks only)", got, want)
	}
}
