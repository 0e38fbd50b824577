package hbone_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"

	"github.com/meshgate/meshgate/mtls"
	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
	"github.com/meshgate/meshgate/sni/hbone"
)

var (
	gatewayID = pki.Identity{TrustDomain: "cluster.local", Namespace: "meshgate-system", ServiceAccount: "meshgate"}
	workload  = pki.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}
)

const webHost = "web.default.svc.cluster.local"

// mesh is a real CA (cfssl signing) and the sources it issues.
type mesh struct{ ca *pki.CA }

func newMesh(t testing.TB) *mesh {
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	return &mesh{ca: ca}
}

func (m *mesh) source(t testing.TB, id pki.Identity) *mtls.Source {
	t.Helper()
	c, err := m.ca.NodeCertificate(context.Background(), pki.NodeRequest{Identity: id})
	if err != nil {
		t.Fatalf("NodeCertificate(%s) = %v", id, err)
	}
	roots := x509.NewCertPool()
	for _, r := range m.ca.Info().Roots {
		roots.AddCert(r)
	}
	return mtls.NewSource(c, roots)
}

// refusal is a Connector refusal with a reason, as *sni.RefusedError is.
type refusal struct{ reason string }

func (r *refusal) Error() string         { return "refused: " + r.reason }
func (r *refusal) RefusalReason() string { return r.reason }

// connector serves web:8080 (subsets "" and v1) by dialling backend, and
// refuses everything else; it records what it was asked.
type connector struct {
	backend  string
	mu       sync.Mutex
	asked    []hbone.Target
	released int
}

func (c *connector) ConnectBridge(ctx context.Context, service string, port uint32, subset string) (net.Conn, func(), error) {
	c.mu.Lock()
	c.asked = append(c.asked, hbone.Target{Service: service, Port: port, Subset: subset})
	c.mu.Unlock()
	switch {
	case service == "busy.default.svc.cluster.local":
		return nil, nil, &refusal{"overloaded"}
	case service != webHost:
		return nil, nil, &refusal{"unknown_service"}
	case port != 8080:
		return nil, nil, &refusal{"unknown_port"}
	case subset != "" && subset != "v1":
		return nil, nil, &refusal{"unknown_subset"}
	}
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", c.backend)
	if err != nil {
		return nil, nil, err
	}
	var once sync.Once
	return up, func() { once.Do(func() { c.mu.Lock(); c.released++; c.mu.Unlock() }) }, nil
}

// backend is a loopback TCP server: for each connection it runs serve.
func backend(t testing.TB, serve func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); serve(c.(*net.TCPConn)) }()
		}
	}()
	return ln.Addr().String()
}

// echoUntilEOF reads everything, then answers "got N: <data>" and closes.
func echoUntilEOF(c *net.TCPConn) {
	b, _ := io.ReadAll(c)
	fmt.Fprintf(c, "got %d: %s", len(b), b)
}

// fixture is a bridge server on loopback and a pool that reaches it.
type fixture struct {
	mesh   *mesh
	addr   string
	srv    *hbone.Server
	pool   *hbone.Pool
	conn   *connector
	srvReg *prometheus.Registry
	cliReg *prometheus.Registry
}

func newFixture(t testing.TB, serve func(*net.TCPConn), tweak func(*hbone.ServerConfig, *hbone.PoolConfig)) *fixture {
	t.Helper()
	f := &fixture{mesh: newMesh(t), conn: &connector{}, srvReg: prometheus.NewRegistry(), cliReg: prometheus.NewRegistry()}
	f.conn.backend = backend(t, serve)
	sc := hbone.DefaultServerConfig()
	sc.Source, sc.Authorizer, sc.Connector, sc.Registerer = f.mesh.source(t, gatewayID), mtls.AuthorizeOneOf(gatewayID), f.conn, f.srvReg
	pc := hbone.DefaultPoolConfig()
	pc.Source, pc.Authorizer, pc.Registerer = f.mesh.source(t, gatewayID), mtls.AuthorizeOneOf(gatewayID), f.cliReg
	if tweak != nil {
		tweak(&sc, &pc)
	}
	var err error
	if f.srv, err = hbone.NewServer(sc); err != nil {
		t.Fatal(err)
	}
	if f.pool, err = hbone.NewPool(pc); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); _ = f.srv.Serve(ln) }()
	t.Cleanup(func() {
		f.pool.Close()
		f.srv.Close()
		<-done
	})
	return f
}

func (f *fixture) dial(t testing.TB, subset string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := f.pool.DialBridge(ctx, f.addr, webHost, 8080, subset, nil)
	if err != nil {
		t.Fatalf("DialBridge: %v", err)
	}
	return c
}

func counter(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

func TestStreamRoundTripClientHalfCloses(t *testing.T) {
	f := newFixture(t, echoUntilEOF, nil)
	c := f.dial(t, "v1")
	if _, err := io.WriteString(c, "hello over hbone"); err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "got 16: hello over hbone" {
		t.Fatalf("read %q, %v; want the backend's answer after our half-close", got, err)
	}
	c.Close()
	f.conn.mu.Lock()
	asked := f.conn.asked
	f.conn.mu.Unlock()
	if len(asked) != 1 || asked[0] != (hbone.Target{Service: webHost, Port: 8080, Subset: "v1"}) {
		t.Fatalf("connector asked %+v; want web:8080 subset v1", asked)
	}
}

// TestStreamUpstreamFINReachesClient: an upstream that closes first (a
// banner, then FIN) ends the stream at once, so a client reading until EOF
// does not wait for its own half-close. The backend's connection is closed
// by the gateway: it reads EOF, never a hang.
func TestStreamUpstreamFINReachesClient(t *testing.T) {
	backendDone := make(chan error, 1)
	f := newFixture(t, func(c *net.TCPConn) {
		io.WriteString(c, "banner\n")
		c.CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := io.ReadAll(c)
		backendDone <- err
	}, nil)
	c := f.dial(t, "")
	defer c.Close()
	got := make(chan string, 1)
	go func() {
		b, err := io.ReadAll(c)
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- string(b)
	}()
	select {
	case s := <-got:
		if s != "banner\n" {
			t.Fatalf("client read %q until EOF; want %q", s, "banner\n")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the upstream's FIN never reached the client: it is still waiting for EOF")
	}
	select {
	case err := <-backendDone:
		if err != nil {
			t.Fatalf("backend read after its half-close: %v; want EOF once the stream ended", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the gateway kept the backend's connection open after the stream ended")
	}
}

// TestDownload: the upstream sends many windows' worth of bytes after one
// request byte and closes; all of it reaches a client that never
// half-closes (the server-to-client direction, flow control on the way).
func TestDownload(t *testing.T) {
	const size = 32 << 20
	f := newFixture(t, func(c *net.TCPConn) {
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return
		}
		chunk := make([]byte, 64<<10)
		for left := size; left > 0; left -= len(chunk) {
			if _, err := c.Write(chunk[:min(left, len(chunk))]); err != nil {
				return
			}
		}
		_ = c.CloseWrite()
	}, nil)
	c := f.dial(t, "")
	defer c.Close()
	if _, err := c.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := io.Copy(io.Discard, c)
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		if r.err != nil || r.n != size {
			t.Fatalf("downloaded %d bytes, %v; want %d", r.n, r.err, size)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("download stalled")
	}
}

func TestUpstreamResetResetsStream(t *testing.T) {
	f := newFixture(t, func(c *net.TCPConn) {
		// Reset only after the client's first byte: a reset racing the
		// connect would fail the dial instead.
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			return
		}
		io.WriteString(c, "x")
		c.SetLinger(0) // RST on close
	}, nil)
	c := f.dial(t, "")
	defer c.Close()
	if _, err := c.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	_, err := io.ReadAll(c)
	if err == nil {
		t.Fatal("a reset upstream ended the stream cleanly; want a stream error")
	}
}

func TestManyStreamsShareOneHandshake(t *testing.T) {
	f := newFixture(t, echoUntilEOF, nil)
	for i := range 30 {
		c := f.dial(t, "")
		fmt.Fprintf(c, "n%d", i)
		c.(interface{ CloseWrite() error }).CloseWrite()
		if b, err := io.ReadAll(c); err != nil || !strings.HasSuffix(string(b), fmt.Sprintf("n%d", i)) {
			t.Fatalf("stream %d: %q, %v", i, b, err)
		}
		c.Close()
	}
	if hs := counter(t, f.cliReg, "meshgate_hbone_handshakes_total", "side", "client"); hs != 1 {
		t.Fatalf("30 sequential streams took %v TLS handshakes; want 1", hs)
	}
	if n := counter(t, f.srvReg, "meshgate_hbone_streams_total", "result", "ok"); n != 30 {
		t.Fatalf("server counted %v streams; want 30", n)
	}
}

func TestSecondConnectionWhenStreamsFull(t *testing.T) {
	f := newFixture(t, echoUntilEOF, func(_ *hbone.ServerConfig, pc *hbone.PoolConfig) { pc.MaxStreamsPerConn = 4 })
	var held []net.Conn
	for range 10 {
		held = append(held, f.dial(t, ""))
	}
	st := f.pool.Streams()[f.addr]
	if st != [2]int{3, 10} {
		t.Fatalf("10 held streams with a cap of 4: %d connections, %d streams; want 3, 10", st[0], st[1])
	}
	for _, c := range held {
		c.Close()
	}
	if st := f.pool.Streams()[f.addr]; st[1] != 0 {
		t.Fatalf("after closing every stream %d remain counted", st[1])
	}
	// A freed connection is reused: no new handshake.
	before := counter(t, f.cliReg, "meshgate_hbone_handshakes_total")
	f.dial(t, "").Close()
	if after := counter(t, f.cliReg, "meshgate_hbone_handshakes_total"); after != before {
		t.Fatalf("a stream on a warm pool made a handshake (%v -> %v)", before, after)
	}
}

func TestHandshakeRefusals(t *testing.T) {
	f := newFixture(t, echoUntilEOF, nil)
	other := newMesh(t)
	cases := []struct {
		name string
		src  *mtls.Source
	}{
		{"workload identity", f.mesh.source(t, workload)},
		{"another root", other.source(t, gatewayID)},
	}
	for _, c := range cases {
		pc := hbone.DefaultPoolConfig()
		// The client accepts any identity: the server must be the one refusing.
		pc.Source, pc.Authorizer = c.src, func(pki.Identity) error { return nil }
		if c.name == "another root" {
			pc.Source = mtls.NewSource(c.src.Certificate(), f.mesh.source(t, gatewayID).Roots())
		}
		pool, err := hbone.NewPool(pc)
		if err != nil {
			t.Fatal(err)
		}
		before := counter(t, f.srvReg, "meshgate_hbone_refused_total", "reason", hbone.ReasonPeer)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err := pool.DialBridge(ctx, f.addr, webHost, 8080, "", nil)
		if err == nil {
			// TLS 1.3: the client may finish before the server's alert.
			_, err = io.ReadAll(conn)
			conn.Close()
		}
		cancel()
		pool.Close()
		if err == nil {
			t.Errorf("%s: tunnel opened", c.name)
		}
		waitCounter(t, f.srvReg, "meshgate_hbone_refused_total", before+1, "reason", hbone.ReasonPeer)
	}
	// No client certificate at all.
	raw, err := tls.Dial("tcp", f.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err == nil {
		_, err = raw.Read(make([]byte, 1))
		raw.Close()
	}
	if err == nil {
		t.Error("a client without a certificate read from the bridge")
	}
	if len(f.conn.asked) != 0 {
		t.Fatalf("refused peers reached the connector: %+v", f.conn.asked)
	}
	// The pool refuses a server that is not a gateway identity.
	pc := hbone.DefaultPoolConfig()
	pc.Source, pc.Authorizer = f.mesh.source(t, gatewayID), mtls.AuthorizeOneOf(workload)
	pool, _ := hbone.NewPool(pc)
	defer pool.Close()
	if _, err := pool.DialBridge(context.Background(), f.addr, webHost, 8080, "", nil); err == nil {
		t.Error("the pool opened a tunnel to a gateway its authorizer refuses")
	}
}

func waitCounter(t testing.TB, reg *prometheus.Registry, name string, want float64, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for counter(t, reg, name, labels...) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v; want %v", name, labels, counter(t, reg, name, labels...), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawClient is an HTTP/2 client with a gateway certificate that sends any
// request, for hostile streams.
func rawClient(t *testing.T, f *fixture) *http2.ClientConn {
	t.Helper()
	cfg := mtls.MutualConfig(f.mesh.source(t, gatewayID), mtls.AuthorizeOneOf(gatewayID))
	cfg.NextProtos = []string{"h2"}
	tc, err := tls.Dial("tcp", f.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := (&http2.Transport{}).NewClientConn(tc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestHostileStreams(t *testing.T) {
	f := newFixture(t, echoUntilEOF, nil)
	cc := rawClient(t, f)
	cases := []struct {
		name, method, authority string
		header                  http.Header
		status                  int
		reason                  string
	}{
		{"GET", http.MethodGet, webHost + ":8080", nil, 405, hbone.ReasonMethod},
		{"POST", http.MethodPost, webHost + ":8080", nil, 405, hbone.ReasonMethod},
		{"IP authority", "CONNECT", "10.0.0.1:8080", nil, 400, hbone.ReasonBadAuthority},
		{"loopback IP", "CONNECT", "127.0.0.1:15000", nil, 400, hbone.ReasonBadAuthority},
		{"localhost", "CONNECT", "localhost:8080", nil, 400, hbone.ReasonBadAuthority},
		{"port 0", "CONNECT", webHost + ":0", nil, 400, hbone.ReasonBadAuthority},
		{"port 70000", "CONNECT", webHost + ":70000", nil, 400, hbone.ReasonBadAuthority},
		{"no port", "CONNECT", webHost, nil, 400, hbone.ReasonBadAuthority},
		{"bad subset", "CONNECT", webHost + ":8080", http.Header{hbone.SubsetHeader: {"V_1"}}, 400, hbone.ReasonBadSubset},
		{"two subsets", "CONNECT", webHost + ":8080", http.Header{hbone.SubsetHeader: {"v1", "v2"}}, 400, hbone.ReasonBadSubset},
		{"unknown service", "CONNECT", "db.default.svc.cluster.local:8080", nil, 404, "unknown_service"},
		{"port the service lacks", "CONNECT", webHost + ":9999", nil, 404, "unknown_port"},
		{"unknown subset", "CONNECT", webHost + ":8080", http.Header{hbone.SubsetHeader: {"v9"}}, 404, "unknown_subset"},
		{"overloaded", "CONNECT", "busy.default.svc.cluster.local:8080", nil, 429, "overloaded"},
	}
	for _, c := range cases {
		before := counter(t, f.srvReg, "meshgate_hbone_refused_total", "reason", c.reason)
		req := &http.Request{Method: c.method, URL: &url.URL{Scheme: "https", Host: c.authority, Path: "/"}, Host: c.authority, Header: c.header}
		if req.Header == nil {
			req.Header = http.Header{}
		}
		if c.method == "CONNECT" {
			req.URL = &url.URL{Host: c.authority}
		}
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || resp.Header.Get(hbone.RefusalHeader) != c.reason || len(body) == 0 {
			t.Errorf("%s: %d %s %q; want %d reason %s with a message", c.name, resp.StatusCode, resp.Header.Get(hbone.RefusalHeader), body, c.status, c.reason)
		}
		if got := counter(t, f.srvReg, "meshgate_hbone_refused_total", "reason", c.reason); got != before+1 {
			t.Errorf("%s: refused{%s} %v -> %v; want +1", c.name, c.reason, before, got)
		}
	}
	// A header block over the limit: the request fails, the connection
	// and the server go on.
	big := &http.Request{Method: "CONNECT", URL: &url.URL{Host: webHost + ":8080"}, Host: webHost + ":8080",
		Header: http.Header{"X-Pad": {strings.Repeat("a", 64<<10)}}}
	if resp, err := cc.RoundTrip(big); err == nil {
		if resp.StatusCode == 200 {
			t.Error("a 64 KiB header block was accepted")
		}
		resp.Body.Close()
	}
	f.conn.mu.Lock()
	n := len(f.conn.asked)
	f.conn.mu.Unlock()
	if n != 4 {
		t.Errorf("the connector was asked %d times; only the 4 well-formed destinations may reach it", n)
	}
	// The server still serves a good stream.
	c := f.dial(t, "")
	io.WriteString(c, "ok")
	c.(interface{ CloseWrite() error }).CloseWrite()
	if b, err := io.ReadAll(c); err != nil || string(b) != "got 2: ok" {
		t.Fatalf("after hostile streams: %q, %v", b, err)
	}
	c.Close()
}

// TestEarlyDataLeadsTheStream: bytes given to DialBridge reach the
// upstream first, ahead of what is written afterwards, and the pool keeps
// its own copy (the caller reuses its buffer at once). A refused stream
// with early bytes is an error, and the connection stays usable.
func TestEarlyDataLeadsTheStream(t *testing.T) {
	f := newFixture(t, func(c *net.TCPConn) {
		b, _ := io.ReadAll(c)
		c.Write(b)
	}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	early := []byte("hello-first|")
	c, err := f.pool.DialBridge(ctx, f.addr, webHost, 8080, "", early)
	if err != nil {
		t.Fatalf("DialBridge with early bytes: %v", err)
	}
	defer c.Close()
	copy(early, "XXXXXXXXXXXX")
	if _, err := io.WriteString(c, "then-the-rest"); err != nil {
		t.Fatal(err)
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello-first|then-the-rest" {
		t.Fatalf("upstream echoed %q, %v; want the early bytes first, then the rest", got, err)
	}

	_, err = f.pool.DialBridge(ctx, f.addr, "other.default.svc.cluster.local", 8080, "", []byte("hello"))
	if re, ok := errors.AsType[*hbone.RefusedError](err); !ok || re.Reason != "unknown_service" {
		t.Fatalf("early bytes to an unknown service: %v; want a refusal with reason unknown_service", err)
	}
	c2 := f.dial(t, "")
	c2.Close()
}
