package agent

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/meshgate/meshgate/cluster/acl"
	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/pki/api"
)

// WorkloadRegistrar is the certificate API's api.EndpointRegistrar backed
// by the node's catalog: the endpoints workloads register with their own
// certificate. A scope, once set, refuses undeclared services and subset
// claims the workload group does not allow (as the admin API does for
// tokens). Safe for concurrent use.
type WorkloadRegistrar struct {
	cat   *catalog.Catalog
	scope atomic.Pointer[acl.RegistrationScope]
}

var _ api.EndpointRegistrar = (*WorkloadRegistrar)(nil)

// NewWorkloadRegistrar registers into cat.
func NewWorkloadRegistrar(cat *catalog.Catalog) *WorkloadRegistrar {
	return &WorkloadRegistrar{cat: cat}
}

// SetScope sets the declared-service and subset checks (nil: none).
func (w *WorkloadRegistrar) SetScope(s *acl.RegistrationScope) { w.scope.Store(s) }

// RegisterWorkload implements api.EndpointRegistrar.
func (w *WorkloadRegistrar) RegisterWorkload(_ context.Context, ep api.WorkloadEndpoint) error {
	reg := catalog.Registration{ID: ep.ID, Endpoint: catalog.Endpoint{Service: ep.Service, Port: ep.Port, Addr: ep.Addr,
		Network: ep.Network, Labels: ep.Labels}, TTL: ep.TTL,
		Check: &catalog.Check{Interval: ep.Check.Interval, Timeout: ep.Check.Timeout, Failures: ep.Check.Failures, HTTPPath: ep.Check.HTTPPath}}
	if s := w.scope.Load(); s != nil {
		tok := acl.Token{ID: "workload:" + ep.Identity.String(), Scopes: []acl.Scope{acl.ScopeEndpointsWrite},
			Services: []string{ep.Service}, Subsets: ep.Subsets}
		if err := s.Check(tok, reg); err != nil {
			return fmt.Errorf("%w: %w", api.ErrForbidden, err)
		}
	}
	if err := w.cat.Register(reg); err != nil {
		if errors.Is(err, catalog.ErrInvalidEndpoint) {
			return fmt.Errorf("%w: %w", api.ErrBadRequest, err)
		}
		return err
	}
	return nil
}

// DeregisterWorkload implements api.EndpointRegistrar.
func (w *WorkloadRegistrar) DeregisterWorkload(_ context.Context, id string) error {
	if err := w.cat.Deregister(id); err != nil && !errors.Is(err, catalog.ErrNotFound) {
		return err
	}
	return nil
}
