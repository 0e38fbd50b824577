package sni

import (
	"context"
	"log/slog"
	"strings"
	"time"
)

// Values of the access log's "close" key: why a connection ended.
const (
	closeEOF         = "eof"            // both sides finished (FIN both ways)
	closeIdle        = "idle_timeout"   // no byte moved for Policy.IdleTimeout
	closeMaxDuration = "max_duration"   // Policy.MaxConnectionDuration reached
	closeDrain       = "drain"          // force-closed when Shutdown's drain ended
	closeShutdown    = "closed"         // force-closed by Close
	closeError       = "error"          // I/O error while splicing (reset, broken pipe)
	closeUpstream    = "upstream_error" // every endpoint tried failed to connect
	// closeRefusedPrefix starts "refused:<reason>" for the other refusals.
	closeRefusedPrefix = "refused:"
)

// closeRefused returns the close value for a refusal.
func closeRefused(r Reason) string {
	if r == ReasonUpstream {
		return closeUpstream
	}
	return closeRefusedPrefix + string(r)
}

// logAccess writes the one access-log line of a finished connection, at
// Info, with fixed keys: sni, alpn, listener, route, upstream, remote,
// bytes_rx, bytes_tx, duration, close.
func (s *Server) logAccess(pc *proxyConn, why string, rx, tx int64, d time.Duration) {
	if !s.access.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	var sni, alpn, route string
	if pc.hello != nil {
		sni = pc.hello.ServerName
		alpn = strings.Join(pc.hello.ALPN, ",")
	}
	if pc.dec != nil {
		route = pc.dec.Route
	}
	s.access.LogAttrs(context.Background(), slog.LevelInfo, "connection",
		slog.String("sni", sni),
		slog.String("alpn", alpn),
		slog.String("listener", pc.listener),
		slog.String("route", route),
		slog.String("upstream", pc.upstream),
		slog.String("remote", serverAddrString(pc.client.RemoteAddr())),
		slog.Int64("bytes_rx", rx),
		slog.Int64("bytes_tx", tx),
		slog.Duration("duration", d),
		slog.String("close", why),
	)
}
