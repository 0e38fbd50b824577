package sni

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/sni/snitest"
)

// The bridge tests run two Servers: A (network net-a), which has no
// endpoint of the services, and B (net-b), which has the real loopback
// backends. A's BridgeDialer opens a real loopback TCP connection to an
// acceptor that hands each stream to B.ConnectBridge, with a one-line
// header standing in for the HBONE CONNECT request.

const (
	bridgeSrvPay = "pay.apps.svc.cluster.local"
	bridgeSrvDB  = "db.apps.svc.cluster.local"
)

// bridgeAcceptor is the receiving side: "service port subset\n" in,
// "OK\n" or "ERR <reason>\n" out, then a relay with half-close.
type bridgeAcceptor struct {
	ln      net.Listener
	s       *Server
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	refused []string // reasons, in order
	served  atomic.Int64
}

func newBridgeAcceptor(t *testing.T, s *Server) *bridgeAcceptor {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &bridgeAcceptor{ln: ln, s: s, conns: map[net.Conn]struct{}{}}
	a.wg.Go(a.acceptLoop)
	t.Cleanup(func() {
		_ = ln.Close()
		a.mu.Lock()
		for c := range a.conns {
			_ = c.Close()
		}
		a.mu.Unlock()
		a.wg.Wait()
	})
	return a
}

func (a *bridgeAcceptor) Addr() string { return a.ln.Addr().String() }

func (a *bridgeAcceptor) refusals() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.refused...)
}

func (a *bridgeAcceptor) acceptLoop() {
	for {
		c, err := a.ln.Accept()
		if err != nil {
			return
		}
		a.mu.Lock()
		a.conns[c] = struct{}{}
		a.mu.Unlock()
		a.wg.Go(func() {
			defer func() {
				a.mu.Lock()
				delete(a.conns, c)
				a.mu.Unlock()
				_ = c.Close()
			}()
			a.serve(c)
		})
	}
}

// bridgeReadLine reads one line byte by byte (nothing past it), at most
// 512 bytes.
func bridgeReadLine(c net.Conn) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) < 512 {
		if _, err := io.ReadFull(c, one); err != nil {
			return "", err
		}
		if one[0] == '\n' {
			return string(b), nil
		}
		b = append(b, one[0])
	}
	return "", errors.New("header line too long")
}

func (a *bridgeAcceptor) serve(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bridgeReadLine(c)
	if err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	f := strings.Split(line, " ")
	if len(f) != 3 {
		return
	}
	port, _ := strconv.ParseUint(f[1], 10, 32)
	up, release, err := a.s.ConnectBridge(context.Background(), f[0], uint32(port), f[2])
	if err != nil {
		var r interface{ RefusalReason() string }
		reason := "?"
		if errors.As(err, &r) {
			reason = r.RefusalReason()
		}
		a.mu.Lock()
		a.refused = append(a.refused, reason)
		a.mu.Unlock()
		_, _ = io.WriteString(c, "ERR "+reason+"\n")
		return
	}
	defer release()
	defer up.Close()
	a.served.Add(1)
	if _, err := io.WriteString(c, "OK\n"); err != nil {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		_, _ = io.Copy(up, c)
		_ = up.(interface{ CloseWrite() error }).CloseWrite()
	})
	_, _ = io.Copy(c, up)
	_ = c.(*net.TCPConn).CloseWrite()
	wg.Wait()
}

// bridgeConn is a bridge stream: not a *net.TCPConn (so the server takes
// the stream relay), with CloseWrite.
type bridgeConn struct{ tc *net.TCPConn }

func (c *bridgeConn) Read(p []byte) (int, error)         { return c.tc.Read(p) }
func (c *bridgeConn) Write(p []byte) (int, error)        { return c.tc.Write(p) }
func (c *bridgeConn) Close() error                       { return c.tc.Close() }
func (c *bridgeConn) CloseWrite() error                  { return c.tc.CloseWrite() }
func (c *bridgeConn) LocalAddr() net.Addr                { return c.tc.LocalAddr() }
func (c *bridgeConn) RemoteAddr() net.Addr               { return c.tc.RemoteAddr() }
func (c *bridgeConn) SetDeadline(t time.Time) error      { return c.tc.SetDeadline(t) }
func (c *bridgeConn) SetReadDeadline(t time.Time) error  { return c.tc.SetReadDeadline(t) }
func (c *bridgeConn) SetWriteDeadline(t time.Time) error { return c.tc.SetWriteDeadline(t) }

// bridgeDialer is a recording BridgeDialer over loopback TCP.
type bridgeDialer struct {
	mu    sync.Mutex
	calls []string // "gateway service port subset"
}

var _ BridgeDialer = (*bridgeDialer)(nil)

func (d *bridgeDialer) DialBridge(ctx context.Context, gateway, service string, port uint32, subset string, early []byte) (net.Conn, error) {
	d.mu.Lock()
	d.calls = append(d.calls, fmt.Sprintf("%s %s %d %s", gateway, service, port, subset))
	d.mu.Unlock()
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", gateway)
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	if dl, ok := ctx.Deadline(); ok {
		_ = tc.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(tc, "%s %d %s\n", service, port, subset); err != nil {
		_ = tc.Close()
		return nil, err
	}
	line, err := bridgeReadLine(tc)
	if err != nil || line != "OK" {
		_ = tc.Close()
		return nil, fmt.Errorf("bridge refused: %q, %v", line, err)
	}
	if _, err := tc.Write(early); err != nil {
		_ = tc.Close()
		return nil, err
	}
	_ = tc.SetDeadline(time.Time{})
	return &bridgeConn{tc: tc}, nil
}

func (d *bridgeDialer) Calls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.calls...)
}

// bridgeSetB is network B's config: pay (TLS backend, subsets v1) and db
// (TCP backend), both MESH_INTERNAL; secret is exported to its own
// namespace only.
func bridgeSetB(t *testing.T, pay, db string) *config.Set {
	secret := serverServiceEntry(t, "secret", "secret.apps.svc.cluster.local", 443, "TLS", true, []string{db}, nil)
	secret.Spec.ExportTo = []string{"."}
	return &config.Set{
		ServiceEntries: []*config.ServiceEntry{
			serverServiceEntry(t, "pay", bridgeSrvPay, 8443, "TLS", true, []string{pay}, []map[string]string{{"version": "v1"}}),
			serverServiceEntry(t, "db", bridgeSrvDB, 5432, "TCP", true, []string{db}, nil),
			secret,
		},
		DestinationRules: []*config.DestinationRule{serverDR("pay", bridgeSrvPay, ConnPolicy{}, map[string]map[string]string{"v1": {"version": "v1"}})},
	}
}

// bridgeSetA is network A's config: a PASSTHROUGH server on 15443 routing
// pay.example.com to pay v1, a TCP server on 9000 routing to db.
func bridgeSetA() *config.Set {
	pt := &config.Gateway{Meta: serverMeta("gw"), Spec: &networking.Gateway{Servers: []*networking.Server{
		{Name: "tls", Port: &networking.Port{Number: 15443, Name: "tls", Protocol: "TLS"}, Hosts: []string{"*"}, Tls: &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_PASSTHROUGH}},
		{Name: "tcp", Port: &networking.Port{Number: 9000, Name: "tcp", Protocol: "TCP"}, Hosts: []string{"*"}},
	}}}
	vs := &networking.VirtualService{Hosts: []string{"*"}, Gateways: []string{"gw"},
		Tls: []*networking.TLSRoute{{Match: []*networking.TLSMatchAttributes{{SniHosts: []string{"pay.example.com", "outbound_.8443_.v1_." + bridgeSrvPay}}},
			Route: []*networking.RouteDestination{{Destination: &networking.Destination{Host: bridgeSrvPay, Subset: "v1", Port: &networking.PortSelector{Number: 8443}}}}}},
		Tcp: []*networking.TCPRoute{{Match: []*networking.L4MatchAttributes{{Port: 9000}},
			Route: []*networking.RouteDestination{{Destination: &networking.Destination{Host: bridgeSrvDB, Port: &networking.PortSelector{Number: 5432}}}}}},
	}
	return &config.Set{
		Gateways:         []*config.Gateway{pt},
		VirtualServices:  []*config.VirtualService{{Meta: serverMeta("vs"), Spec: vs}},
		DestinationRules: []*config.DestinationRule{serverDR("pay", bridgeSrvPay, ConnPolicy{ConnectTimeout: 5 * time.Second}, map[string]map[string]string{"v1": {"version": "v1"}})},
	}
}

// bridgeEntries are A's view of B's endpoints: one gateway entry per
// service and gateway (gateway 15443 address, bridge address).
func bridgeEntries(gws ...[2]string) []CatalogEndpoint {
	var out []CatalogEndpoint
	for _, g := range gws {
		out = append(out,
			CatalogEndpoint{Host: bridgeSrvPay, Port: 8443, Endpoint: Endpoint{Addr: g[0], Bridge: g[1], Network: "net-b", Gateway: true, Labels: map[string]string{"version": "v1"}}},
			CatalogEndpoint{Host: bridgeSrvDB, Port: 5432, Endpoint: Endpoint{Addr: g[0], Bridge: g[1], Network: "net-b", Gateway: true}})
	}
	return out
}

type bridgePair struct {
	a, b    *serverHarness
	acc     *bridgeAcceptor
	dialer  *bridgeDialer
	ca      *snitest.CA
	pay     *snitest.Backend
	db      *snitest.Backend
	gw15443 string // B gateway's AUTO_PASSTHROUGH address: must never be dialled by a bridged route
}

func newBridgePair(t *testing.T, withBridge bool, extraGateways ...[2]string) *bridgePair {
	t.Helper()
	p := &bridgePair{dialer: &bridgeDialer{}, ca: snitest.NewCA(t)}
	p.pay = snitest.NewTLSBackend(t, p.ca, "pay.example.com")
	p.db = snitest.NewTCPBackend(t)
	p.b = newServerHarness(t, nil)
	tb, err := NewBuilder(DefaultBuilderConfig()).Build(BuildInput{Config: bridgeSetB(t, p.pay.Addr(), p.db.Addr()), Node: NodeInfo{Name: "gw-b", Network: "net-b", Bridge: true}})
	if err != nil {
		t.Fatal(err)
	}
	p.b.apply(t, tb)
	p.acc = newBridgeAcceptor(t, p.b.s)
	p.gw15443 = snitest.ClosedAddr(t)
	p.a = newServerHarness(t, func(c *ServerConfig) {
		if withBridge {
			c.Bridge = p.dialer
		}
	})
	gws := append(extraGateways, [2]string{p.gw15443, p.acc.Addr()})
	ta, err := NewBuilder(DefaultBuilderConfig()).Build(BuildInput{Config: bridgeSetA(), Node: NodeInfo{Name: "gw-a", Network: "net-a", Bridge: withBridge},
		Endpoints: bridgeEntries(gws...)})
	if err != nil {
		t.Fatal(err)
	}
	p.a.apply(t, ta)
	return p
}

// TestServerBridgePassthrough: a real TLS client reaches, through A and
// the bridge, B's backend, whose own certificate it verifies; bytes and
// half-close cross both relays.
func TestServerBridgePassthrough(t *testing.T) {
	p := newBridgePair(t, true)
	addr := p.a.addr(t, "tcp/0.0.0.0:15443")
	for i := range 3 {
		msg := strings.Repeat(fmt.Sprintf("m%d", i), 20000) // > one copy buffer
		got, st := serverTLSEcho(t, addr, p.ca.ClientConfig("pay.example.com"), msg)
		if got != msg {
			t.Fatalf("echo #%d through the bridge = %d bytes, want %d", i, len(got), len(msg))
		}
		if len(st.PeerCertificates) == 0 || st.PeerCertificates[0].DNSNames[0] != "pay.example.com" {
			t.Fatalf("peer certificate %v, want the backend's own pay.example.com", st.PeerCertificates)
		}
	}
	want := p.acc.Addr() + " " + bridgeSrvPay + " 8443 v1"
	for _, c := range p.dialer.Calls() {
		if c != want {
			t.Fatalf("DialBridge calls = %q, want each %q", p.dialer.Calls(), want)
		}
	}
	if n := len(p.dialer.Calls()); n != 3 {
		t.Fatalf("DialBridge calls = %d, want 3", n)
	}
	if n := p.pay.Accepts(); n != 3 {
		t.Fatalf("B's backend accepts = %d, want 3", n)
	}
	line := p.a.log.waitClose(t, "pay.example.com", closeEOF)
	if line["upstream"] != "bridge:"+p.acc.Addr() {
		t.Fatalf("access log upstream = %q, want bridge:%s", line["upstream"], p.acc.Addr())
	}
	if line["bytes_rx"] == "0" || line["bytes_tx"] == "0" {
		t.Fatalf("access log bytes = rx %s tx %s, want both counted", line["bytes_rx"], line["bytes_tx"])
	}
	snitest.WaitFor(t, "A and B to finish every connection", func() bool { return p.a.s.Active() == 0 && p.pay.Open() == 0 })
}

// TestServerBridgeTCP: a plain TCP route whose endpoints are only in B.
func TestServerBridgeTCP(t *testing.T) {
	p := newBridgePair(t, true)
	c, err := net.Dial("tcp", p.a.addr(t, "tcp/0.0.0.0:9000"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "select 1"); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "select 1" {
		t.Fatalf("TCP echo through the bridge = %q, %v; want %q", got, err, "select 1")
	}
	if calls := p.dialer.Calls(); len(calls) != 1 || calls[0] != p.acc.Addr()+" "+bridgeSrvDB+" 5432 " {
		t.Fatalf("DialBridge calls = %q, want one for db:5432 without subset", calls)
	}
	p.a.log.waitLine(t, "tcp close=eof", func(m map[string]string) bool {
		return m["close"] == closeEOF && m["upstream"] == "bridge:"+p.acc.Addr()
	})
}

// TestServerBridgeNextGateway: B's first gateway is dead (its bridge
// port refuses); every connection still succeeds, retried at once on the
// other gateway, and each failure is counted.
func TestServerBridgeNextGateway(t *testing.T) {
	dead := [2]string{"127.0.0.1:1", snitest.ClosedAddr(t)}
	p := newBridgePair(t, true, dead)
	addr := p.a.addr(t, "tcp/0.0.0.0:15443")
	for i := range 4 {
		if got, _ := serverTLSEcho(t, addr, p.ca.ClientConfig("pay.example.com"), "x"); got != "x" {
			t.Fatalf("connection %d with a dead first gateway = %q, want %q", i, got, "x")
		}
	}
	if n := p.acc.served.Load(); n != 4 {
		t.Fatalf("B served %d bridge streams, want 4", n)
	}
	fails := serverMetric(t, p.a.s.m.connectFailures)
	if fails < 1 || fails > 4 {
		t.Fatalf("connect failures = %v, want between 1 and 4 (one per connection that picked the dead gateway first)", fails)
	}
	if n := p.a.refused(t, ReasonUpstream); n != 0 {
		t.Fatalf("refused{upstream} = %v, want 0", n)
	}
}

// TestServerBridgeNotConfigured: without a Bridge, a route whose
// endpoints are only in another network is refused and nothing is
// dialled (the gateway's 15443 would refuse a non-mesh client anyway).
func TestServerBridgeNotConfigured(t *testing.T) {
	p := newBridgePair(t, false)
	before := p.a.refused(t, ReasonNoEndpoint)
	serverExpectRefused(t, p.a.addr(t, "tcp/0.0.0.0:15443"), snitest.ClientHello(t, "pay.example.com"))
	snitest.WaitFor(t, "refused_total{reason=no_endpoint}", func() bool { return p.a.refused(t, ReasonNoEndpoint) == before+1 })
	if n := serverMetric(t, p.a.s.m.connectFailures); n != 0 {
		t.Fatalf("connect failures = %v, want 0: nothing may be dialled", n)
	}
}

// TestServerConnectBridgeRefusals: the receiving side refuses what it
// does not serve, counts it by reason and dials nothing.
func TestServerConnectBridgeRefusals(t *testing.T) {
	p := newBridgePair(t, true)
	for _, tc := range []struct {
		name    string
		service string
		port    uint32
		subset  string
		want    Reason
	}{
		{"unexported service", "secret.apps.svc.cluster.local", 443, "", ReasonNotExported},
		{"IP address", "127.0.0.1", 8443, "", ReasonUnknownService},
		{"IP address of the backend", strings.Split(p.pay.Addr(), ":")[0], 8443, "", ReasonUnknownService},
		{"localhost", "localhost", 8443, "", ReasonUnknownService},
		{"unknown service", "nope.apps.svc.cluster.local", 8443, "", ReasonUnknownService},
		{"unknown subset", bridgeSrvPay, 8443, "v2", ReasonUnknownSubset},
		{"port the service lacks", bridgeSrvPay, 9443, "", ReasonUnknownPort},
		{"port of another service", bridgeSrvPay, 5432, "", ReasonUnknownPort},
	} {
		t.Run(tc.name, func(t *testing.T) {
			accepts := p.pay.Accepts() + p.db.Accepts()
			before := p.b.refused(t, tc.want)
			c, release, err := p.b.s.ConnectBridge(t.Context(), tc.service, tc.port, tc.subset)
			if err == nil {
				release()
				_ = c.Close()
				t.Fatalf("ConnectBridge(%q, %d, %q) succeeded, want refusal %s", tc.service, tc.port, tc.subset, tc.want)
			}
			var r interface{ RefusalReason() string }
			if !errors.As(err, &r) || r.RefusalReason() != string(tc.want) {
				t.Fatalf("ConnectBridge(%q, %d, %q) error = %v, want RefusalReason %s", tc.service, tc.port, tc.subset, err, tc.want)
			}
			if got := p.b.refused(t, tc.want); got != before+1 {
				t.Fatalf("refused_total{reason=%s} = %v, want %v", tc.want, got, before+1)
			}
			if n := p.pay.Accepts() + p.db.Accepts(); n != accepts {
				t.Fatalf("backend accepts = %d, want %d: a refused request dials nothing", n, accepts)
			}
		})
	}
	// A served request holds a connection slot until release.
	c, release, err := p.b.s.ConnectBridge(t.Context(), bridgeSrvDB, 5432, "")
	if err != nil {
		t.Fatalf("ConnectBridge(db) error = %v", err)
	}
	cl := p.b.r.Load().clusterFor(bridgeSrvDB, 5432, "")
	if cl.Active() != 1 {
		t.Fatalf("cluster active = %d after ConnectBridge, want 1", cl.Active())
	}
	release()
	release() // idempotent
	_ = c.Close()
	if cl.Active() != 0 {
		t.Fatalf("cluster active = %d after release, want 0", cl.Active())
	}
}

// TestServerBridgeSplitHorizon: an Istio sidecar's connection (an
// AUTO_PASSTHROUGH name with a mesh ALPN) to a remote-only service keeps
// Istio's split horizon: its hello is replayed to the remote gateway's
// 15443 address, not carried over the bridge.
func TestServerBridgeSplitHorizon(t *testing.T) {
	ca := snitest.NewCA(t)
	remote15443 := snitest.NewTLSBackend(t, ca, "pay.example.com") // stands in for B's AUTO_PASSTHROUGH port
	d := &bridgeDialer{}
	h := newServerHarness(t, func(c *ServerConfig) { c.Bridge = d })
	tbl, err := NewBuilder(DefaultBuilderConfig()).Build(BuildInput{Config: bridgeSetA(), Node: NodeInfo{Name: "gw-a", Network: "net-a", Bridge: true},
		Endpoints: bridgeEntries([2]string{remote15443.Addr(), snitest.ClosedAddr(t)})})
	if err != nil {
		t.Fatal(err)
	}
	h.apply(t, tbl)
	name := "outbound_.8443_.v1_." + bridgeSrvPay
	got, _ := serverTLSEcho(t, h.addr(t, "tcp/0.0.0.0:15443"), ca.IdentityClientConfig(name, []string{"pay.example.com"}, "istio-peer-exchange", "istio"), "sidecar")
	if got != "sidecar" {
		t.Fatalf("split-horizon echo = %q, want %q", got, "sidecar")
	}
	if names := remote15443.ServerNames(); len(names) != 1 || names[0] != name {
		t.Fatalf("remote 15443 saw SNI %q, want the replayed %q", names, name)
	}
	if calls := d.Calls(); len(calls) != 0 {
		t.Fatalf("DialBridge calls = %q, want none for split-horizon traffic", calls)
	}
	line := h.log.waitClose(t, name, closeEOF)
	if line["upstream"] != remote15443.Addr() {
		t.Fatalf("access log upstream = %q, want the gateway's 15443 address %s", line["upstream"], remote15443.Addr())
	}
}

// TestServerBridgeIdleTimeout: the stream relay closes a quiet bridged
// connection after the route's idle timeout and logs why.
func TestServerBridgeIdleTimeout(t *testing.T) {
	p := newBridgePair(t, true)
	set := bridgeSetA()
	set.DestinationRules = nil
	set.DestinationRules = append(set.DestinationRules, serverDR("db", bridgeSrvDB, ConnPolicy{IdleTimeout: 50 * time.Millisecond}, nil))
	tbl, err := NewBuilder(DefaultBuilderConfig()).Build(BuildInput{Config: set, Node: NodeInfo{Name: "gw-a", Network: "net-a", Bridge: true},
		Endpoints: bridgeEntries([2]string{p.gw15443, p.acc.Addr()})})
	if err != nil {
		t.Fatal(err)
	}
	p.a.apply(t, tbl)
	c, err := net.Dial("tcp", p.a.addr(t, "tcp/0.0.0.0:9000"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo = %q, %v; want ping", buf, err)
	}
	line := p.a.log.waitLine(t, "close=idle_timeout", func(m map[string]string) bool { return m["close"] == closeIdle })
	if line["bytes_rx"] != "4" || line["bytes_tx"] != "4" {
		t.Fatalf("access log bytes rx=%s tx=%s, want 4 and 4", line["bytes_rx"], line["bytes_tx"])
	}
	if _, err := io.ReadAll(c); err != nil {
		t.Logf("read after idle close: %v", err)
	}
}

// TestServerBridgeCloseForces: Close ends a bridged connection in the
// stream relay (access log close=closed) and waits for its goroutines.
func TestServerBridgeCloseForces(t *testing.T) {
	p := newBridgePair(t, true)
	c, err := net.Dial("tcp", p.a.addr(t, "tcp/0.0.0.0:9000"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("echo: %v", err)
	}
	if err := p.a.s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	line := p.a.log.waitLine(t, "close=closed", func(m map[string]string) bool { return m["close"] == closeShutdown })
	if line["upstream"] != "bridge:"+p.acc.Addr() {
		t.Fatalf("closed connection upstream = %q, want the bridge", line["upstream"])
	}
	if n := p.a.s.Active(); n != 0 {
		t.Fatalf("Active() after Close = %d, want 0", n)
	}
	if _, err := io.ReadAll(c); err != nil && !errors.Is(err, io.EOF) {
		t.Logf("client read after Close: %v", err)
	}
}

// TestServerBridgeMaxDuration: maxConnectionDuration closes a bridged
// connection however busy it is.
func TestServerBridgeMaxDuration(t *testing.T) {
	p := newBridgePair(t, true)
	set := bridgeSetA()
	set.DestinationRules = []*config.DestinationRule{serverDR("db", bridgeSrvDB, ConnPolicy{MaxConnectionDuration: 100 * time.Millisecond}, nil)}
	tbl, err := NewBuilder(DefaultBuilderConfig()).Build(BuildInput{Config: set, Node: NodeInfo{Name: "gw-a", Network: "net-a", Bridge: true},
		Endpoints: bridgeEntries([2]string{p.gw15443, p.acc.Addr()})})
	if err != nil {
		t.Fatal(err)
	}
	p.a.apply(t, tbl)
	c, err := net.Dial("tcp", p.a.addr(t, "tcp/0.0.0.0:9000"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 1)
	for i := 0; i < 100000; i++ { // bounded: the relay must close long before
		if _, err := c.Write([]byte{'x'}); err != nil {
			break
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			break
		}
	}
	p.a.log.waitLine(t, "close=max_duration", func(m map[string]string) bool { return m["close"] == closeMaxDuration })
}
