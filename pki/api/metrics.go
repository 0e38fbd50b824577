package api

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec
	// grpcOK is requests{api="grpc",code="OK"}, looked up once: it is
	// counted on every issued certificate.
	grpcOK prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_pki_api_requests_total",
			Help: "Certificate API requests by API (grpc, http, cfssl) and result code.",
		}, []string{"api", "code"}),
	}
	if reg != nil {
		if err := reg.Register(m.requests); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
					m.requests = existing
				}
			}
		}
	}
	m.grpcOK = m.requests.WithLabelValues("grpc", "OK")
	return m
}
