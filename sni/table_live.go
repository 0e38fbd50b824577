package sni

import "slices"

// Live state (active connections, failures, ejections, round-robin
// positions) outlives tables. A build takes each endpoint's and each
// cluster's state from the table it follows (Builder.last, or the table
// an update starts from): that table is the index, so the builder keeps
// no map of its own for the states in use. Only states the new table
// drops while connections still count on them are kept aside, in
// Builder.orphans, so that an endpoint that comes back finds them.

// tableHostLive holds one host's orphaned states. Guarded by Builder.mu.
type tableHostLive struct {
	eps      []tableEPLive
	clusters []tableClusterLiveRef
}

type tableEPLive struct {
	addr string
	live *tableEndpointLive
}

// tableClusterLiveRef is an orphaned cluster state with the key of its
// cluster.
type tableClusterLiveRef struct {
	key  tableClusterKey
	live *tableClusterLive
}

// tableIndexMin is the endpoint count from which a service's endpoints
// in the previous table are found through a map instead of a scan.
const tableIndexMin = 16

// tableNoService marks a tableService.old looked up and not found.
var tableNoService = &tableService{tableServiceDef: &tableServiceDef{}}

// oldService returns the service of svc's host in the table this build
// follows, or nil.
func (tb *tableBuild) oldService(svc *tableService) *tableService {
	if svc.old == nil {
		svc.old = tableNoService
		if tb.prev != nil {
			if o := tb.prev.service(svc.host); o != nil {
				svc.old = o
			}
		}
	}
	if svc.old == tableNoService {
		return nil
	}
	return svc.old
}

// endpointLive returns the live state of endpoint addr of svc: the one
// it had in the previous table or among the orphans, or a new one. It
// marks the state used by this build.
func (tb *tableBuild) endpointLive(svc *tableService, addr string) *tableEndpointLive {
	l := tb.findEndpointLive(svc, addr)
	if l == nil {
		l = &tableEndpointLive{}
	}
	l.gen = tb.gen
	return l
}

func (tb *tableBuild) findEndpointLive(svc *tableService, addr string) *tableEndpointLive {
	if old := tb.oldService(svc); old != nil {
		n := 0
		for _, sp := range old.ports {
			n += len(sp.eps)
		}
		if n < tableIndexMin {
			for _, sp := range old.ports {
				for _, e := range sp.eps {
					if e.addr == addr {
						return e.live
					}
				}
			}
		} else {
			ix := tb.oldIndex[old]
			if ix == nil {
				ix = make(map[string]*tableEndpointLive, n)
				for _, sp := range old.ports {
					for _, e := range sp.eps {
						if _, dup := ix[e.addr]; !dup {
							ix[e.addr] = e.live
						}
					}
				}
				if tb.oldIndex == nil {
					tb.oldIndex = map[*tableService]map[string]*tableEndpointLive{}
				}
				tb.oldIndex[old] = ix
			}
			if l := ix[addr]; l != nil {
				return l
			}
		}
	}
	if h := tb.b.orphans[svc.host]; h != nil {
		for _, e := range h.eps {
			if e.addr == addr {
				return e.live
			}
		}
	}
	return nil
}

// clusterLive returns the live state of a cluster of svc: the one the
// previous table's cluster of the same key had, an orphaned one, or a
// new one. It marks the state used by this build.
func (tb *tableBuild) clusterLive(svc *tableService, key tableClusterKey) *tableClusterLive {
	l := tb.findClusterLive(svc, key)
	if l == nil {
		l = &tableClusterLive{dr: key.dr}
	}
	l.gen = tb.gen
	return l
}

func (tb *tableBuild) findClusterLive(svc *tableService, key tableClusterKey) *tableClusterLive {
	if old := tb.oldService(svc); old != nil {
		for _, c := range old.clusters {
			if c.key() == key {
				return c.live
			}
		}
	}
	if h := tb.b.orphans[svc.host]; h != nil {
		for _, c := range h.clusters {
			if c.key == key {
				return c.live
			}
		}
	}
	return nil
}

// orphan keeps aside the states of old (a service of the previous table)
// that this build did not take over and that still count connections.
func (tb *tableBuild) orphan(old *tableService) {
	var h *tableHostLive
	get := func() *tableHostLive {
		if h == nil {
			if h = tb.b.orphans[old.host]; h == nil {
				h = &tableHostLive{}
				if tb.b.orphans == nil {
					tb.b.orphans = map[string]*tableHostLive{}
				}
				tb.b.orphans[old.host] = h
			}
		}
		return h
	}
	for _, sp := range old.ports {
		for _, e := range sp.eps {
			if e.live.gen != tb.gen && e.live.active.Load() > 0 && !slices.ContainsFunc(get().eps, func(x tableEPLive) bool { return x.live == e.live }) {
				h.eps = append(h.eps, tableEPLive{addr: e.addr, live: e.live})
			}
		}
	}
	for _, c := range old.clusters {
		if c.live.gen != tb.gen && c.live.active.Load() > 0 && !slices.ContainsFunc(get().clusters, func(x tableClusterLiveRef) bool { return x.live == c.live }) {
			h.clusters = append(h.clusters, tableClusterLiveRef{key: c.key(), live: c.live})
		}
	}
	if h != nil && len(h.eps) == 0 && len(h.clusters) == 0 {
		delete(tb.b.orphans, old.host)
	}
}

// pruneOrphans forgets the orphaned states of host that this build took
// back or that no connection counts on any more.
func (tb *tableBuild) pruneOrphans(host string) {
	h := tb.b.orphans[host]
	if h == nil {
		return
	}
	h.eps = slices.DeleteFunc(h.eps, func(e tableEPLive) bool { return e.live.gen == tb.gen || e.live.active.Load() <= 0 })
	h.clusters = slices.DeleteFunc(h.clusters, func(c tableClusterLiveRef) bool {
		return c.live.gen == tb.gen || c.live.active.Load() <= 0
	})
	if len(h.eps) == 0 && len(h.clusters) == 0 {
		delete(tb.b.orphans, host)
	}
}

// liveEndpoints counts the endpoint states the builder keeps: those of
// its last table and the orphans (tests).
func (b *Builder) liveEndpoints() int {
	seen := map[*tableEndpointLive]bool{}
	if b.last != nil {
		b.last.services.all(func(_ string, svc *tableService) {
			for _, sp := range svc.ports {
				for _, e := range sp.eps {
					seen[e.live] = true
				}
			}
		})
	}
	for _, h := range b.orphans {
		for _, e := range h.eps {
			seen[e.live] = true
		}
	}
	return len(seen)
}
