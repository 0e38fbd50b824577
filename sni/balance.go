package sni

import (
	"cmp"
	"container/heap"
	"fmt"
	"sort"
	"strconv"
	"sync/atomic"
)

// tableLB is a DestinationRule loadBalancer.simple algorithm.
type tableLB uint8

const (
	// lbRoundRobin is smooth weighted round robin (the default).
	lbRoundRobin tableLB = iota
	// lbLeastRequest is power of two choices on active connections per
	// unit of weight (LEAST_REQUEST, and the deprecated LEAST_CONN).
	lbLeastRequest
	// lbRandom is weighted random.
	lbRandom
)

func (k tableLB) String() string {
	switch k {
	case lbRoundRobin:
		return "ROUND_ROBIN"
	case lbLeastRequest:
		return "LEAST_REQUEST"
	case lbRandom:
		return "RANDOM"
	}
	return "UNKNOWN"
}

// tableMaxSchedule caps the length of a precomputed weighted schedule.
// Weights whose reduced sum exceeds it are scaled down proportionally.
const tableMaxSchedule = 1 << 16

// Cluster is the set of endpoints of one service port (and subset), with
// its load balancer, connection limit and outlier detection. Clusters are
// part of a Table; their live counters (active connections, ejections)
// belong to the Builder and survive rebuilds. All methods are safe for
// concurrent use.
type Cluster struct {
	service   string
	port      uint32
	localOnly bool
	subset    string
	// refusal is set when the cluster can have no endpoints.
	refusal *tableRefusal
	pol     *tableClusterPolicy
	// pools by priority: local endpoints first, then (unless localOnly)
	// endpoints in other networks.
	pools []tablePool
	// bridge is the remote pool as the bridge sees it: only endpoints
	// with a bridge address, each network's weight split across its
	// gateways that have one. nil when that is the remote pool itself.
	bridge *tablePool
	live   *tableClusterLive
}

// size returns the number of endpoints of c's pools.
func (c *Cluster) size() int {
	n := 0
	for i := range c.pools {
		n += len(c.pools[i].eps)
	}
	return n
}

// tableRefusal says why a cluster has no endpoints.
type tableRefusal struct {
	why    string
	reason Reason // "" = ReasonNoEndpoint
}

// refuse records why c can have no endpoints.
func (c *Cluster) refuse(reason Reason, why string) {
	c.refusal = &tableRefusal{why: why, reason: reason}
}

// problem returns why c has no endpoints ("" when it is not refused) and
// the reason to refuse connections with.
func (c *Cluster) problem() (string, Reason) {
	if c.refusal == nil {
		return "", ReasonNoEndpoint
	}
	return c.refusal.why, cmp.Or(c.refusal.reason, ReasonNoEndpoint)
}

// emptyRefusal is the refusal of a connection to c when c has no
// endpoints: Pick returns it and explain reports it.
func (c *Cluster) emptyRefusal() *RefusedError {
	why, reason := c.problem()
	if why == "" {
		why = "no endpoints"
	}
	return &RefusedError{Reason: reason, Detail: c.Name() + ": " + why}
}

// tableClusterPolicy is the resolved DestinationRule traffic policy of a
// cluster; clusters under the same rule, subset and port share one.
type tableClusterPolicy struct {
	lb      tableLB
	conn    ConnPolicy
	outlier tableOutlier
	// env is the builder's, here so that clusters need no pointer of
	// their own to it.
	env *tableEnv
}

// tablePool is one priority level of a cluster.
type tablePool struct {
	eps []*tableEndpoint
	// w holds the weighted structures; nil when all weights are equal
	// (plain rotation and uniform draws), as for most pools.
	w *tableWeights
}

// tableWeights are the precomputed weights of a pool whose endpoints
// differ in weight.
type tableWeights struct {
	// sched is a smooth weighted round-robin order of indexes into eps.
	sched []uint32
	// prefix holds cumulative weights for weighted random draws.
	prefix []uint64
	total  uint64
}

// tableEndpoint is an Endpoint placed in a service port, with its live
// state. The fields a local endpoint mostly leaves empty (network,
// bridge, identity) sit in far, which is nil when all are empty: a table
// of 100,000 services holds 300,000 of these.
type tableEndpoint struct {
	addr    string
	labels  map[string]string
	live    *tableEndpointLive
	far     *tableEndpointFar
	weight  uint32
	local   bool
	gateway bool
}

// tableEndpointFar is the rarely set part of a tableEndpoint.
type tableEndpointFar struct {
	network  string
	bridge   string
	identity string
	// behind is, for a merged gateway entry, the summed weight of the
	// remote endpoints (matching the cluster's subset) it stands for.
	behind uint64
}

// setTableEndpoint fills e from ep.
func setTableEndpoint(e *tableEndpoint, ep Endpoint, local bool, live *tableEndpointLive, behind uint64) {
	*e = tableEndpoint{addr: ep.Addr, labels: ep.Labels, live: live, weight: ep.Weight, local: local, gateway: ep.Gateway}
	if ep.Network != "" || ep.Bridge != "" || ep.Identity != "" || behind != 0 {
		e.far = &tableEndpointFar{network: ep.Network, bridge: ep.Bridge, identity: ep.Identity, behind: behind}
	}
}

// tableNoFar is the far part of an endpoint whose far is nil.
var tableNoFar tableEndpointFar

// farPart returns e's far part, empty when e has none.
func (e *tableEndpoint) farPart() *tableEndpointFar {
	if e.far == nil {
		return &tableNoFar
	}
	return e.far
}

func (e *tableEndpoint) network() string  { return e.farPart().network }
func (e *tableEndpoint) bridge() string   { return e.farPart().bridge }
func (e *tableEndpoint) identity() string { return e.farPart().identity }
func (e *tableEndpoint) behind() uint64   { return e.farPart().behind }

// endpoint returns e as an Endpoint.
func (e *tableEndpoint) endpoint() Endpoint {
	return Endpoint{Addr: e.addr, Labels: e.labels, Network: e.network(), Weight: e.weight,
		Identity: e.identity(), Bridge: e.bridge(), Gateway: e.gateway}
}

// Lease is one picked endpoint, held for the life of one connection.
// Dialed and Release are safe to call from any goroutine.
type Lease struct {
	c    *Cluster
	ep   *tableEndpoint
	done atomic.Bool
}

// Name returns the Envoy-style cluster name: "outbound|9080|v1|host", or
// "outbound_.9080_.v1_.host" for AUTO_PASSTHROUGH clusters.
func (c *Cluster) Name() string {
	p := strconv.FormatUint(uint64(c.port), 10)
	if c.localOnly {
		return "outbound_." + p + "_." + c.subset + "_." + c.service
	}
	return "outbound|" + p + "|" + c.subset + "|" + c.service
}

// Service returns the destination host.
func (c *Cluster) Service() string { return c.service }

// Port returns the service port.
func (c *Cluster) Port() uint32 { return c.port }

// Subset returns the DestinationRule subset, "" for none.
func (c *Cluster) Subset() string { return c.subset }

// Policy returns the connection policy.
func (c *Cluster) Policy() ConnPolicy { return c.pol.conn }

// LoadBalancer returns the algorithm name: ROUND_ROBIN, LEAST_REQUEST or
// RANDOM.
func (c *Cluster) LoadBalancer() string { return c.pol.lb.String() }

// Active returns the number of leases not yet released.
func (c *Cluster) Active() int64 { return c.live.active.Load() }

// Endpoints returns a copy of the endpoints, local network first.
func (c *Cluster) Endpoints() []Endpoint {
	var out []Endpoint
	for i := range c.pools {
		p := &c.pools[i]
		for _, e := range p.eps {
			out = append(out, e.endpoint())
		}
	}
	return out
}

// Pick chooses an endpoint whose Addr is not in tried, skipping ejected
// endpoints, and counts it active until Lease.Release. Endpoints of other
// networks are chosen only when no local endpoint is available. The error
// is a *RefusedError with ReasonOverloaded (connectionPool.tcp.
// maxConnections reached), ReasonNotExported (exportTo hides the
// service) or ReasonNoEndpoint.
//
// Pick takes no locks and allocates only the Lease.
func (c *Cluster) Pick(tried []string) (*Lease, error) {
	return c.pick(tried, viaAny, "")
}

// tableVia says how a connection may reach endpoints of other networks,
// which decides which of them are eligible.
type tableVia uint8

const (
	// viaAny: every endpoint; a remote one by its Addr (split horizon
	// to the gateway's 15443, for a hello the remote AUTO_PASSTHROUGH
	// server accepts).
	viaAny tableVia = iota
	// viaBridge: remote endpoints only through the bridge, so only
	// those whose gateway publishes a bridge address.
	viaBridge
	// viaLocal: no remote endpoint (no bridge on this node).
	viaLocal
)

// String names the path for explain.
func (v tableVia) String() string {
	switch v {
	case viaBridge:
		return "bridge"
	case viaLocal:
		return "local only"
	}
	return "split horizon"
}

// pick is Pick for a connection that reaches other networks via via.
// After a connect failure on a remote gateway, preferNet names its
// network: another gateway of that network is tried before any other
// network, so a dead gateway costs no more than one retry.
func (c *Cluster) pick(tried []string, via tableVia, preferNet string) (*Lease, error) {
	if c == nil {
		return nil, &RefusedError{Reason: ReasonNoEndpoint, Detail: "no cluster"}
	}
	if len(c.pools) == 0 {
		return nil, c.emptyRefusal()
	}
	n := c.live.active.Add(1)
	if max := c.pol.conn.MaxConnections; max > 0 && n > int64(max) {
		c.live.active.Add(-1)
		return nil, &RefusedError{Reason: ReasonOverloaded, Detail: fmt.Sprintf("%s: %d active connections reached connectionPool.tcp.maxConnections %d", c.Name(), n-1, max)}
	}
	var clk tableClock
	ignoreEjection := c.pol.outlier.minHealthPercent > 0 && c.panicking(&clk)
	f := tableFilter{tried: tried, via: via, clk: &clk, ignoreEjection: ignoreEjection}
	for tier := range c.pools {
		p, rr := &c.pools[tier], tier
		if via == viaBridge && c.bridge != nil && !p.eps[0].local {
			p, rr = c.bridge, 2
		}
		if preferNet != "" {
			f.network = preferNet
			if ep := c.pickPool(rr, p, &f); ep != nil {
				ep.live.active.Add(1)
				return &Lease{c: c, ep: ep}, nil
			}
			f.network = ""
		}
		if ep := c.pickPool(rr, p, &f); ep != nil {
			ep.live.active.Add(1)
			return &Lease{c: c, ep: ep}, nil
		}
	}
	c.live.active.Add(-1)
	if n := c.ineligible(via); n > 0 {
		why := "this node has no bridge"
		if via == viaBridge {
			why = "their gateways publish no bridge address"
		}
		return nil, &RefusedError{Reason: ReasonNoEndpoint, Detail: fmt.Sprintf("%s: every eligible endpoint is ejected or already tried; %d endpoints of other networks are not eligible for this connection: %s", c.Name(), n, why)}
	}
	return nil, &RefusedError{Reason: ReasonNoEndpoint, Detail: fmt.Sprintf("%s: all %d endpoints are ejected or already tried", c.Name(), c.size())}
}

// ineligible counts the remote endpoints via excludes.
func (c *Cluster) ineligible(via tableVia) int {
	n := 0
	for i := range c.pools {
		for _, e := range c.pools[i].eps {
			if !tableViaAllows(via, e) {
				n++
			}
		}
	}
	return n
}

// tableViaAllows reports whether via may reach e.
func tableViaAllows(via tableVia, e *tableEndpoint) bool {
	if e.local {
		return true
	}
	switch via {
	case viaLocal:
		return false
	case viaBridge:
		return e.bridge() != ""
	}
	return true
}

// tableFilter is what makes an endpoint eligible for one pick.
type tableFilter struct {
	tried          []string
	via            tableVia
	network        string // "" = any
	clk            *tableClock
	ignoreEjection bool
}

// pickPool runs the load balancer over one pool; nil when no endpoint of
// the pool is eligible.
func (c *Cluster) pickPool(tier int, p *tablePool, f *tableFilter) *tableEndpoint {
	n := len(p.eps)
	if n == 0 {
		return nil
	}
	ok := func(e *tableEndpoint) bool { return c.eligible(e, f) }
	switch c.pol.lb {
	case lbRandom:
		i := p.draw(c.pol.env.rand())
		for k := 0; k < n; k++ {
			if e := p.eps[(i+k)%n]; ok(e) {
				return e
			}
		}
		return nil
	case lbLeastRequest:
		if n == 1 {
			if ok(p.eps[0]) {
				return p.eps[0]
			}
			return nil
		}
		a := p.draw(c.pol.env.rand())
		b := p.drawExcept(c.pol.env.rand(), a)
		ea, eb := p.eps[a], p.eps[b]
		oka, okb := ok(ea), ok(eb)
		switch {
		case oka && okb:
			if tableLess(eb, ea) {
				return eb
			}
			return ea
		case oka:
			return ea
		case okb:
			return eb
		}
		var best *tableEndpoint
		for _, e := range p.eps {
			if ok(e) && (best == nil || tableLess(e, best)) {
				best = e
			}
		}
		return best
	default:
		slots := n
		if p.w != nil {
			slots = len(p.w.sched)
		}
		start := uint64(c.live.rr[tier].Add(1) - 1)
		for k := 0; k < slots; k++ {
			i := int((start + uint64(k)) % uint64(slots))
			if p.w != nil {
				i = int(p.w.sched[i])
			}
			if e := p.eps[i]; ok(e) {
				return e
			}
		}
		return nil
	}
}

// tableLess reports whether a carries strictly less load per unit of
// weight (active connections / weight) than b. On a tie the caller keeps
// the first candidate, which was drawn in proportion to weight, so idle
// endpoints share connections by weight.
func tableLess(a, b *tableEndpoint) bool {
	la := uint64(max(0, a.live.active.Load())) * uint64(b.weight)
	lb := uint64(max(0, b.live.active.Load())) * uint64(a.weight)
	return la < lb
}

// eligible reports whether e may be picked now.
func (c *Cluster) eligible(e *tableEndpoint, f *tableFilter) bool {
	if f.network != "" && e.network() != f.network {
		return false
	}
	if !tableViaAllows(f.via, e) {
		return false
	}
	for _, a := range f.tried {
		if a == e.addr {
			return false
		}
	}
	return f.ignoreEjection || !c.pol.env.ejected(e.live, f.clk)
}

// panicking reports whether fewer than minHealthPercent of the cluster's
// endpoints are healthy, in which case ejections are ignored (Envoy's
// panic threshold).
func (c *Cluster) panicking(clk *tableClock) bool {
	healthy := 0
	for i := range c.pools {
		p := &c.pools[i]
		for _, e := range p.eps {
			if !c.pol.env.ejected(e.live, clk) {
				healthy++
			}
		}
	}
	return healthy*100 < c.pol.outlier.minHealthPercent*c.size()
}

// draw maps a random number to a weighted index.
func (p *tablePool) draw(r uint64) int {
	if p.w == nil {
		return int(r % uint64(len(p.eps)))
	}
	x := r % p.w.total
	return sort.Search(len(p.w.prefix), func(i int) bool { return p.w.prefix[i] > x })
}

// drawExcept draws a weighted index other than skip (len(eps) >= 2).
func (p *tablePool) drawExcept(r uint64, skip int) int {
	n := len(p.eps)
	if p.w == nil {
		j := int(r % uint64(n-1))
		if j >= skip {
			j++
		}
		return j
	}
	w := uint64(p.eps[skip].weight)
	x := r % (p.w.total - w)
	if x >= p.w.prefix[skip]-w {
		x += w
	}
	return sort.Search(n, func(i int) bool { return p.w.prefix[i] > x })
}

// tableNewPool precomputes the weighted structures of a pool.
func tableNewPool(eps []*tableEndpoint) tablePool {
	p := tablePool{eps: eps}
	equal := true
	var total uint64
	for _, e := range eps {
		total += uint64(e.weight)
		if e.weight != eps[0].weight {
			equal = false
		}
	}
	if equal {
		return p
	}
	w := &tableWeights{total: total, prefix: make([]uint64, len(eps))}
	var acc uint64
	for i, e := range eps {
		acc += uint64(e.weight)
		w.prefix[i] = acc
	}
	ws := make([]uint64, len(eps))
	for i, e := range eps {
		ws[i] = uint64(e.weight)
	}
	w.sched = tableSchedule(ws)
	p.w = w
	return p
}

// Endpoint returns the endpoint to dial.
func (l *Lease) Endpoint() Endpoint { return l.ep.endpoint() }

// Cluster returns the cluster the endpoint was picked from.
func (l *Lease) Cluster() *Cluster { return l.c }

// Dialed reports the outcome of connecting to the endpoint. nil resets
// the endpoint's consecutive failure count; an error counts as a connect
// failure for outlier detection and may eject the endpoint. Call it once
// per lease.
func (l *Lease) Dialed(err error) {
	st := l.ep.live
	if err == nil {
		if st.failures.Load() != 0 {
			st.failures.Store(0)
		}
		return
	}
	od := &l.c.pol.outlier
	if !od.enabled {
		return
	}
	if st.failures.Add(1) < od.threshold {
		return
	}
	l.c.pol.env.eject(l.c, l.ep)
}

// Release ends the lease: the endpoint and the cluster count one active
// connection less. Release is idempotent.
func (l *Lease) Release() {
	if l.done.CompareAndSwap(false, true) {
		l.ep.live.active.Add(-1)
		l.c.live.active.Add(-1)
	}
}

// tableRoute is one VirtualService route (tls[i] or tcp[i]) as placed on
// one gateway server: weighted destinations.
type tableRoute struct {
	name  string
	decs  []*Decision
	ws    []uint64
	sched []uint32 // nil when one destination or equal weights
	ctr   *atomic.Uint64
}

// pick chooses the destination for one connection by smooth weighted
// round robin over the route's weights.
func (r *tableRoute) pick() *Decision {
	if len(r.decs) == 1 {
		return r.decs[0]
	}
	i := r.ctr.Add(1) - 1
	if r.sched == nil {
		return r.decs[i%uint64(len(r.decs))]
	}
	return r.decs[r.sched[i%uint64(len(r.sched))]]
}

// tableSchedule returns a smooth weighted order of indexes: weights are
// reduced by their greatest common divisor (and scaled down when the sum
// still exceeds tableMaxSchedule), then each index i appears w[i] times,
// interleaved by earliest deadline first with deadlines (2k+1)/(2w). Zero
// weights never appear. It returns nil when all weights are equal.
func tableSchedule(w []uint64) []uint32 {
	var g, sum uint64
	equal := true
	for _, x := range w {
		if x != w[0] {
			equal = false
		}
		g = tableGCD(g, x)
		sum += x
	}
	if equal || g == 0 {
		return nil
	}
	ws := make([]uint64, len(w))
	sum = 0
	for i, x := range w {
		ws[i] = x / g
		sum += ws[i]
	}
	if sum > tableMaxSchedule {
		scaled := uint64(0)
		for i, x := range ws {
			if x == 0 {
				continue
			}
			ws[i] = max(1, x*tableMaxSchedule/sum)
			scaled += ws[i]
		}
		sum = scaled
	}
	h := make(tableEDF, 0, len(ws))
	for i, x := range ws {
		if x > 0 {
			h = append(h, tableEDFItem{idx: uint32(i), w: x})
		}
	}
	heap.Init(&h)
	out := make([]uint32, 0, sum)
	for uint64(len(out)) < sum {
		it := &h[0]
		out = append(out, it.idx)
		it.k++
		heap.Fix(&h, 0)
	}
	return out
}

func tableGCD(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// tableEDFItem is one weighted index; its next deadline is (2k+1)/(2w).
type tableEDFItem struct {
	idx uint32
	w   uint64
	k   uint64
}

type tableEDF []tableEDFItem

func (h tableEDF) Len() int { return len(h) }
func (h tableEDF) Less(i, j int) bool {
	a, b := (2*h[i].k+1)*h[j].w, (2*h[j].k+1)*h[i].w
	if a != b {
		return a < b
	}
	return h[i].idx < h[j].idx
}
func (h tableEDF) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *tableEDF) Push(x any)   { *h = append(*h, x.(tableEDFItem)) }
func (h *tableEDF) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
