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
	// cmdDownload asks the TLS backend for a download: 8 more bytes give the
	// budget, see tlsBackend.download.
	cmdDownload = 'D'
	// downloadChunk is the size of one write of the download server: four
	// full TLS records.
	downloadChunk = 64 << 10
	// maxDownload bounds one download, whatever the client asks.
	maxDownload = 1 << 40
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

// tlsBackend is the handler of the TLS backend: a full handshake, then
// commands until the client closes. cmdPing gets one ackByte; cmdDownload
// ends the command loop with a download (see download).
type tlsBackend struct {
	cfg *tls.Config
	// maxLife bounds a download connection.
	maxLife time.Duration
	// sent counts the payload bytes of downloads whose trailer went out,
	// so that each download sample can be matched against what the clients
	// received.
	sent atomic.Int64
}

// serve handles one connection.
func (b *tlsBackend) serve(c net.Conn) {
	tc := tls.Server(c, b.cfg)
	_ = c.SetDeadline(time.Now().Add(backendHandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	var cmd [1]byte
	ack := []byte{ackByte}
	for {
		if _, err := io.ReadFull(tc, cmd[:]); err != nil {
			return
		}
		switch cmd[0] {
		case cmdPing:
			if _, err := tc.Write(ack); err != nil {
				return
			}
		case cmdDownload:
			b.download(c, tc)
			return
		default:
			return
		}
	}
}

var downloadBufs = sync.Pool{New: func() any { b := make([]byte, downloadChunk); return &b }}

// download serves one download: it reads the client's byte budget (uint64,
// big-endian), then writes payload in downloadChunk writes (TLS records of
// 16 KiB) until the budget is spent, maxDownload is reached or the client
// sends any byte (its stop), then an 8-byte trailer with the payload count,
// then close_notify. It returns once the client has stopped or closed, or
// maxLife has passed.
func (b *tlsBackend) download(c net.Conn, tc *tls.Conn) {
	_ = c.SetDeadline(time.Now().Add(b.maxLife))
	var req [8]byte
	if _, err := io.ReadFull(tc, req[:]); err != nil {
		return
	}
	budget := min(binary.BigEndian.Uint64(req[:]), maxDownload)
	stop := make(chan struct{})
	go func() {
		defer close(stop)
		var s [1]byte
		_, _ = tc.Read(s[:]) // the stop byte, EOF or the deadline
	}()
	defer func() {
		c.Close() // ends the stop reader if the client did not
		<-stop
	}()
	bp := downloadBufs.Get().(*[]byte)
	defer downloadBufs.Put(bp)
	var sent uint64
loop:
	for sent < budget {
		select {
		case <-stop:
			break loop
		default:
		}
		k, err := tc.Write((*bp)[:min(uint64(len(*bp)), budget-sent)])
		sent += uint64(k)
		if err != nil {
			return
		}
	}
	var trailer [8]byte
	binary.BigEndian.PutUint64(trailer[:], sent)
	if _, err := tc.Write(trailer[:]); err != nil {
		return
	}
	// Counted before close_notify goes out, so that a client that saw it
	// also sees the count.
	b.sent.Add(int64(sent))
	if err := tc.CloseWrite(); err != nil {
		return
	}
	// The deferred close waits for the client's stop byte or close (the
	// deadline bounds it): closing first could reset the connection while
	// the client still reads.
	<-stop
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
