package sni

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/sni/snitest"
)

// serverLog records access-log lines.
type serverLog struct {
	mu    sync.Mutex
	lines []map[string]string
}

func (l *serverLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *serverLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *serverLog) WithGroup(string) slog.Handler            { return l }
func (l *serverLog) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{"msg": r.Message}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, m)
	l.mu.Unlock()
	return nil
}

// all returns a copy of the recorded lines.
func (l *serverLog) all() []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// waitLine waits for a line for which match is true and returns it.
func (l *serverLog) waitLine(t *testing.T, what string, match func(map[string]string) bool) map[string]string {
	t.Helper()
	var got map[string]string
	snitest.WaitFor(t, "access log line: "+what, func() bool {
		for _, m := range l.all() {
			if match(m) {
				got = m
				return true
			}
		}
		return false
	})
	return got
}

// waitClose waits for the access-log line of a connection with the given
// sni and close value.
func (l *serverLog) waitClose(t *testing.T, sni, close string) map[string]string {
	t.Helper()
	return l.waitLine(t, "sni="+sni+" close="+close, func(m map[string]string) bool {
		return m["sni"] == sni && m["close"] == close
	})
}

// serverHarness is a Server under test with its logs and registry.
type serverHarness struct {
	s   *Server
	r   *Router
	log *serverLog
	reg *prometheus.Registry
}

// newServerHarness starts a server whose listeners all bind 127.0.0.1:0,
// whatever the table asks, and closes it at cleanup.
func newServerHarness(t testing.TB, mod func(*ServerConfig)) *serverHarness {
	t.Helper()
	h := &serverHarness{r: &Router{}, log: &serverLog{}, reg: prometheus.NewRegistry()}
	cfg := DefaultServerConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.AccessLog = slog.New(h.log)
	cfg.Registerer = h.reg
	cfg.Listen = serverLoopbackListen
	if mod != nil {
		mod(&cfg)
	}
	s, err := NewServer(cfg, h.r)
	if err != nil {
		t.Fatalf("NewServer() error = %v, want nil", err)
	}
	h.s = s
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
	})
	return h
}

// serverLoopbackListen binds every listener to an ephemeral loopback port.
func serverLoopbackListen(ctx context.Context, network, address string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1} // as the server's default Listen
	if network == "tcp" {
		return lc.Listen(ctx, "tcp", "127.0.0.1:0")
	}
	return lc.Listen(ctx, network, address)
}

// apply publishes t and fails the test on error.
func (h *serverHarness) apply(t testing.TB, tbl *Table) {
	t.Helper()
	if err := h.s.Apply(t.Context(), tbl); err != nil {
		t.Fatalf("Apply() error = %v, want nil", err)
	}
}

// addr returns the bound address of the only (or the named) listener.
func (h *serverHarness) addr(t testing.TB, key string) string {
	t.Helper()
	addrs := h.s.Addrs()
	if key == "" && len(addrs) == 1 {
		for _, a := range addrs {
			return a.String()
		}
	}
	a, ok := addrs[key]
	if !ok {
		t.Fatalf("Addrs() = %v, want a listener %q", addrs, key)
	}
	return a.String()
}

// serverMetric reads the value of one counter or gauge series.
func serverMetric(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	go func() { c.Collect(ch); close(ch) }()
	var m dto.Metric
	var v float64
	for pm := range ch {
		if err := pm.Write(&m); err != nil {
			t.Fatalf("metric Write: %v", err)
		}
		switch {
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		case m.Histogram != nil:
			v += float64(m.Histogram.GetSampleCount())
		}
	}
	return v
}

func (h *serverHarness) refused(t *testing.T, r Reason) float64 {
	t.Helper()
	return serverMetric(t, h.s.m.refused.WithLabelValues(string(r)))
}

// serverTLSEcho dials addr with cfg, sends msg, half-closes and returns
// what came back.
func serverTLSEcho(t *testing.T, addr string, cfg *tls.Config, msg string) (string, tls.ConnectionState) {
	t.Helper()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatalf("tls dial %s (SNI %q): %v", addr, cfg.ServerName, err)
	}
	defer c.Close()
	tc := c.(*tls.Conn)
	if _, err := tc.Write([]byte(msg)); err != nil {
		t.Fatalf("Write through proxy (SNI %q): %v", cfg.ServerName, err)
	}
	if err := tc.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite (SNI %q): %v", cfg.ServerName, err)
	}
	got, err := io.ReadAll(tc)
	if err != nil {
		t.Fatalf("ReadAll (SNI %q): %v", cfg.ServerName, err)
	}
	return string(got), tc.ConnectionState()
}

// serverExpectRefused dials addr, writes payload (if any) and expects the
// proxy to close the connection without anything coming back.
func serverExpectRefused(t *testing.T, addr string, payload []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	if len(payload) > 0 {
		if _, err := c.Write(payload); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("Write: %v", err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	if len(got) > 0 {
		t.Fatalf("refused connection returned %q, want nothing", got)
	}
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("ReadAll on a refused connection: %v, want EOF or reset", err)
	}
}

// TestServerPassthroughBySNI: two TLS backends behind one listener; each
// client verifies the certificate of the name it asked for, which only the
// right backend holds, so passthrough is proven end to end.
func TestServerPassthroughBySNI(t *testing.T) {
	snitest.CheckNoLeaks(t)
	ca := snitest.NewCA(t)
	a := snitest.NewTLSBackend(t, ca, "a.example.com")
	b := snitest.NewTLSBackend(t, ca, "b.example.com")
	h := newServerHarness(t, nil)
	h.apply(t, serverPassthroughTable(t, map[string][]string{
		"a.example.com": {a.Addr()},
		"b.example.com": {b.Addr()},
	}, ConnPolicy{}))
	addr := h.addr(t, "")

	for _, tc := range []struct {
		name    string
		sni     string
		backend *snitest.Backend
	}{
		{name: "a", sni: "a.example.com", backend: a},
		{name: "b", sni: "b.example.com", backend: b},
		{name: "a again", sni: "a.example.com", backend: a},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.backend.Accepts()
			got, st := serverTLSEcho(t, addr, ca.ClientConfig(tc.sni), "ping "+tc.sni)
			if got != "ping "+tc.sni {
				t.Fatalf("echo through proxy (SNI %s) = %q, want %q", tc.sni, got, "ping "+tc.sni)
			}
			if leaf := st.PeerCertificates[0]; !slices.Contains(leaf.DNSNames, tc.sni) {
				t.Fatalf("peer certificate names = %v, want %s (the backend's own)", leaf.DNSNames, tc.sni)
			}
			if n := tc.backend.Accepts(); n != before+1 {
				t.Fatalf("backend %s accepts = %d, want %d", tc.sni, n, before+1)
			}
			snitest.WaitFor(t, "the connection to end", func() bool { return h.s.Active() == 0 })
			lines := h.log.all()
			line := lines[len(lines)-1]
			if line["sni"] != tc.sni || line["close"] != closeEOF || line["upstream"] != tc.backend.Addr() || line["listener"] == "" || line["route"] == "" ||
				line["bytes_rx"] == "0" || line["bytes_tx"] == "0" || line["remote"] == "" {
				t.Fatalf("access log line = %v, want sni %s, close eof, upstream %s, listener, route, remote and byte counts", line, tc.sni, tc.backend.Addr())
			}
		})
	}
	if got := slices.Sorted(slices.Values(a.ServerNames())); !slices.Equal(got, []string{"a.example.com", "a.example.com"}) {
		t.Errorf("backend a saw SNI %v, want a.example.com twice", got)
	}
	if n := serverMetric(t, h.s.m.connections); n != 3 {
		t.Errorf("connections_total = %v, want 3", n)
	}
	if n := serverMetric(t, h.s.m.rx); n <= 0 {
		t.Errorf("bytes_total{direction=rx} = %v, want > 0", n)
	}
	if n := serverMetric(t, h.s.m.duration); n != 3 {
		t.Errorf("connection_duration_seconds count = %v, want 3", n)
	}
	if n := serverMetric(t, h.s.m.peek); n != 3 {
		t.Errorf("hello_peek_seconds count = %v, want 3", n)
	}
}

// TestServerAutoPassthrough: Istio cross-network names route to the
// endpoints of the named subset; a mesh ALPN is required. The client
// checks the workload identity in the certificate, as a sidecar would.
func TestServerAutoPassthrough(t *testing.T) {
	snitest.CheckNoLeaks(t)
	ca := snitest.NewCA(t)
	v1 := snitest.NewTLSBackend(t, ca, "v1.reviews.test")
	v2 := snitest.NewTLSBackend(t, ca, "v2.reviews.test")
	const host = "reviews.default.svc.cluster.local"
	h := newServerHarness(t, nil)
	h.apply(t, serverBuild(t, &config.Set{
		Gateways: []*config.Gateway{serverGateway("TLS", networking.ServerTLSSettings_AUTO_PASSTHROUGH, []string{"*.local"}, 15443)},
		ServiceEntries: []*config.ServiceEntry{serverServiceEntry(t, "reviews", host, 9080, "TLS", true,
			[]string{v1.Addr(), v2.Addr()}, []map[string]string{{"version": "v1"}, {"version": "v2"}})},
		DestinationRules: []*config.DestinationRule{serverDR("reviews", host, ConnPolicy{}, map[string]map[string]string{
			"v1": {"version": "v1"}, "v2": {"version": "v2"},
		})},
	}))
	addr := h.addr(t, "")

	for _, tc := range []struct {
		name    string
		sni     string
		alpn    []string
		want    []string // acceptable backend identities; nil = refused
		refusal Reason
	}{
		{name: "subset v1", sni: "outbound_.9080_.v1_." + host, alpn: []string{"istio-peer-exchange", "istio"}, want: []string{"v1.reviews.test"}},
		{name: "subset v2", sni: "outbound_.9080_.v2_." + host, alpn: []string{"istio"}, want: []string{"v2.reviews.test"}},
		{name: "no subset", sni: "outbound_.9080_._." + host, alpn: []string{"istio"}, want: []string{"v1.reviews.test", "v2.reviews.test"}},
		{name: "no mesh alpn", sni: "outbound_.9080_.v1_." + host, alpn: []string{"h2"}, refusal: ReasonALPN},
		{name: "no alpn at all", sni: "outbound_.9080_.v1_." + host, refusal: ReasonALPN},
		{name: "unknown subset", sni: "outbound_.9080_.v3_." + host, alpn: []string{"istio"}, refusal: ReasonNoRoute},
		{name: "wrong port", sni: "outbound_.9081_.v1_." + host, alpn: []string{"istio"}, refusal: ReasonNoRoute},
		{name: "not exported host", sni: "outbound_.9080_.v1_.reviews.default.svc.example.com", alpn: []string{"istio"}, refusal: ReasonNoRoute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			accepts := v1.Accepts() + v2.Accepts()
			if tc.want == nil {
				before := h.refused(t, tc.refusal)
				serverExpectRefused(t, addr, snitest.ClientHello(t, tc.sni, tc.alpn...))
				snitest.WaitFor(t, "refused_total{reason="+string(tc.refusal)+"}", func() bool {
					return h.refused(t, tc.refusal) == before+1
				})
				if n := v1.Accepts() + v2.Accepts(); n != accepts {
					t.Fatalf("backend accepts = %d, want %d: a refused name must not be dialled", n, accepts)
				}
				return
			}
			d := tls.Dialer{Config: ca.IdentityClientConfig(tc.sni, tc.want, tc.alpn...)}
			c, err := d.DialContext(t.Context(), "tcp", addr)
			if err != nil {
				t.Fatalf("dial with SNI %s: %v, want a backend with identity in %v", tc.sni, err, tc.want)
			}
			if _, err := c.Write([]byte("hi")); err != nil {
				t.Fatalf("Write: %v", err)
			}
			buf := make([]byte, 2)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hi" {
				t.Fatalf("echo = %q, %v; want \"hi\"", buf, err)
			}
			_ = c.Close()
			snitest.WaitFor(t, "backends to see the handshake", func() bool {
				return len(v1.ServerNames())+len(v2.ServerNames()) > 0
			})
		})
	}
	// The SNI reaches the backend untouched.
	for _, n := range append(v1.ServerNames(), v2.ServerNames()...) {
		if !strings.HasPrefix(n, "outbound_.9080_.") {
			t.Errorf("backend saw SNI %q, want the AUTO_PASSTHROUGH name", n)
		}
	}
}

// TestServerMaxConnectionDuration: connectionPool.tcp.maxConnectionDuration
// closes a connection however busy it is.
func TestServerMaxConnectionDuration(t *testing.T) {
	ca := snitest.NewCA(t)
	be := snitest.NewTLSBackend(t, ca, "md.example.com")
	h := newServerHarness(t, nil)
	h.apply(t, serverPassthroughTable(t, map[string][]string{"md.example.com": {be.Addr()}},
		ConnPolicy{MaxConnectionDuration: 100 * time.Millisecond}))
	c, err := tls.Dial("tcp", h.addr(t, ""), ca.ClientConfig("md.example.com"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	buf := make([]byte, 1)
	for {
		if _, err := c.Write([]byte("x")); err != nil {
			break
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			break
		}
	}
	h.log.waitClose(t, "md.example.com", closeMaxDuration)
}

// TestServerRefusals: connections the proxy must close without dialling.
func TestServerRefusals(t *testing.T) {
	snitest.CheckNoLeaks(t)
	ca := snitest.NewCA(t)
	be := snitest.NewTLSBackend(t, ca, "known.example.com")
	h := newServerHarness(t, func(c *ServerConfig) {
		c.Limits = Limits{MaxBytes: 4 << 10, Timeout: 300 * time.Millisecond}
	})
	h.apply(t, serverPassthroughTable(t, map[string][]string{"known.example.com": {be.Addr()}}, ConnPolicy{}))
	addr := h.addr(t, "")

	bigHello := snitest.ClientHello(t, "known.example.com", strings.Repeat("x", 200), strings.Repeat("y", 200),
		strings.Repeat("z", 200), strings.Repeat("w", 200), strings.Repeat("v", 200), strings.Repeat("u", 200),
		strings.Repeat("t", 200), strings.Repeat("s", 200), strings.Repeat("r", 200), strings.Repeat("q", 200),
		strings.Repeat("p", 200), strings.Repeat("o", 200), strings.Repeat("n", 200), strings.Repeat("m", 200),
		strings.Repeat("l", 200), strings.Repeat("k", 200), strings.Repeat("j", 200), strings.Repeat("i", 200),
		strings.Repeat("h", 200), strings.Repeat("g", 200), strings.Repeat("f", 200))
	truncated := snitest.ClientHello(t, "known.example.com")
	truncated = truncated[:len(truncated)/2]

	for _, tc := range []struct {
		name    string
		payload []byte
		reason  Reason
	}{
		{name: "unknown sni", payload: snitest.ClientHello(t, "unknown.example.com"), reason: ReasonNoRoute},
		{name: "plain http", payload: []byte("GET / HTTP/1.1\r\nHost: known.example.com\r\n\r\n"), reason: ReasonNotTLS},
		{name: "no sni", payload: snitest.ClientHello(t, ""), reason: ReasonNoSNI},
		{name: "slowloris one byte", payload: []byte{0x16}, reason: ReasonTimeout},
		{name: "silent client", payload: nil, reason: ReasonTimeout},
		{name: "hello over limit", payload: bigHello, reason: ReasonTooLarge},
		{name: "truncated hello then close", payload: truncated, reason: ReasonMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.refused(t, tc.reason)
			accepts := be.Accepts()
			if tc.reason == ReasonMalformed {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				_, _ = c.Write(tc.payload)
				_ = c.(*net.TCPConn).CloseWrite()
				_, _ = io.ReadAll(c)
				_ = c.Close()
			} else {
				serverExpectRefused(t, addr, tc.payload)
			}
			snitest.WaitFor(t, "refused_total{reason="+string(tc.reason)+"} to grow", func() bool {
				return h.refused(t, tc.reason) == before+1
			})
			if n := be.Accepts(); n != accepts {
				t.Fatalf("backend accepts = %d after a %s refusal, want %d (nothing dialled)", n, tc.reason, accepts)
			}
			h.log.waitLine(t, "close=refused:"+string(tc.reason), func(m map[string]string) bool {
				return m["close"] == "refused:"+string(tc.reason)
			})
		})
	}
	if got := h.s.Active(); got != 0 {
		snitest.WaitFor(t, "no active connections", func() bool { return h.s.Active() == 0 })
	}
}

// TestServerPlainTCP: a listener without TLS routes by port alone and
// still half-closes correctly.
func TestServerPlainTCP(t *testing.T) {
	snitest.CheckNoLeaks(t)
	be := snitest.NewBackend(t, snitest.BackendConfig{Trailer: []byte(" bye")})
	h := newServerHarness(t, nil)
	h.apply(t, serverTCPTable(t, be.Addr()))
	c, err := net.Dial("tcp", h.addr(t, ""))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "GET / HTTP/1.0\r\n\r\n bye" {
		t.Fatalf("plain TCP echo = %q, %v; want the request and the trailer", got, err)
	}
	line := h.log.waitClose(t, "", closeEOF)
	if line["upstream"] != be.Addr() {
		t.Fatalf("access log upstream = %q, want %s", line["upstream"], be.Addr())
	}
}

// TestServerHalfClose: the client half-closes its TLS stream; the backend
// still sends afterwards, and the client receives it.
func TestServerHalfClose(t *testing.T) {
	ca := snitest.NewCA(t)
	be := snitest.NewBackend(t, snitest.BackendConfig{CA: ca, Names: []string{"h.example.com"}, Trailer: []byte("|after client EOF")})
	h := newServerHarness(t, nil)
	h.apply(t, serverPassthroughTable(t, map[string][]string{"h.example.com": {be.Addr()}}, ConnPolicy{}))
	got, _ := serverTLSEcho(t, h.addr(t, ""), ca.ClientConfig("h.example.com"), "request")
	if got != "request|after client EOF" {
		t.Fatalf("after CloseWrite the client read %q, want %q", got, "request|after client EOF")
	}
	h.log.waitClose(t, "h.example.com", closeEOF)
}

// TestServerFailover: the first endpoint refuses connections; the proxy
// counts the failure and uses the next one.
func TestServerFailover(t *testing.T) {
	ca := snitest.NewCA(t)
	be := snitest.NewTLSBackend(t, ca, "f.example.com")
	dead := snitest.ClosedAddr(t)
	h := newServerHarness(t, nil)
	h.apply(t, serverPassthroughTable(t, map[string][]string{
		"f.example.com":    {dead, be.Addr()},
		"down.example.com": {dead},
	}, ConnPolicy{ConnectTimeout: 5 * time.Second}))
	addr := h.addr(t, "")

	for i := range 4 {
		got, _ := serverTLSEcho(t, addr, ca.ClientConfig("f.example.com"), "x")
		if got != "x" {
			t.Fatalf("connection %d through failover = %q, want %q", i, got, "x")
		}
	}
	if n := serverMetric(t, h.s.m.connectFailures); n < 1 {
		t.Fatalf("upstream_connect_failures_total = %v after 4 connections with a dead first endpoint, want >= 1", n)
	}

	before := h.refused(t, ReasonUpstream)
	serverExpectRefused(t, addr, snitest.ClientHello(t, "down.example.com"))
	snitest.WaitFor(t, "refused_total{reason=upstream}", func() bool { return h.refused(t, ReasonUpstream) == before+1 })
	h.log.waitClose(t, "down.example.com", closeUpstream)
}

// TestServerIdleTimeout: a quiet spliced connection is closed after the
// route's idle timeout.
func TestServerIdleTimeout(t *testing.T) {
	ca := snitest.NewCA(t)
	be := snitest.NewTLSBackend(t, ca, "idle.example.com")
	h := newServerHarness(t, nil)
	h.apply(t, serverPassthroughTable(t, map[string][]string{"idle.example.com": {be.Addr()}},
		ConnPolicy{IdleTimeout: 100 * time.Millisecond}))
	c, err := tls.Dial("tcp", h.addr(t, ""), ca.ClientConfig("idle.example.com"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("Read on an idle proxied connection = %v, want it closed by the proxy", err)
	}
	h.log.waitClose(t, "idle.example.com", closeIdle)
}

// TestServerMaxConnections: with maxConnections 1, a second concurrent
// connection is refused as overloaded without a dial.
func TestServerMaxConnections(t *testing.T) {
	ca := snitest.NewCA(t)
	be := snitest.NewTLSBackend(t, ca, "m.example.com")
	h := newServerHarness(t, nil)
	h.apply(t, serverPassthroughTable(t, map[string][]string{"m.example.com": {be.Addr()}},
		ConnPolicy{MaxConnections: 1}))
	addr := h.addr(t, "")
	first, err := tls.Dial("tcp", addr, ca.ClientConfig("m.example.com"))
	if err != nil {
		t.Fatalf("first dial: %v", err)
	}
	defer first.Close()
	accepts := be.Accepts()
	before := h.refused(t, ReasonOverloaded)
	serverExpectRefused(t, addr, snitest.ClientHello(t, "m.example.com"))
	snitest.WaitFor(t, "refused_total{reason=overloaded}", func() bool { return h.refused(t, ReasonOverloaded) == before+1 })
	if n := be.Accepts(); n != accepts {
		t.Fatalf("backend accepts = %d, want %d: an overloaded route must not dial", n, accepts)
	}
	// The first connection still works; once it ends, a new one is admitted.
	if _, err := first.Write([]byte("still here")); err != nil {
		t.Fatalf("first connection Write: %v", err)
	}
	buf := make([]byte, len("still here"))
	if _, err := io.ReadFull(first, buf); err != nil {
		t.Fatalf("first connection Read: %v", err)
	}
	_ = first.Close()
	h.log.waitLine(t, "first connection closed", func(m map[string]string) bool {
		return m["sni"] == "m.example.com" && m["upstream"] != ""
	})
	if got, _ := serverTLSEcho(t, addr, ca.ClientConfig("m.example.com"), "again"); got != "again" {
		t.Fatalf("connection after the first closed = %q, want %q", got, "again")
	}
}

// TestServerApplyKeepsConnections: a new table does not disturb spliced
// connections; new connections use the new table; the listener socket is
// the same.
func TestServerApplyKeepsConnections(t *testing.T) {
	snitest.CheckNoLeaks(t)
	ca := snitest.NewCA(t)
	a := snitest.NewTLSBackend(t, ca, "svc.example.com")
	b := snitest.NewTLSBackend(t, ca, "svc.example.com")
	h := newServerHarness(t, nil)
	h.apply(t, serverPassthroughTable(t, map[string][]string{"svc.example.com": {a.Addr()}}, ConnPolicy{}))
	addr := h.addr(t, "")

	old, err := tls.Dial("tcp", addr, ca.ClientConfig("svc.example.com"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer old.Close()
	h.apply(t, serverPassthroughTable(t, map[string][]string{"svc.example.com": {b.Addr()}}, ConnPolicy{}))
	if got := h.addr(t, ""); got != addr {
		t.Fatalf("listener address after Apply = %s, want %s (same socket)", got, addr)
	}
	if _, err := old.Write([]byte("old")); err != nil {
		t.Fatalf("in-flight connection Write after Apply: %v", err)
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(old, buf); err != nil || string(buf) != "old" {
		t.Fatalf("in-flight connection Read after Apply = %q, %v; want \"old\"", buf, err)
	}
	bBefore := b.Accepts()
	if got, _ := serverTLSEcho(t, addr, ca.ClientConfig("svc.example.com"), "new"); got != "new" {
		t.Fatalf("new connection echo = %q, want \"new\"", got)
	}
	if b.Accepts() != bBefore+1 || a.Accepts() != 1 {
		t.Fatalf("accepts a=%d b=%d, want a=1 (old conn) and b=%d (new table)", a.Accepts(), b.Accepts(), bBefore+1)
	}
}

// TestServerApplyListeners: listeners are opened and closed by key; a
// bind failure names the listener and the table is still published.
func TestServerApplyListeners(t *testing.T) {
	snitest.CheckNoLeaks(t)
	ca := snitest.NewCA(t)
	be := snitest.NewTLSBackend(t, ca, "l.example.com")
	h := newServerHarness(t, func(c *ServerConfig) {
		c.Listen = func(ctx context.Context, network, address string) (net.Listener, error) {
			if strings.HasSuffix(address, ":1") {
				return nil, syscall.EADDRINUSE
			}
			return serverLoopbackListen(ctx, network, address)
		}
	})
	t1 := serverPassthroughTableOn(t, []uint32{15443}, map[string][]string{"l.example.com": {be.Addr()}})
	h.apply(t, t1)
	keys1 := slices.Sorted(mapKeys(h.s.Addrs()))
	if len(keys1) != 1 {
		t.Fatalf("Addrs() keys = %v, want one listener", keys1)
	}
	addr1 := h.addr(t, keys1[0])
	inflight, err := tls.Dial("tcp", addr1, ca.ClientConfig("l.example.com"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer inflight.Close()

	// Move to two other ports, one of which cannot bind.
	t2 := serverPassthroughTableOn(t, []uint32{15444, 1}, map[string][]string{"l.example.com": {be.Addr()}})
	err = h.s.Apply(t.Context(), t2)
	var le *ListenError
	if !errors.As(err, &le) || !strings.HasSuffix(le.Key, ":1") || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Apply() error = %v, want a *ListenError for the :1 listener wrapping EADDRINUSE", err)
	}
	if h.r.Load() != t2 {
		t.Fatalf("Router.Load() after a failed bind is not the applied table; Apply must publish anyway")
	}
	keys2 := slices.Sorted(mapKeys(h.s.Addrs()))
	if len(keys2) != 1 || keys2[0] == keys1[0] {
		t.Fatalf("Addrs() keys after Apply = %v, want only the new :15444 listener", keys2)
	}
	if _, err := net.Dial("tcp", addr1); err == nil {
		t.Fatalf("dial to the removed listener %s succeeded, want refused", addr1)
	}
	// The connection accepted on the removed listener keeps going.
	if _, err := inflight.Write([]byte("ok")); err != nil {
		t.Fatalf("in-flight Write: %v", err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(inflight, buf); err != nil {
		t.Fatalf("in-flight Read after its listener closed: %v", err)
	}
	if got, _ := serverTLSEcho(t, h.addr(t, keys2[0]), ca.ClientConfig("l.example.com"), "n"); got != "n" {
		t.Fatalf("echo via the new listener = %q, want \"n\"", got)
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestServerDrain: Shutdown stops accepting at once, waits for the active
// connection, and returns when it ends.
func TestServerDrain(t *testing.T) {
	snitest.CheckNoLeaks(t)
	ca := snitest.NewCA(t)
	be := snitest.NewTLSBackend(t, ca, "d.example.com")
	h := newServerHarness(t, nil)
	h.apply(t, serverPassthroughTable(t, map[string][]string{"d.example.com": {be.Addr()}}, ConnPolicy{}))
	addr := h.addr(t, "")
	c, err := tls.Dial("tcp", addr, ca.ClientConfig("d.example.com"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()

	done := make(chan error, 1)
	go func() { done <- h.s.Shutdown(context.Background()) }()
	snitest.WaitFor(t, "listener closed by Shutdown", func() bool {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
	if err := h.s.Apply(t.Context(), serverPassthroughTable(t, nil, ConnPolicy{})); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Apply during drain = %v, want ErrServerClosed", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v while a connection was active; want it to wait", err)
	default:
	}
	// The active connection still works during the drain.
	if _, err := c.Write([]byte("during drain")); err != nil {
		t.Fatalf("Write during drain: %v", err)
	}
	buf := make([]byte, len("during drain"))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("Read during drain: %v", err)
	}
	_ = c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown() = %v, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown did not return after the last connection closed")
	}
	if err := h.s.Shutdown(t.Context()); err != nil {
		t.Fatalf("second Shutdown() = %v, want nil", err)
	}
}

// TestServerDrainTimeout: connections still open when DrainTimeout passes
// are force-closed with close=drain.
func TestServerDrainTimeout(t *testing.T) {
	snitest.CheckNoLeaks(t)
	ca := snitest.NewCA(t)
	be := snitest.NewTLSBackend(t, ca, "dt.example.com")
	h := newServerHarness(t, func(c *ServerConfig) { c.DrainTimeout = 50 * time.Millisecond })
	h.apply(t, serverPassthroughTable(t, map[string][]string{"dt.example.com": {be.Addr()}}, ConnPolicy{}))
	c, err := tls.Dial("tcp", h.addr(t, ""), ca.ClientConfig("dt.example.com"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if err := h.s.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown() = %v, want nil after DrainTimeout", err)
	}
	h.log.waitClose(t, "dt.example.com", closeDrain)
	if n := h.s.Active(); n != 0 {
		t.Fatalf("Active() after Shutdown = %d, want 0", n)
	}
	// Shutdown cancelled by its context reports it.
	h2 := newServerHarness(t, nil)
	h2.apply(t, serverPassthroughTable(t, map[string][]string{"dt.example.com": {be.Addr()}}, ConnPolicy{}))
	c2, err := tls.Dial("tcp", h2.addr(t, ""), ca.ClientConfig("dt.example.com"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c2.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := h2.s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown(cancelled ctx) = %v, want context.Canceled", err)
	}
}

// TestServerDrainRefusesUnrouted: a connection still sending its hello when
// the drain starts is refused as draining.
func TestServerDrainRefusesUnrouted(t *testing.T) {
	ca := snitest.NewCA(t)
	be := snitest.NewTLSBackend(t, ca, "u.example.com")
	h := newServerHarness(t, nil)
	h.apply(t, serverPassthroughTable(t, map[string][]string{"u.example.com": {be.Addr()}}, ConnPolicy{}))
	c, err := net.Dial("tcp", h.addr(t, ""))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	hello := snitest.ClientHello(t, "u.example.com")
	if _, err := c.Write(hello[:10]); err != nil {
		t.Fatalf("Write: %v", err)
	}
	snitest.WaitFor(t, "connection accepted", func() bool { return h.s.Active() == 1 })
	done := make(chan error, 1)
	go func() { done <- h.s.Shutdown(context.Background()) }()
	snitest.WaitFor(t, "drain to start", func() bool {
		h.s.mu.Lock()
		defer h.s.mu.Unlock()
		return h.s.state != stateRunning
	})
	if _, err := c.Write(hello[10:]); err != nil {
		t.Fatalf("Write rest of hello: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown() = %v", err)
	}
	h.log.waitLine(t, "close=refused:draining", func(m map[string]string) bool { return m["close"] == "refused:draining" })
	if be.Accepts() != 0 {
		t.Fatalf("backend accepts = %d, want 0", be.Accepts())
	}
}

// TestServerCloseIdempotent: Close twice, Close after Shutdown, Shutdown
// after Close.
func TestServerCloseIdempotent(t *testing.T) {
	snitest.CheckNoLeaks(t)
	h := newServerHarness(t, nil)
	h.apply(t, serverTCPTable(t, snitest.ClosedAddr(t)))
	for i := range 2 {
		if err := h.s.Close(); err != nil {
			t.Fatalf("Close() #%d = %v, want nil", i+1, err)
		}
	}
	if err := h.s.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown after Close = %v, want nil", err)
	}
	if err := h.s.Apply(t.Context(), serverTCPTable(t, snitest.ClosedAddr(t))); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Apply after Close = %v, want ErrServerClosed", err)
	}
}

// TestServerCloseForcesAll: Close ends spliced and still-peeking
// connections at once (close=closed) and leaks nothing.
func TestServerCloseForcesAll(t *testing.T) {
	snitest.CheckNoLeaks(t)
	ca := snitest.NewCA(t)
	be := snitest.NewTLSBackend(t, ca, "c.example.com")
	h := newServerHarness(t, nil)
	h.apply(t, serverPassthroughTable(t, map[string][]string{"c.example.com": {be.Addr()}}, ConnPolicy{}))
	addr := h.addr(t, "")
	spliced, err := tls.Dial("tcp", addr, ca.ClientConfig("c.example.com"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer spliced.Close()
	pending, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer pending.Close()
	if _, err := pending.Write([]byte{0x16}); err != nil {
		t.Fatalf("Write: %v", err)
	}
	snitest.WaitFor(t, "two active connections", func() bool { return h.s.Active() == 2 })
	if err := h.s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	if n := h.s.Active(); n != 0 {
		t.Fatalf("Active() after Close = %d, want 0", n)
	}
	var closed int
	for _, m := range h.log.all() {
		if m["close"] == closeShutdown {
			closed++
		}
	}
	if closed != 2 {
		t.Fatalf("access log has %d lines with close=%s, want 2: %v", closed, closeShutdown, h.log.all())
	}
	for name, c := range map[string]net.Conn{"spliced": spliced, "pending": pending} {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s client Read after Close = %v, want the connection closed", name, err)
		}
	}
}

// serverFlakyListener fails Accept a few times before passing through, as
// a listener out of fds would.
type serverFlakyListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
}

func (l *serverFlakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.fails > 0 {
		l.fails--
		l.mu.Unlock()
		return nil, syscall.EMFILE
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// TestServerAcceptBackoff: accept errors are retried and the listener keeps
// serving.
func TestServerAcceptBackoff(t *testing.T) {
	snitest.CheckNoLeaks(t)
	be := snitest.NewTCPBackend(t)
	var fl *serverFlakyListener
	h := newServerHarness(t, func(c *ServerConfig) {
		c.Listen = func(ctx context.Context, network, address string) (net.Listener, error) {
			ln, err := serverLoopbackListen(ctx, network, address)
			if err != nil {
				return nil, err
			}
			fl = &serverFlakyListener{Listener: ln, fails: 3}
			return fl, nil
		}
	})
	h.apply(t, serverTCPTable(t, be.Addr()))
	c, err := net.Dial("tcp", h.addr(t, ""))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("Read after accept errors: %v", err)
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.fails != 0 {
		t.Fatalf("listener still has %d failures queued, want 0", fl.fails)
	}
}

func TestServerConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*ServerConfig)
		ok   bool
	}{
		{name: "defaults", mod: func(*ServerConfig) {}, ok: true},
		{name: "no retries", mod: func(c *ServerConfig) { c.MaxRetries = 0 }, ok: true},
		{name: "no drain timeout", mod: func(c *ServerConfig) { c.DrainTimeout = 0 }, ok: true},
		{name: "zero limits mean defaults", mod: func(c *ServerConfig) { c.Limits = Limits{} }, ok: true},
		{name: "negative retries", mod: func(c *ServerConfig) { c.MaxRetries = -1 }},
		{name: "negative drain", mod: func(c *ServerConfig) { c.DrainTimeout = -time.Second }},
		{name: "tiny hello cap", mod: func(c *ServerConfig) { c.Limits.MaxBytes = 10 }},
		{name: "huge hello cap", mod: func(c *ServerConfig) { c.Limits.MaxBytes = 1 << 30 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultServerConfig()
			tc.mod(&c)
			err := c.Validate()
			if tc.ok != (err == nil) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrServerConfig) {
				t.Fatalf("Validate() = %v, want it to wrap ErrServerConfig", err)
			}
			s, nerr := NewServer(c, &Router{})
			if (nerr == nil) != tc.ok {
				t.Fatalf("NewServer() error = %v, want ok=%v", nerr, tc.ok)
			}
			if s != nil {
				_ = s.Close()
			}
		})
	}
	if _, err := NewServer(DefaultServerConfig(), nil); !errors.Is(err, ErrServerConfig) {
		t.Fatalf("NewServer(nil router) = %v, want ErrServerConfig", err)
	}
}

// TestServerMetricsReregister: a second server on the same registry reuses
// the collectors and counts into them.
func TestServerMetricsReregister(t *testing.T) {
	reg := prometheus.NewRegistry()
	var servers []*Server
	for range 2 {
		c := DefaultServerConfig()
		c.Registerer = reg
		s, err := NewServer(c, &Router{})
		if err != nil {
			t.Fatalf("NewServer with a shared registry: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		servers = append(servers, s)
	}
	servers[0].m.connectFailures.Inc()
	servers[1].m.connectFailures.Inc()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	var found bool
	for _, mf := range mfs {
		if mf.GetName() == "meshgate_sni_upstream_connect_failures_total" {
			found = true
			if v := mf.GetMetric()[0].GetCounter().GetValue(); v != 2 {
				t.Fatalf("shared counter = %v, want 2", v)
			}
		}
	}
	if !found {
		t.Fatal("meshgate_sni_upstream_connect_failures_total not registered")
	}
}

// ---- tables built with the real Builder from a config.Set made in Go ----

// serverBuild builds t with a fresh Builder and fails on error.
func serverBuild(tb testing.TB, set *config.Set) *Table {
	tb.Helper()
	tbl, err := NewBuilder(DefaultBuilderConfig()).Build(BuildInput{Config: set, Node: NodeInfo{Name: "test"}})
	if err != nil {
		tb.Fatalf("Build() error = %v, want nil", err)
	}
	for _, w := range tbl.Warnings() {
		tb.Logf("table warning: %s", w)
	}
	return tbl
}

func serverMeta(name string) config.Meta {
	return config.Meta{Name: name, Namespace: config.DefaultNamespace}
}

// serverServiceEntry declares host with one port whose endpoints are the
// given "ip:port" addresses (labels per endpoint optional).
func serverServiceEntry(tb testing.TB, name, host string, port uint32, proto string, internal bool, addrs []string, labels []map[string]string) *config.ServiceEntry {
	tb.Helper()
	se := &networking.ServiceEntry{
		Hosts:      []string{host},
		Ports:      []*networking.ServicePort{{Number: port, Name: "p", Protocol: proto}},
		Location:   networking.ServiceEntry_MESH_EXTERNAL,
		Resolution: networking.ServiceEntry_STATIC,
	}
	if internal {
		se.Location = networking.ServiceEntry_MESH_INTERNAL
	}
	for i, a := range addrs {
		h, p, err := net.SplitHostPort(a)
		if err != nil {
			tb.Fatalf("endpoint %q: %v", a, err)
		}
		pn, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			tb.Fatalf("endpoint %q: %v", a, err)
		}
		we := &networking.WorkloadEntry{Address: h, Ports: map[string]uint32{"p": uint32(pn)}}
		if i < len(labels) {
			we.Labels = labels[i]
		}
		se.Endpoints = append(se.Endpoints, we)
	}
	return &config.ServiceEntry{Meta: serverMeta(name), Spec: se}
}

// serverDR sets the connection policy (and subsets) of host.
func serverDR(name, host string, pol ConnPolicy, subsets map[string]map[string]string) *config.DestinationRule {
	dr := &networking.DestinationRule{Host: host}
	tcp := &networking.ConnectionPoolSettings_TCPSettings{}
	set := false
	if pol.ConnectTimeout > 0 {
		tcp.ConnectTimeout, set = durationpb.New(pol.ConnectTimeout), true
	}
	if pol.IdleTimeout > 0 {
		tcp.IdleTimeout, set = durationpb.New(pol.IdleTimeout), true
	}
	if pol.MaxConnectionDuration > 0 {
		tcp.MaxConnectionDuration, set = durationpb.New(pol.MaxConnectionDuration), true
	}
	if pol.MaxConnections > 0 {
		tcp.MaxConnections, set = int32(pol.MaxConnections), true
	}
	if pol.KeepAliveSet || pol.KeepAlive > 0 {
		tcp.TcpKeepalive, set = &networking.ConnectionPoolSettings_TCPSettings_TcpKeepalive{}, true
		if pol.KeepAlive > 0 {
			tcp.TcpKeepalive.Time = durationpb.New(pol.KeepAlive)
		}
	}
	if set {
		dr.TrafficPolicy = &networking.TrafficPolicy{ConnectionPool: &networking.ConnectionPoolSettings{Tcp: tcp}}
	}
	for _, n := range slices.Sorted(mapKeys(subsets)) {
		dr.Subsets = append(dr.Subsets, &networking.Subset{Name: n, Labels: subsets[n]})
	}
	return &config.DestinationRule{Meta: serverMeta(name), Spec: dr}
}

// serverGateway is one Gateway with a server per port.
func serverGateway(proto string, mode networking.ServerTLSSettings_TLSmode, hosts []string, ports ...uint32) *config.Gateway {
	gw := &networking.Gateway{}
	for _, p := range ports {
		srv := &networking.Server{
			Name:  fmt.Sprintf("p%d", p),
			Port:  &networking.Port{Number: p, Name: fmt.Sprintf("p%d", p), Protocol: proto},
			Hosts: hosts,
		}
		if proto == "TLS" {
			srv.Tls = &networking.ServerTLSSettings{Mode: mode}
		}
		gw.Servers = append(gw.Servers, srv)
	}
	return &config.Gateway{Meta: serverMeta("gw"), Spec: gw}
}

// serverPassthroughTable routes each SNI of routes (PASSTHROUGH, port
// 15443) to its own service whose endpoints are the given addresses, in
// that order, under policy pol.
func serverPassthroughTable(tb testing.TB, routes map[string][]string, pol ConnPolicy) *Table {
	tb.Helper()
	return serverBuild(tb, serverPassthroughSet(tb, []uint32{15443}, routes, pol))
}

// serverPassthroughTableOn is serverPassthroughTable with servers on ports.
func serverPassthroughTableOn(tb testing.TB, ports []uint32, routes map[string][]string) *Table {
	tb.Helper()
	return serverBuild(tb, serverPassthroughSet(tb, ports, routes, ConnPolicy{}))
}

func serverPassthroughSet(tb testing.TB, ports []uint32, routes map[string][]string, pol ConnPolicy) *config.Set {
	tb.Helper()
	set := &config.Set{Gateways: []*config.Gateway{serverGateway("TLS", networking.ServerTLSSettings_PASSTHROUGH, []string{"*"}, ports...)}}
	vs := &networking.VirtualService{Hosts: []string{"*"}, Gateways: []string{"gw"}}
	for i, sni := range slices.Sorted(mapKeys(routes)) {
		host := fmt.Sprintf("svc%d.backend.test", i)
		set.ServiceEntries = append(set.ServiceEntries, serverServiceEntry(tb, fmt.Sprintf("se%d", i), host, 443, "TLS", false, routes[sni], nil))
		set.DestinationRules = append(set.DestinationRules, serverDR(fmt.Sprintf("dr%d", i), host, pol, nil))
		vs.Tls = append(vs.Tls, &networking.TLSRoute{
			Match: []*networking.TLSMatchAttributes{{SniHosts: []string{sni}}},
			Route: []*networking.RouteDestination{{Destination: &networking.Destination{Host: host, Port: &networking.PortSelector{Number: 443}}}},
		})
	}
	set.VirtualServices = []*config.VirtualService{{Meta: serverMeta("vs"), Spec: vs}}
	return set
}

// serverTCPTable routes plain TCP on port 9000 to addr.
func serverTCPTable(tb testing.TB, addr string) *Table {
	tb.Helper()
	return serverBuild(tb, &config.Set{
		Gateways:       []*config.Gateway{serverGateway("TCP", 0, []string{"*"}, 9000)},
		ServiceEntries: []*config.ServiceEntry{serverServiceEntry(tb, "tcp", "tcp.backend.test", 9000, "TCP", false, []string{addr}, nil)},
		VirtualServices: []*config.VirtualService{{Meta: serverMeta("vs"), Spec: &networking.VirtualService{
			Hosts: []string{"*"}, Gateways: []string{"gw"},
			Tcp: []*networking.TCPRoute{{Route: []*networking.RouteDestination{{Destination: &networking.Destination{Host: "tcp.backend.test", Port: &networking.PortSelector{Number: 9000}}}}}},
		}}},
	})
}

// FuzzServerDialsOnlyRoutedNames sends arbitrary first bytes to the proxy
// and checks the one property that makes it safe: the backend is dialled
// exactly when the bytes start with a well-formed ClientHello for the one
// routed name, and the proxy never hangs or crashes on the way.
func FuzzServerDialsOnlyRoutedNames(f *testing.F) {
	const known = "known.example.com"
	be := snitest.NewTCPBackend(f)
	h := newServerHarness(f, func(c *ServerConfig) {
		c.Logger = slog.New(slog.DiscardHandler)
		c.AccessLog = slog.New(slog.DiscardHandler)
	})
	h.apply(f, serverPassthroughTable(f, map[string][]string{known: {be.Addr()}}, ConnPolicy{}))
	addr := h.addr(f, "")

	good := snitest.ClientHello(f, known, "h2")
	f.Add(good)
	f.Add(snitest.ClientHello(f, "unknown.example.com"))
	f.Add(snitest.ClientHello(f, ""))
	f.Add(snitest.ClientHello(f, "KNOWN.example.com."))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: known.example.com\r\n\r\n"))
	f.Add([]byte{0x16})
	f.Add([]byte{})
	f.Add(good[:len(good)/2])
	f.Add(append(append([]byte{}, good...), "trailing application bytes"...))

	f.Fuzz(func(t *testing.T, b []byte) {
		before := be.Accepts()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial proxy: %v", err)
		}
		defer c.Close()
		_, _ = c.Write(b) // the proxy may already have closed
		_ = c.(*net.TCPConn).CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("reading from the proxy: %v (it must close, not hang)", err)
		}
		snitest.WaitFor(t, "the proxy to finish the connection", func() bool { return h.s.Active() == 0 })

		var rh RawHello
		perr := ParseHello(b, &rh)
		routed := perr == nil && string(rh.ServerName) == known
		dialled := be.Accepts() != before
		if dialled != routed {
			t.Fatalf("input %q: backend dialled = %v, want %v (ParseHello error %v, server name %q)", b, dialled, routed, perr, rh.ServerName)
		}
	})
}
