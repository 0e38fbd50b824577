package snitest

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// BackendConfig describes a loopback backend. The zero value is a plain TCP
// echo server.
type BackendConfig struct {
	// CA and Names make the backend speak TLS with a leaf from CA for Names.
	// Both empty = plain TCP.
	CA    *CA
	Names []string
	// NextProtos is the server's ALPN list. Empty = the backend ignores the
	// client's ALPN offer.
	NextProtos []string
	// Trailer is written after the client half-closes (EOF on read), before
	// the backend closes its side. It shows that a half-closed connection
	// still carries bytes the other way.
	Trailer []byte
	// Hold makes the backend accept connections and keep them open without
	// reading or writing and without a goroutine per connection. Used to
	// measure the proxy's own cost per idle connection.
	Hold bool
	// Discard makes the backend read and drop everything (counted in
	// Received) instead of echoing. For throughput measurements.
	Discard bool
}

// Backend is an echo server on 127.0.0.1 with an ephemeral port. It counts
// accepted connections, so tests can prove that nothing was dialled. All
// methods are safe for concurrent use. The backend is closed by tb.Cleanup.
type Backend struct {
	cfg     BackendConfig
	ln      net.Listener
	tlsCfg  *tls.Config
	accepts atomic.Int64
	recv    atomic.Int64
	wg      sync.WaitGroup

	mu     sync.Mutex // guards conns, closed, names
	conns  map[net.Conn]struct{}
	closed bool
	names  []string // SNI seen by TLS handshakes, in order
}

// NewBackend starts a backend described by cfg and registers its Close with
// tb.Cleanup.
func NewBackend(tb testing.TB, cfg BackendConfig) *Backend {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("snitest: listen for backend: %v", err)
	}
	b := &Backend{cfg: cfg, ln: ln, conns: make(map[net.Conn]struct{})}
	if cfg.CA != nil {
		b.tlsCfg = cfg.CA.ServerConfig(tb, cfg.Names, cfg.NextProtos...)
	}
	b.wg.Add(1)
	go b.acceptLoop()
	tb.Cleanup(func() { _ = b.Close() })
	return b
}

// NewTLSBackend starts a TLS echo backend with a leaf from ca for names.
func NewTLSBackend(tb testing.TB, ca *CA, names ...string) *Backend {
	tb.Helper()
	return NewBackend(tb, BackendConfig{CA: ca, Names: names})
}

// NewTCPBackend starts a plain TCP echo backend.
func NewTCPBackend(tb testing.TB) *Backend {
	tb.Helper()
	return NewBackend(tb, BackendConfig{})
}

// Addr returns "127.0.0.1:port".
func (b *Backend) Addr() string { return b.ln.Addr().String() }

// Accepts returns how many connections the backend has accepted.
func (b *Backend) Accepts() int64 { return b.accepts.Load() }

// Received returns how many bytes the backend has read from clients
// (after the TLS layer, for a TLS backend).
func (b *Backend) Received() int64 { return b.recv.Load() }

// Open returns how many accepted connections are still open.
func (b *Backend) Open() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// ServerNames returns the SNI of every completed TLS handshake, in order.
func (b *Backend) ServerNames() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.names...)
}

// CloseConns closes every open connection and keeps listening. A Hold
// backend never notices a client going away, so tests call this instead.
func (b *Backend) CloseConns() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.conns {
		_ = c.Close()
		delete(b.conns, c)
	}
}

// Close stops accepting, closes every open connection and waits for the
// backend's goroutines. It is idempotent.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.wg.Wait()
		return nil
	}
	b.closed = true
	err := b.ln.Close()
	for c := range b.conns {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
	return err
}

func (b *Backend) acceptLoop() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return // closed; loopback accept does not fail otherwise in tests
		}
		b.accepts.Add(1)
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			_ = c.Close()
			return
		}
		b.conns[c] = struct{}{}
		b.mu.Unlock()
		if b.cfg.Hold {
			continue
		}
		b.wg.Add(1)
		go b.serve(c)
	}
}

func (b *Backend) forget(c net.Conn) {
	b.mu.Lock()
	delete(b.conns, c)
	b.mu.Unlock()
	_ = c.Close()
}

// serve echoes until EOF, writes the trailer, then closes.
func (b *Backend) serve(c net.Conn) {
	defer b.wg.Done()
	defer b.forget(c)
	rw := io.ReadWriter(c)
	if b.tlsCfg != nil {
		tc := tls.Server(c, b.tlsCfg)
		if err := tc.Handshake(); err != nil {
			return
		}
		b.mu.Lock()
		b.names = append(b.names, tc.ConnectionState().ServerName)
		b.mu.Unlock()
		rw = tc
	}
	var err error
	if b.cfg.Discard {
		// Large reads keep the sink cheap next to what it measures.
		_, err = io.CopyBuffer(struct{ io.Writer }{io.Discard}, backendCounter{rw, &b.recv}, make([]byte, 256<<10))
	} else {
		_, err = io.Copy(rw, backendCounter{rw, &b.recv})
	}
	if err != nil {
		return
	}
	if len(b.cfg.Trailer) > 0 {
		if _, err := rw.Write(b.cfg.Trailer); err != nil {
			return
		}
	}
	if tc, ok := rw.(*tls.Conn); ok {
		_ = tc.CloseWrite()
	} else if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	// Wait for the peer to close, so the close is orderly on both sides.
	_, _ = io.Copy(io.Discard, c)
}

// backendCounter counts bytes read through it. It hides any WriterTo of
// the conn so io.Copy reads through Read.
type backendCounter struct {
	r io.Reader
	n *atomic.Int64
}

func (c backendCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
