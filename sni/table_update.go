package sni

import (
	"cmp"
	"errors"
	"hash/maphash"
	"maps"
	"slices"
	"strings"

	"github.com/meshgate/meshgate/config"
)

// ErrNeedsRebuild is returned by Builder.UpdateServices when the change
// cannot be applied to the table alone (see UpdateServices); build the
// table again with Builder.Build.
var ErrNeedsRebuild = errors.New("sni: endpoint change needs a full table rebuild")

// tableUpdateMaxShare bounds an incremental update: changing more than
// one service in tableUpdateMaxShare rebuilds instead.
const tableUpdateMaxShare = 8

// tableIncState is the build context a table keeps so that an endpoint
// change can derive a new table from it. It is shared by the tables
// derived from one Build and only read or written under Builder.mu.
type tableIncState struct {
	b   *Builder
	cfg *config.Set
	// routeHosts are the hosts VirtualService destinations and
	// DestinationRules name (as written and as qualified): a change to
	// one of them rebuilds, since routes and rule lookups depend on
	// which services exist.
	routeHosts map[string]struct{}
	// order is the listener keys in build order.
	order []string
	// policies memoizes traffic policies (tableBuild.policies).
	policies map[tablePolicyKey]*tableClusterPolicy
	// badFP fingerprints the catalog endpoints skipped for an invalid
	// host or port.
	badFP uint64
	// diff numbers UpdateEndpoints calls, for tableServiceScratch.
	diff uint64
}

// tableServiceScratch is per-service state of one UpdateEndpoints diff.
type tableServiceScratch struct {
	diff uint64
	fp   uint64
	n    int32
}

var tableCatalogSeed = maphash.MakeSeed()

// tableCatalogHash fingerprints one catalog endpoint: every field that
// the build reads.
func tableCatalogHash(ce *CatalogEndpoint) uint64 {
	e := &ce.Endpoint
	str := func(s string) uint64 {
		if s == "" {
			return 0x51
		}
		return maphash.String(tableCatalogSeed, s)
	}
	h := str(ce.Host)
	h = tableFPMix(h, str(e.Addr))
	h = tableFPMix(h, str(e.Network))
	h = tableFPMix(h, str(e.Identity))
	h = tableFPMix(h, str(e.Bridge))
	n := uint64(ce.Port)<<32 | uint64(e.Weight)
	if e.Gateway {
		n |= 1 << 63
	}
	h = tableFPMix(h, n)
	// Labels in any order: a commutative sum of per-label hashes.
	var ls uint64
	for k, v := range e.Labels {
		ls += tableFPMix(str(k), str(v))
	}
	return tableFPMix(h, ls)
}

// tableFPMix appends one endpoint hash to an order-sensitive fingerprint.
func tableFPMix(fp, h uint64) uint64 { return (fp^h)*0x100000001b3 + 0x9e3779b97f4a7c15 }

// addCatalog places one catalog endpoint (valid host and port) in svc and
// records it in the service's fingerprint.
func (tb *tableBuild) addCatalog(svc *tableService, ce *CatalogEndpoint) {
	svc.fp = tableFPMix(svc.fp, tableCatalogHash(ce))
	svc.ncat++
	sp := svc.port(ce.Port)
	if sp == nil {
		sp = tb.slabPort()
		sp.number = ce.Port
		if svc.ports == nil {
			svc.ports = slabSlice(&tb.ptrSlab.ports, 4*tb.slabSize(), 1)
		}
		svc.ports = append(svc.ports, sp)
	}
	w := tb.warnCalls
	tb.addEndpoint(svc, sp, ce.Endpoint, 0, "catalog")
	if tb.warnCalls != w {
		svc.warned = true
	}
}

// UpdateEndpoints returns a table for prev's configuration and node with
// eps as the complete list of catalog endpoints. Only the services whose
// catalog endpoints differ from prev's (in content or order) are rebuilt;
// the new table shares everything else with prev, and live state
// (active connections, failures, ejections, split positions) carries
// over as in Build. When the change cannot be applied alone (see
// UpdateServices) or touches more than one service in eight, it falls
// back to Build. prev must come from b (Build or an update); a nil or
// foreign prev is an error (ErrNeedsRebuild) since its configuration is
// unknown. Like Build, it is safe for concurrent use.
func (b *Builder) UpdateEndpoints(prev *Table, eps []CatalogEndpoint) (*Table, error) {
	if b.cfErr != nil {
		return nil, b.cfErr
	}
	if prev == nil || prev.inc == nil || prev.inc.b != b {
		return nil, ErrNeedsRebuild
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	st := prev.inc
	st.diff++
	diff := st.diff
	var bad uint64
	var changes map[string][]CatalogEndpoint
	// Catalogs list a service's endpoints together: remember the last
	// host so each service is looked up once.
	var lastRaw, host string
	var svc *tableService
	for i := range eps {
		ce := &eps[i]
		if i == 0 || ce.Host != lastRaw {
			lastRaw = ce.Host
			host = strings.ToLower(strings.TrimSpace(ce.Host))
			svc = nil
			if host != "" {
				svc = prev.service(host)
			}
		}
		if host == "" || ce.Port == 0 || ce.Port > 65535 {
			bad = tableFPMix(bad, tableCatalogHash(ce))
			continue
		}
		if svc == nil {
			if changes == nil {
				changes = map[string][]CatalogEndpoint{}
			}
			changes[host] = append(changes[host], *ce)
			continue
		}
		if svc.scr.diff != diff {
			svc.scr = tableServiceScratch{diff: diff}
		}
		svc.scr.fp = tableFPMix(svc.scr.fp, tableCatalogHash(ce))
		svc.scr.n++
	}
	full := func() (*Table, error) {
		return b.build(BuildInput{Config: st.cfg, Node: prev.node, Endpoints: eps}), nil
	}
	if bad != st.badFP {
		return full()
	}
	limit := prev.services.len()/tableUpdateMaxShare + 16
	var changed []string
	prev.services.all(func(host string, svc *tableService) {
		var fp uint64
		var n int32
		if svc.scr.diff == diff {
			fp, n = svc.scr.fp, svc.scr.n
		}
		if fp != svc.fp || n != svc.ncat {
			changed = append(changed, host)
		}
	})
	if len(changed)+len(changes) > limit {
		return full()
	}
	if len(changed) > 0 {
		if changes == nil {
			changes = map[string][]CatalogEndpoint{}
		}
		for _, h := range changed {
			changes[h] = []CatalogEndpoint{}
		}
		lastRaw, host = "", ""
		take := false
		for i := range eps {
			ce := &eps[i]
			if i == 0 || ce.Host != lastRaw {
				lastRaw = ce.Host
				host = strings.ToLower(strings.TrimSpace(ce.Host))
				_, take = changes[host]
				take = take && prev.service(host) != nil
			}
			if take && ce.Port != 0 && ce.Port <= 65535 {
				changes[host] = append(changes[host], *ce)
			}
		}
	}
	if len(changes) == 0 {
		return prev, nil
	}
	t, err := b.update(prev, changes)
	if errors.Is(err, ErrNeedsRebuild) {
		return full()
	}
	return t, err
}

// UpdateServices returns a table for prev's configuration and node in
// which each service host of changed has exactly the catalog endpoints
// given for it (none: the host's catalog endpoints are withdrawn); the
// catalog endpoints of every other host stay as in prev. Only those
// services' entries (AUTO_PASSTHROUGH and bridge keys, clusters) are
// rebuilt; the rest is shared with prev, and live state carries over as
// in Build. The work is proportional to the change, not to the table.
//
// It returns ErrNeedsRebuild, and prev is left as it was, when the
// change cannot be applied alone: prev is nil or not from b, a host is
// named by a VirtualService destination or a DestinationRule, is defined
// by a ServiceEntry, or a catalog endpoint of it is invalid (skipped with
// a warning), an endpoint's Host does not name the key it is listed
// under, or the change would add a warning. The caller then calls Build
// with the complete input.
func (b *Builder) UpdateServices(prev *Table, changed map[string][]CatalogEndpoint) (*Table, error) {
	if b.cfErr != nil {
		return nil, b.cfErr
	}
	if prev == nil || prev.inc == nil || prev.inc.b != b {
		return nil, ErrNeedsRebuild
	}
	norm := make(map[string][]CatalogEndpoint, len(changed))
	for h, eps := range changed {
		host := strings.ToLower(strings.TrimSpace(h))
		for i := range eps {
			if strings.ToLower(strings.TrimSpace(eps[i].Host)) != host {
				return nil, ErrNeedsRebuild
			}
		}
		norm[host] = append(norm[host], eps...)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.update(prev, norm)
}

// update derives a table from prev in which each host of changes has
// the given catalog endpoints. Hosts are lower-case and trimmed. Under
// b.mu.
func (b *Builder) update(prev *Table, changes map[string][]CatalogEndpoint) (*Table, error) {
	st := prev.inc
	for host, eps := range changes {
		if host == "" {
			return nil, ErrNeedsRebuild
		}
		if _, ok := st.routeHosts[host]; ok {
			return nil, ErrNeedsRebuild
		}
		if old := prev.service(host); old != nil && (old.source != "catalog" || old.warned) {
			return nil, ErrNeedsRebuild
		}
		for i := range eps {
			if eps[i].Port == 0 || eps[i].Port > 65535 {
				return nil, ErrNeedsRebuild
			}
		}
	}
	b.gen++
	t := &Table{node: prev.node, specs: prev.specs, listeners: make(map[string]*tableListener, len(prev.listeners)),
		services: prev.services.derive(), clusters: prev.clusters, env: prev.env, drs: prev.drs, inc: st}
	tb := &tableBuild{b: b, gen: b.gen, in: BuildInput{Config: st.cfg, Node: prev.node}, cfg: st.cfg, t: t,
		warnSet: map[string]bool{}, policies: st.policies, prev: prev}
	for k, l := range prev.listeners {
		nl := *l
		nl.table = t
		t.listeners[k] = &nl
	}
	for _, k := range st.order {
		tb.order = append(tb.order, t.listeners[k])
	}
	var auto []*tableListener
	for _, l := range tb.order {
		if len(l.autoServers) > 0 {
			auto = append(auto, l)
		}
	}
	hosts := slices.Sorted(maps.Keys(changes))
	for _, host := range hosts {
		t.services.delWhere(host, func(k string) bool { return k == host })
		eps := changes[host]
		if len(eps) == 0 {
			continue
		}
		svc := &tableService{host: host, tableServiceDef: tableCatalogDef}
		t.services.set(host, host, svc)
		for i := range eps {
			tb.addCatalog(svc, &eps[i])
		}
		if len(svc.ports) > 1 {
			slices.SortFunc(svc.ports, func(a, b *tableServicePort) int { return cmp.Compare(a.number, b.number) })
		}
		svc.dr = t.drs.lookup(svc.host, svc.namespace, svc.namespace)
		tb.serviceKeys(svc, auto)
	}
	// A new warning (an invalid endpoint, a policy problem) must show in
	// Warnings and the log: leave that to a rebuild.
	for _, w := range tb.t.warnings {
		if _, found := slices.BinarySearch(prev.warnings, w); !found {
			return nil, ErrNeedsRebuild
		}
	}
	t.warnings = prev.warnings
	// Keep aside the live states the old services used and the new ones
	// do not, if they still count connections.
	for _, host := range hosts {
		if old := prev.service(host); old != nil {
			tb.orphan(old)
		}
		tb.pruneOrphans(host)
	}
	b.last = t
	b.env.log.Debug("sni: route table updated", "node", prev.node.Name, "services", len(hosts))
	return t, nil
}
