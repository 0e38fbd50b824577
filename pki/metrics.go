package pki

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/internal/promreg"
)

// metrics of one CA. Registration is optional (nil Registerer) and safe to
// repeat: an already registered collector of the same name is reused.
type metrics struct {
	issued      prometheus.Counter
	refused     *prometheus.CounterVec
	auditBatch  prometheus.Histogram
	auditCommit prometheus.Histogram
	auditErrors prometheus.Counter
	auditPruned prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshgate_pki_issued_total",
			Help: "Certificates issued (workload and node).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_pki_refused_total",
			Help: "Issuance requests refused, by reason.",
		}, []string{"reason"}),
		auditBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshgate_pki_audit_batch_records",
			Help:    "Audit records made durable per store write (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		auditCommit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshgate_pki_audit_commit_seconds",
			Help:    "Duration of one audit store write.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		auditErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshgate_pki_audit_errors_total",
			Help: "Audit store writes that failed (their certificates were not handed out).",
		}),
		auditPruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshgate_pki_audit_pruned_batches_total",
			Help: "Audit batches deleted from the store by retention (AuditMaxRecords, AuditMaxAge).",
		}),
	}
	if reg == nil {
		return m
	}
	m.issued = promreg.MustRegister(reg, m.issued)
	m.refused = promreg.MustRegister(reg, m.refused)
	m.auditBatch = promreg.MustRegister(reg, m.auditBatch)
	m.auditCommit = promreg.MustRegister(reg, m.auditCommit)
	m.auditErrors = promreg.MustRegister(reg, m.auditErrors)
	m.auditPruned = promreg.MustRegister(reg, m.auditPruned)
	return m
}
