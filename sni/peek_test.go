package sni

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// peekTestLimits keeps slow-client tests short on a real clock.
var peekTestLimits = Limits{MaxBytes: MaxHelloBytes, Timeout: 10 * time.Second}

// peekPipe returns the server end of a net.Pipe whose client end writes in
// and then closes. Cleanup closes both ends and waits for the writer.
func peekPipe(t *testing.T, in []byte) net.Conn {
	t.Helper()
	cli, srv := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		cli.Write(in) // fails early if Peek stops reading
		cli.Close()
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return srv
}

// peekTCPPair returns both ends of a loopback TCP connection, closed by
// Cleanup.
func peekTCPPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on loopback: %v", err)
	}
	defer ln.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ch <- accepted{c, err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial loopback: %v", err)
	}
	a := <-ch
	if a.err != nil {
		c.Close()
		t.Fatalf("accept on loopback: %v", a.err)
	}
	t.Cleanup(func() {
		c.Close()
		a.c.Close()
	})
	return c.(*net.TCPConn), a.c.(*net.TCPConn)
}

func TestPeekRealClientsReplay(t *testing.T) {
	for _, rh := range realHellos() {
		t.Run(rh.name, func(t *testing.T) {
			srv := peekPipe(t, rh.b)
			hello, conn, err := Peek(srv, peekTestLimits)
			if err != nil {
				t.Fatalf("Peek(%s) = %v, want nil", rh.name, err)
			}
			if hello.ServerName != rh.sni || !slices.Equal(hello.ALPN, rh.alpn) {
				t.Fatalf("Peek(%s) = %+v, want {%q %q}", rh.name, *hello, rh.sni, rh.alpn)
			}
			pc, ok := conn.(*PeekedConn)
			if !ok || pc.Raw() != srv {
				t.Fatalf("Peek returned conn %T with Raw %v, want *PeekedConn over the pipe", conn, pc)
			}
			got, err := io.ReadAll(conn)
			if err != nil || !bytes.Equal(got, rh.b) {
				t.Fatalf("reading the PeekedConn gave %d bytes (%v), want the %d hello bytes", len(got), err, len(rh.b))
			}
		})
	}
}

// TestPeekHandshakeThrough completes a real TLS handshake through the
// PeekedConn over loopback TCP: the replayed bytes must be exact.
func TestPeekHandshakeThrough(t *testing.T) {
	const name = "reviews.default.svc.cluster.local"
	cert, pool := helloTestCert(t, name)
	cli, srv := peekTCPPair(t)
	errc := make(chan error, 1)
	go func() {
		c := tls.Client(cli, &tls.Config{ServerName: name, RootCAs: pool, NextProtos: []string{"istio"}})
		if err := c.Handshake(); err != nil {
			errc <- err
			return
		}
		_, err := c.Write([]byte("ping"))
		errc <- err
	}()
	hello, conn, err := Peek(srv, peekTestLimits)
	if err != nil {
		t.Fatalf("Peek(loopback) = %v, want nil", err)
	}
	if hello.ServerName != name || !IsMeshALPN(hello.ALPN) {
		t.Fatalf("Peek(loopback) = %+v, want ServerName %q with mesh ALPN", *hello, name)
	}
	s := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"istio"}})
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("TLS server over the PeekedConn read %q, %v; want \"ping\"", buf, err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("TLS client through the PeekedConn: %v", err)
	}
	if s.ConnectionState().NegotiatedProtocol != "istio" {
		t.Fatalf("negotiated ALPN %q, want istio", s.ConnectionState().NegotiatedProtocol)
	}
}

func TestPeekHostile(t *testing.T) {
	pq := goPQHello(t)
	big := helloMessage(helloSpec{exts: []helloExtension{sniExtension("a.example"), {typ: 21, data: make([]byte, 30000)}}})
	huge := helloMessage(helloSpec{exts: []helloExtension{sniExtension("a.example"), {typ: 21, data: make([]byte, 40000)}, {typ: 22, data: make([]byte, 40000)}}})
	for _, tc := range []struct {
		name  string
		in    []byte
		lim   Limits
		want  error  // errors.Is
		field string // *MalformedError.Field, if set
		off   int    // *MalformedError.Offset, if field is set
	}{
		{name: "empty", in: nil, want: io.EOF, field: "record.header", off: 0},
		{name: "truncated header", in: pq[:3], want: io.ErrUnexpectedEOF, field: "record.header", off: 3},
		{name: "truncated hello", in: pq[:len(pq)/2], want: io.ErrUnexpectedEOF, field: "record.fragment", off: len(pq) / 2},
		{name: "truncated second record", in: helloRecords(unrecord(t, pq), 1000)[:1008], want: io.ErrUnexpectedEOF, field: "record.header", off: 1008},
		{name: "http request", in: []byte("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"), want: ErrNotTLS},
		{name: "one byte of http", in: []byte("G"), want: ErrNotTLS},
		{name: "application data", in: helloRecord(0x17, 0x0303, []byte("hello")), want: ErrNotTLS},
		{name: "alert", in: helloRecord(0x15, 0x0303, []byte{2, 40}), want: ErrNotTLS},
		{name: "sslv2", in: []byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15}, want: ErrNotTLS},
		{name: "record length 0xffff", in: []byte{0x16, 3, 1, 0xff, 0xff}, want: ErrTooLarge},
		{name: "hello over 64 KiB", in: helloRecords(huge, maxRecordLen), want: ErrTooLarge},
		{name: "1-byte records past the cap", in: helloRecords(big, 1), want: ErrTooLarge},
		{name: "hello over MaxBytes", in: pq, lim: Limits{MaxBytes: 1024}, want: ErrTooLarge},
		{name: "duplicate server_name", in: withExts(sniExtension("a.example"), sniExtension("b.example")), field: "extension.duplicate", off: 70},
		{name: "IP literal", in: withExts(sniExtension("192.168.0.1")), want: ErrInvalidName, field: "server_name.host_name", off: 71},
		{name: "non-ASCII name", in: withExts(sniExtension("ä.example")), want: ErrInvalidName, field: "server_name.host_name", off: 61},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := peekTestLimits
			if tc.lim.MaxBytes != 0 {
				lim = tc.lim
			}
			hello, conn, err := Peek(peekPipe(t, tc.in), lim)
			if hello != nil || conn != nil {
				t.Fatalf("Peek(% x…) = %v, %T, %v; want nil hello and conn on error", tc.in[:min(len(tc.in), 8)], hello, conn, err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Peek(% x…) error = %v, want %v", tc.in[:min(len(tc.in), 8)], err, tc.want)
			}
			if tc.field != "" {
				var me *MalformedError
				if !errors.As(err, &me) || me.Field != tc.field || me.Offset != tc.off {
					t.Fatalf("Peek(% x…) error = %v, want *MalformedError{%q at %d}", tc.in[:min(len(tc.in), 8)], err, tc.field, tc.off)
				}
			}
		})
	}
}

func TestPeekNoSNI(t *testing.T) {
	in := withExts(alpnExtension("h2"))
	hello, conn, err := Peek(peekPipe(t, in), peekTestLimits)
	if !errors.Is(err, ErrNoSNI) {
		t.Fatalf("Peek(hello without SNI) error = %v, want ErrNoSNI", err)
	}
	if hello == nil || hello.ServerName != "" || !slices.Equal(hello.ALPN, []string{"h2"}) || conn == nil {
		t.Fatalf("Peek(hello without SNI) = %v, %v; want a Hello with ALPN [h2] and a conn", hello, conn)
	}
	if got, _ := io.ReadAll(conn); !bytes.Equal(got, in) {
		t.Fatalf("PeekedConn replayed %d bytes, want the %d hello bytes", len(got), len(in))
	}
}

// notifyConn reports the size of every successful Read, so a writer can
// wait until the reader has consumed one segment before sending the next.
type notifyConn struct {
	net.Conn
	reads chan int
}

func (c *notifyConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.reads <- n
	}
	return n, err
}

// TestPeekAcrossSegments sends real hellos in several TCP writes over
// loopback, waiting after each write until Peek has read it, so Peek must
// reassemble the hello from separate reads.
func TestPeekAcrossSegments(t *testing.T) {
	pq := goPQHello(t)
	multi := helloRecords(unrecord(t, pq), 600)
	for _, tc := range []struct {
		name string
		in   []byte
		cuts []int
	}{
		{"inside record header", pq, []int{1, 3}},
		{"after record header", pq, []int{5}},
		{"inside handshake header", pq, []int{7}},
		{"halves", pq, []int{len(pq) / 2}},
		{"last byte alone", pq, []int{len(pq) - 1}},
		{"every 100 bytes", pq, []int{100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200, 1300, 1400, 1500, 1600, 1700}},
		{"byte by byte start", pq, []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"records split at headers", multi, []int{605, 608, 1210, 1213}},
		{"records, one write each", multi, []int{605, 1210}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, srv := peekTCPPair(t)
			nc := &notifyConn{Conn: srv, reads: make(chan int, len(tc.in)+1)}
			type result struct {
				h   *Hello
				c   net.Conn
				err error
			}
			res := make(chan result, 1)
			go func() {
				h, c, err := Peek(nc, peekTestLimits)
				res <- result{h, c, err}
			}()
			sent, read := 0, 0
			for _, cut := range append(slices.Clone(tc.cuts), len(tc.in)) {
				if _, err := cli.Write(tc.in[sent:cut]); err != nil {
					t.Fatalf("writing bytes %d..%d: %v", sent, cut, err)
				}
				sent = cut
				for read < sent && cut < len(tc.in) {
					select {
					case n := <-nc.reads:
						read += n
					case r := <-res:
						t.Fatalf("Peek returned (%v, %v) after %d of %d bytes, want it to wait for the rest", r.h, r.err, read, len(tc.in))
					}
				}
			}
			r := <-res
			if r.err != nil || r.h.ServerName != apSNI {
				t.Fatalf("Peek(hello in %d writes) = %v, %v; want ServerName %q", len(tc.cuts)+1, r.h, r.err, apSNI)
			}
			var got bytes.Buffer
			if _, err := r.c.(*PeekedConn).WriteBufferedTo(&got); err != nil || !bytes.Equal(got.Bytes(), tc.in) {
				t.Fatalf("WriteBufferedTo wrote %d bytes (%v), want the %d hello bytes", got.Len(), err, len(tc.in))
			}
		})
	}
}

// TestPeekTimeout runs a client that sends part of a hello and stalls.
func TestPeekTimeout(t *testing.T) {
	pq := goPQHello(t)
	t.Run("pipe fake clock", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cli, srv := net.Pipe()
			defer cli.Close()
			defer srv.Close()
			go cli.Write(pq[:100])
			start := time.Now()
			_, conn, err := Peek(srv, Limits{Timeout: 3 * time.Second})
			if !errors.Is(err, ErrTimeout) || conn != nil {
				t.Fatalf("Peek(stalled client) = %v, %v; want ErrTimeout", conn, err)
			}
			if waited := time.Since(start); waited != 3*time.Second {
				t.Fatalf("Peek(stalled client) gave up after %v on the fake clock, want 3s", waited)
			}
		})
	})
	t.Run("loopback", func(t *testing.T) {
		cli, srv := peekTCPPair(t)
		if _, err := cli.Write(pq[:100]); err != nil {
			t.Fatal(err)
		}
		_, _, err := Peek(srv, Limits{Timeout: 50 * time.Millisecond})
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("Peek(stalled loopback client) = %v, want ErrTimeout", err)
		}
		// The deadline is cleared: the rest of the hello is still readable.
		if _, err := cli.Write(pq[100:]); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(srv, make([]byte, len(pq)-100)); err != nil {
			t.Fatalf("reading after a timed-out Peek: %v", err)
		}
	})
	t.Run("deadline cleared after success", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cli, srv := net.Pipe()
			defer cli.Close()
			defer srv.Close()
			go func() {
				cli.Write(pq)
				time.Sleep(time.Minute) // long past the Peek deadline
				cli.Write([]byte("more"))
			}()
			_, conn, err := Peek(srv, Limits{Timeout: time.Second})
			if err != nil {
				t.Fatalf("Peek = %v, want nil", err)
			}
			pc := conn.(*PeekedConn)
			if _, err := pc.WriteBufferedTo(io.Discard); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(pc, buf); err != nil || string(buf) != "more" {
				t.Fatalf("reading a minute after Peek gave %q, %v; want \"more\" (deadline not cleared?)", buf, err)
			}
		})
	})
}

func TestPeekedConnWriteBufferedTo(t *testing.T) {
	pq := goPQHello(t)
	cli, srv := peekTCPPair(t)
	if _, err := cli.Write(pq); err != nil {
		t.Fatal(err)
	}
	_, conn, err := Peek(srv, peekTestLimits)
	if err != nil {
		t.Fatalf("Peek = %v", err)
	}
	pc := conn.(*PeekedConn)
	if pc.Buffered() != len(pq) {
		t.Fatalf("Buffered() = %d after Peek, want %d", pc.Buffered(), len(pq))
	}
	var up bytes.Buffer
	n, err := pc.WriteBufferedTo(&up)
	if err != nil || n != int64(len(pq)) || !bytes.Equal(up.Bytes(), pq) {
		t.Fatalf("WriteBufferedTo = %d, %v; want %d hello bytes, nil", n, err, len(pq))
	}
	if pc.Buffered() != 0 || pc.st != nil || pc.buf != nil {
		t.Fatalf("after WriteBufferedTo the PeekedConn still holds its buffer (Buffered %d)", pc.Buffered())
	}
	if n, err := pc.WriteBufferedTo(&up); n != 0 || err != nil {
		t.Fatalf("second WriteBufferedTo = %d, %v; want 0, nil", n, err)
	}
	// Then reads come straight from the socket; io.Copy uses WriteTo.
	cli.Write([]byte("after"))
	cli.CloseWrite()
	var rest bytes.Buffer
	if _, err := io.Copy(&rest, pc); err != nil || rest.String() != "after" {
		t.Fatalf("io.Copy from the PeekedConn = %q, %v; want \"after\"", rest.String(), err)
	}
}

// TestPeekedConnCopyToTCP proxies a peeked loopback connection to a
// loopback upstream with io.Copy, the way a splice proxy does.
func TestPeekedConnCopyToTCP(t *testing.T) {
	pq := goPQHello(t)
	cli, srv := peekTCPPair(t)
	upCli, upSrv := peekTCPPair(t)
	want := append(slices.Clone(pq), "payload after the hello"...)
	go func() {
		cli.Write(want)
		cli.CloseWrite()
	}()
	_, conn, err := Peek(srv, peekTestLimits)
	if err != nil {
		t.Fatalf("Peek = %v", err)
	}
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(upCli, conn)
		upCli.CloseWrite()
		copied <- err
	}()
	got, err := io.ReadAll(upSrv)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("upstream received %d bytes (%v), want the %d bytes the client sent", len(got), err, len(want))
	}
	if err := <-copied; err != nil {
		t.Fatalf("io.Copy(upstream, PeekedConn) = %v", err)
	}
}

// failWriter accepts n bytes, then fails.
type failWriter struct{ n int }

func (w *failWriter) Write(b []byte) (int, error) {
	k := min(w.n, len(b))
	w.n -= k
	if k < len(b) {
		return k, errors.New("upstream reset")
	}
	return k, nil
}

func TestPeekedConnPartialWrite(t *testing.T) {
	pq := goPQHello(t)
	_, conn, err := Peek(peekPipe(t, pq), peekTestLimits)
	if err != nil {
		t.Fatalf("Peek = %v", err)
	}
	pc := conn.(*PeekedConn)
	n, err := pc.WriteBufferedTo(&failWriter{n: 100})
	if err == nil || n != 100 || pc.Buffered() != len(pq)-100 {
		t.Fatalf("WriteBufferedTo(failing writer) = %d, %v, Buffered %d; want 100, error, %d", n, err, pc.Buffered(), len(pq)-100)
	}
	rest := make([]byte, len(pq))
	k, _ := io.ReadFull(pc, rest[:len(pq)-100])
	if !bytes.Equal(rest[:k], pq[100:]) {
		t.Fatalf("Read after a failed write gave %d bytes, want the %d unwritten hello bytes", k, len(pq)-100)
	}
}

func TestPeekedConnCloseWrite(t *testing.T) {
	cli, srv := peekTCPPair(t)
	cli.Write(goPQHello(t))
	_, conn, err := Peek(srv, peekTestLimits)
	if err != nil {
		t.Fatalf("Peek = %v", err)
	}
	if err := conn.(*PeekedConn).CloseWrite(); err != nil {
		t.Fatalf("CloseWrite on TCP = %v, want nil", err)
	}
	if n, err := cli.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("client read after CloseWrite = %d, %v; want 0, EOF", n, err)
	}
	_, pconn, err := Peek(peekPipe(t, goPQHello(t)), peekTestLimits)
	if err != nil {
		t.Fatalf("Peek(pipe) = %v", err)
	}
	if err := pconn.(*PeekedConn).CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("CloseWrite on net.Pipe = %v, want errors.ErrUnsupported", err)
	}
}

// TestPeekIdleMemory holds many peeked loopback connections after their
// hellos went upstream and checks what each one retains on the heap.
func TestPeekIdleMemory(t *testing.T) {
	const conns = 200
	pq := goPQHello(t)
	type pair struct{ cli, srv *net.TCPConn }
	pairs := make([]pair, conns)
	for i := range pairs {
		pairs[i].cli, pairs[i].srv = peekTCPPair(t)
		if _, err := pairs[i].cli.Write(pq); err != nil {
			t.Fatal(err)
		}
	}
	hellos := make([]*Hello, conns)
	peeked := make([]net.Conn, conns)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i, p := range pairs {
		h, c, err := Peek(p.srv, peekTestLimits)
		if err != nil {
			t.Fatalf("Peek(conn %d) = %v", i, err)
		}
		if _, err := c.(*PeekedConn).WriteBufferedTo(io.Discard); err != nil {
			t.Fatal(err)
		}
		hellos[i], peeked[i] = h, c
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / conns
	t.Logf("heap retained per idle peeked connection: %d bytes", per)
	if per > 3<<10 {
		t.Fatalf("each idle peeked connection retains %d heap bytes, want at most 3 KiB", per)
	}
	runtime.KeepAlive(hellos)
	runtime.KeepAlive(peeked)
}

func TestPeekLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      Limits
		wantErr bool
		want    Limits // after defaults
	}{
		{"zero", Limits{}, false, DefaultLimits()},
		{"default", DefaultLimits(), false, DefaultLimits()},
		{"small", Limits{MaxBytes: 512, Timeout: time.Second}, false, Limits{MaxBytes: 512, Timeout: time.Second}},
		{"no deadline", Limits{Timeout: -1}, false, Limits{MaxBytes: MaxHelloBytes, Timeout: -1}},
		{"too small", Limits{MaxBytes: 10}, true, Limits{MaxBytes: minLimitBytes, Timeout: 5 * time.Second}},
		{"too large", Limits{MaxBytes: 1 << 20}, true, Limits{MaxBytes: MaxHelloBytes, Timeout: 5 * time.Second}},
		{"negative", Limits{MaxBytes: -1}, true, DefaultLimits()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.in.Validate(); (err != nil) != tc.wantErr {
				t.Fatalf("%+v.Validate() = %v, want error %v", tc.in, err, tc.wantErr)
			}
			if got := tc.in.withDefaults(); got != tc.want {
				t.Fatalf("%+v with defaults = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

// BenchmarkPeek peeks hellos sent back to back on one connection: the
// client sends the next hello once the previous one went upstream.
func BenchmarkPeek(b *testing.B) {
	pq := goPQHello(b)
	for _, transport := range []string{"pipe", "loopback"} {
		b.Run(transport, func(b *testing.B) {
			var cli, srv net.Conn
			if transport == "pipe" {
				cli, srv = net.Pipe()
				b.Cleanup(func() { cli.Close(); srv.Close() })
			} else {
				cli, srv = peekTCPPair(b)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				ack := make([]byte, 1)
				for {
					if _, err := cli.Write(pq); err != nil {
						return
					}
					if _, err := cli.Read(ack); err != nil {
						return
					}
				}
			}()
			ack := []byte{1}
			b.SetBytes(int64(len(pq)))
			b.ReportAllocs()
			for b.Loop() {
				h, c, err := Peek(srv, peekTestLimits)
				if err != nil || h.ServerName != apSNI {
					b.Fatalf("Peek = %v, %v", h, err)
				}
				if _, err := c.(*PeekedConn).WriteBufferedTo(io.Discard); err != nil {
					b.Fatal(err)
				}
				if _, err := srv.Write(ack); err != nil {
					b.Fatal(err)
				}
			}
			srv.Close()
			cli.Close()
			<-done
		})
	}
}

func ExamplePeekedConn_WriteBufferedTo() {
	cli, srv := net.Pipe()
	go func() {
		tls.Client(cli, &tls.Config{ServerName: "reviews.default.svc.cluster.local", NextProtos: []string{"istio"}}).Handshake()
	}()
	hello, conn, err := Peek(srv, DefaultLimits())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(hello.ServerName, hello.ALPN, IsMeshALPN(hello.ALPN))

	// Send the hello to the chosen upstream, then splice the rest.
	var upstream strings.Builder
	pc := conn.(*PeekedConn)
	n, _ := pc.WriteBufferedTo(&upstream)
	fmt.Println(n == int64(upstream.Len()), pc.Buffered())
	cli.Close()
	srv.Close()
	// Output:
	// reviews.default.svc.cluster.local [istio] true
	// true 0
}
