package sni

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/internal/liveness"
)

// Accept backoff after an error other than "listener closed" (for example
// EMFILE), as memberlist's tcpListen: 5ms, doubling, at most 1s.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// serverListener is one open listener socket and its accept loop.
type serverListener struct {
	key      string
	ln       net.Listener
	spec     atomic.Pointer[ListenerSpec] // replaced by Apply; read per accept
	accepted prometheus.Counter
	stop     chan struct{} // closed by close: ends a backoff wait
	stopOnce sync.Once
	beat     liveness.Beat // busy from an accepted conn until its handler starts (Alive)
}

// close closes the socket; the accept loop then returns. Connections
// already accepted are not affected.
func (l *serverListener) close() {
	l.stopOnce.Do(func() {
		close(l.stop)
		_ = l.ln.Close()
	})
}

// takeListenersLocked empties s.listeners and returns what it held. s.mu
// must be held.
func (s *Server) takeListenersLocked() []*serverListener {
	ls := make([]*serverListener, 0, len(s.listeners))
	for k, l := range s.listeners {
		ls = append(ls, l)
		delete(s.listeners, k)
	}
	return ls
}

func closeListeners(ls []*serverListener) {
	for _, l := range ls {
		l.close()
	}
}

// Apply publishes t on the server's Router, then reconciles the listener
// sockets with t.Listeners(): it opens listeners whose key is new, closes
// those whose key is gone (their accepted connections keep going) and
// keeps the socket of every unchanged key, so there is no gap in which
// connections are refused. It returns the listeners that failed to bind as
// *ListenError values joined with errors.Join; t is published either way.
// After Shutdown or Close it publishes nothing and returns ErrServerClosed.
// Calls are serialized.
func (s *Server) Apply(ctx context.Context, t *Table) error {
	if t == nil {
		return errors.New("sni: Apply: nil table")
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()

	s.mu.Lock()
	if s.state != stateRunning {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.router.Publish(t)
	want := make(map[string]ListenerSpec)
	var order []string
	for _, sp := range t.Listeners() {
		if _, dup := want[sp.Key]; dup {
			continue
		}
		want[sp.Key] = sp
		order = append(order, sp.Key)
	}
	var gone []*serverListener
	for key, l := range s.listeners {
		sp, ok := want[key]
		if !ok {
			gone = append(gone, l)
			delete(s.listeners, key)
			continue
		}
		if old := l.spec.Swap(&sp); old.NeedsHello != sp.NeedsHello {
			s.setDeferAccept(l.key, l.ln, sp.NeedsHello)
		}
	}
	var open []ListenerSpec
	for _, key := range order {
		if _, ok := s.listeners[key]; !ok {
			open = append(open, want[key])
		}
	}
	s.mu.Unlock()

	closeListeners(gone)
	for _, l := range gone {
		s.log.Info("sni: listener closed", "listener", l.key)
	}
	var errs []error
	for _, sp := range open {
		if err := s.openListener(ctx, sp); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// openListener binds sp and starts its accept loop.
func (s *Server) openListener(ctx context.Context, sp ListenerSpec) error {
	ln, err := s.cfg.Listen(ctx, sp.Network, sp.Address)
	if err != nil {
		s.log.Error("sni: listen failed", "listener", sp.Key, "err", err)
		return &ListenError{Key: sp.Key, Err: err}
	}
	s.setDeferAccept(sp.Key, ln, sp.NeedsHello)
	l := &serverListener{
		key:      sp.Key,
		ln:       ln,
		accepted: s.m.connections.WithLabelValues(sp.Key),
		stop:     make(chan struct{}),
	}
	l.spec.Store(&sp)
	s.mu.Lock()
	if s.state != stateRunning {
		s.mu.Unlock()
		_ = ln.Close()
		return &ListenError{Key: sp.Key, Err: ErrServerClosed}
	}
	s.listeners[sp.Key] = l
	s.wg.Go(func() { s.acceptLoop(l) })
	s.mu.Unlock()
	s.log.Info("sni: listening", "listener", sp.Key, "addr", ln.Addr().String())
	return nil
}

// deferAcceptSeconds is the TCP_DEFER_ACCEPT of a listener that reads a
// ClientHello first: accept returns once the client's first bytes are
// there, so the handler's first read finds the hello instead of parking
// the connection in the poller. A client that sends nothing is handed over
// after about this long (the kernel retransmits its SYN-ACK once, and
// accepts on the answering ACK), and the hello timeout runs from there.
const deferAcceptSeconds = 1

// setDeferAccept sets (on) or clears TCP_DEFER_ACCEPT on a TCP listener:
// on for listeners that need a hello, off for plain TCP ones, whose
// protocol may wait for the server to speak first. Listeners that are not
// TCP, and kernels without the option, keep plain accepts; a failure is
// logged and costs only the extra wake-up.
func (s *Server) setDeferAccept(key string, ln net.Listener, on bool) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return
	}
	v := 0
	if on {
		v = deferAcceptSeconds
	}
	if err := setDeferAcceptOpt(tl, v); err != nil {
		s.log.Warn("sni: TCP_DEFER_ACCEPT not applied; accepting without it", "listener", key, "err", err)
	}
}

// Addrs returns the bound address of every open listener, by key. Useful
// when a listener asked for port 0.
func (s *Server) Addrs() map[string]net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]net.Addr, len(s.listeners))
	for k, l := range s.listeners {
		m[k] = l.ln.Addr()
	}
	return m
}

// acceptLoop accepts until l is closed, starting one handler goroutine per
// connection. Errors other than "closed" are logged and retried with
// backoff.
func (s *Server) acceptLoop(l *serverListener) {
	s.loops.Store(l, struct{}{})
	defer s.loops.Delete(l)
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
			s.log.Warn("sni: accept failed; backing off", "listener", l.key, "delay", delay, "err", err)
			t := time.NewTimer(delay)
			select {
			case <-l.stop:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		delay = 0
		done := l.beat.Busy()
		l.accepted.Inc()
		pc := &proxyConn{client: c, listener: l.key, start: time.Now()}
		if !s.track(pc) {
			_ = c.Close()
			done()
			continue // draining: the listener is being closed
		}
		spec := l.spec.Load()
		s.wg.Go(func() { s.handle(pc, spec) })
		done()
	}
}
