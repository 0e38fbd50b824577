package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"

	"github.com/meshgate/meshgate/mtls"
)

// PoolConfig configures a Pool.
type PoolConfig struct {
	// Source holds the node's certificate and the mesh roots. Required.
	Source *mtls.Source
	// Authorizer accepts the peer gateways' identities. Required.
	Authorizer mtls.Authorizer
	// MaxStreamsPerConn caps the streams this pool opens on one
	// connection (default 100; the peer's own limit also applies); a
	// second connection is opened when every one is full.
	MaxStreamsPerConn int
	// MaxConnsPerPeer caps connections to one gateway (default 16); when
	// all are full DialBridge fails with ErrPoolFull.
	MaxConnsPerPeer int
	// StreamWindow and ConnWindow are the flow-control windows granted to
	// peers for data they send back (defaults 4 MiB and 16 MiB).
	StreamWindow, ConnWindow int32
	// DialTimeout bounds the TCP connect plus TLS handshake of a new
	// connection (default 5s), also when the caller's context allows more.
	DialTimeout time.Duration
	// PingInterval and PingTimeout detect a dead peer on a silent
	// connection (defaults 30s and 15s).
	PingInterval, PingTimeout time.Duration
	// Logger receives connection events; nil discards.
	Logger *slog.Logger
	// Registerer receives the meshgate_hbone_* metrics; nil registers none.
	Registerer prometheus.Registerer
}

// DefaultPoolConfig returns the defaults described on PoolConfig, with the
// required collaborators unset.
func DefaultPoolConfig() PoolConfig {
	return PoolConfig{
		MaxStreamsPerConn: 100, MaxConnsPerPeer: 16,
		StreamWindow: 4 << 20, ConnWindow: 16 << 20,
		DialTimeout: 5 * time.Second, PingInterval: 30 * time.Second, PingTimeout: 15 * time.Second,
	}
}

// Validate reports the first missing collaborator or out-of-range field.
func (c *PoolConfig) Validate() error {
	switch {
	case c.Source == nil:
		return errors.New("hbone: PoolConfig.Source is nil")
	case c.Authorizer == nil:
		return errors.New("hbone: PoolConfig.Authorizer is nil (tunnels must only reach gateway identities)")
	case c.MaxStreamsPerConn <= 0, c.MaxConnsPerPeer <= 0, c.DialTimeout <= 0:
		return errors.New("hbone: PoolConfig limits must be positive (start from DefaultPoolConfig)")
	case c.StreamWindow < 65535 || c.ConnWindow < c.StreamWindow:
		return fmt.Errorf("hbone: windows: stream %d must be at least 65535 and conn %d at least the stream's", c.StreamWindow, c.ConnWindow)
	}
	return nil
}

// ErrPoolFull is returned when every allowed connection to a gateway is
// at its stream cap.
var ErrPoolFull = errors.New("hbone: every connection to the gateway is at its stream limit")

// ErrPoolClosed is returned by DialBridge after Close.
var ErrPoolClosed = errors.New("hbone: pool closed")

// RefusedError is a stream the peer gateway answered with a status other
// than 200.
type RefusedError struct {
	Gateway string
	Target  Target
	Status  int
	// Reason is the peer's RefusalHeader ("" when it sent none).
	Reason string
	// Message is the start of the peer's explanation (its response body).
	Message string
}

func (e *RefusedError) Error() string {
	sub := ""
	if e.Target.Subset != "" {
		sub = " subset " + e.Target.Subset
	}
	msg := ""
	if e.Message != "" {
		msg = ": " + e.Message
	}
	return fmt.Sprintf("hbone: gateway %s refused %s%s: %d %s (reason %q)%s", e.Gateway, e.Target, sub, e.Status, http.StatusText(e.Status), e.Reason, msg)
}

// RefusalReason returns the peer's reason, prefixed "bridge_".
func (e *RefusedError) RefusalReason() string { return "bridge_" + cmpOr(e.Reason, "refused") }

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Pool opens tunnelled streams to peer gateways over shared HTTP/2
// connections. It is safe for concurrent use.
type Pool struct {
	cfg PoolConfig
	log *slog.Logger
	m   *metrics
	t2  *http2.Transport
	tls *tls.Config

	mu     sync.Mutex
	peers  map[string]*peer
	closed bool
}

// peer is the connection set of one gateway address.
type peer struct {
	conns   []*poolConn
	dialing chan struct{} // non-nil while a connection is being dialled
}

// poolConn is one HTTP/2 connection with the streams this pool has on it.
type poolConn struct {
	cc      *http2.ClientConn
	streams int // guarded by Pool.mu
}

// NewPool checks cfg and returns a Pool.
func NewPool(cfg PoolConfig) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Pool{cfg: cfg, log: cfg.Logger, m: newMetrics(cfg.Registerer), peers: map[string]*peer{}}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	t1 := &http.Transport{HTTP2: &http.HTTP2Config{
		MaxReceiveBufferPerStream: int(cfg.StreamWindow), MaxReceiveBufferPerConnection: int(cfg.ConnWindow),
	}}
	t2, err := http2.ConfigureTransports(t1)
	if err != nil {
		return nil, fmt.Errorf("hbone: %w", err)
	}
	t2.ReadIdleTimeout, t2.PingTimeout = cfg.PingInterval, cfg.PingTimeout
	t2.StrictMaxConcurrentStreams = true
	t2.MaxReadFrameSize = maxFrame
	t2.CountError = func(kind string) { p.m.refused.WithLabelValues("h2_client_" + kind).Inc() }
	p.t2 = t2
	p.tls = mtls.MutualConfig(cfg.Source, cfg.Authorizer)
	p.tls.NextProtos = []string{http2.NextProtoTLS}
	return p, nil
}

// DialBridge opens one stream through the bridge listener at gateway
// (host:port) to service:port, subset optional. ctx bounds the connect
// and the peer's answer, not the stream's life. early, when not empty, is
// sent as the stream's first DATA right behind the request headers, before
// the answer (a copy is kept, not the slice); the peer relays it once its
// upstream is connected, or drops it with a refusal. The returned net.Conn
// implements CloseWrite (END_STREAM). A peer's refusal is a *RefusedError.
func (p *Pool) DialBridge(ctx context.Context, gateway, service string, port uint32, subset string, early []byte) (net.Conn, error) {
	t := Target{Service: service, Port: port, Subset: subset}
	if _, err := ParseAuthority(t.String()); err != nil {
		return nil, err
	}
	if _, err := ParseSubset(subset); err != nil {
		return nil, err
	}
	pc, err := p.conn(ctx, gateway)
	if err != nil {
		p.m.streams.WithLabelValues("client", "error").Inc()
		return nil, err
	}
	c, err := p.open(ctx, gateway, pc, t, early)
	if err != nil {
		p.release(gateway, pc)
		return nil, err
	}
	return c, nil
}

// conn returns a connection to gateway with a stream slot reserved,
// dialling one when none has room.
func (p *Pool) conn(ctx context.Context, gateway string) (*poolConn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrPoolClosed
		}
		pe := p.peers[gateway]
		if pe == nil {
			pe = &peer{}
			p.peers[gateway] = pe
		}
		live := pe.conns[:0]
		var pick *poolConn
		for _, pc := range pe.conns {
			st := pc.cc.State()
			if st.Closed || st.Closing {
				if pc.streams == 0 {
					go pc.cc.Close()
				}
				continue
			}
			live = append(live, pc)
			if pick == nil && pc.streams < p.cfg.MaxStreamsPerConn && pc.cc.ReserveNewRequest() {
				pick = pc
			}
		}
		clear(pe.conns[len(live):])
		pe.conns = live
		p.countConns()
		if pick != nil {
			pick.streams++
			p.mu.Unlock()
			return pick, nil
		}
		if wait := pe.dialing; wait != nil {
			p.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("hbone: dial %s: %w", gateway, ctx.Err())
			}
		}
		if len(pe.conns) >= p.cfg.MaxConnsPerPeer {
			p.mu.Unlock()
			return nil, fmt.Errorf("%w (%s: %d connections)", ErrPoolFull, gateway, len(pe.conns))
		}
		done := make(chan struct{})
		pe.dialing = done
		p.mu.Unlock()

		cc, err := p.dial(ctx, gateway)

		p.mu.Lock()
		pe.dialing = nil
		close(done)
		if err != nil {
			p.mu.Unlock()
			return nil, err
		}
		if p.closed {
			p.mu.Unlock()
			_ = cc.Close()
			return nil, ErrPoolClosed
		}
		pc := &poolConn{cc: cc}
		pe.conns = append(pe.conns, pc)
		p.countConns()
		p.mu.Unlock()
	}
}

// countConns sets the client connection gauge; p.mu must be held.
func (p *Pool) countConns() {
	n := 0
	for _, pe := range p.peers {
		n += len(pe.conns)
	}
	p.m.conns.WithLabelValues("client").Set(float64(n))
}

// dial opens a new mutual-TLS HTTP/2 connection to gateway.
func (p *Pool) dial(ctx context.Context, gateway string) (*http2.ClientConn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", gateway)
	if err != nil {
		return nil, fmt.Errorf("hbone: dial %s: %w", gateway, err)
	}
	tc := tls.Client(raw, p.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		p.m.handshakes.WithLabelValues("client", "error").Inc()
		return nil, fmt.Errorf("hbone: handshake with gateway %s: %w", gateway, err)
	}
	p.m.handshakes.WithLabelValues("client", "ok").Inc()
	if np := tc.ConnectionState().NegotiatedProtocol; np != http2.NextProtoTLS {
		_ = tc.Close()
		return nil, fmt.Errorf("hbone: gateway %s did not negotiate h2 (ALPN %q)", gateway, np)
	}
	cc, err := p.t2.NewClientConn(tc)
	if err != nil {
		_ = tc.Close()
		return nil, fmt.Errorf("hbone: gateway %s: %w", gateway, err)
	}
	p.log.Debug("hbone: connected to gateway", "gateway", gateway)
	return cc, nil
}

// open sends the CONNECT request on pc and waits for the answer.
func (p *Pool) open(ctx context.Context, gateway string, pc *poolConn, t Target, early []byte) (net.Conn, error) {
	pr, pw := io.Pipe()
	var body io.Reader = pr
	if len(early) > 0 {
		// The transport reads the body on its own goroutine, maybe after
		// the answer came: it gets a copy.
		body = io.MultiReader(bytes.NewReader(bytes.Clone(early)), pr)
	}
	// The stream lives until the returned conn is closed; ctx only bounds
	// the wait for the peer's answer.
	sctx, scancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, scancel)
	req := &http.Request{
		Method: http.MethodConnect, URL: &url.URL{Host: t.String()}, Host: t.String(),
		Header: http.Header{}, Body: readCloser{body, pr}, ContentLength: -1, Proto: "HTTP/2.0", ProtoMajor: 2,
	}
	if t.Subset != "" {
		req.Header.Set(SubsetHeader, t.Subset)
	}
	resp, err := pc.cc.RoundTrip(req.WithContext(sctx))
	stopped := stop()
	if err != nil || !stopped {
		scancel()
		_ = pw.Close()
		if err == nil {
			_ = resp.Body.Close()
			err = ctx.Err()
		}
		p.m.streams.WithLabelValues("client", "error").Inc()
		return nil, fmt.Errorf("hbone: CONNECT %s via %s: %w", t, gateway, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		scancel()
		_ = pw.Close()
		_ = resp.Body.Close()
		p.m.streams.WithLabelValues("client", "refused").Inc()
		return nil, &RefusedError{Gateway: gateway, Target: t, Status: resp.StatusCode, Reason: resp.Header.Get(RefusalHeader),
			Message: strings.TrimSpace(strings.ToValidUTF8(string(msg), "?"))}
	}
	p.m.streams.WithLabelValues("client", "ok").Inc()
	p.m.active.WithLabelValues("client").Inc()
	c := &streamConn{body: resp.Body, pw: pw, cancel: scancel, gateway: gateway, target: t}
	c.onClose = func() {
		p.m.active.WithLabelValues("client").Dec()
		p.release(gateway, pc)
	}
	return c, nil
}

// release frees a stream slot of pc.
func (p *Pool) release(gateway string, pc *poolConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc.streams--
	if pe := p.peers[gateway]; pe != nil && pc.streams == 0 {
		if st := pc.cc.State(); st.Closed || st.Closing {
			go pc.cc.Close()
		}
	}
}

// Streams reports the pool's open connections and streams per gateway.
func (p *Pool) Streams() map[string][2]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string][2]int{}
	for gw, pe := range p.peers {
		n := 0
		for _, pc := range pe.conns {
			n += pc.streams
		}
		out[gw] = [2]int{len(pe.conns), n}
	}
	return out
}

// Close closes every connection; open streams end with an error.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	var ccs []*http2.ClientConn
	for _, pe := range p.peers {
		for _, pc := range pe.conns {
			ccs = append(ccs, pc.cc)
		}
	}
	p.peers = map[string]*peer{}
	p.countConns()
	p.mu.Unlock()
	for _, cc := range ccs {
		_ = cc.Close()
	}
	return nil
}

// readCloser is a request body: reads from r, closes c.
type readCloser struct {
	io.Reader
	c io.Closer
}

func (b readCloser) Close() error { return b.c.Close() }

// streamConn is one CONNECT stream as a net.Conn.
type streamConn struct {
	body    io.ReadCloser
	pw      *io.PipeWriter
	cancel  context.CancelFunc
	gateway string
	target  Target
	onClose func()
	closed  atomic.Bool
}

func (c *streamConn) Read(b []byte) (int, error) { return c.body.Read(b) }

func (c *streamConn) Write(b []byte) (int, error) {
	n, err := c.pw.Write(b)
	if errors.Is(err, io.ErrClosedPipe) {
		err = net.ErrClosed
	}
	return n, err
}

// CloseWrite ends the request body: the peer sees END_STREAM and
// half-closes its upstream.
func (c *streamConn) CloseWrite() error { return c.pw.Close() }

// Close resets the stream if it is still open and frees its slot.
func (c *streamConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	_ = c.pw.CloseWithError(net.ErrClosed)
	c.cancel()
	_ = c.body.Close()
	c.onClose()
	return nil
}

// LocalAddr and RemoteAddr name the tunnel, not a socket.
func (c *streamConn) LocalAddr() net.Addr { return tunnelAddr("hbone") }

// RemoteAddr is "hbone://<gateway>/<service>:<port>".
func (c *streamConn) RemoteAddr() net.Addr {
	return tunnelAddr("hbone://" + c.gateway + "/" + c.target.String())
}

// ErrNoDeadlines is returned by the deadline setters of a tunnelled
// stream: end an idle stream with Close.
var ErrNoDeadlines = errors.New("hbone: tunnelled streams do not support deadlines; close the stream instead")

func (c *streamConn) SetDeadline(time.Time) error      { return ErrNoDeadlines }
func (c *streamConn) SetReadDeadline(time.Time) error  { return ErrNoDeadlines }
func (c *streamConn) SetWriteDeadline(time.Time) error { return ErrNoDeadlines }

// tunnelAddr is a net.Addr naming a tunnel end.
type tunnelAddr string

func (a tunnelAddr) Network() string { return "hbone" }
func (a tunnelAddr) String() string  { return string(a) }
