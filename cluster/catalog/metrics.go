package catalog

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/internal/promreg"
)

// Drop reasons, the label values of meshgate_catalog_dropped_total.
const (
	DropDecrypt   = "decrypt"    // packet or stream no installed key could open
	DropPlaintext = "plaintext"  // unencrypted message while encryption is on
	DropDecode    = "decode"     // catalog message that failed to decode
	DropQueueFull = "queue_full" // sync work dropped because the queue was full
	// DropBadSignature: a record whose signature is missing or does not
	// verify with its owner's key.
	DropBadSignature = "bad_signature"
	// DropUntrusted: a record of an owner that has not proved a fleet node
	// identity (chain unknown to this node, refused, or older than the key
	// that signed the record).
	DropUntrusted = "untrusted"
	// DropReserved: an endpoint whose address is one of this node's own
	// listeners, dropped from this node's view.
	DropReserved = "reserved"
)

// Stats are counters a Catalog keeps for tests and dumps; the same numbers
// are exported as Prometheus metrics.
type Stats struct {
	DroppedDecrypt      uint64
	DroppedPlaintext    uint64
	DroppedDecode       uint64
	DroppedQueueFull    uint64
	DroppedBadSignature uint64
	DroppedUntrusted    uint64
	DroppedReserved     uint64
	DeltasSent          uint64 // own endpoint changes queued for gossip
	DeltasRelayed       uint64 // deltas from others found new and re-gossiped
	SyncRequests        uint64 // full-state requests sent to owners
	// MemberFailures counts members this node saw gossip declare dead
	// without a leave intent. A crash shows once per observer; a count
	// that grows while every node runs is a false positive (a live node
	// that could not refute its suspicion in time).
	MemberFailures uint64
}

type metrics struct {
	dropped      *prometheus.CounterVec
	deltas       *prometheus.CounterVec
	syncs        prometheus.Counter
	failures     prometheus.Counter
	endpoints    prometheus.Gauge
	members      prometheus.Gauge
	signFailures prometheus.Counter
	reconnects   prometheus.Counter
	checks       *prometheus.CounterVec

	droppedDecrypt, droppedPlaintext, droppedDecode, droppedQueueFull atomic.Uint64
	droppedBadSig, droppedUntrusted, droppedReserved                  atomic.Uint64
	deltasSent, deltasRelayed, syncRequests, memberFailures           atomic.Uint64
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_catalog_dropped_total",
			Help: "Gossip messages dropped, by reason.",
		}, []string{"reason"}),
		deltas: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_catalog_deltas_total",
			Help: "Endpoint deltas queued for gossip: own changes (own) and relayed news (relay).",
		}, []string{"kind"}),
		syncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshgate_catalog_sync_requests_total",
			Help: "Full-state requests sent to endpoint owners this node lagged behind.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshgate_catalog_member_failures_total",
			Help: "Members this node saw declared dead by gossip without a leave intent.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshgate_catalog_reconnects_total",
			Help: "Failed members this node reached again by dialling them (a restarted node with nobody to join).",
		}),
		endpoints: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshgate_catalog_endpoints",
			Help: "Endpoints in this node's catalog view, own included.",
		}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshgate_catalog_members_alive",
			Help: "Gossip members this node considers alive, itself included.",
		}),
		signFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshgate_catalog_sign_failures_total",
			Help: "Records this node could not sign with its node key (peers refuse them).",
		}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_catalog_checks_total",
			Help: "Health checks of this node's registrations, by kind (tcp, http) and result (pass, fail).",
		}, []string{"kind", "result"}),
	}
	if reg != nil {
		m.dropped = promreg.MustRegister(reg, m.dropped)
		m.deltas = promreg.MustRegister(reg, m.deltas)
		m.syncs = promreg.MustRegister(reg, m.syncs)
		m.failures = promreg.MustRegister(reg, m.failures)
		m.reconnects = promreg.MustRegister(reg, m.reconnects)
		m.endpoints = promreg.MustRegister(reg, m.endpoints)
		m.members = promreg.MustRegister(reg, m.members)
		m.signFailures = promreg.MustRegister(reg, m.signFailures)
		m.checks = promreg.MustRegister(reg, m.checks)
	}
	for _, k := range []string{"tcp", "http"} {
		m.checks.WithLabelValues(k, "pass")
		m.checks.WithLabelValues(k, "fail")
	}
	for _, r := range []string{DropDecrypt, DropPlaintext, DropDecode, DropQueueFull, DropBadSignature, DropUntrusted, DropReserved} {
		m.dropped.WithLabelValues(r)
	}
	return m
}

func (m *metrics) drop(reason string) {
	switch reason {
	case DropDecrypt:
		m.droppedDecrypt.Add(1)
	case DropPlaintext:
		m.droppedPlaintext.Add(1)
	case DropDecode:
		m.droppedDecode.Add(1)
	case DropQueueFull:
		m.droppedQueueFull.Add(1)
	case DropBadSignature:
		m.droppedBadSig.Add(1)
	case DropUntrusted:
		m.droppedUntrusted.Add(1)
	case DropReserved:
		m.droppedReserved.Add(1)
	}
	m.dropped.WithLabelValues(reason).Inc()
}

func (m *metrics) stats() Stats {
	return Stats{
		DroppedDecrypt:      m.droppedDecrypt.Load(),
		DroppedPlaintext:    m.droppedPlaintext.Load(),
		DroppedDecode:       m.droppedDecode.Load(),
		DroppedQueueFull:    m.droppedQueueFull.Load(),
		DroppedBadSignature: m.droppedBadSig.Load(),
		DroppedUntrusted:    m.droppedUntrusted.Load(),
		DroppedReserved:     m.droppedReserved.Load(),
		DeltasSent:          m.deltasSent.Load(),
		DeltasRelayed:       m.deltasRelayed.Load(),
		SyncRequests:        m.syncRequests.Load(),
		MemberFailures:      m.memberFailures.Load(),
	}
}
