package sni

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/meshgate/meshgate/sni/snitest"
)

// newServerBench starts a quiet server for benchmarks, closed at cleanup.
func newServerBench(b *testing.B, tbl *Table) *Server {
	b.Helper()
	cfg := DefaultServerConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Listen = serverLoopbackListen
	s, err := NewServer(cfg, &Router{})
	if err != nil {
		b.Fatalf("NewServer: %v", err)
	}
	b.Cleanup(func() { _ = s.Close() })
	if err := s.Apply(b.Context(), tbl); err != nil {
		b.Fatalf("Apply: %v", err)
	}
	return s
}

func serverBenchAddr(b *testing.B, s *Server) string {
	b.Helper()
	for _, a := range s.Addrs() {
		return a.String()
	}
	b.Fatal("server has no listener")
	return ""
}

// BenchmarkProxyHandshake measures a full TLS handshake (ECDSA P-256,
// TLS 1.3, no resumption) straight to the backend and through the proxy, in
// the same run. The difference is the proxy's per-connection cost: accept,
// peek, route, dial, replay. The proxy run also reports what it costs the
// process over the direct run, per connection: heap bytes allocated and
// goroutines created (the client and backend, in this process too, cost
// the same on both paths).
func BenchmarkProxyHandshake(b *testing.B) {
	ca := snitest.NewCA(b)
	be := snitest.NewTLSBackend(b, ca, "hs.example.com")
	s := newServerBench(b, serverPassthroughTable(b, map[string][]string{"hs.example.com": {be.Addr()}}, ConnPolicy{}))
	cfg := ca.ClientConfig("hs.example.com")
	var direct serverBenchCost
	for _, path := range []struct{ name, addr string }{
		{"direct", be.Addr()},
		{"proxy", serverBenchAddr(b, s)},
	} {
		b.Run(path.name, func(b *testing.B) {
			before := readServerBenchCost()
			for b.Loop() {
				c, err := tls.Dial("tcp", path.addr, cfg)
				if err != nil {
					b.Fatalf("tls.Dial(%s): %v", path.addr, err)
				}
				_ = c.Close()
			}
			// The proxy's side of the last connections may still run.
			snitest.WaitFor(b, "the proxy to finish its connections", func() bool { return s.Active() == 0 })
			cost := readServerBenchCost().sub(before).per(b.N)
			cost.ns = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			if path.name == "direct" {
				direct = cost
			} else if direct.ns > 0 {
				b.ReportMetric(cost.ns-direct.ns, "ns-over-direct/op")
				b.ReportMetric(cost.bytes-direct.bytes, "proxy-B/op")
				b.ReportMetric(cost.goroutines-direct.goroutines, "proxy-goroutines/op")
			}
		})
	}
}

// serverBenchCost is what a benchmark cost the process: heap bytes
// allocated and goroutines created (runtime/metrics), and time.
type serverBenchCost struct{ ns, bytes, goroutines float64 }

func readServerBenchCost() serverBenchCost {
	ss := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(ss)
	return serverBenchCost{bytes: float64(ss[0].Value.Uint64()), goroutines: float64(ss[1].Value.Uint64())}
}

func (c serverBenchCost) sub(o serverBenchCost) serverBenchCost {
	return serverBenchCost{bytes: c.bytes - o.bytes, goroutines: c.goroutines - o.goroutines}
}

func (c serverBenchCost) per(n int) serverBenchCost {
	return serverBenchCost{bytes: c.bytes / float64(n), goroutines: c.goroutines / float64(n)}
}

// BenchmarkProxyThroughput sends a real ClientHello and then bulk bytes to
// a discarding backend, over 1 and 8 parallel streams, straight and through
// the proxy. MB/s counts payload delivered to the backend.
func BenchmarkProxyThroughput(b *testing.B) {
	sink := snitest.NewBackend(b, snitest.BackendConfig{Discard: true})
	s := newServerBench(b, serverPassthroughTable(b, map[string][]string{"bulk.example.com": {sink.Addr()}}, ConnPolicy{}))
	hello := snitest.ClientHello(b, "bulk.example.com")
	chunk := make([]byte, 128<<10)
	for _, streams := range []int{1, 8} {
		for _, path := range []struct{ name, addr string }{
			{"direct", sink.Addr()},
			{"proxy", serverBenchAddr(b, s)},
		} {
			b.Run(fmt.Sprintf("streams=%d/%s", streams, path.name), func(b *testing.B) {
				start := sink.Received()
				conns := make([]net.Conn, streams)
				for i := range conns {
					c, err := net.Dial("tcp", path.addr)
					if err != nil {
						b.Fatalf("dial %s: %v", path.addr, err)
					}
					if _, err := c.Write(hello); err != nil {
						b.Fatalf("write hello: %v", err)
					}
					conns[i] = c
				}
				b.SetBytes(int64(len(chunk) * streams))
				b.ResetTimer()
				var wg sync.WaitGroup
				for _, c := range conns {
					wg.Go(func() {
						for range b.N {
							if _, err := c.Write(chunk); err != nil {
								b.Errorf("write: %v", err)
								return
							}
						}
					})
				}
				wg.Wait()
				want := start + int64(streams)*(int64(len(hello))+int64(b.N)*int64(len(chunk)))
				deadline := time.Now().Add(20 * time.Second)
				for sink.Received() < want && time.Now().Before(deadline) {
					time.Sleep(50 * time.Microsecond)
				}
				b.StopTimer()
				if got := sink.Received(); got < want {
					b.Fatalf("backend received %d bytes, want %d", got, want)
				}
				for _, c := range conns {
					_ = c.Close()
				}
			})
		}
	}
}

// BenchmarkProxyRoundTrip measures one 64-byte request and its echo on an
// established connection, straight and through the proxy: the latency the
// proxy adds per exchange on a busy connection.
func BenchmarkProxyRoundTrip(b *testing.B) {
	be := snitest.NewTCPBackend(b)
	s := newServerBench(b, serverPassthroughTable(b, map[string][]string{"rt.example.com": {be.Addr()}}, ConnPolicy{}))
	hello := snitest.ClientHello(b, "rt.example.com")
	for _, path := range []struct{ name, addr string }{
		{"direct", be.Addr()},
		{"proxy", serverBenchAddr(b, s)},
	} {
		b.Run(path.name, func(b *testing.B) {
			c, err := net.Dial("tcp", path.addr)
			if err != nil {
				b.Fatalf("dial %s: %v", path.addr, err)
			}
			defer c.Close()
			// The echo backend returns the hello first.
			if _, err := c.Write(hello); err != nil {
				b.Fatalf("write hello: %v", err)
			}
			if _, err := io.ReadFull(c, make([]byte, len(hello))); err != nil {
				b.Fatalf("read hello echo: %v", err)
			}
			buf := make([]byte, 64)
			for b.Loop() {
				if _, err := c.Write(buf); err != nil {
					b.Fatalf("write: %v", err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatalf("read: %v", err)
				}
			}
		})
	}
}

// serverMemNow returns live heap plus goroutine stacks after two GCs, and
// the open fd count.
func serverMemNow() (uint64, int) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse, snitest.OpenFDs()
}

// BenchmarkIdleConnections opens 2,000 connections that send a ClientHello
// and then stay quiet, first straight to a backend that holds them, then
// through the proxy, and reports the proxy's own cost per idle connection:
// Go heap plus stacks (bytes/conn), file descriptors (fds/conn, from
// /proc/self/fd) and goroutines (goroutines/conn). The client and backend
// live in this process too; their share is measured by the direct run and
// subtracted. Kernel socket memory is not included.
func BenchmarkIdleConnections(b *testing.B) {
	const n = 2000
	hold := snitest.NewBackend(b, snitest.BackendConfig{Hold: true})
	s := newServerBench(b, serverPassthroughTable(b, map[string][]string{"idle.example.com": {hold.Addr()}}, ConnPolicy{}))
	proxy := serverBenchAddr(b, s)
	hello := snitest.ClientHello(b, "idle.example.com")
	open := func(addr string) []net.Conn {
		cs := make([]net.Conn, 0, n)
		for range n {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatalf("dial %s: %v", addr, err)
			}
			if _, err := c.Write(hello); err != nil {
				b.Fatalf("write hello: %v", err)
			}
			cs = append(cs, c)
		}
		return cs
	}
	closeAll := func(cs []net.Conn) {
		for _, c := range cs {
			_ = c.Close()
		}
		hold.CloseConns()
	}
	var bytesPer, fdsPer, gPer float64
	for b.Loop() {
		base := hold.Accepts()
		m0, f0 := serverMemNow()
		g0 := runtime.NumGoroutine()
		cs := open(hold.Addr())
		snitest.WaitFor(b, "direct connections accepted", func() bool { return hold.Accepts() == base+n })
		m1, f1 := serverMemNow()
		g1 := runtime.NumGoroutine()
		closeAll(cs)

		base = hold.Accepts()
		m2, f2 := serverMemNow()
		g2 := runtime.NumGoroutine()
		cs = open(proxy)
		snitest.WaitFor(b, "proxied connections spliced", func() bool {
			return hold.Accepts() == base+n && s.sp.live() == n
		})
		snitest.WaitFor(b, "handlers to exit", func() bool { return runtime.NumGoroutine()-g2 <= g1-g0 })
		m3, f3 := serverMemNow()
		g3 := runtime.NumGoroutine()
		closeAll(cs)
		snitest.WaitFor(b, "proxied connections to end", func() bool { return s.Active() == 0 })

		bytesPer += (float64(m3) - float64(m2) - (float64(m1) - float64(m0))) / n
		fdsPer += float64((f3-f2)-(f1-f0)) / n
		gPer += float64((g3-g2)-(g1-g0)) / n
	}
	b.ReportMetric(bytesPer/float64(b.N), "bytes/conn")
	b.ReportMetric(fdsPer/float64(b.N), "fds/conn")
	b.ReportMetric(gPer/float64(b.N), "goroutines/conn")
}
