package sni

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Errors returned by Server.
var (
	// ErrServerClosed is returned by Apply once Shutdown or Close has begun.
	ErrServerClosed = errors.New("sni: server closed")
	// ErrServerConfig wraps every ServerConfig.Validate failure.
	ErrServerConfig = errors.New("sni: invalid server config")
)

// defaultConnectTimeout applies when a route's ConnPolicy has none (Istio's
// connectionPool.tcp.connectTimeout default).
const defaultConnectTimeout = 10 * time.Second

// ServerConfig configures a Server. Start from DefaultServerConfig.
type ServerConfig struct {
	// Logger receives operational messages. nil = discard.
	Logger *slog.Logger
	// AccessLog receives one Info line per connection (see logAccess for
	// the keys). nil = Logger. Use a logger with a level above Info to turn
	// it off.
	AccessLog *slog.Logger
	// Registerer receives the meshgate_sni_* collectors. nil = no
	// registration (the server still counts internally).
	Registerer prometheus.Registerer
	// Limits bound the ClientHello peek. Default DefaultLimits().
	Limits Limits
	// DrainTimeout bounds how long Shutdown waits for active connections
	// before it force-closes them. Default 30s; 0 = wait for the context
	// only.
	DrainTimeout time.Duration
	// MaxRetries is how many more endpoints are tried after a connect
	// failure. Default 2; 0 = no retry.
	MaxRetries int
	// Bridge carries connections to other networks' gateways (see
	// bridge.go). nil = no bridge: remote endpoints are then reachable
	// only by split horizon (an AUTO_PASSTHROUGH name with an Istio mesh
	// ALPN, replayed to the remote gateway's 15443). Set
	// NodeInfo.Bridge to match, so explain agrees.
	Bridge BridgeDialer
	// MeshIdentity terminates Gateway servers with tls.mode ISTIO_MUTUAL
	// (mutual.go). nil = their connections are refused (no_identity).
	MeshIdentity MeshIdentity
	// Listen opens listener sockets. nil = net.ListenConfig{KeepAlive:
	// -1}.Listen: accepted sockets get no SO_KEEPALIVE (Go's default
	// would set it with 15 s probes, four setsockopt calls per accepted
	// connection; Envoy sets none downstream either). The listeners must
	// return *net.TCPConn or *net.UnixConn connections (the splice path
	// needs the raw sockets). TCP listeners of servers that read a
	// ClientHello get TCP_DEFER_ACCEPT whichever function opened them.
	Listen func(ctx context.Context, network, address string) (net.Listener, error)
}

// DefaultServerConfig returns the defaults documented on ServerConfig.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		Limits:       DefaultLimits(),
		DrainTimeout: 30 * time.Second,
		MaxRetries:   2,
	}
}

// Validate reports a field that cannot work. Every error wraps
// ErrServerConfig and names the field.
func (c ServerConfig) Validate() error {
	if err := c.Limits.Validate(); err != nil {
		return fmt.Errorf("%w: ServerConfig.Limits: %w", ErrServerConfig, err)
	}
	if c.DrainTimeout < 0 {
		return fmt.Errorf("%w: ServerConfig.DrainTimeout %v is negative", ErrServerConfig, c.DrainTimeout)
	}
	if c.MaxRetries < 0 {
		return fmt.Errorf("%w: ServerConfig.MaxRetries %d is negative", ErrServerConfig, c.MaxRetries)
	}
	return nil
}

// ListenError says which listener of a table could not be opened.
type ListenError struct {
	Key string // ListenerSpec.Key
	Err error
}

func (e *ListenError) Error() string { return fmt.Sprintf("sni: listener %s: %v", e.Key, e.Err) }

// Unwrap returns the cause.
func (e *ListenError) Unwrap() error { return e.Err }

// serverState is the lifecycle of a Server.
type serverState uint8

const (
	stateRunning serverState = iota
	stateDraining
	stateClosed
)

// Server accepts connections on the listeners of the published route
// table, routes each by its ClientHello and splices it to an upstream.
//
// Per connection: on a listener that needs a hello, Peek reads the
// ClientHello within Limits; a bad one is refused (not_tls, too_large,
// malformed, timeout) without dialling. A hello without SNI is still
// resolved, so that a "*" host or the listener's plain TCP route can take
// it as Envoy would; if nothing does, it is refused as no_sni. The table
// then resolves the connection (a refusal carries its reason), an endpoint
// is picked and dialled with the route's ConnectTimeout and keep-alive,
// and after a connect failure up to MaxRetries other endpoints are tried
// (all failing: ReasonUpstream, access log close=upstream_error). Finally
// the peeked hello is replayed to the upstream and the splicer takes over
// (see splice.go). Every connection ends with one access-log line and is
// counted in the meshgate_sni_* metrics.
//
// All methods are safe for concurrent use. The server owns every goroutine
// it starts; Shutdown and Close return only after all of them have ended.
// The data path is Linux-only (epoll, splice(2)).
type Server struct {
	cfg    ServerConfig
	router *Router
	log    *slog.Logger
	access *slog.Logger
	m      *serverMetrics
	sp     *splicer
	ctx    context.Context // cancelled on force-close: aborts dials in flight
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine of the server

	applyMu sync.Mutex // serializes Apply
	loops   sync.Map   // *serverListener -> struct{} while its accept loop runs (Alive)

	mu        sync.Mutex // guards listeners, conns, state, drainedOnce use
	listeners map[string]*serverListener
	conns     map[*proxyConn]struct{}
	state     serverState

	drained     chan struct{} // closed once draining and conns is empty
	drainedOnce sync.Once
	done        chan struct{} // closed when shutdown has finished
	doneOnce    sync.Once
}

// NewServer returns a server that routes with the tables published on r.
// It opens no socket until Apply. Shutdown or Close must be called to
// release it.
func NewServer(cfg ServerConfig, r *Router) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if r == nil {
		return nil, fmt.Errorf("%w: nil Router", ErrServerConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AccessLog == nil {
		cfg.AccessLog = cfg.Logger
	}
	if cfg.Listen == nil {
		cfg.Listen = defaultListen
	}
	m, err := newServerMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		router:    r,
		log:       cfg.Logger,
		access:    cfg.AccessLog,
		m:         m,
		listeners: make(map[string]*serverListener),
		conns:     make(map[*proxyConn]struct{}),
		drained:   make(chan struct{}),
		done:      make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.sp, err = newSplicer(s.log, s.wg.Go, m.rx, m.tx)
	if err != nil {
		s.cancel()
		return nil, err
	}
	s.sp.start()
	return s, nil
}

// Active returns the number of connections accepted and not yet finished,
// whether still reading the hello, dialling or spliced.
func (s *Server) Active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Shutdown drains the server: it closes every listener, lets active
// connections run until they end, DrainTimeout passes or ctx is done, then
// force-closes the rest (access log close=drain) and waits for every
// goroutine. Connections accepted but not yet routed when the drain starts
// are refused with ReasonDraining. It returns ctx.Err() if ctx ended the
// drain, else nil. Further calls wait for the first to finish and return
// nil.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.state != stateRunning {
		s.mu.Unlock()
		select {
		case <-s.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.state = stateDraining
	ls := s.takeListenersLocked()
	if len(s.conns) == 0 {
		s.drainedOnce.Do(func() { close(s.drained) })
	}
	s.mu.Unlock()
	closeListeners(ls)

	var timeout <-chan time.Time
	if s.cfg.DrainTimeout > 0 {
		t := time.NewTimer(s.cfg.DrainTimeout)
		defer t.Stop()
		timeout = t.C
	}
	var err error
	select {
	case <-s.drained:
	case <-timeout:
		s.log.Warn("sni: drain timeout; closing remaining connections", "active", s.Active())
	case <-ctx.Done():
		err = ctx.Err()
		s.log.Warn("sni: drain cancelled; closing remaining connections", "active", s.Active(), "err", err)
	}
	s.finish(closeDrain)
	return err
}

// Close closes every listener and connection at once (access log
// close=closed) and waits for every goroutine. It is idempotent and always
// returns nil.
func (s *Server) Close() error {
	s.mu.Lock()
	s.state = stateClosed
	ls := s.takeListenersLocked()
	s.mu.Unlock()
	closeListeners(ls)
	s.finish(closeShutdown)
	return nil
}

// finish force-closes what is left, stops the splicer and waits for every
// goroutine. Safe to call more than once and concurrently.
func (s *Server) finish(why string) {
	s.mu.Lock()
	s.state = stateClosed
	conns := make([]*proxyConn, 0, len(s.conns))
	for pc := range s.conns {
		conns = append(conns, pc)
	}
	s.mu.Unlock()
	s.cancel()
	for _, pc := range conns {
		pc.abort(why)
	}
	s.sp.close()
	s.wg.Wait()
	s.doneOnce.Do(func() { close(s.done) })
}

// proxyConn is one accepted connection, from accept to its access log
// line. It is kept small: an idle spliced connection costs this, its
// spliceRelay and the two sockets.
type proxyConn struct {
	client   net.Conn // the accepted socket (never a wrapper)
	listener string
	start    time.Time
	hello    *Hello    // nil on a plain-TCP listener
	dec      *Decision // nil until resolved
	upstream string    // endpoint address, once connected
	peer     string    // client SPIFFE ID of a terminated ISTIO_MUTUAL server

	mu      sync.Mutex   // guards relay, stream, aborted
	relay   *spliceRelay // set when splicing starts
	stream  *streamRelay // set when a bridged relay starts
	aborted string       // force-close reason before splicing started
}

// abort force-closes pc with reason why: a spliced connection through its
// relay, an earlier one by closing the client socket (the handler sees the
// error and ends it with why).
func (pc *proxyConn) abort(why string) {
	pc.mu.Lock()
	r, sr := pc.relay, pc.stream
	if r == nil && sr == nil && pc.aborted == "" {
		pc.aborted = why
	}
	pc.mu.Unlock()
	if r != nil {
		r.close(why)
		return
	}
	if sr != nil {
		sr.close(why)
		return
	}
	_ = pc.client.Close()
}

// abortReason returns the force-close reason, or "".
func (pc *proxyConn) abortReason() string {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.aborted
}

// track registers a newly accepted connection; false once draining.
func (s *Server) track(pc *proxyConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateRunning {
		return false
	}
	s.conns[pc] = struct{}{}
	return true
}

// end records a finished connection: metrics, access log, drain progress.
func (s *Server) end(pc *proxyConn, why string, rx, tx int64) {
	d := time.Since(pc.start)
	s.m.duration.Observe(d.Seconds())
	s.logAccess(pc, why, rx, tx, d)
	s.mu.Lock()
	delete(s.conns, pc)
	if s.state != stateRunning && len(s.conns) == 0 {
		s.drainedOnce.Do(func() { close(s.drained) })
	}
	s.mu.Unlock()
}

// refuse closes pc without splicing, counts the refusal and ends it. A
// connection the server force-closed is logged with that reason instead
// and not counted as refused.
func (s *Server) refuse(pc *proxyConn, reason Reason, err error) {
	_ = pc.client.Close()
	if why := pc.abortReason(); why != "" {
		s.end(pc, why, 0, 0)
		return
	}
	s.m.refused.WithLabelValues(string(reason)).Inc()
	s.log.Debug("sni: connection refused", "reason", string(reason), "listener", pc.listener,
		"remote", serverAddrString(pc.client.RemoteAddr()), "err", err)
	s.end(pc, closeRefused(reason), 0, 0)
}

// peekedConn is what Peek returns: the peeked bytes can be written upstream
// and the raw socket taken back for splicing.
type peekedConn interface {
	net.Conn
	Raw() net.Conn
	Unread() []byte
	WriteBufferedTo(w io.Writer) (int64, error)
}

// peekReason maps a Peek error to its refusal reason. A *MalformedError,
// and a read error (the client reset the connection mid-hello), count as
// malformed.
func peekReason(err error) Reason {
	switch {
	case errors.Is(err, ErrNotTLS):
		return ReasonNotTLS
	case errors.Is(err, ErrNoSNI):
		return ReasonNoSNI
	case errors.Is(err, ErrTooLarge):
		return ReasonTooLarge
	case errors.Is(err, ErrTimeout):
		return ReasonTimeout
	}
	return ReasonMalformed
}

// handle routes one accepted connection and hands it to the splicer, or
// refuses it. It runs in its own goroutine and returns once the connection
// is spliced (the splicer then owns it) or finished.
func (s *Server) handle(pc *proxyConn, spec *ListenerSpec) {
	var peeked peekedConn
	noSNI, terminated := false, false
	if spec.NeedsHello {
		t0 := time.Now()
		h, c, err := Peek(pc.client, s.cfg.Limits)
		s.m.peek.Observe(time.Since(t0).Seconds())
		if errors.Is(err, ErrNoSNI) && h != nil && c != nil {
			// A hello without SNI may still match a "*" host or the
			// listener's plain TCP route, as Envoy's filter chain without
			// server_names; a refusal counts as no_sni.
			noSNI = true
			err = nil
		}
		if err != nil {
			s.refuse(pc, peekReason(err), err)
			return
		}
		p, ok := c.(peekedConn)
		if !ok || p.Raw() != pc.client {
			s.log.Error("sni: Peek returned an unexpected connection type", "type", fmt.Sprintf("%T", c))
			s.refuse(pc, ReasonMalformed, nil)
			return
		}
		pc.hello, peeked = h, p
		// Refusal paths drop the peeked bytes; once they have been
		// replayed this is a no-op. A terminated connection's TLS
		// layer owns them (and reads them from its relay goroutine).
		defer func() {
			if !terminated {
				_, _ = p.WriteBufferedTo(io.Discard)
			}
		}()
	}
	s.mu.Lock()
	draining := s.state != stateRunning
	s.mu.Unlock()
	if draining {
		s.refuse(pc, ReasonDraining, nil)
		return
	}
	t := s.router.Load()
	dec, err := t.Resolve(spec.Key, pc.hello)
	if err != nil {
		reason := ReasonNoRoute
		if re, ok := errors.AsType[*RefusedError](err); ok {
			reason = re.Reason
		}
		if noSNI {
			reason = ReasonNoSNI
		}
		s.refuse(pc, reason, err)
		return
	}
	pc.dec = dec
	// client is what the relay copies: the accepted socket, or the TLS
	// connection of a terminated server.
	var client net.Conn = pc.client
	via := s.via(pc.hello)
	if dec.Mode == ModeIstioMutual && peeked != nil {
		tc, peer, reason, err := s.terminate(s.ctx, peeked, dec)
		if err != nil {
			s.refuse(pc, reason, err)
			return
		}
		terminated, client, pc.peer = true, tc, peer
		// The upstream gets the decrypted bytes: never the client's
		// hello replayed to a remote gateway's 15443.
		via = viaLocal
		if s.cfg.Bridge != nil {
			via = viaBridge
		}
	}
	// A bridged stream carries the hello with its request (one round
	// trip less); a socket gets it once connected.
	var early []byte
	if peeked != nil && !terminated {
		early = peeked.Unread()
	}
	up, lease, sentEarly, reason, err := s.connect(s.ctx, dec, via, early)
	if err != nil {
		if terminated {
			_ = client.Close()
		}
		s.refuse(pc, reason, err)
		return
	}
	pc.upstream = upstreamAddr(lease.Endpoint(), up)
	var hello int64
	if sentEarly {
		hello, _ = peeked.WriteBufferedTo(io.Discard) // already sent: consume them
		s.m.rx.Add(float64(hello))
	} else if peeked != nil && !terminated {
		hello, err = peeked.WriteBufferedTo(up)
		s.m.rx.Add(float64(hello))
		if err != nil {
			_ = up.Close()
			_ = pc.client.Close()
			lease.Release()
			why := pc.abortReason()
			if why == "" {
				why = closeError
			}
			s.end(pc, why, hello, 0)
			return
		}
	}
	gauge := s.m.active.WithLabelValues(dec.Route)
	pc.mu.Lock()
	if why := pc.aborted; why != "" {
		pc.mu.Unlock()
		_ = up.Close()
		_ = client.Close()
		lease.Release()
		s.end(pc, why, hello, 0)
		return
	}
	gauge.Inc()
	pol := &dec.Cluster.pol.conn
	if !tcpSocket(up) || terminated {
		pc.stream = streamRelayStart(s.wg.Go, client, up, pol.IdleTimeout, pc.start, pol.MaxConnectionDuration, s.m.rx, s.m.tx, func(r *streamRelay) {
			gauge.Dec()
			lease.Release()
			s.end(pc, r.reason(), hello+r.rx.Load(), r.tx.Load())
		})
		pc.mu.Unlock()
		return
	}
	pc.relay = s.sp.relay(pc.client, up, pol.IdleTimeout, pc.start, pol.MaxConnectionDuration, func(r *spliceRelay) {
		gauge.Dec()
		lease.Release()
		s.end(pc, r.why, hello+r.rx.n.Load(), r.tx.n.Load())
	})
	pc.mu.Unlock()
}

// via says how the connection with hello h may reach other networks:
// split horizon when the remote gateway's AUTO_PASSTHROUGH will accept
// its replayed hello (an AUTO_PASSTHROUGH name with an Istio mesh ALPN),
// else the bridge when there is one, else not at all.
func (s *Server) via(h *Hello) tableVia {
	if h != nil && tableLooksAuto(h.ServerName) && IsMeshALPN(h.ALPN) {
		return viaAny
	}
	if s.cfg.Bridge != nil {
		return viaBridge
	}
	return viaLocal
}

// upstreamAddr is the access log's upstream: the endpoint, or for a
// bridged connection "bridge:<gateway bridge address>".
func upstreamAddr(ep Endpoint, up net.Conn) string {
	if !tcpSocket(up) && ep.Bridge != "" {
		return "bridge:" + ep.Bridge
	}
	return ep.Addr
}

// connect picks an endpoint of the decision's cluster and dials it, trying
// up to MaxRetries more endpoints after connect failures. via decides
// which remote endpoints are eligible and how they are dialled: through
// the bridge (viaBridge) or at their address. After a failure on a
// remote gateway the next try prefers another gateway of the same
// network. On failure it returns the refusal reason: the cluster's own
// (no_endpoint, overloaded) if nothing was dialled, else ReasonUpstream.
// A bridged upstream is not a TCP socket (tcpSocket). early goes with a bridged
// stream's request; sentEarly reports that it did, else the caller writes
// it once connected.
func (s *Server) connect(ctx context.Context, dec *Decision, via tableVia, early []byte) (_ net.Conn, _ *Lease, sentEarly bool, _ Reason, _ error) {
	if dec.Cluster == nil {
		return nil, nil, false, ReasonNoEndpoint, fmt.Errorf("sni: route %q has no cluster", dec.Route)
	}
	var tried []string
	var lastErr error
	prefer := ""
	for range s.cfg.MaxRetries + 1 {
		lease, err := dec.Cluster.pick(tried, via, prefer)
		if err != nil {
			if lastErr != nil {
				return nil, nil, false, ReasonUpstream, errors.Join(lastErr, err)
			}
			reason := ReasonNoEndpoint
			if re, ok := errors.AsType[*RefusedError](err); ok {
				reason = re.Reason
			}
			return nil, nil, false, reason, err
		}
		ep := lease.Endpoint()
		var c net.Conn
		bridged := via == viaBridge && ep.Network != ""
		if bridged {
			c, err = s.dialBridge(ctx, dec, ep, early)
		} else {
			c, err = s.dial(ctx, dec.Cluster.pol.conn, ep.Addr)
		}
		lease.Dialed(err)
		if err == nil {
			return c, lease, bridged && len(early) > 0, "", nil
		}
		lease.Release()
		if s.ctx.Err() != nil || ctx.Err() != nil {
			return nil, nil, false, ReasonUpstream, err // aborted, not an upstream failure
		}
		s.m.connectFailures.Inc()
		s.log.Debug("sni: upstream connect failed", "route", dec.Route, "upstream", ep.Addr, "bridge", ep.Bridge, "err", err)
		tried = append(tried, ep.Addr)
		prefer = ep.Network
		lastErr = err
	}
	return nil, nil, false, ReasonUpstream, lastErr
}

// dialBridge opens a bridge stream to the gateway ep stands for, with the
// route's connect timeout; Close aborts it.
func (s *Server) dialBridge(ctx context.Context, dec *Decision, ep Endpoint, early []byte) (net.Conn, error) {
	timeout := dec.Cluster.pol.conn.ConnectTimeout
	if timeout <= 0 {
		timeout = defaultConnectTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	c, err := s.cfg.Bridge.DialBridge(ctx, ep.Bridge, dec.Service(), dec.Port(), dec.Subset(), early)
	if err != nil {
		return nil, fmt.Errorf("sni: bridge to %s (gateway %s of network %s): %w", ep.Bridge, ep.Addr, ep.Network, err)
	}
	if c == nil {
		return nil, fmt.Errorf("sni: bridge to %s: DialBridge returned no connection", ep.Bridge)
	}
	return c, nil
}

// dial connects to addr with the route's connect timeout and keep-alive.
// Close aborts it. An IP address is dialled without net.Dialer
// (dialSock: the socket then holds no address objects); a host name
// through it.
func (s *Server) dial(ctx context.Context, p ConnPolicy, addr string) (net.Conn, error) {
	timeout := p.ConnectTimeout
	if timeout <= 0 {
		timeout = defaultConnectTimeout
	}
	if ctx != s.ctx {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(s.ctx, cancel)()
	}
	var ka net.KeepAliveConfig // Enable false: no SO_KEEPALIVE
	if p.KeepAlive >= 0 && p.wantsKeepAlive() {
		ka = serverKeepAlive(p)
	}
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		deadline := time.Now().Add(timeout)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		c, err := dialSock(ctx, ap, deadline, ka)
		if err != nil {
			return nil, fmt.Errorf("sni: dial %s: %w", addr, err)
		}
		return c, nil
	}
	d := net.Dialer{Timeout: timeout, KeepAlive: -1}
	if ka.Enable {
		d.KeepAlive, d.KeepAliveConfig = 0, ka
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sni: dial %s: %w", addr, err)
	}
	if _, ok := c.(*net.TCPConn); !ok {
		_ = c.Close()
		return nil, fmt.Errorf("sni: dial %s: got %T, want *net.TCPConn", addr, c)
	}
	return c, nil
}

// tcpSocket reports whether c is a plain TCP socket the splice pumps can
// drive (its own fd, no TLS or stream layer): *net.TCPConn or a dialled
// sockConn.
func tcpSocket(c net.Conn) bool {
	switch c.(type) {
	case *net.TCPConn, *sockConn:
		return true
	}
	return false
}

// defaultListen is ServerConfig.Listen when none is given: accepted
// sockets get no keep-alive.
func defaultListen(ctx context.Context, network, address string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(ctx, network, address)
}

// wantsKeepAlive reports whether the route's policy asks for TCP
// keep-alive on the upstream socket: a tcpKeepalive block (KeepAliveSet)
// or any of its values. Without one the socket gets no SO_KEEPALIVE, as
// Envoy's upstream without tcpKeepalive, and no setsockopt for it.
func (p ConnPolicy) wantsKeepAlive() bool {
	return p.KeepAliveSet || p.KeepAlive > 0 || p.KeepAliveInterval > 0 || p.KeepAliveProbes > 0
}

// serverKeepAlive turns the policy's keep-alive settings into a
// net.KeepAliveConfig: each unset value (0) keeps the OS's setting, as
// Envoy does for an unset tcpKeepalive field.
func serverKeepAlive(p ConnPolicy) net.KeepAliveConfig {
	kc := net.KeepAliveConfig{Enable: true, Idle: -1, Interval: -1, Count: -1}
	if p.KeepAlive > 0 {
		kc.Idle = p.KeepAlive
	}
	if p.KeepAliveInterval > 0 {
		kc.Interval = p.KeepAliveInterval
	}
	if p.KeepAliveProbes > 0 {
		kc.Count = p.KeepAliveProbes
	}
	return kc
}

// serverAddrString formats a possibly nil address (an accepted unix socket
// may have none).
func serverAddrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
