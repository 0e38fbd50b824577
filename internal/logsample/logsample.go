// Package logsample is a slog.Handler that passes one record in N to
// another handler: the first, then every N-th after it. meshgate samples
// its access log (node.yaml log.access_sample) with it, so a busy gateway
// writes one line per N connections while its metrics still count all of
// them.
package logsample

import (
	"context"
	"log/slog"
	"sync/atomic"
)

// Handler passes one record in every N to the handler it wraps. Handlers
// derived with WithAttrs and WithGroup share the count, so the rate holds
// across every logger made from it. Safe for concurrent use.
type Handler struct {
	next  slog.Handler
	every uint64
	seen  *atomic.Uint64 // records that reached Handle, shared with derived handlers
}

var _ slog.Handler = (*Handler)(nil)

// New returns a Handler passing one record in every to next. every 0 or 1
// passes every record.
func New(next slog.Handler, every uint64) *Handler {
	return &Handler{next: next, every: max(every, 1), seen: new(atomic.Uint64)}
}

// Enabled implements slog.Handler: the wrapped handler's answer. The
// sampling is done in Handle, since a caller may ask Enabled more than
// once per record.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle implements slog.Handler: records 1, every+1, 2*every+1, ... go
// to the wrapped handler, the others are dropped.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if (h.seen.Add(1)-1)%h.every != 0 {
		return nil
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &Handler{next: h.next.WithAttrs(as), every: h.every, seen: h.seen}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), every: h.every, seen: h.seen}
}
