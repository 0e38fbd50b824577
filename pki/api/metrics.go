package api

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/internal/promreg"
)

// Connection refusal reasons of meshgate_pki_api_refused_total, besides
// the request refusal reasons (pki.Reason values and reasonCode).
const (
	refusedConnLimit        = "conn_limit"
	refusedRemoteConnLimit  = "remote_conn_limit"
	refusedHandshakeLimit   = "handshake_limit"
	refusedRemoteHandshakes = "remote_handshake_limit"
	refusedHandshakeTimeout = "handshake_timeout"
	refusedHandshakeFailed  = "handshake_failed"
)

type metrics struct {
	requests *prometheus.CounterVec
	// refused counts refused connections and requests by reason.
	refused *prometheus.CounterVec
	// grpcOK is requests{api="grpc",code="OK"}, looked up once: it is
	// counted on every issued certificate.
	grpcOK prometheus.Counter
	// workloadRefused counts refused workload endpoint registrations by
	// reason (no_client_cert, no_group, service, port, network, ...).
	workloadRefused *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_pki_api_requests_total",
			Help: "Certificate API requests by API (grpc, http, cfssl) and result code.",
		}, []string{"api", "code"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_pki_api_refused_total",
			Help: "Certificate API connections and requests refused, by reason (conn_limit, remote_handshake_limit, handshake_timeout, bad_token, rate_limited, ...).",
		}, []string{"reason"}),
	}
	m.workloadRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshgate_pki_api_workload_refused_total",
		Help: "Workload endpoint registrations by certificate refused, by reason (no_client_cert, bad_client_cert, node_cert, no_group, service, port, target_port, network, labels, addr, ttl, no_check, policy, bad_request).",
	}, []string{"reason"})
	m.workloadRefused = promreg.MustRegister(reg, m.workloadRefused)
	m.requests = promreg.MustRegister(reg, m.requests)
	m.refused = promreg.MustRegister(reg, m.refused)
	m.grpcOK = m.requests.WithLabelValues("grpc", "OK")
	return m
}

// refusal counts a refused request by its reason.
func (m *metrics) refusal(err error) { m.refused.WithLabelValues(reasonCode(err)).Inc() }
