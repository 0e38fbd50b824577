package e2e

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestBridgeBenchmark measures the bridge against a direct connection and
// a local route, in one run on the bridge topology's namespaces. It is a
// measurement, not a check: it runs only under `make bench`
// (MESHGATE_BRIDGE_BENCH=1) and fails only when a connection fails.
//
//	direct:  client in netB → backend in netB
//	local:   client in netA → gw-a → backend in netA
//	bridged: client in netA → gw-a → HBONE → gw-b1/gw-b2 → backend in netB
//
// Every connection is a full TLS handshake with the backend (PASSTHROUGH,
// the client verifies the backend's certificate) and one ping; bulk is
// one download; idle memory is RSS right after opening the connections
// and Pss after they settle, of the real gateway processes.
func TestBridgeBenchmark(t *testing.T) {
	if os.Getenv("MESHGATE_BRIDGE_BENCH") == "" {
		t.Skip("a benchmark: run by make bench (MESHGATE_BRIDGE_BENCH=1)")
	}
	f := startBridgeFleet(t, benchResources, "warn")
	gwA, gwB1, gwB2 := f.gws[0], f.gws[1], f.gws[2]
	leaf := f.ca.leaf(t, bridgeHost, benchNearHost)
	farBE := startBenchBackend(t, f.nets.netB.name, bnBackendIP+":8443", leaf)
	nearBE := startBenchBackend(t, f.nets.netA.name, bnClientIP+":9443", leaf)
	defer farBE.Close()
	defer nearBE.Close()
	f.waitReady(t)
	for _, r := range []struct {
		g        *bridgeGateway
		id, body string
	}{
		{gwB2, "web-b", fmt.Sprintf(`{"service":%q,"port":8443,"addr":"%s:8443","ttl":"3600s"}`, bridgeHost, bnBackendIP)},
		{gwA, "near-a", fmt.Sprintf(`{"service":%q,"port":8443,"addr":"%s:9443","ttl":"3600s"}`, benchNearHost, bnClientIP)},
	} {
		if out, err := f.admin(t, r.g, "-f", "-X", "PUT", "-d", r.body, f.adminURL(r.g, "/v1/endpoints/"+r.id)); err != nil {
			t.Fatalf("register %s at %s: %v %s", r.id, r.g.name, err, out)
		}
	}
	waitFor(t, 30*time.Second, "gw-a routes web through both B bridges", func() bool {
		out, err := f.admin(t, gwA, f.adminURL(gwA, "/debug/endpoints"))
		return err == nil && strings.Contains(out, bnGwB1WanIP+":15008") && strings.Contains(out, bnGwB2WanIP+":15008") && strings.Contains(out, bnClientIP+":9443")
	})

	modes := []benchMode{
		{name: "direct", ns: f.nets.netB.name, addr: bnBackendIP + ":8443", sni: bridgeHost},
		{name: "local", ns: f.nets.netA.name, addr: bnGwALanIP + ":8443", sni: benchNearHost},
		{name: "bridged", ns: f.nets.netA.name, addr: bnGwALanIP + ":8443", sni: bridgeHost},
	}
	client := &tls.Config{RootCAs: f.ca.pool, MinVersion: tls.VersionTLS13}
	// Warm up: the bridge pool's connections to B exist before measuring.
	for _, m := range modes {
		if _, err := m.conns(client, 1, 20, 10*time.Second); err != nil {
			t.Fatalf("%s warm-up: %v", m.name, err)
		}
	}
	const rounds = 3
	type figures struct{ c1, c16, p50, p90, bulk []float64 }
	res := map[string]*figures{}
	var handshakes []float64
	for round := range rounds {
		for _, m := range modes {
			fg := res[m.name]
			if fg == nil {
				fg = &figures{}
				res[m.name] = fg
			}
			hsBefore := benchHandshakes(t, f, gwA)
			st, err := m.conns(client, 1, 400, 8*time.Second)
			if err != nil {
				t.Fatalf("round %d %s c=1: %v", round, m.name, err)
			}
			fg.c1 = append(fg.c1, st.rate)
			fg.p50 = append(fg.p50, st.p50)
			fg.p90 = append(fg.p90, st.p90)
			st16, err := m.conns(client, 16, 2000, 8*time.Second)
			if err != nil {
				t.Fatalf("round %d %s c=16: %v", round, m.name, err)
			}
			fg.c16 = append(fg.c16, st16.rate)
			if m.name == "bridged" {
				n := st.n + st16.n
				handshakes = append(handshakes, 1000*(benchHandshakes(t, f, gwA)-hsBefore)/float64(n))
			}
			mbps, err := m.bulk(client, benchBulkBytes(), 60*time.Second)
			if err != nil {
				t.Fatalf("round %d %s bulk: %v", round, m.name, err)
			}
			fg.bulk = append(fg.bulk, mbps)
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\nbridge benchmark (%d interleaved rounds, median [min–max]; ratios of medians)\n", rounds)
	fmt.Fprintf(&b, "%-8s %-26s %-26s %-22s %-22s %-26s\n", "path", "conn/s c=1", "conn/s c=16", "new conn p50 ms", "new conn p90 ms", "bulk 1 stream MB/s")
	for _, m := range modes {
		fg := res[m.name]
		fmt.Fprintf(&b, "%-8s %-26s %-26s %-22s %-22s %-26s\n", m.name, spread(fg.c1, "%.0f"), spread(fg.c16, "%.0f"), spread(fg.p50, "%.3f"), spread(fg.p90, "%.3f"), spread(fg.bulk, "%.0f"))
	}
	d, l, br := res["direct"], res["local"], res["bridged"]
	fmt.Fprintf(&b, "ratios: local/direct conn/s c=1 %.2f c=16 %.2f; bridged/local conn/s c=1 %.2f c=16 %.2f; bulk bridged/local %.2f, local/direct %.2f\n",
		median(l.c1)/median(d.c1), median(l.c16)/median(d.c16), median(br.c1)/median(l.c1), median(br.c16)/median(l.c16), median(br.bulk)/median(l.bulk), median(l.bulk)/median(d.bulk))
	fmt.Fprintf(&b, "a bridged new connection adds %.3f ms (p50) and %.3f ms (p90) over a local one\n", median(br.p50)-median(l.p50), median(br.p90)-median(l.p90))
	fmt.Fprintf(&b, "bridge handshakes per 1,000 bridged connections at gw-a (warm pool): %s\n", spread(handshakes, "%.2f"))

	// Idle connections: held open (TLS up, nothing moving).
	const idle = 1000
	for _, m := range modes[1:] {
		before := map[string]procMem{}
		for _, g := range f.gws {
			before[g.name] = readProcMem(t, g.p.cmd.Process.Pid)
		}
		held, err := m.hold(client, idle, 30*time.Second)
		if err != nil {
			t.Fatalf("%s idle: %v", m.name, err)
		}
		after := map[string]procMem{}
		for _, g := range f.gws {
			after[g.name] = readProcMem(t, g.p.cmd.Process.Pid)
		}
		// Settle: the runtime returns what the burst needed.
		settle := time.NewTimer(5 * time.Second)
		<-settle.C
		settled := map[string]procMem{}
		for _, g := range f.gws {
			settled[g.name] = readProcMem(t, g.p.cmd.Process.Pid)
		}
		for _, g := range []*bridgeGateway{gwA, gwB1, gwB2} {
			fmt.Fprintf(&b, "%s: %d idle connections, %s: RSS right after %+.2f KiB/conn (%.1f → %.1f MiB), Pss settled %+.2f KiB/conn\n",
				m.name, idle, g.name,
				float64(after[g.name].rss-before[g.name].rss)/idle, float64(before[g.name].rss)/1024, float64(after[g.name].rss)/1024,
				float64(settled[g.name].pss-before[g.name].pss)/idle)
		}
		for _, c := range held {
			_ = c.Close()
		}
	}
	t.Log(b.String())
	fmt.Print(b.String())
}

const benchNearHost = "near.default.svc.cluster.local"

// benchResources: one PASSTHROUGH listener, web (endpoints only in
// network B) and near (endpoints only in network A).
const benchResources = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench-gw, namespace: istio-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 8443, name: tls, protocol: TLS}
    tls: {mode: PASSTHROUGH}
    hosts: ["default/web.default.svc.cluster.local", "default/near.default.svc.cluster.local"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench, namespace: default}
spec:
  hosts: [web.default.svc.cluster.local, near.default.svc.cluster.local]
  gateways: [istio-system/bench-gw]
  tls:
  - match: [{port: 8443, sniHosts: [web.default.svc.cluster.local]}]
    route: [{destination: {host: web.default.svc.cluster.local, port: {number: 8443}}}]
  - match: [{port: 8443, sniHosts: [near.default.svc.cluster.local]}]
    route: [{destination: {host: near.default.svc.cluster.local, port: {number: 8443}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 8443, name: tls, protocol: TLS}]
  resolution: STATIC
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: near, namespace: default}
spec:
  hosts: [near.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 8443, name: tls, protocol: TLS}]
  resolution: STATIC
`

// inNetns runs fn on an OS thread that has entered the named network
// namespace. The thread stays locked and is discarded with the
// goroutine, so no other goroutine ever runs in that namespace. Sockets
// fn creates belong to the namespace for their whole life.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", name, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		_ = unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// benchBackend is a TLS server in a namespace. Each connection sends one
// command byte: 'p' is answered 'P'; 'b' + 8-byte length is answered with
// that many bytes; 'h' holds the connection until the client closes it.
type benchBackend struct {
	ln net.Listener
	wg sync.WaitGroup
	mu sync.Mutex
	cs map[net.Conn]struct{}
}

func startBenchBackend(t *testing.T, ns, addr string, leaf tls.Certificate) *benchBackend {
	t.Helper()
	b := &benchBackend{cs: map[net.Conn]struct{}{}}
	err := inNetns(ns, func() error {
		ln, err := net.Listen("tcp", addr)
		b.ln = ln
		return err
	})
	if err != nil {
		t.Fatalf("bench backend %s in %s: %v", addr, ns, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{leaf}}
	b.wg.Go(func() {
		for {
			c, err := b.ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.cs[c] = struct{}{}
			b.mu.Unlock()
			b.wg.Go(func() {
				defer func() {
					b.mu.Lock()
					delete(b.cs, c)
					b.mu.Unlock()
					_ = c.Close()
				}()
				b.serve(tls.Server(c, cfg))
			})
		}
	})
	return b
}

var benchChunk = make([]byte, 256<<10)

func (b *benchBackend) serve(c *tls.Conn) {
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	var cmd [9]byte
	if _, err := io.ReadFull(c, cmd[:1]); err != nil {
		return
	}
	switch cmd[0] {
	case 'p':
		_, _ = c.Write([]byte{'P'})
	case 'b':
		if _, err := io.ReadFull(c, cmd[1:9]); err != nil {
			return
		}
		for left := int64(binary.BigEndian.Uint64(cmd[1:9])); left > 0; {
			n := min(left, int64(len(benchChunk)))
			if _, err := c.Write(benchChunk[:n]); err != nil {
				return
			}
			left -= n
		}
	case 'h':
		_, _ = c.Write([]byte{'H'})
		_, _ = io.Copy(io.Discard, c)
	}
}

// Close stops the backend and every connection it holds.
func (b *benchBackend) Close() {
	_ = b.ln.Close()
	b.mu.Lock()
	for c := range b.cs {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// benchMode is one path: where the client runs, what it dials, the SNI.
type benchMode struct{ name, ns, addr, sni string }

type connStats struct {
	n        int
	rate     float64 // connections per second
	p50, p90 float64 // ms per new connection (dial to first answer)
}

func (m benchMode) dial(cfg *tls.Config) (*tls.Conn, error) {
	c := cfg.Clone()
	c.ServerName = m.sni
	return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", m.addr, c)
}

// ping is one new connection: handshake, 'p', 'P', close.
func (m benchMode) ping(cfg *tls.Config) error {
	c, err := m.dial(cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{'p'}); err != nil {
		return err
	}
	var a [1]byte
	if _, err := io.ReadFull(c, a[:]); err != nil || a[0] != 'P' {
		return fmt.Errorf("ping answer %q: %v", a, err)
	}
	return nil
}

// conns opens up to total connections with conc workers, each in the
// mode's namespace, stopping at the time bound.
func (m benchMode) conns(cfg *tls.Config, conc, total int, bound time.Duration) (connStats, error) {
	var (
		mu   sync.Mutex
		lat  []float64
		errs []error
		next int
		wg   sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(bound)
	for range conc {
		wg.Go(func() {
			err := inNetns(m.ns, func() error {
				for {
					mu.Lock()
					if next >= total || time.Now().After(deadline) {
						mu.Unlock()
						return nil
					}
					next++
					mu.Unlock()
					t0 := time.Now()
					if err := m.ping(cfg); err != nil {
						return err
					}
					d := time.Since(t0)
					mu.Lock()
					lat = append(lat, float64(d.Microseconds())/1000)
					mu.Unlock()
				}
			})
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return connStats{}, err
	}
	slices.Sort(lat)
	st := connStats{n: len(lat), rate: float64(len(lat)) / el.Seconds()}
	if len(lat) > 0 {
		st.p50, st.p90 = lat[len(lat)/2], lat[len(lat)*9/10]
	}
	return st, nil
}

// bulk downloads size bytes over one connection and returns MB/s.
func (m benchMode) bulk(cfg *tls.Config, size int64, bound time.Duration) (float64, error) {
	var mbps float64
	err := inNetns(m.ns, func() error {
		c, err := m.dial(cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(bound))
		var cmd [9]byte
		cmd[0] = 'b'
		binary.BigEndian.PutUint64(cmd[1:], uint64(size))
		t0 := time.Now()
		if _, err := c.Write(cmd[:]); err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, c)
		if err != nil {
			return err
		}
		if n != size {
			return fmt.Errorf("bulk got %d bytes, want %d", n, size)
		}
		mbps = float64(size) / 1e6 / time.Since(t0).Seconds()
		return nil
	})
	return mbps, err
}

// hold opens n connections that stay open with nothing moving, in the
// mode's namespace, within the bound.
func (m benchMode) hold(cfg *tls.Config, n int, bound time.Duration) ([]net.Conn, error) {
	var held []net.Conn
	deadline := time.Now().Add(bound)
	err := inNetns(m.ns, func() error {
		for range n {
			if time.Now().After(deadline) {
				return fmt.Errorf("held %d of %d connections within %v", len(held), n, bound)
			}
			c, err := m.dial(cfg)
			if err != nil {
				return err
			}
			held = append(held, c)
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte{'h'}); err != nil {
				return err
			}
			var a [1]byte
			if _, err := io.ReadFull(c, a[:]); err != nil || a[0] != 'H' {
				return fmt.Errorf("hold answer %q: %v", a, err)
			}
			_ = c.SetDeadline(time.Time{})
		}
		return nil
	})
	if err != nil {
		for _, c := range held {
			_ = c.Close()
		}
		return nil, err
	}
	return held, nil
}

// benchHandshakes sums meshgate_hbone_handshakes_total over its labels at
// g.
func benchHandshakes(t *testing.T, f *bridgeFleet, g *bridgeGateway) float64 {
	t.Helper()
	out, err := f.admin(t, g, f.adminURL(g, "/metrics"))
	if err != nil {
		t.Fatalf("metrics of %s: %v", g.name, err)
	}
	var sum float64
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "meshgate_hbone_handshakes_total{") {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			sum += v
		}
	}
	return sum
}

// procMem is a process's memory as users see it, in KiB.
type procMem struct{ rss, pss int64 }

func readProcMem(t *testing.T, pid int) procMem {
	t.Helper()
	field := func(path, key string) int64 {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, key+":"); ok {
				kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
				return kb
			}
		}
		t.Fatalf("%s has no %s", path, key)
		return 0
	}
	return procMem{rss: field(fmt.Sprintf("/proc/%d/status", pid), "VmRSS"), pss: field(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss")}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// spread formats "median [min–max]".
func spread(v []float64, f string) string {
	if len(v) == 0 {
		return "-"
	}
	return fmt.Sprintf(f+" ["+f+"–"+f+"]", median(v), slices.Min(v), slices.Max(v))
}

// benchBulkBytes is the bulk download size: MESHGATE_BRIDGE_BENCH_MB
// MiB, default 128.
func benchBulkBytes() int64 {
	if mb, err := strconv.Atoi(os.Getenv("MESHGATE_BRIDGE_BENCH_MB")); err == nil && mb > 0 {
		return int64(mb) << 20
	}
	return 128 << 20
}
