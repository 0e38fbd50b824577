package sni

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshgate/meshgate/internal/promreg"
)

// Outlier detection defaults, as Istio and Envoy.
const (
	tableDefaultConsecutiveErrors = 5
	tableDefaultInterval          = 10 * time.Second
	tableDefaultBaseEjection      = 30 * time.Second
	tableDefaultMaxEjectionPct    = 10
	tableDefaultMaxEjectionTime   = 300 * time.Second
)

// tableEnv is what a Builder shares with every Table and Cluster it
// builds: clock, randomness, logger, metrics and the lock that serializes
// ejection decisions (taken only after a failed connect, never by Pick).
type tableEnv struct {
	log       *slog.Logger
	now       func() time.Time
	epoch     time.Time
	rand      func() uint64
	ejections prometheus.Counter
	ejectMu   sync.Mutex
}

// mono returns nanoseconds since the builder was created, from the
// injected clock (monotonic when the clock provides it).
func (e *tableEnv) mono() int64 { return int64(e.now().Sub(e.epoch)) }

// tableClock reads the clock at most once per Pick.
type tableClock struct {
	v  int64
	ok bool
}

func (c *tableClock) get(e *tableEnv) int64 {
	if !c.ok {
		c.v, c.ok = e.mono(), true
	}
	return c.v
}

// tableEndpointLive is the state of one endpoint that outlives tables:
// keyed by service host and endpoint address.
// The ejection history is allocated at the endpoint's first ejection:
// most endpoints are never ejected, and a table of 100,000 services holds
// 300,000 of these.
type tableEndpointLive struct {
	active   atomic.Int64
	gen      tableGen // last build that used it; guarded by Builder.mu
	failures atomic.Uint32
	// ej is nil until the first ejection; set under tableEnv.ejectMu,
	// never cleared.
	ej atomic.Pointer[tableEjection]
}

// tableEjection is the ejection history of an endpoint.
type tableEjection struct {
	// until is the mono time the ejection ends; 0 = not ejected.
	until atomic.Int64
	// lastUneject is the mono time the last ejection ended.
	lastUneject atomic.Int64
	ejections   atomic.Uint64
	// backoff multiplies baseEjectionTime; written under tableEnv.ejectMu.
	backoff atomic.Uint32
}

// ejections returns how many times st was ejected.
func (st *tableEndpointLive) ejections() uint64 {
	if ej := st.ej.Load(); ej != nil {
		return ej.ejections.Load()
	}
	return 0
}

// ejectedUntil returns the mono time st's ejection ends (0: not ejected).
func (st *tableEndpointLive) ejectedUntil() int64 {
	if ej := st.ej.Load(); ej != nil {
		return ej.until.Load()
	}
	return 0
}

// tableClusterLive is the state of one cluster that outlives tables.
type tableClusterLive struct {
	active atomic.Int64
	// rr are the round-robin positions of the local pool, the remote
	// pool and the bridge pool. 32 bits keep the state in a 32-byte
	// object; a wrap, every 4,294,967,296 picks of a pool, moves the
	// rotation once by 2^32 mod the pool size.
	rr [3]atomic.Uint32
	// gen is the last build that used it; guarded by Builder.mu and
	// never read by Pick.
	gen tableGen
	// dr names the DestinationRule applied (zero for none): with the
	// cluster's port, subset and localOnly, it keys the state across
	// builds (exportTo can make the rule differ by consumer).
	dr tableDRName
}

// tableOutlier is a DestinationRule outlierDetection, resolved.
type tableOutlier struct {
	enabled          bool
	threshold        uint32
	interval         time.Duration
	baseEjection     time.Duration
	maxEjection      time.Duration
	maxPercent       int
	minHealthPercent int
}

// tableOutlierFrom resolves outlierDetection with Istio's defaults.
// Connect failures are "gateway errors" and "5xx errors" at once, so the
// ejection threshold is the smaller enabled one of consecutiveGatewayErrors
// (off unless set) and consecutive5xxErrors (default 5, 0 = off); with
// splitExternalLocalOriginErrors it is consecutiveLocalOriginFailures
// (default 5).
func tableOutlierFrom(od *networking.OutlierDetection) tableOutlier {
	if od == nil {
		return tableOutlier{}
	}
	var th uint32
	if od.GetSplitExternalLocalOriginErrors() {
		th = tableDefaultConsecutiveErrors
		if v := od.GetConsecutiveLocalOriginFailures(); v != nil {
			th = v.GetValue()
		}
	} else {
		five := uint32(tableDefaultConsecutiveErrors)
		if v := od.GetConsecutive_5XxErrors(); v != nil {
			five = v.GetValue()
		} else if n := tableDeprecatedConsecutiveErrors(od); n > 0 {
			five = uint32(n)
		}
		var gw uint32
		if v := od.GetConsecutiveGatewayErrors(); v != nil {
			gw = v.GetValue()
		}
		th = five
		if gw > 0 && (th == 0 || gw < th) {
			th = gw
		}
	}
	o := tableOutlier{
		enabled:          th > 0,
		threshold:        th,
		interval:         tableDefaultInterval,
		baseEjection:     tableDefaultBaseEjection,
		maxPercent:       tableDefaultMaxEjectionPct,
		minHealthPercent: int(od.GetMinHealthPercent()),
	}
	if d := od.GetInterval(); d != nil && d.AsDuration() > 0 {
		o.interval = d.AsDuration()
	}
	if d := od.GetBaseEjectionTime(); d != nil && d.AsDuration() > 0 {
		o.baseEjection = d.AsDuration()
	}
	if p := od.GetMaxEjectionPercent(); p > 0 {
		o.maxPercent = int(min(p, 100))
	}
	o.maxEjection = max(tableDefaultMaxEjectionTime, o.baseEjection)
	return o
}

// ejected reports whether st is ejected now. An ejection whose time is up
// is ended here, lazily, and the endpoint's failure count starts over.
func (e *tableEnv) ejected(st *tableEndpointLive, clk *tableClock) bool {
	ej := st.ej.Load()
	if ej == nil {
		return false
	}
	u := ej.until.Load()
	if u == 0 {
		return false
	}
	if clk.get(e) < u {
		return true
	}
	if ej.until.CompareAndSwap(u, 0) {
		ej.lastUneject.Store(u)
		st.failures.Store(0)
	}
	return false
}

// eject runs after ep reached the consecutive failure threshold of c: as
// Envoy, it ejects unless that would put more than maxEjectionPercent of
// c's endpoints out, for baseEjectionTime times the number of times the
// endpoint was ejected (decaying by one per interval spent healthy),
// capped at max(300s, baseEjectionTime), rounded up to the next interval
// tick.
func (e *tableEnv) eject(c *Cluster, ep *tableEndpoint) {
	od := &c.pol.outlier
	st := ep.live
	e.ejectMu.Lock()
	defer e.ejectMu.Unlock()
	var clk tableClock
	now := clk.get(e)
	st.failures.Store(0)
	if e.ejected(st, &clk) {
		return
	}
	out := 0
	for i := range c.pools {
		p := &c.pools[i]
		for _, x := range p.eps {
			if x != ep && e.ejected(x.live, &clk) {
				out++
			}
		}
	}
	if 100*(out+1) > od.maxPercent*c.size() {
		e.log.Debug("outlier ejection skipped: maxEjectionPercent reached",
			"upstream", ep.addr, "cluster", c.Name(), "ejected", out, "endpoints", c.size(), "max_percent", od.maxPercent)
		return
	}
	ej := st.ej.Load()
	if ej == nil {
		ej = &tableEjection{}
		st.ej.Store(ej)
	}
	base, interval := int64(od.baseEjection), int64(od.interval)
	b := int64(ej.backoff.Load())
	if last := ej.lastUneject.Load(); last > 0 && now > last {
		b = max(0, b-(now-last)/interval)
	}
	if b*base < int64(od.maxEjection)+base {
		b++
	}
	until := now + min(b*base, int64(od.maxEjection))
	until = (until + interval - 1) / interval * interval
	ej.backoff.Store(uint32(b))
	ej.ejections.Add(1)
	ej.until.Store(until)
	e.ejections.Inc()
	e.log.Info("outlier ejected endpoint",
		"upstream", ep.addr, "cluster", c.Name(), "for", time.Duration(until-now), "times", ej.ejections.Load())
}

// tableRegisterCounter registers c, or returns the collector already
// registered under the same description.
func tableRegisterCounter(reg prometheus.Registerer, c prometheus.Counter, log *slog.Logger) prometheus.Counter {
	c, err := promreg.Register(reg, c)
	if err != nil {
		log.Warn("sni: metric not registered", "err", err)
	}
	return c
}

// tableDeprecatedConsecutiveErrors reads the deprecated consecutiveErrors,
// which Istio still honours when consecutive5xxErrors is unset.
func tableDeprecatedConsecutiveErrors(od *networking.OutlierDetection) int32 {
	//lint:ignore SA1019 kept for configurations written for older Istio
	return od.GetConsecutiveErrors()
}
