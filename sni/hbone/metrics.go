package hbone

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/internal/promreg"
)

// Refusal reasons counted in meshgate_hbone_refused_total, besides the
// Connector's own (unknown_service, not_exported, no_endpoint, ...).
const (
	ReasonHandshake     = "handshake"     // TLS failed before the peer was verified
	ReasonPeer          = "peer"          // the peer is not a fleet gateway identity, or chains to no mesh root
	ReasonALPN          = "alpn"          // the peer did not negotiate h2
	ReasonMethod        = "method"        // not a plain CONNECT
	ReasonBadAuthority  = "bad_authority" // :authority is not <service hostname>:<port>
	ReasonBadSubset     = "bad_subset"    // the subset header is not a DNS label
	ReasonConnLimit     = "conn_limit"    // too many tunnel connections
	ReasonUnknownReason = "refused"       // the Connector refused without a reason
)

// metrics are the package's collectors, shared by every Server and Pool of
// a registry.
type metrics struct {
	refused    *prometheus.CounterVec
	handshakes *prometheus.CounterVec
	streams    *prometheus.CounterVec
	active     *prometheus.GaugeVec
	conns      *prometheus.GaugeVec
	bytes      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_hbone_refused_total",
			Help: "Bridge tunnels and streams refused by the receiving gateway, by reason.",
		}, []string{"reason"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_hbone_handshakes_total",
			Help: "TLS handshakes of bridge connections, by side (client, server) and result (ok, error).",
		}, []string{"side", "result"}),
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_hbone_streams_total",
			Help: "CONNECT streams opened, by side (client, server) and result (ok, refused, error).",
		}, []string{"side", "result"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshgate_hbone_active_streams",
			Help: "CONNECT streams open now, by side.",
		}, []string{"side"}),
		conns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshgate_hbone_connections",
			Help: "HTTP/2 bridge connections open now, by side.",
		}, []string{"side"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_hbone_bytes_total",
			Help: "Bytes relayed by the receiving gateway: rx = from the tunnel to upstreams, tx = back.",
		}, []string{"direction"}),
	}
	m.refused = promreg.MustRegister(reg, m.refused)
	m.handshakes = promreg.MustRegister(reg, m.handshakes)
	m.streams = promreg.MustRegister(reg, m.streams)
	m.active = promreg.MustRegister(reg, m.active)
	m.conns = promreg.MustRegister(reg, m.conns)
	m.bytes = promreg.MustRegister(reg, m.bytes)
	return m
}
