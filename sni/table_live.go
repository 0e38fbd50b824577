package sni

import "slices"

// tableHostLive is the live state of one service host: its endpoints'
// and its clusters' states, kept by the Builder across tables. One map
// entry per host (instead of one per endpoint and per cluster) keeps the
// builder small and its lookups cheap. Guarded by Builder.mu.
type tableHostLive struct {
	eps []tableEPLive
	// index finds an endpoint by address once eps is large.
	index    map[string]int
	clusters []tableClusterLiveRef
}

type tableEPLive struct {
	addr string
	live *tableEndpointLive
}

// tableClusterLiveRef keys a cluster's live state within its host: the
// port, subset, whether it is AUTO_PASSTHROUGH-only, and the
// DestinationRule applied ("" for none; exportTo can make it differ by
// consumer).
type tableClusterLiveRef struct {
	port      uint32
	localOnly bool
	subset    string
	dr        string
	live      *tableClusterLive
}

// tableHostIndexMin is the endpoint count from which a host's endpoints
// are indexed by address.
const tableHostIndexMin = 16

// hostLive returns the live state of host, creating it; svc (may be nil)
// caches it for the build.
func (tb *tableBuild) hostLive(host string, svc *tableService) *tableHostLive {
	if svc != nil && svc.hlive != nil {
		return svc.hlive
	}
	h := tb.b.hosts[host]
	if h == nil {
		h = &tableHostLive{}
		tb.b.hosts[host] = h
	}
	if svc != nil {
		svc.hlive = h
	}
	return h
}

// endpoint returns the live state of endpoint addr, creating it.
func (h *tableHostLive) endpoint(addr string) *tableEndpointLive {
	if h.index != nil {
		if i, ok := h.index[addr]; ok {
			return h.eps[i].live
		}
	} else {
		for i := range h.eps {
			if h.eps[i].addr == addr {
				return h.eps[i].live
			}
		}
	}
	l := &tableEndpointLive{}
	h.eps = append(h.eps, tableEPLive{addr: addr, live: l})
	if h.index != nil {
		h.index[addr] = len(h.eps) - 1
	} else if len(h.eps) >= tableHostIndexMin {
		h.reindex()
	}
	return l
}

func (h *tableHostLive) reindex() {
	h.index = nil
	if len(h.eps) < tableHostIndexMin {
		return
	}
	h.index = make(map[string]int, len(h.eps))
	for i, e := range h.eps {
		h.index[e.addr] = i
	}
}

// cluster returns the live state of a cluster, creating it.
func (h *tableHostLive) cluster(port uint32, subset string, localOnly bool, dr string) *tableClusterLive {
	for i := range h.clusters {
		c := &h.clusters[i]
		if c.port == port && c.localOnly == localOnly && c.subset == subset && c.dr == dr {
			return c.live
		}
	}
	l := &tableClusterLive{}
	h.clusters = append(h.clusters, tableClusterLiveRef{port: port, localOnly: localOnly, subset: subset, dr: dr, live: l})
	return l
}

// prune drops the states build gen did not use, unless they still count
// connections, and forgets the clusters gen did not make. It reports
// whether nothing is left.
func (h *tableHostLive) prune(gen uint64) bool {
	n := len(h.eps)
	h.eps = slices.DeleteFunc(h.eps, func(e tableEPLive) bool { return e.live.gen != gen && e.live.active.Load() <= 0 })
	if len(h.eps) != n {
		h.reindex()
	}
	h.clusters = slices.DeleteFunc(h.clusters, func(c tableClusterLiveRef) bool {
		if c.live.gen == gen {
			return false
		}
		c.live.cluster = nil
		return c.live.active.Load() <= 0
	})
	return len(h.eps) == 0 && len(h.clusters) == 0
}

// liveEndpoints counts the endpoint states the builder keeps (tests).
func (b *Builder) liveEndpoints() int {
	n := 0
	for _, h := range b.hosts {
		n += len(h.eps)
	}
	return n
}
