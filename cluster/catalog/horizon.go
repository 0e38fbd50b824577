package catalog

import (
	"cmp"
	"maps"
	"math"
	"slices"
	"strings"
)

// Target is one destination a node dials for a service port: a workload
// in the node's own network, or the gateway of a remote network.
type Target struct {
	Addr    string
	Network string
	// Weight is relative to the other targets of the same call; never 0.
	Weight uint32
	// Labels are the workload's labels; nil for a gateway.
	Labels map[string]string
	// Gateway is true for a remote network's gateway.
	Gateway bool
	// Bridge is a gateway's bridge address (node meta bridge_addr), ""
	// when it publishes none or for a local endpoint.
	Bridge string
}

// Gateway is one remote network's gateway as gossip knows it.
type Gateway struct {
	Node    string // member name
	Network string
	Addr    string // AUTO_PASSTHROUGH address (gateway_addr)
	Bridge  string // bridge address (bridge_addr); "" = none
}

// Gateways returns, for every network other than local, its gateways:
// alive members that proved a fleet node identity (an untrusted
// member's meta is as unauthenticated as its endpoints) and publish a
// gateway address. A member gossip marks failed or left is not a
// gateway, so the next table rebuild drops it. An address announced by
// two members counts once (the first by name). Each list is sorted by
// Addr.
func Gateways(s *Snapshot, local string) map[string][]Gateway {
	out := map[string][]Gateway{}
	members := slices.Clone(s.Members)
	slices.SortFunc(members, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	for _, m := range members {
		if m.Status != StatusAlive || !m.Trusted || m.Meta.GatewayAddr == "" || m.Meta.Network == local {
			continue
		}
		gws := out[m.Meta.Network]
		if slices.ContainsFunc(gws, func(g Gateway) bool { return g.Addr == m.Meta.GatewayAddr }) {
			continue
		}
		out[m.Meta.Network] = append(gws, Gateway{Node: m.Name, Network: m.Meta.Network, Addr: m.Meta.GatewayAddr, Bridge: m.Meta.BridgeAddr})
	}
	for _, gws := range out {
		slices.SortFunc(gws, func(a, b Gateway) int { return strings.Compare(a.Addr, b.Addr) })
	}
	return out
}

// maxScale bounds the factor used to keep gateway weights exact.
const maxScale = 64

// SplitHorizon returns what a node in network local should dial for
// service:port, as Istio's split horizon does: every endpoint of the local
// network directly, and for each remote network that has matching
// endpoints its gateways (alive, trusted members of that network that
// publish a GatewayAddr). A remote network's share equals the sum of its endpoints'
// weights (their count when no weights are set), split evenly across its
// gateways. A remote network with no known gateway is left out: it cannot
// be reached. subset, if non-empty, keeps only endpoints whose labels
// include every key=value of it. Targets are sorted: local ones first,
// then by network and address.
func SplitHorizon(s *Snapshot, local, service string, port uint32, subset map[string]string) []Target {
	var out []Target
	remote := map[string]uint64{} // network -> summed weight
	for _, e := range s.Lookup(service, port) {
		if !matches(e.Labels, subset) {
			continue
		}
		w := uint64(max(e.Weight, 1))
		if e.Network == local {
			out = append(out, Target{Addr: e.Addr, Network: e.Network, Weight: uint32(w), Labels: maps.Clone(e.Labels)})
			continue
		}
		remote[e.Network] += w
	}
	gateways := map[string][]Gateway{}
	for network, gws := range Gateways(s, local) {
		if remote[network] > 0 {
			gateways[network] = gws
		}
	}
	// Scale every weight by the lcm of the gateway counts so that each
	// gateway's share W/g stays an integer.
	scale := uint64(1)
	for _, gws := range gateways {
		scale = lcm(scale, uint64(len(gws)))
	}
	exact := scale <= maxScale
	if !exact {
		scale = 1
	}
	for i := range out {
		out[i].Weight = clampWeight(uint64(out[i].Weight) * scale)
	}
	for network, gws := range gateways {
		share := remote[network] * scale / uint64(len(gws))
		if !exact {
			share = (remote[network] + uint64(len(gws)) - 1) / uint64(len(gws))
		}
		for _, gw := range gws {
			out = append(out, Target{Addr: gw.Addr, Network: network, Weight: clampWeight(share), Gateway: true, Bridge: gw.Bridge})
		}
	}
	slices.SortFunc(out, func(a, b Target) int {
		if (a.Network == local) != (b.Network == local) {
			if a.Network == local {
				return -1
			}
			return 1
		}
		return cmp.Or(strings.Compare(a.Network, b.Network), strings.Compare(a.Addr, b.Addr))
	})
	return out
}

func matches(labels, subset map[string]string) bool {
	for k, v := range subset {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func clampWeight(w uint64) uint32 {
	return uint32(min(max(w, 1), math.MaxUint32))
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func lcm(a, b uint64) uint64 {
	if a == 0 || b == 0 {
		return max(a, b)
	}
	l := a / gcd(a, b) * b
	return min(l, maxScale+1) // anything above maxScale is treated alike
}
