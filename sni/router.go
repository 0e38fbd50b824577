package sni

import "sync/atomic"

// Router holds the published Table. The hot path (Route) loads the current
// table with one atomic read; Publish swaps in a table built off the hot
// path. The zero Router has no table and refuses every connection with
// ReasonNoRoute. All methods are safe for concurrent use.
type Router struct{ table atomic.Pointer[Table] }

// Route resolves one connection on the listener with key listenerKey
// against the current table (see Table.Resolve).
func (r *Router) Route(listenerKey string, h *Hello) (*Decision, error) {
	return r.table.Load().Resolve(listenerKey, h)
}

// Publish makes t the current table. Connections already routed keep
// their Decision and Lease.
func (r *Router) Publish(t *Table) { r.table.Store(t) }

// Load returns the current table, nil before the first Publish.
func (r *Router) Load() *Table { return r.table.Load() }
