package sni

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"syscall"
	"time"
)

// Values of the access log's "close" key: why a connection ended.
const (
	// closeEOF: the connection ended normally: both sides sent a FIN, or
	// one side finished (FIN) and the other then closed its socket with
	// bytes still unread, which the kernel turns into a reset instead of
	// a FIN. TLS clients and servers do that when their close_notify
	// alerts cross: whoever closes first has the other's alert unread.
	closeEOF = "eof"
	// closeClientReset: the client reset the connection (RST) while both
	// sides were still open.
	closeClientReset = "client_reset"
	// closeUpstreamReset: the upstream reset the connection while both
	// sides were still open.
	closeUpstreamReset = "upstream_reset"
	closeIdle          = "idle_timeout"   // no byte moved for Policy.IdleTimeout
	closeMaxDuration   = "max_duration"   // Policy.MaxConnectionDuration reached
	closeDrain         = "drain"          // force-closed when Shutdown's drain ended
	closeShutdown      = "closed"         // force-closed by Close
	closeError         = "error"          // any other I/O error (timeout, unreachable, epoll failure)
	closeUpstream      = "upstream_error" // every endpoint tried failed to connect
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

// closeForError returns the close value for an I/O error on one socket of
// a spliced connection: the client's socket when client is true, else the
// upstream's. finished says whether either side had already sent its FIN
// (or the failing side did before it reset). A reset, a broken pipe or a
// dead socket (ENOTCONN from shutdown) after that is a normal end, eof:
// nothing is lost but bytes the closing side chose not to read. Before it,
// the failing side reset a live connection. Any other error is an error.
func closeForError(err error, client, finished bool) string {
	switch {
	case !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ENOTCONN):
		return closeError
	case finished:
		return closeEOF
	case client:
		return closeClientReset
	default:
		return closeUpstreamReset
	}
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
	attrs := []slog.Attr{
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
	}
	if pc.peer != "" {
		attrs = append(attrs, slog.String("peer", pc.peer))
	}
	s.access.LogAttrs(context.Background(), slog.LevelInfo, "connection", attrs...)
}
