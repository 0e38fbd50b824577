package agent

import (
	"strings"

	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/sni"
)

// catalogEndpoints turns the gossip catalog into the route table's
// catalog endpoints for a node in network, whole (endpoints) or as the
// changes since a cursor (changes).
type catalogEndpoints struct {
	cat     *catalog.Catalog
	network string
}

// endpoints returns every endpoint with Istio's split horizon: this
// network's endpoints are dialled directly; an endpoint of a remote
// network is emitted once per gateway of its network (catalog.Gateways:
// alive, trusted members publishing a gateway address) as a gateway
// entry carrying the gateway's 15443 and bridge addresses, the
// endpoint's labels (so subsets still select it) and its full weight.
// The route table merges the entries of each gateway and splits the
// network's weight across its gateways (sni.Endpoint.Gateway).
// Endpoints of a network with no known gateway are left out.
func (s catalogEndpoints) endpoints() []sni.CatalogEndpoint {
	snap := s.cat.Snapshot()
	gateways := catalog.Gateways(snap, s.network)
	out := make([]sni.CatalogEndpoint, 0, len(snap.Entries))
	for i := range snap.Entries {
		out = s.appendEntry(out, &snap.Entries[i], gateways)
	}
	return out
}

// appendEntry appends what one catalog entry routes to.
func (s catalogEndpoints) appendEntry(out []sni.CatalogEndpoint, e *catalog.Entry, gateways map[string][]catalog.Gateway) []sni.CatalogEndpoint {
	ep := sni.Endpoint{Addr: e.Addr, Labels: e.Labels, Network: e.Network, Weight: max(e.Weight, 1)}
	if e.Network == s.network {
		return append(out, sni.CatalogEndpoint{Host: e.Service, Port: e.Port, Endpoint: ep})
	}
	for _, gw := range gateways[e.Network] {
		g := ep
		g.Addr, g.Bridge, g.Gateway = gw.Addr, gw.Bridge, true
		out = append(out, sni.CatalogEndpoint{Host: e.Service, Port: e.Port, Endpoint: g})
	}
	return out
}

// changes answers EndpointChangeSource.EndpointChanges. Each changed
// service gets the endpoints endpoints() would list for it, in the same
// order. A service name that is not lower case asks for Full: the route
// table folds hosts to lower case, so two catalog names may share one.
func (s catalogEndpoints) changes(cursor uint64) EndpointChanges {
	ch := s.cat.Changes(cursor)
	out := EndpointChanges{Cursor: ch.Cursor, Full: ch.All}
	if ch.All {
		return out
	}
	out.Services = make(map[string][]sni.CatalogEndpoint, len(ch.Services))
	for _, svc := range ch.Services {
		if strings.ToLower(svc) != svc {
			return EndpointChanges{Cursor: ch.Cursor, Full: true}
		}
		out.Services[svc] = []sni.CatalogEndpoint{}
	}
	var gateways map[string][]catalog.Gateway
	for i := range ch.Entries {
		e := &ch.Entries[i]
		if e.Network != s.network && gateways == nil {
			gateways = catalog.Gateways(&catalog.Snapshot{Members: s.cat.Members()}, s.network)
		}
		out.Services[e.Service] = s.appendEntry(out.Services[e.Service], e, gateways)
	}
	return out
}

var _ EndpointChangeSource = catalogEndpoints{}

// Endpoints implements EndpointSource (endpoints).
func (s catalogEndpoints) Endpoints() []sni.CatalogEndpoint { return s.endpoints() }

// Changed implements EndpointSource: the catalog's endpoints changed.
func (s catalogEndpoints) Changed() <-chan struct{} { return s.cat.Changed() }

// EndpointsChanged implements EndpointChangeSource, as Changed.
func (s catalogEndpoints) EndpointsChanged() <-chan struct{} { return s.cat.Changed() }

// EndpointChanges implements EndpointChangeSource (changes).
func (s catalogEndpoints) EndpointChanges(cursor uint64) EndpointChanges { return s.changes(cursor) }
