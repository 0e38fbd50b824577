// Package promreg registers Prometheus collectors so that several
// components (two servers of one node, many nodes of one test) can share a
// registry: registering a collector whose description is already taken
// returns the collector registered first.
package promreg

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c with reg and returns it, or returns the collector
// already registered under the same description when it has c's type. A
// nil reg registers nothing and returns c. Any other registration failure
// (a clashing description of another type, an invalid metric) is returned
// with c, so the caller may keep counting into an unregistered collector.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("register metric: %w", err)
}

// MustRegister is Register for callers that have nowhere to report a
// failure: it returns the collector to use and drops the error.
func MustRegister[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	c, _ = Register(reg, c)
	return c
}
