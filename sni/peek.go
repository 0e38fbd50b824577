package sni

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Peek buffers come from a pool so that steady-state Peek allocates only
// the Hello and the PeekedConn. A typical hello (about 1.8 KB with a
// post-quantum key share) fits the initial 4 KiB; buffers grown past 16 KiB
// for a rare huge hello are left to the garbage collector.
const (
	peekBufSize    = 4 << 10
	maxPooledBytes = 16 << 10
)

// peekState is the pooled working memory of one Peek.
type peekState struct {
	buf []byte
	raw RawHello
}

var peekPool = sync.Pool{New: func() any { return new(peekState) }}

func getPeekState() *peekState {
	st := peekPool.Get().(*peekState)
	if st.buf == nil {
		st.buf = make([]byte, 0, peekBufSize)
	}
	return st
}

func putPeekState(st *peekState) {
	if cap(st.buf) > maxPooledBytes {
		st.buf = nil
	}
	st.buf = st.buf[:0]
	st.raw.reset() // drop slices into buf
	if cap(st.raw.scratch) > maxPooledBytes {
		st.raw.scratch = nil
	}
	peekPool.Put(st)
}

func peek(c net.Conn, lim Limits) (*Hello, *PeekedConn, error) {
	lim = lim.withDefaults()
	if lim.Timeout > 0 {
		if err := c.SetReadDeadline(time.Now().Add(lim.Timeout)); err != nil {
			return nil, nil, fmt.Errorf("sni: setting ClientHello deadline: %w", err)
		}
		defer c.SetReadDeadline(time.Time{})
	}
	st := getPeekState()
	buf := st.buf[:0]
	// Invariant at the top of the loop: len(buf) < need <= lim.MaxBytes,
	// so there is always room to read one more byte.
	need, waiting := 1, "record.header"
	for {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(max(2*cap(buf), need), lim.MaxBytes))
			copy(nb, buf)
			buf = nb
		}
		n, rerr := c.Read(buf[len(buf):min(cap(buf), lim.MaxBytes)])
		buf = buf[:len(buf)+n]
		if len(buf) >= need {
			switch perr := ParseHello(buf, &st.raw); perr {
			case nil, ErrNoSNI:
				st.buf = buf
				hello := newHello(&st.raw)
				return hello, &PeekedConn{raw: c, st: st, buf: buf}, perr
			case ErrIncomplete:
				need, waiting = st.raw.Need, st.raw.waiting
				if need > lim.MaxBytes {
					st.buf = buf
					putPeekState(st)
					return nil, nil, fmt.Errorf("sni: ClientHello needs at least %d bytes, limit %d: %w", need, lim.MaxBytes, ErrTooLarge)
				}
			default:
				st.buf = buf
				putPeekState(st)
				return nil, nil, perr
			}
		}
		if rerr != nil {
			st.buf = buf
			putPeekState(st)
			return nil, nil, readError(rerr, len(buf), waiting)
		}
	}
}

// readError turns a read error before a whole hello into Peek's errors.
func readError(err error, have int, waiting string) error {
	var ne net.Error
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("sni: ClientHello after %d bytes: %w: %w", have, ErrTimeout, err)
	case err == io.EOF && have == 0:
		return &MalformedError{Field: waiting, Offset: 0, Err: io.EOF}
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return &MalformedError{Field: waiting, Offset: have, Err: io.ErrUnexpectedEOF}
	}
	return fmt.Errorf("sni: reading ClientHello: %w", err)
}

// newHello copies what routing needs out of h.
func newHello(h *RawHello) *Hello {
	hello := &Hello{ServerName: string(h.ServerName)}
	n := 0
	for range h.ALPN() {
		n++
	}
	if n > 0 {
		hello.ALPN = make([]string, 0, n)
		for p := range h.ALPN() {
			hello.ALPN = append(hello.ALPN, alpnString(p))
		}
	}
	return hello
}

// alpnString returns common protocol names without allocating.
func alpnString(p []byte) string {
	switch string(p) {
	case "h2":
		return "h2"
	case "http/1.1":
		return "http/1.1"
	case "istio":
		return "istio"
	case "istio-peer-exchange":
		return "istio-peer-exchange"
	case "istio-http/1.0":
		return "istio-http/1.0"
	case "istio-http/1.1":
		return "istio-http/1.1"
	case "istio-h2":
		return "istio-h2"
	}
	return string(p)
}

// PeekedConn is the connection Peek returns: reads first drain the peeked
// ClientHello bytes, then go to the underlying conn.
//
// Read, WriteTo and WriteBufferedTo consume the peeked bytes and must be
// called from one goroutine (the one copying client to upstream). The other
// methods go straight to the underlying conn and are as safe for concurrent
// use as it is; Close does not touch the peeked bytes, so it may be called
// from any goroutine. Once the peeked bytes are consumed their buffer goes
// back to a pool and a PeekedConn holds only a few words.
type PeekedConn struct {
	raw net.Conn
	st  *peekState // nil once released
	buf []byte     // peeked bytes not yet consumed; aliases st.buf
}

var (
	_ net.Conn    = (*PeekedConn)(nil)
	_ io.WriterTo = (*PeekedConn)(nil)
)

// Raw returns the underlying connection, e.g. to unwrap a *net.TCPConn and
// let the kernel splice once the peeked bytes are written upstream.
func (p *PeekedConn) Raw() net.Conn { return p.raw }

// Buffered returns how many peeked bytes are not yet consumed.
func (p *PeekedConn) Buffered() int { return len(p.buf) }

// Unread returns the peeked bytes not yet consumed, without consuming
// them. The slice is valid until they are consumed.
func (p *PeekedConn) Unread() []byte { return p.buf }

// Read reads the peeked bytes first and then from the underlying conn. It
// never mixes the two in one call.
func (p *PeekedConn) Read(b []byte) (int, error) {
	if len(p.buf) == 0 {
		p.release()
		return p.raw.Read(b)
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	if len(p.buf) == 0 {
		p.release()
	}
	return n, nil
}

// WriteBufferedTo writes the peeked bytes not yet consumed to w and then
// returns their buffer to the pool; afterwards Read goes straight to the
// underlying conn. On a write error the unwritten bytes stay buffered.
func (p *PeekedConn) WriteBufferedTo(w io.Writer) (int64, error) {
	if len(p.buf) == 0 {
		p.release()
		return 0, nil
	}
	n, err := w.Write(p.buf)
	p.buf = p.buf[n:]
	if err == nil && len(p.buf) != 0 {
		err = io.ErrShortWrite
	}
	if len(p.buf) == 0 {
		p.release()
	}
	return int64(n), err
}

// WriteTo writes the peeked bytes to w, then copies the underlying conn to
// w until EOF with io.Copy, which splices in the kernel when both ends are
// TCP sockets. It makes io.Copy(upstream, peekedConn) take that path.
func (p *PeekedConn) WriteTo(w io.Writer) (int64, error) {
	n, err := p.WriteBufferedTo(w)
	if err != nil {
		return n, err
	}
	m, err := io.Copy(w, p.raw)
	return n + m, err
}

func (p *PeekedConn) release() {
	if p.st != nil {
		putPeekState(p.st)
		p.st, p.buf = nil, nil
	}
}

// Write writes to the underlying conn.
func (p *PeekedConn) Write(b []byte) (int, error) { return p.raw.Write(b) }

// Close closes the underlying conn. The peeked bytes, if any are left,
// are left to the garbage collector.
func (p *PeekedConn) Close() error { return p.raw.Close() }

// CloseWrite half-closes the underlying conn if it supports it (TCP, Unix
// sockets); otherwise it returns errors.ErrUnsupported.
func (p *PeekedConn) CloseWrite() error {
	if cw, ok := p.raw.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// LocalAddr returns the underlying conn's local address.
func (p *PeekedConn) LocalAddr() net.Addr { return p.raw.LocalAddr() }

// RemoteAddr returns the underlying conn's remote address.
func (p *PeekedConn) RemoteAddr() net.Addr { return p.raw.RemoteAddr() }

// SetDeadline sets the underlying conn's deadlines.
func (p *PeekedConn) SetDeadline(t time.Time) error { return p.raw.SetDeadline(t) }

// SetReadDeadline sets the underlying conn's read deadline.
func (p *PeekedConn) SetReadDeadline(t time.Time) error { return p.raw.SetReadDeadline(t) }

// SetWriteDeadline sets the underlying conn's write deadline.
func (p *PeekedConn) SetWriteDeadline(t time.Time) error { return p.raw.SetWriteDeadline(t) }
