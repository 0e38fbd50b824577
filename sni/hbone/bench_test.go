package hbone_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/meshgate/meshgate/mtls"
	"github.com/meshgate/meshgate/sni/hbone"
)

// The benchmarks compare the tunnel with a direct loopback connection in
// the same run: ratios, not absolute figures, are what they report.
//
//	go test -run '^$' -bench . -benchmem ./sni/hbone/

const bulkChunk = 1 << 20

// sink reads everything, then answers the byte count's low byte.
func sink(c *net.TCPConn) {
	n, _ := io.Copy(io.Discard, c)
	c.Write([]byte{byte(n)})
}

// echoOne answers one byte with one byte, then closes.
func echoOne(c *net.TCPConn) {
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err == nil {
		c.Write(b)
	}
}

func bulk(b *testing.B, dial func() net.Conn) {
	buf := make([]byte, 64<<10)
	b.SetBytes(bulkChunk)
	b.ResetTimer()
	c := dial()
	for range b.N {
		for sent := 0; sent < bulkChunk; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	if _, err := io.ReadAll(c); err != nil {
		b.Fatal(err)
	}
	c.Close()
}

// BenchmarkBulkDirect: one TCP stream to the sink, MB/s.
func BenchmarkBulkDirect(b *testing.B) {
	addr := backend(b, sink)
	bulk(b, func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		return c
	})
}

// BenchmarkBulkTunnel: one tunnelled stream to the same kind of sink.
func BenchmarkBulkTunnel(b *testing.B) {
	f := newFixture(b, sink, nil)
	bulk(b, func() net.Conn { return f.dial(b, "") })
}

// BenchmarkBulkTunnelSmallWindow: the tunnel with HTTP/2's default 64 KiB
// windows, to show what the larger windows buy.
func BenchmarkBulkTunnelSmallWindow(b *testing.B) {
	f := newFixture(b, sink, func(sc *hbone.ServerConfig, pc *hbone.PoolConfig) {
		sc.StreamWindow, sc.ConnWindow = 65535, 65535
		pc.StreamWindow, pc.ConnWindow = 65535, 65535
	})
	bulk(b, func() net.Conn { return f.dial(b, "") })
}

func oneByte(b *testing.B, c net.Conn) {
	if _, err := c.Write([]byte{7}); err != nil {
		b.Fatal(err)
	}
	r := make([]byte, 1)
	if _, err := io.ReadFull(c, r); err != nil {
		b.Fatal(err)
	}
	c.Close()
}

// BenchmarkNewConnDirect: a new TCP connection and a one-byte exchange.
func BenchmarkNewConnDirect(b *testing.B) {
	addr := backend(b, echoOne)
	b.ResetTimer()
	for range b.N {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		oneByte(b, c)
	}
}

// BenchmarkNewStreamWarm: a new tunnelled stream on a warm pool and a
// one-byte exchange; reports the TLS handshakes it took per 1000 streams.
func BenchmarkNewStreamWarm(b *testing.B) {
	f := newFixture(b, echoOne, nil)
	oneByte(b, f.dial(b, "")) // warm the pool
	before := counter(b, f.cliReg, "meshgate_hbone_handshakes_total")
	b.ResetTimer()
	for range b.N {
		oneByte(b, f.dial(b, ""))
	}
	b.StopTimer()
	hs := counter(b, f.cliReg, "meshgate_hbone_handshakes_total") - before
	b.ReportMetric(hs*1000/float64(b.N), "handshakes/1000streams")
}

// BenchmarkNewMTLSConn: what a tunnel without a pool would pay: a new
// mutual-TLS 1.3 connection with node certificates for each connection.
func BenchmarkNewMTLSConn(b *testing.B) {
	m := newMesh(b)
	srvCfg := mtls.MutualConfig(m.source(b, gatewayID), mtls.AuthorizeOneOf(gatewayID))
	cliCfg := mtls.MutualConfig(m.source(b, gatewayID), mtls.AuthorizeOneOf(gatewayID))
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := make([]byte, 1)
				if _, err := io.ReadFull(c, r); err == nil {
					c.Write(r)
				}
			}()
		}
	}()
	b.ResetTimer()
	for range b.N {
		c, err := tls.Dial("tcp", ln.Addr().String(), cliCfg)
		if err != nil {
			b.Fatal(err)
		}
		oneByte(b, c)
	}
}

// BenchmarkIdleStreamMemory holds 1000 idle tunnelled streams and reports
// the heap they hold (both ends: pool and server in one process).
func BenchmarkIdleStreamMemory(b *testing.B) {
	const n = 1000
	f := newFixture(b, func(c *net.TCPConn) { io.Copy(io.Discard, c) }, func(_ *hbone.ServerConfig, pc *hbone.PoolConfig) { pc.MaxStreamsPerConn = 250 })
	for range b.N {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		conns := make([]net.Conn, 0, n)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		for range n {
			c, err := f.pool.DialBridge(ctx, f.addr, webHost, 8080, "", nil)
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
		}
		cancel()
		runtime.GC()
		runtime.ReadMemStats(&m1)
		b.ReportMetric(float64(m1.HeapInuse-m0.HeapInuse)/n, "heapB/idle-stream")
		b.ReportMetric(float64(runtime.NumGoroutine())/n, "goroutines/idle-stream")
		for _, c := range conns {
			c.Close()
		}
	}
}

// BenchmarkBulkDirectTLS: one mutual-TLS 1.3 stream with node
// certificates, no HTTP/2: the crypto the tunnel cannot avoid.
func BenchmarkBulkDirectTLS(b *testing.B) {
	m := newMesh(b)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", mtls.MutualConfig(m.source(b, gatewayID), mtls.AuthorizeOneOf(gatewayID)))
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		c.Write([]byte{byte(n)})
	}()
	bulk(b, func() net.Conn {
		c, err := tls.Dial("tcp", ln.Addr().String(), mtls.MutualConfig(m.source(b, gatewayID), mtls.AuthorizeOneOf(gatewayID)))
		if err != nil {
			b.Fatal(err)
		}
		return c
	})
}

// source reads an 8-byte count, sends that many bytes and closes.
func source(c *net.TCPConn) {
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	left := int64(binary.BigEndian.Uint64(hdr[:]))
	buf := make([]byte, 64<<10)
	for left > 0 {
		n, err := c.Write(buf[:min(left, int64(len(buf)))])
		if err != nil {
			return
		}
		left -= int64(n)
	}
	_ = c.CloseWrite()
}

// download asks for b.N MiB and reads them until EOF.
func download(b *testing.B, dial func() net.Conn) {
	b.SetBytes(bulkChunk)
	b.ResetTimer()
	c := dial()
	defer c.Close()
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(b.N)*bulkChunk)
	if _, err := c.Write(hdr[:]); err != nil {
		b.Fatal(err)
	}
	n, err := io.CopyBuffer(io.Discard, c, make([]byte, 64<<10))
	if err != nil || n != int64(b.N)*bulkChunk {
		b.Fatalf("downloaded %d bytes, %v; want %d", n, err, int64(b.N)*bulkChunk)
	}
}

// BenchmarkDownloadDirect: one TCP stream from the source, MB/s.
func BenchmarkDownloadDirect(b *testing.B) {
	addr := backend(b, source)
	download(b, func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		return c
	})
}

// BenchmarkDownloadTunnel: the same download through one tunnelled
// stream (the server-to-client direction of the bridge).
func BenchmarkDownloadTunnel(b *testing.B) {
	f := newFixture(b, source, nil)
	download(b, func() net.Conn { return f.dial(b, "") })
}
