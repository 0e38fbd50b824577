package agent

import (
	"context"
	"net/http"

	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/sni"
)

// ConfigSource supplies resources besides the local --resources files,
// such as the raft-replicated store. The agent merges every source with the
// local files; a duplicate kind/namespace/name across them is refused like
// any other bad configuration.
type ConfigSource interface {
	// Resources returns the source's current resources. It is called from
	// one goroutine at a time and must not block for long.
	Resources(ctx context.Context) (*config.Set, error)
	// Changed receives a value after the resources changed. The channel
	// should have a buffer of 1 and be sent to without blocking.
	Changed() <-chan struct{}
}

// EndpointSource supplies endpoints beyond those the resources define,
// such as the gossiped endpoint catalog.
type EndpointSource interface {
	// Endpoints returns the current endpoints (already split-horizon
	// filtered for this node). Must be safe to call from any goroutine.
	Endpoints() []sni.CatalogEndpoint
	// Changed receives a value after the endpoints changed (buffer 1,
	// non-blocking send).
	Changed() <-chan struct{}
}

// Component is an optional part of a node (cluster membership, the CA,
// the certificate API) that starts after the data plane is configured and
// stops after it has drained.
type Component interface {
	// Start starts the component; it must return once it is serving.
	// Goroutines it starts end on Close.
	Start(ctx context.Context) error
	// Close stops the component and waits for its goroutines. Idempotent.
	Close() error
}

// Readiness is an optional capability of a Component: something the node
// waits for before /readyz says ready (the fleet's gossip join).
type Readiness interface {
	// NotReady returns what the component still waits for, or "" when
	// ready. Called on every /readyz request; must be cheap.
	NotReady() string
}

// AdminRouter is an optional capability of a Component: routes it serves
// on the node's admin listener (plain HTTP, loopback by default).
type AdminRouter interface {
	// AdminRoutes returns ServeMux patterns and their handlers. Called once
	// when the admin listener starts.
	AdminRoutes() map[string]http.Handler
}

// EndpointChangeSource is an optional capability of an EndpointSource:
// it tells which service hosts' endpoints changed, so the agent updates
// only their routes (sni.Builder.UpdateServices) instead of diffing
// every endpoint. The agent uses it when it is the only EndpointSource.
type EndpointChangeSource interface {
	EndpointSource
	// EndpointChanges returns the changes after cursor; cursor 0 (or
	// one the source no longer reaches back to) is answered with Full.
	// Must be safe to call from any goroutine and cheap: the work is
	// proportional to the change.
	EndpointChanges(cursor uint64) EndpointChanges
	// EndpointsChanged receives a value after endpoints changed (buffer
	// 1, non-blocking send). Changed then signals only the other
	// changes (resources, members), which rebuild or diff in full.
	EndpointsChanged() <-chan struct{}
}

// EndpointChanges is one answer of EndpointChangeSource.EndpointChanges.
type EndpointChanges struct {
	// Cursor is the position to ask from next time.
	Cursor uint64
	// Full says the changes are not known one by one: take Endpoints
	// whole. Services is nil then.
	Full bool
	// Services maps each changed service host (lower case) to its
	// complete current endpoints; an empty list withdraws them all.
	Services map[string][]sni.CatalogEndpoint
}
