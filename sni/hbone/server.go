package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"

	"github.com/meshgate/meshgate/mtls"
)

// Connector resolves and dials a tunnel's destination on the receiving
// gateway. *sni.Server implements it: only services its configuration
// exports to the bridge, only endpoints of its own network. It returns
// the upstream connection and a release func called once when the relay
// ends. A refusal is an error; when it has a method RefusalReason() string,
// that reason is reported to the peer and counted.
type Connector interface {
	ConnectBridge(ctx context.Context, service string, port uint32, subset string) (net.Conn, func(), error)
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// Source holds the node's certificate and the mesh roots; it follows
	// renewal and root rotation. Required.
	Source *mtls.Source
	// Authorizer accepts the fleet's gateway identities (node.yaml
	// tls.peer_identities). Required: a peer with a workload identity or
	// another root is refused at the handshake.
	Authorizer mtls.Authorizer
	// Connector resolves and dials destinations. Required.
	Connector Connector
	// MaxConns bounds open tunnel connections (default 1024); more are
	// closed at accept and counted as conn_limit.
	MaxConns int
	// MaxStreamsPerConn is the SETTINGS_MAX_CONCURRENT_STREAMS announced to
	// peers (default 1000).
	MaxStreamsPerConn uint32
	// StreamWindow and ConnWindow are the flow-control windows the server
	// grants per stream and per connection (defaults 4 MiB and 16 MiB;
	// HTTP/2's 64 KiB default caps a stream at 64 KiB per round trip).
	StreamWindow, ConnWindow int32
	// HandshakeTimeout bounds the TLS handshake (default 10s).
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection without streams after this long
	// (default 10m).
	IdleTimeout time.Duration
	// PingInterval sends a PING after a connection was silent this long
	// and closes it when no answer comes within PingTimeout (defaults 30s
	// and 15s), so streams of a dead peer end.
	PingInterval, PingTimeout time.Duration
	// MaxHeaderBytes bounds a request's header block (default 16 KiB).
	MaxHeaderBytes int
	// Logger receives refusals and errors; nil discards.
	Logger *slog.Logger
	// Registerer receives the meshgate_hbone_* metrics; nil registers none.
	Registerer prometheus.Registerer
}

// DefaultServerConfig returns the defaults described on ServerConfig, with
// the required collaborators unset.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		MaxConns: 1024, MaxStreamsPerConn: 1000,
		StreamWindow: 4 << 20, ConnWindow: 16 << 20,
		HandshakeTimeout: 10 * time.Second, IdleTimeout: 10 * time.Minute,
		PingInterval: 30 * time.Second, PingTimeout: 15 * time.Second,
		MaxHeaderBytes: 16 << 10,
	}
}

// Validate reports the first missing collaborator or out-of-range field.
func (c *ServerConfig) Validate() error {
	switch {
	case c.Source == nil:
		return errors.New("hbone: ServerConfig.Source is nil")
	case c.Authorizer == nil:
		return errors.New("hbone: ServerConfig.Authorizer is nil (the bridge must only accept gateway identities)")
	case c.Connector == nil:
		return errors.New("hbone: ServerConfig.Connector is nil")
	case c.MaxConns <= 0, c.MaxStreamsPerConn == 0, c.HandshakeTimeout <= 0, c.MaxHeaderBytes <= 0:
		return errors.New("hbone: ServerConfig limits must be positive (start from DefaultServerConfig)")
	case c.StreamWindow < 65535 || c.ConnWindow < c.StreamWindow:
		return fmt.Errorf("hbone: windows: stream %d must be at least 65535 and conn %d at least the stream's", c.StreamWindow, c.ConnWindow)
	}
	return nil
}

// Server accepts bridge tunnels. It is safe for concurrent use.
type Server struct {
	cfg  ServerConfig
	log  *slog.Logger
	m    *metrics
	tls  *tls.Config
	h1   *http.Server
	h2   *http2.Server
	ctx  context.Context
	stop context.CancelFunc

	mu     sync.Mutex
	lns    map[net.Listener]struct{}
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
	open   atomic.Int64
}

// NewServer checks cfg and returns a Server; call Serve with a listener.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, m: newMetrics(cfg.Registerer),
		lns: map[net.Listener]struct{}{}, conns: map[net.Conn]struct{}{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.tls = mtls.MutualConfig(cfg.Source, cfg.Authorizer)
	s.tls.NextProtos = []string{http2.NextProtoTLS}
	s.h1 = &http.Server{MaxHeaderBytes: cfg.MaxHeaderBytes, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	s.h2 = &http2.Server{
		MaxConcurrentStreams:         cfg.MaxStreamsPerConn,
		MaxUploadBufferPerStream:     cfg.StreamWindow,
		MaxUploadBufferPerConnection: cfg.ConnWindow,
		MaxReadFrameSize:             maxFrame,
		IdleTimeout:                  cfg.IdleTimeout,
		ReadIdleTimeout:              cfg.PingInterval,
		PingTimeout:                  cfg.PingTimeout,
		CountError: func(kind string) {
			s.m.refused.WithLabelValues("h2_" + kind).Inc()
		},
	}
	if err := http2.ConfigureServer(s.h1, s.h2); err != nil {
		return nil, fmt.Errorf("hbone: %w", err)
	}
	for _, r := range []string{ReasonHandshake, ReasonPeer, ReasonALPN, ReasonMethod, ReasonBadAuthority, ReasonBadSubset, ReasonConnLimit} {
		s.m.refused.WithLabelValues(r)
	}
	return s, nil
}

// ErrServerClosed is returned by Serve after Close or Shutdown.
var ErrServerClosed = errors.New("hbone: server closed")

// Serve accepts connections on ln until Close; it always returns an error
// (ErrServerClosed after Close).
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return ErrServerClosed
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return ErrServerClosed
			}
			if temporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("hbone: accept: %w", err)
		}
		backoff = 0
		if !s.track(c) {
			continue
		}
		s.wg.Go(func() { s.serveConn(c) })
	}
}

// temporary reports whether an accept error is worth retrying (too many
// open files and the like).
func temporary(err error) bool {
	var se interface{ Temporary() bool }
	return errors.As(err, &se) && se.Temporary()
}

// track registers a new connection, or closes it when the server is closed
// or full.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = c.Close()
		return false
	}
	if len(s.conns) >= s.cfg.MaxConns {
		_ = c.Close()
		s.m.refused.WithLabelValues(ReasonConnLimit).Inc()
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// serveConn runs the TLS handshake and then HTTP/2 on one connection.
func (s *Server) serveConn(raw net.Conn) {
	defer s.untrack(raw)
	defer raw.Close()
	tc := tls.Server(raw, s.tls)
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		reason := ReasonHandshake
		if _, ok := errors.AsType[*mtls.PeerError](err); ok {
			reason = ReasonPeer
		}
		s.m.refused.WithLabelValues(reason).Inc()
		s.m.handshakes.WithLabelValues("server", "error").Inc()
		s.log.Info("hbone: tunnel handshake refused", "remote", raw.RemoteAddr().String(), "reason", reason, "err", err)
		return
	}
	s.m.handshakes.WithLabelValues("server", "ok").Inc()
	if p := tc.ConnectionState().NegotiatedProtocol; p != http2.NextProtoTLS {
		s.m.refused.WithLabelValues(ReasonALPN).Inc()
		s.log.Info("hbone: tunnel refused: peer did not negotiate h2", "remote", raw.RemoteAddr().String(), "alpn", p)
		return
	}
	g := s.m.conns.WithLabelValues("server")
	g.Inc()
	defer g.Dec()
	s.h2.ServeConn(tc, &http2.ServeConnOpts{Context: s.ctx, BaseConfig: s.h1, Handler: http.HandlerFunc(s.serveStream)})
}

// refuse answers a stream with status and reason, and counts it.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, status int, reason string, err error) {
	s.m.refused.WithLabelValues(reason).Inc()
	s.m.streams.WithLabelValues("server", "refused").Inc()
	s.log.Debug("hbone: stream refused", "remote", r.RemoteAddr, "authority", clip(r.Host), "status", status, "reason", reason, "err", err)
	w.Header().Set(RefusalHeader, reason)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, err.Error()+"\n")
}

// statusOf maps a Connector refusal reason to the status the peer sees:
// 404 for a destination this gateway does not serve, 503 for one it serves
// but cannot reach now (ztunnel answers 503 when it cannot connect).
func statusOf(reason string) int {
	switch reason {
	case "unknown_service", "unknown_port", "unknown_subset", "not_exported", "no_route":
		return http.StatusNotFound
	case "overloaded":
		return http.StatusTooManyRequests
	default:
		return http.StatusServiceUnavailable
	}
}

// serveStream handles one CONNECT stream.
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		s.refuse(w, r, http.StatusMethodNotAllowed, ReasonMethod, fmt.Errorf("hbone: method %s; only CONNECT is served", clip(r.Method)))
		return
	}
	t, err := ParseAuthority(r.Host)
	if err != nil {
		s.refuse(w, r, http.StatusBadRequest, ReasonBadAuthority, err)
		return
	}
	if vs := r.Header.Values(SubsetHeader); len(vs) > 1 {
		s.refuse(w, r, http.StatusBadRequest, ReasonBadSubset, fmt.Errorf("%w: %d %s headers", ErrBadSubset, len(vs), SubsetHeader))
		return
	}
	if t.Subset, err = ParseSubset(r.Header.Get(SubsetHeader)); err != nil {
		s.refuse(w, r, http.StatusBadRequest, ReasonBadSubset, err)
		return
	}
	up, release, err := s.cfg.Connector.ConnectBridge(r.Context(), t.Service, t.Port, t.Subset)
	if err != nil {
		reason := ReasonUnknownReason
		var rr interface{ RefusalReason() string }
		if errors.As(err, &rr) && rr.RefusalReason() != "" {
			reason = rr.RefusalReason()
		}
		s.refuse(w, r, statusOf(reason), reason, err)
		return
	}
	if up == nil {
		s.refuse(w, r, http.StatusServiceUnavailable, ReasonUnknownReason, errors.New("hbone: connector returned no connection"))
		return
	}
	defer release()
	defer up.Close()
	s.m.streams.WithLabelValues("server", "ok").Inc()
	active := s.m.active.WithLabelValues("server")
	active.Inc()
	defer active.Dec()
	s.open.Add(1)
	defer s.open.Add(-1)
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	s.relay(r, rc, w, up)
}

// relay copies the stream's request body to up and up to the response.
// The client's END_STREAM half-closes up. up's FIN ends the response at
// once (END_STREAM), so a client that reads until EOF sees the upstream's
// close as it would over TCP. Go's HTTP/2 server cannot keep reading a
// request once its response has ended: when the client has not finished
// yet, the server follows END_STREAM with RST_STREAM(NO_ERROR) (RFC 9113
// §8.1), and bytes the client sends after the upstream's FIN are dropped,
// as a server that closed its socket would drop them. A reset of up
// resets the stream.
func (s *Server) relay(r *http.Request, rc *http.ResponseController, w io.Writer, up net.Conn) {
	rx, tx := s.m.bytes.WithLabelValues("rx"), s.m.bytes.WithLabelValues("tx")
	inDone := make(chan struct{})
	go func() {
		defer close(inDone)
		n, err := io.CopyBuffer(up, r.Body, make([]byte, 32<<10))
		rx.Add(float64(n))
		if err == nil {
			if cw, ok := up.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
				return
			}
		}
		_ = up.Close() // the client reset the stream, or up cannot half-close
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				_ = up.Close()
				<-inDone
				return
			}
			tx.Add(float64(n))
			if ferr := rc.Flush(); ferr != nil {
				_ = up.Close()
				<-inDone
				return
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			select {
			case <-inDone:
				return // the client finished first: up's error only ends its half
			default:
			}
			// up was reset: reset the stream so the client sees it too.
			panic(http.ErrAbortHandler)
		}
	}
}

// Shutdown stops accepting, asks peers to stop opening streams (GOAWAY),
// waits for open streams to end until ctx is done, then closes everything.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeListeners()
	_ = s.h1.Shutdown(ctx) // sends GOAWAY on every HTTP/2 connection
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for s.open.Load() > 0 {
		select {
		case <-ctx.Done():
			_ = s.Close()
			return ctx.Err()
		case <-t.C:
		}
	}
	return s.Close()
}

// Close stops accepting and closes every connection at once.
func (s *Server) Close() error {
	s.closeListeners()
	s.stop()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	s.closed = true
	for ln := range s.lns {
		_ = ln.Close()
	}
	s.mu.Unlock()
}

// maxFrame is the largest DATA frame either end accepts: 256 KiB instead
// of HTTP/2's 16 KiB cuts per-frame work on bulk transfers.
const maxFrame = 256 << 10
