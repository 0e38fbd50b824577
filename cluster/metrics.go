package cluster

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/internal/promreg"
)

type metrics struct {
	applies     *prometheus.CounterVec
	applyTime   prometheus.Histogram
	forwardedIn prometheus.Counter
	forwarded   prometheus.Counter
	leader      prometheus.Gauge
	applied     prometheus.Gauge
	autopilot   *prometheus.CounterVec
	rejoins     prometheus.Counter
	encrypted   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_cluster_applies_total",
			Help: "Replicated writes started at this node, by result (ok, conflict, invalid, error).",
		}, []string{"result"}),
		applyTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshgate_cluster_apply_duration_seconds",
			Help:    "Time from Apply to the write being committed and applied locally.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		forwardedIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshgate_cluster_forwarded_in_total",
			Help: "Writes other nodes forwarded to this node as leader.",
		}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshgate_cluster_forwarded_out_total",
			Help: "Writes this node forwarded to the leader.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshgate_cluster_is_leader",
			Help: "1 while this node is the raft leader.",
		}),
		applied: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshgate_cluster_applied_index",
			Help: "Last raft index applied to this node's state.",
		}),
		autopilot: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_cluster_autopilot_actions_total",
			Help: "Raft membership changes made by the leader, by action (add, promote, remove, readdress).",
		}, []string{"action"}),
		rejoins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshgate_cluster_rejoins_total",
			Help: "Times this node, alone in gossip, rejoined through the gossip addresses of its raft peers.",
		}),
		encrypted: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshgate_cluster_gossip_encrypted",
			Help: "1 while this node's gossip is encrypted; 0 means any host that reaches the gossip port can join the membership.",
		}),
	}
	if reg != nil {
		m.applies = promreg.MustRegister(reg, m.applies)
		m.applyTime = promreg.MustRegister(reg, m.applyTime)
		m.forwardedIn = promreg.MustRegister(reg, m.forwardedIn)
		m.forwarded = promreg.MustRegister(reg, m.forwarded)
		m.leader = promreg.MustRegister(reg, m.leader)
		m.applied = promreg.MustRegister(reg, m.applied)
		m.autopilot = promreg.MustRegister(reg, m.autopilot)
		m.rejoins = promreg.MustRegister(reg, m.rejoins)
		m.encrypted = promreg.MustRegister(reg, m.encrypted)
	}
	return m
}
