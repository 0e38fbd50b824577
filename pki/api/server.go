package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloudflare/cfssl/auth"
	"google.golang.org/grpc"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshgate/meshgate/pki"
)

// Server serves the certificate API of one CA. Handler may be used on its
// own (for example on a plain-HTTP loopback listener for the cfssl CLI);
// Serve runs the TLS port with gRPC and HTTP. Safe for concurrent use.
type Server struct {
	cfg  Config
	ca   *pki.CA
	log  *slog.Logger
	m    *metrics
	grpc *grpc.Server
	mux  *http.ServeMux

	cfsslAuth *auth.Standard // nil: authsign disabled
	adminHash []byte         // sha256 of the admin key; nil: disabled

	certMu sync.Mutex // guards own
	own    *tls.Certificate

	mu      sync.Mutex // guards serving, adm and closed
	serving *serveState
	adm     *admission
	closed  bool
}

// Conns returns the open connections of the listener Serve runs and the
// TLS handshakes in progress (0, 0 before Serve).
func (s *Server) Conns() (open, handshaking int) {
	s.mu.Lock()
	adm := s.adm
	s.mu.Unlock()
	if adm == nil {
		return 0, 0
	}
	return adm.counts()
}

// NewServer builds the API for ca. It does not listen; call Serve.
func NewServer(cfg Config, ca *pki.CA) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if ca == nil {
		return nil, &ConfigError{Field: "ca", Problem: "nil CA"}
	}
	if cfg.NodeIdentity.IsZero() {
		id, err := pki.NewIdentity(ca.TrustDomain(), "meshgate-system", "meshgate")
		if err != nil {
			return nil, err
		}
		cfg.NodeIdentity = id
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{
		cfg: cfg,
		ca:  ca,
		log: log.With("component", "pki-api"),
		m:   newMetrics(cfg.Registerer),
		mux: http.NewServeMux(),
	}
	if cfg.CFSSLAuthKey != "" {
		p, err := auth.New(cfg.CFSSLAuthKey, nil)
		if err != nil {
			return nil, &ConfigError{Field: "CFSSLAuthKey", Problem: err.Error()}
		}
		s.cfsslAuth = p
	}
	if cfg.AdminKey != "" {
		raw, err := readKeySpec(cfg.AdminKey)
		if err != nil {
			return nil, &ConfigError{Field: "AdminKey", Problem: err.Error()}
		}
		sum := sha256.Sum256([]byte(raw))
		s.adminHash = sum[:]
	}
	s.grpc = grpc.NewServer(
		grpc.Creds(handshakenCreds{}),
		grpc.MaxRecvMsgSize(cfg.MaxBodyBytes),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.NumStreamWorkers(cfg.StreamWorkers),
		// Static flow-control windows turn off gRPC's bandwidth-delay
		// estimator, which answers nearly every request's data frame with
		// a PING and a WINDOW_UPDATE of its own (one more TLS record and
		// write per certificate). Requests are at most MaxBodyBytes, so a
		// stream window of that size never stalls one, and the connection
		// window lets MaxConcurrentStreams/16 full-size requests arrive at
		// once.
		grpc.InitialWindowSize(streamWindow(cfg)),
		grpc.InitialConnWindowSize(connWindow(cfg)),
	)
	pb.RegisterIstioCertificateServiceServer(s.grpc, &grpcService{s: s})
	s.routes()
	return s, nil
}

// streamWindow is the gRPC stream flow-control window: a whole request
// (at least HTTP/2's default 64 KiB).
func streamWindow(cfg Config) int32 { return int32(max(cfg.MaxBodyBytes, 64<<10)) }

// connWindow is the gRPC connection window: room for one request per 16
// streams the connection may carry, at most 1 GiB.
func connWindow(cfg Config) int32 {
	w := int64(streamWindow(cfg)) * int64(max(cfg.MaxConcurrentStreams/16, 1))
	return int32(min(w, 1<<30))
}

// Handler returns the HTTP API (JSON, cfssl-compatible and admin
// endpoints). HTTP/2 requests with a gRPC content type are passed to the
// gRPC service.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			s.grpc.ServeHTTP(w, r)
			return
		}
		s.mux.ServeHTTP(w, r)
	})
}

// serveState is one Serve call's servers and goroutines.
type serveState struct {
	ln     net.Listener
	grpcLn *chanListener
	httpLn *chanListener
	http   *http.Server
}

// Serve accepts TLS connections on ln until ctx is done (then it stops
// gracefully, within ShutdownTimeout, and returns nil) or ln fails. The
// connection's ALPN offer picks the server: "h2" alone goes to the gRPC
// transport, anything else to net/http. Serve closes ln. It may be called
// once per Server (ErrAlreadyServing otherwise).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return pki.ErrClosed
	}
	if s.serving != nil {
		s.mu.Unlock()
		ln.Close()
		return ErrAlreadyServing
	}
	st := &serveState{
		ln:     ln,
		grpcLn: newChanListener(ln.Addr()),
		httpLn: newChanListener(ln.Addr()),
	}
	st.http = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.serving = st
	s.mu.Unlock()

	if s.cfg.GetCertificate == nil {
		// Issue the server certificate now, so that a CA that cannot
		// issue fails Serve instead of every handshake.
		if _, err := s.getCertificate(nil); err != nil {
			s.mu.Lock()
			s.serving = nil
			s.mu.Unlock()
			ln.Close()
			return err
		}
	}
	base := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		ClientAuth:     tls.RequestClientCert, // verified by the CA, against its current bundle
		GetCertificate: s.getCertificate,
	}
	if s.cfg.GetCertificate != nil {
		base.GetCertificate = s.cfg.GetCertificate
	}

	var wg sync.WaitGroup
	wg.Go(func() { s.grpc.Serve(st.grpcLn) })
	wg.Go(func() { st.http.Serve(st.httpLn) })
	stopped := make(chan struct{})
	wg.Go(func() {
		select {
		case <-ctx.Done():
		case <-stopped:
		}
		ln.Close()
		s.shutdown(st)
	})

	adm := newAdmission(s.cfg)
	s.mu.Lock()
	s.adm = adm
	s.mu.Unlock()
	var hs sync.WaitGroup
	var err error
	backoff := 5 * time.Millisecond
	for {
		c, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() != nil || errors.Is(aerr, net.ErrClosed) {
				break
			}
			var ne net.Error
			if errors.As(aerr, &ne) && ne.Timeout() {
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			err = fmt.Errorf("api: accept: %w", aerr)
			break
		}
		backoff = 5 * time.Millisecond
		host := hostOf(c.RemoteAddr())
		if reason := adm.admit(host); reason != "" {
			// Refused at once, never queued: a client beyond a bound
			// must not delay the others.
			s.m.refused.WithLabelValues(reason).Inc()
			c.Close()
			continue
		}
		ac := &admittedConn{Conn: c, release: func() { adm.release(host) }}
		hs.Go(func() {
			defer adm.handshakeDone(host)
			s.handshake(ctx, ac, base, st)
		})
	}
	hs.Wait()
	close(stopped)
	wg.Wait()
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if ctx.Err() != nil || closed {
		return nil
	}
	return err
}

// handshake does the TLS handshake of c and hands it to a server.
func (s *Server) handshake(ctx context.Context, c net.Conn, base *tls.Config, st *serveState) {
	grpcOnly := false
	cfg := base.Clone()
	cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		// Offering only h2 is what gRPC clients do; browsers, curl and
		// net/http clients also offer http/1.1.
		grpcOnly = slices.Contains(h.SupportedProtos, "h2") && !slices.Contains(h.SupportedProtos, "http/1.1")
		c := base.Clone()
		if grpcOnly {
			c.NextProtos = []string{"h2"}
		} else {
			c.NextProtos = []string{"h2", "http/1.1"}
		}
		return c, nil
	}
	tc := tls.Server(c, cfg)
	hctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		reason := refusedHandshakeFailed
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
			reason = refusedHandshakeTimeout
		}
		s.m.refused.WithLabelValues(reason).Inc()
		s.log.Debug("TLS handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	target := st.httpLn
	if grpcOnly && tc.ConnectionState().NegotiatedProtocol == "h2" {
		target = st.grpcLn
	}
	if !target.deliver(ctx, tc) {
		tc.Close()
	}
}

func (s *Server) shutdown(st *serveState) {
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	st.http.Shutdown(ctx)
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
	st.grpcLn.Close()
	st.httpLn.Close()
}

// Close stops the servers immediately and closes the listener, so that
// Serve returns (with nil). Idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	st := s.serving
	s.mu.Unlock()
	s.grpc.Stop()
	if st != nil {
		st.ln.Close()
		st.http.Close()
		st.grpcLn.Close()
		st.httpLn.Close()
	}
	return nil
}

// getCertificate returns the node's server certificate, issuing a new one
// from the CA when none is held or half of its lifetime has passed.
func (s *Server) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.certMu.Lock()
	defer s.certMu.Unlock()
	if c := s.own; c != nil {
		half := c.Leaf.NotBefore.Add(c.Leaf.NotAfter.Sub(c.Leaf.NotBefore) / 2)
		if time.Now().Before(half) {
			return c, nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := s.ca.NodeCertificate(ctx, pki.NodeRequest{
		Identity:    s.cfg.NodeIdentity,
		DNSNames:    s.cfg.DNSNames,
		IPAddresses: s.cfg.IPAddresses,
	})
	if err != nil {
		if s.own != nil && time.Now().Before(s.own.Leaf.NotAfter) {
			s.log.Warn("server certificate renewal failed; keeping the current one", "err", err)
			return s.own, nil
		}
		return nil, fmt.Errorf("api: server certificate: %w", err)
	}
	s.own = c
	return c, nil
}

// ServerCertificate returns the server certificate Serve presents (issuing
// it if needed), for clients that pin it or for tests.
func (s *Server) ServerCertificate() (*tls.Certificate, error) {
	if s.cfg.GetCertificate != nil {
		return s.cfg.GetCertificate(&tls.ClientHelloInfo{})
	}
	return s.getCertificate(nil)
}

// chanListener is a net.Listener fed with already-handshaken connections.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) deliver(ctx context.Context, c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
	case <-ctx.Done():
	}
	return false
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// readKeySpec reads a secret given as "env:VAR", "file:PATH" or the
// value itself, trimmed of spaces.
func readKeySpec(spec string) (string, error) {
	kind, rest, ok := strings.Cut(spec, ":")
	var v string
	switch {
	case ok && kind == "env":
		v = os.Getenv(rest)
	case ok && kind == "file":
		b, err := os.ReadFile(rest)
		if err != nil {
			return "", err
		}
		v = string(b)
	default:
		v = spec
	}
	v = strings.TrimSpace(v)
	if len(v) < 16 {
		return "", errors.New("key is shorter than 16 characters")
	}
	return v, nil
}

// adminKeyOK compares a presented admin key with the configured one in
// constant time.
func (s *Server) adminKeyOK(presented string) bool {
	if s.adminHash == nil || presented == "" {
		return false
	}
	sum := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(sum[:], s.adminHash) == 1
}
