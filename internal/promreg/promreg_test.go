package promreg_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/internal/promreg"
)

func TestRegisterSharesExisting(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "meshgate_test_total", Help: "test"}
	first, err := promreg.Register(reg, prometheus.NewCounter(opts))
	if err != nil {
		t.Fatal(err)
	}
	second, err := promreg.Register(reg, prometheus.NewCounter(opts))
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Fatal("second registration returned a new collector, want the first one")
	}
	second.Inc()
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetMetric()[0].GetCounter().GetValue() != 1 {
		t.Fatalf("gather = %v, %v; want one counter at 1", mfs, err)
	}
}

func TestRegisterReportsClash(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "meshgate_clash", Help: "a"})); err != nil {
		t.Fatal(err)
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshgate_clash", Help: "b"})
	got, err := promreg.Register(reg, g)
	if err == nil {
		t.Fatal("a gauge under a counter's name registered without error")
	}
	if got != g {
		t.Fatal("on a clash Register must return the caller's collector")
	}
}

func TestRegisterNilRegistry(t *testing.T) {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "meshgate_nil", Help: "n"})
	if got := promreg.MustRegister(nil, c); got != c {
		t.Fatal("nil registry must return the collector unchanged")
	}
}
