package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// StreamNetwork carries streams between nodes: raft RPCs and forwarded
// writes share one listener per node. The default is TLSNetwork; tests
// plug in an in-memory network (clustertest).
type StreamNetwork interface {
	// Listen opens the node's listener on addr ("host:port").
	Listen(addr string) (net.Listener, error)
	// Dial opens a stream to another node's listener.
	Dial(ctx context.Context, addr string) (net.Conn, error)
}

// TLSNetwork is a StreamNetwork of TLS over TCP. Both ends present a
// certificate, so Config must carry Certificates (or GetCertificate /
// GetClientCertificate), RootCAs and ClientCAs with ClientAuth set to
// tls.RequireAndVerifyClientCert; the hooks make certificate rotation
// possible without restarting the node.
type TLSNetwork struct {
	Config *tls.Config
}

var _ StreamNetwork = (*TLSNetwork)(nil)

// Listen implements StreamNetwork.
func (n *TLSNetwork) Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster: listen %s: %w", addr, err)
	}
	return tls.NewListener(ln, n.Config), nil
}

// Dial implements StreamNetwork.
func (n *TLSNetwork) Dial(ctx context.Context, addr string) (net.Conn, error) {
	d := &tls.Dialer{Config: n.Config}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster: dial %s: %w", addr, err)
	}
	return c, nil
}

// Every inbound stream starts with one byte that says who it is for.
const (
	streamRaft    byte = 'R'
	streamForward byte = 'F'
)

// muxHeaderTimeout bounds how long an inbound stream may take to complete
// its TLS handshake and send its type byte.
const muxHeaderTimeout = 10 * time.Second

// mux splits one listener into a raft listener and a forwarding listener
// by the first byte of each stream.
type mux struct {
	ln     net.Listener
	log    *slog.Logger
	raft   *subListener
	fwd    *subListener
	wg     sync.WaitGroup
	closed chan struct{}
	once   sync.Once
}

func newMux(ln net.Listener, log *slog.Logger) *mux {
	m := &mux{ln: ln, log: log, closed: make(chan struct{})}
	m.raft = &subListener{m: m, ch: make(chan net.Conn), done: make(chan struct{})}
	m.fwd = &subListener{m: m, ch: make(chan net.Conn), done: make(chan struct{})}
	m.wg.Add(1)
	go m.acceptLoop()
	return m
}

func (m *mux) acceptLoop() {
	defer m.wg.Done()
	var delay time.Duration
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.closed:
				return
			default:
			}
			// Back off on temporary failures (e.g. out of file descriptors),
			// as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			m.log.Warn("cluster: accept failed", "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
				continue
			case <-m.closed:
				return
			}
		}
		delay = 0
		m.wg.Add(1)
		go m.route(c)
	}
}

// route reads the stream type and hands the stream to its listener.
func (m *mux) route(c net.Conn) {
	defer m.wg.Done()
	_ = c.SetDeadline(time.Now().Add(muxHeaderTimeout))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		m.log.Debug("cluster: stream header", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	var sub *subListener
	switch b[0] {
	case streamRaft:
		sub = m.raft
	case streamForward:
		sub = m.fwd
	default:
		m.log.Warn("cluster: unknown stream type", "remote", c.RemoteAddr().String(), "type", b[0])
		c.Close()
		return
	}
	select {
	case sub.ch <- c:
	case <-sub.done:
		c.Close()
	case <-m.closed:
		c.Close()
	case <-time.After(muxHeaderTimeout):
		c.Close()
	}
}

func (m *mux) Close() error {
	var err error
	m.once.Do(func() {
		close(m.closed)
		err = m.ln.Close()
		m.wg.Wait()
	})
	return err
}

// subListener is the net.Listener view of one stream type.
type subListener struct {
	m    *mux
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

var _ net.Listener = (*subListener)(nil)

func (s *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-s.ch:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	case <-s.m.closed:
		return nil, net.ErrClosed
	}
}

// Close stops this stream type's Accept; the mux owns the underlying
// listener and closes it once in mux.Close.
func (s *subListener) Close() error {
	s.once.Do(func() { close(s.done) })
	return nil
}

func (s *subListener) Addr() net.Addr { return s.m.ln.Addr() }

// dialStream opens a stream of the given type to addr.
func dialStream(ctx context.Context, n StreamNetwork, addr string, typ byte) (net.Conn, error) {
	c, err := n.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetWriteDeadline(dl)
	}
	if _, err := c.Write([]byte{typ}); err != nil {
		c.Close()
		return nil, fmt.Errorf("cluster: dial %s: %w", addr, err)
	}
	_ = c.SetWriteDeadline(time.Time{})
	return c, nil
}

// streamLayer adapts the mux's raft listener to raft.StreamLayer.
type streamLayer struct {
	*subListener
	net       StreamNetwork
	advertise net.Addr
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return dialStream(ctx, s.net, string(addr), streamRaft)
}

func (s *streamLayer) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.subListener.Addr()
}

// tcpAddr is a net.Addr for an advertised "host:port" string.
type tcpAddr string

func (a tcpAddr) Network() string { return "tcp" }
func (a tcpAddr) String() string  { return string(a) }
