package sni

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/internal/promreg"
)

// serverMetrics are the proxy's Prometheus collectors. They always exist
// (the server counts even when nothing is registered) and are safe for
// concurrent use.
type serverMetrics struct {
	connections     *prometheus.CounterVec // {listener}
	active          *prometheus.GaugeVec   // {route}
	refused         *prometheus.CounterVec // {reason}
	connectFailures prometheus.Counter
	bytes           *prometheus.CounterVec // {direction}
	rx, tx          prometheus.Counter     // bytes curried by direction
	duration        prometheus.Histogram
	peek            prometheus.Histogram
}

// newServerMetrics builds the collectors and registers them with reg
// (nil = none). A collector that is already registered (a second server in
// the same process, a restart) is reused, so counts continue.
func newServerMetrics(reg prometheus.Registerer) (*serverMetrics, error) {
	const ns, sub = "meshgate", "sni"
	m := &serverMetrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "connections_total",
			Help: "Connections accepted, by listener.",
		}, []string{"listener"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "active_connections",
			Help: "Connections currently spliced to an upstream, by route.",
		}, []string{"route"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "refused_total",
			Help: "Connections closed without being spliced, by reason.",
		}, []string{"reason"}),
		connectFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "upstream_connect_failures_total",
			Help: "Failed attempts to connect to an upstream endpoint (each retry counts).",
		}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "bytes_total",
			Help: "Bytes spliced: rx = from clients to upstreams (incl. the replayed ClientHello), tx = from upstreams to clients.",
		}, []string{"direction"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "connection_duration_seconds",
			Help:    "Lifetime of accepted connections, refused ones included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12), // 1ms .. ~70min
		}),
		peek: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "hello_peek_seconds",
			Help:    "Time to read the ClientHello, failures included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 17), // 100µs .. ~6.5s
		}),
	}
	var err error
	if m.connections, err = promreg.Register(reg, m.connections); err != nil {
		return nil, err
	}
	if m.active, err = promreg.Register(reg, m.active); err != nil {
		return nil, err
	}
	if m.refused, err = promreg.Register(reg, m.refused); err != nil {
		return nil, err
	}
	if m.connectFailures, err = promreg.Register(reg, m.connectFailures); err != nil {
		return nil, err
	}
	if m.bytes, err = promreg.Register(reg, m.bytes); err != nil {
		return nil, err
	}
	if m.duration, err = promreg.Register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.peek, err = promreg.Register(reg, m.peek); err != nil {
		return nil, err
	}
	m.rx = m.bytes.WithLabelValues("rx")
	m.tx = m.bytes.WithLabelValues("tx")
	return m, nil
}
