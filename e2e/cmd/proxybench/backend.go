package main

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Wire protocol between the bench clients and the backends.
const (
	// cmdPing asks the TLS backend for one ackByte; the connection stays open
	// for more commands until the client closes it.
	cmdPing = 'P'
	// ackByte answers cmdPing.
	ackByte = 'K'
	// recordHandshake is the TLS record type of a ClientHello.
	recordHandshake = 0x16
	// backendHandshakeTimeout bounds a backend handshake or ClientHello read.
	backendHandshakeTimeout = 10 * time.Second
	// sinkBufSize is the read size of the raw sink.
	sinkBufSize = 256 << 10
)

// server accepts connections on one loopback listener and runs handle on
// each in its own goroutine. It tracks open connections so that Close can
// end idle ones. Close is idempotent and returns after every handler has.
type server struct {
	ln     net.Listener
	handle func(net.Conn)
	wg     sync.WaitGroup
	active atomic.Int64

	mu     sync.Mutex // guards conns and closed
	conns  map[net.Conn]struct{}
	closed bool
}

// listenServer starts a server on a fresh 127.0.0.1 port.
func listenServer(handle func(net.Conn)) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxybench: backend listen: %w", err)
	}
	s := &server{ln: ln, handle: handle, conns: make(map[net.Conn]struct{})}
	s.wg.Go(s.acceptLoop)
	return s, nil
}

// Addr is the listening address, host:port.
func (s *server) Addr() string { return s.ln.Addr().String() }

// Port is the listening port.
func (s *server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Active is the number of connections being served now.
func (s *server) Active() int64 { return s.active.Load() }

func (s *server) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of fds or similar: back off, as a real server does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.active.Add(1)
		s.wg.Go(func() { s.serveConn(c) })
	}
}

func (s *server) serveConn(c net.Conn) {
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.active.Add(-1)
	}()
	s.handle(c)
}

// Close stops accepting, closes every open connection and waits for the
// handlers.
func (s *server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// serveTLS is the handler of the TLS backend: a full handshake, then one
// ackByte per cmdPing until the client closes.
func serveTLS(cfg *tls.Config) func(net.Conn) {
	return func(c net.Conn) {
		tc := tls.Server(c, cfg)
		_ = c.SetDeadline(time.Now().Add(backendHandshakeTimeout))
		if err := tc.Handshake(); err != nil {
			return
		}
		_ = c.SetDeadline(time.Time{})
		var cmd [1]byte
		ack := []byte{ackByte}
		for {
			if _, err := io.ReadFull(tc, cmd[:]); err != nil || cmd[0] != cmdPing {
				return
			}
			if _, err := tc.Write(ack); err != nil {
				return
			}
		}
	}
}

var sinkBufs = sync.Pool{New: func() any { b := make([]byte, sinkBufSize); return &b }}

// serveSink is the handler of the raw backend: it reads one TLS ClientHello
// record, then counts plain bytes until the client half-closes, answers with
// the count as a big-endian uint64 and closes. maxLife bounds the whole
// connection.
func serveSink(maxLife time.Duration) func(net.Conn) {
	return func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(backendHandshakeTimeout))
		var hdr [5]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil || hdr[0] != recordHandshake {
			return
		}
		n := int64(binary.BigEndian.Uint16(hdr[3:]))
		if _, err := io.CopyN(io.Discard, c, n); err != nil {
			return
		}
		_ = c.SetDeadline(time.Now().Add(maxLife))
		bp := sinkBufs.Get().(*[]byte)
		defer sinkBufs.Put(bp)
		var total uint64
		for {
			k, err := c.Read(*bp)
			total += uint64(k)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return
			}
		}
		var ack [8]byte
		binary.BigEndian.PutUint64(ack[:], total)
		_, _ = c.Write(ack[:])
	}
}
