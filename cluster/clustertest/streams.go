package clustertest

import (
	"context"
	"fmt"
	"net"
	"sync"
)

// StreamNet is an in-memory cluster.StreamNetwork: Listen registers an
// address, Dial connects to it with a net.Pipe. Safe for concurrent use.
type StreamNet struct {
	mu        sync.Mutex // guards listeners
	listeners map[string]*memListener
}

// Listen implements cluster.StreamNetwork.
func (s *StreamNet) Listen(addr string) (net.Listener, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listeners == nil {
		s.listeners = make(map[string]*memListener)
	}
	if l, ok := s.listeners[addr]; ok && !l.isClosed() {
		return nil, fmt.Errorf("clustertest: %s already in use", addr)
	}
	l := &memListener{net: s, addr: mockAddr(addr), conns: make(chan net.Conn), done: make(chan struct{})}
	s.listeners[addr] = l
	return l, nil
}

// Dial implements cluster.StreamNetwork.
func (s *StreamNet) Dial(ctx context.Context, addr string) (net.Conn, error) {
	s.mu.Lock()
	l := s.listeners[addr]
	s.mu.Unlock()
	if l == nil || l.isClosed() {
		return nil, fmt.Errorf("%w: %s", ErrUnreachable, addr)
	}
	local, remote := net.Pipe()
	select {
	case l.conns <- &pipeConn{Conn: remote, local: l.addr, remote: mockAddr("client")}:
		return &pipeConn{Conn: local, local: mockAddr("client"), remote: l.addr}, nil
	case <-l.done:
	case <-ctx.Done():
	}
	local.Close()
	remote.Close()
	return nil, fmt.Errorf("%w: %s", ErrUnreachable, addr)
}

type memListener struct {
	net   *StreamNet
	addr  mockAddr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *memListener) Addr() net.Addr { return l.addr }

func (l *memListener) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}
