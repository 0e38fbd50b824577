package hbone_test

// Attacks on the bridge's receiving side with real sockets, real
// certificates from the real CA and a hand-driven HTTP/2 framer, so that
// requests a well-behaved client library would never send reach the
// server as an attacker would send them.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meshgate/meshgate/mtls"
	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
	"github.com/meshgate/meshgate/sni/hbone"
)

// h2raw is an attacker's HTTP/2 connection: it writes any frame and
// header list and reads the server's answers frame by frame.
type h2raw struct {
	t   *testing.T
	c   *tls.Conn
	fr  *http2.Framer
	buf bytes.Buffer
	enc *hpack.Encoder
	// quiet: await writes nothing (another goroutine owns the writes).
	quiet bool
}

// dialRaw completes TLS with src's certificate and ALPN h2 and sends the
// client preface and an empty SETTINGS frame.
func dialRaw(t *testing.T, addr string, src *mtls.Source) *h2raw {
	t.Helper()
	cfg := mtls.MutualConfig(src, func(pki.Identity) error { return nil })
	cfg.NextProtos = []string{"h2"}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("tls dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	h := &h2raw{t: t, c: c}
	h.enc = hpack.NewEncoder(&h.buf)
	h.fr = http2.NewFramer(c, c)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return h
}

// block encodes a header list given as name, value pairs, in order and
// without any validation.
func (h *h2raw) block(kv ...string) []byte {
	h.buf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		_ = h.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return bytes.Clone(h.buf.Bytes())
}

// headers sends one HEADERS frame (END_HEADERS set) on stream id.
func (h *h2raw) headers(id uint32, kv ...string) error {
	return h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.block(kv...), EndHeaders: true})
}

// answer is what the server did with one stream.
type answer struct {
	status  string        // :status of a response, "" if none
	refusal string        // RefusalHeader of the response
	rst     http2.ErrCode // RST_STREAM code, when rstSet
	rstSet  bool
	goaway  bool  // the server closed the connection with GOAWAY
	closed  error // the connection ended without GOAWAY
}

// await reads frames until the server answers stream id (a response, a
// reset) or ends the connection, acknowledging its SETTINGS and PINGs.
func (h *h2raw) await(id uint32) answer {
	h.t.Helper()
	_ = h.c.SetReadDeadline(time.Now().Add(15 * time.Second))
	defer h.c.SetReadDeadline(time.Time{})
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				h.t.Fatalf("stream %d: no answer from the server within 15s", id)
			}
			return answer{closed: err}
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() && !h.quiet {
				_ = h.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() && !h.quiet {
				_ = h.fr.WritePing(true, f.Data)
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				return answer{status: f.PseudoValue("status"), refusal: headerValue(f, strings.ToLower(hbone.RefusalHeader))}
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return answer{rst: f.ErrCode, rstSet: true}
			}
		case *http2.GoAwayFrame:
			return answer{goaway: true}
		}
	}
}

func headerValue(f *http2.MetaHeadersFrame, name string) string {
	for _, hf := range f.RegularFields() {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}

func (f *fixture) asked() []hbone.Target {
	f.conn.mu.Lock()
	defer f.conn.mu.Unlock()
	return append([]hbone.Target(nil), f.conn.asked...)
}

// TestAttackRawConnectRequests sends CONNECT requests byte by byte as an
// attacker with a valid gateway certificate would: authorities in every
// disguise, extra or missing pseudo-headers, a Host header pointing
// elsewhere, odd subset headers. Only a well-formed service name reaches
// the Connector, always in its canonical form; nothing else is dialled.
func TestAttackRawConnectRequests(t *testing.T) {
	f := newFixture(t, echoUntilEOF, nil)
	src := f.mesh.source(t, gatewayID)
	good := webHost + ":8080"
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 63) + ".svc:8080"
	cases := []struct {
		name string
		kv   []string
		// want: the :status, or "rst" for a stream reset, "goaway" for
		// a connection error.
		want string
		// asked: the destination the Connector must see, zero for none.
		asked hbone.Target
	}{
		{"percent-encoded dot", []string{":method", "CONNECT", ":authority", "web%2Edefault.svc.cluster.local:8080"}, "400", hbone.Target{}},
		{"percent-encoded port", []string{":method", "CONNECT", ":authority", webHost + ":%38080"}, "400", hbone.Target{}},
		{"IPv6 loopback literal", []string{":method", "CONNECT", ":authority", "[::1]:8080"}, "400", hbone.Target{}},
		{"IPv4-mapped IPv6", []string{":method", "CONNECT", ":authority", "[::ffff:127.0.0.1]:8080"}, "400", hbone.Target{}},
		{"IPv6 with zone", []string{":method", "CONNECT", ":authority", "[fe80::1%25eth0]:8080"}, "400", hbone.Target{}},
		{"short dotted quad", []string{":method", "CONNECT", ":authority", "127.1:8080"}, "400", hbone.Target{}},
		{"decimal IP", []string{":method", "CONNECT", ":authority", "2130706433:8080"}, "400", hbone.Target{}},
		{"localhost upper case", []string{":method", "CONNECT", ":authority", "LOCALHOST:8080"}, "400", hbone.Target{}},
		{"localhost trailing dot", []string{":method", "CONNECT", ":authority", "localhost.:8080"}, "400", hbone.Target{}},
		{"sub.localhost", []string{":method", "CONNECT", ":authority", "web.localhost:8080"}, "400", hbone.Target{}},
		{"port with plus", []string{":method", "CONNECT", ":authority", webHost + ":+8080"}, "400", hbone.Target{}},
		{"port with leading zero", []string{":method", "CONNECT", ":authority", webHost + ":08080"}, "400", hbone.Target{}},
		{"port overflowing uint32", []string{":method", "CONNECT", ":authority", webHost + ":4294975376"}, "400", hbone.Target{}},
		{"two ports", []string{":method", "CONNECT", ":authority", webHost + ":8080:8080"}, "400", hbone.Target{}},
		{"userinfo", []string{":method", "CONNECT", ":authority", "x@" + good}, "rst", hbone.Target{}},
		{"path in authority", []string{":method", "CONNECT", ":authority", webHost + "/x:8080"}, "rst", hbone.Target{}},
		{"two trailing dots", []string{":method", "CONNECT", ":authority", webHost + "..:8080"}, "400", hbone.Target{}},
		{"non-ASCII host", []string{":method", "CONNECT", ":authority", "wéb.default.svc.cluster.local:8080"}, "rst", hbone.Target{}},
		{"name over 253 bytes", []string{":method", "CONNECT", ":authority", long}, "400", hbone.Target{}},
		{"label over 63 bytes", []string{":method", "CONNECT", ":authority", strings.Repeat("a", 64) + ".svc:8080"}, "400", hbone.Target{}},
		{"NUL in authority", []string{":method", "CONNECT", ":authority", good + "\x00"}, "rst", hbone.Target{}},
		{"CR LF in authority", []string{":method", "CONNECT", ":authority", good + "\r\nx: y"}, "rst", hbone.Target{}},
		{"missing authority", []string{":method", "CONNECT"}, "rst", hbone.Target{}},
		{"Host header only", []string{":method", "CONNECT", "host", good}, "rst", hbone.Target{}},
		{"CONNECT with :path", []string{":method", "CONNECT", ":authority", good, ":path", "/"}, "rst", hbone.Target{}},
		{"CONNECT with :scheme", []string{":method", "CONNECT", ":authority", good, ":scheme", "https"}, "rst", hbone.Target{}},
		{"unknown pseudo-header", []string{":method", "CONNECT", ":authority", good, ":evil", "1"}, "rst", hbone.Target{}},
		{"Host header pointing elsewhere", []string{":method", "CONNECT", ":authority", good, "host", "127.0.0.1:22"}, "rst", hbone.Target{}},
		{"two authorities", []string{":method", "CONNECT", ":authority", good, ":authority", "127.0.0.1:22"}, "rst", hbone.Target{}},
		{"pseudo-header after a regular one", []string{":method", "CONNECT", "x-a", "1", ":authority", good}, "rst", hbone.Target{}},
		{"lower-case method", []string{":method", "connect", ":authority", good}, "rst", hbone.Target{}},
		{"subset upper case", []string{":method", "CONNECT", ":authority", good, "x-meshgate-subset", "V1"}, "400", hbone.Target{}},
		{"subset with comma", []string{":method", "CONNECT", ":authority", good, "x-meshgate-subset", "v1,v2"}, "400", hbone.Target{}},
		{"subset path", []string{":method", "CONNECT", ":authority", good, "x-meshgate-subset", "../v1"}, "400", hbone.Target{}},
		{"subset repeated, one empty", []string{":method", "CONNECT", ":authority", good, "x-meshgate-subset", "", "x-meshgate-subset", "v1"}, "400", hbone.Target{}},
		{"subset repeated, same", []string{":method", "CONNECT", ":authority", good, "x-meshgate-subset", "v1", "x-meshgate-subset", "v1"}, "400", hbone.Target{}},
		{"subset over 63", []string{":method", "CONNECT", ":authority", good, "x-meshgate-subset", strings.Repeat("v", 64)}, "400", hbone.Target{}},
		// Well-formed: the Connector sees the canonical name, never an
		// address or a forwarding header.
		{"upper-case service", []string{":method", "CONNECT", ":authority", strings.ToUpper(webHost) + ":8080"}, "200", hbone.Target{Service: webHost, Port: 8080}},
		{"trailing dot", []string{":method", "CONNECT", ":authority", webHost + ".:8080"}, "200", hbone.Target{Service: webHost, Port: 8080}},
		{"forwarding headers ignored", []string{":method", "CONNECT", ":authority", good, "x-forwarded-host", "127.0.0.1", "forwarded", "for=127.0.0.1"}, "200", hbone.Target{Service: webHost, Port: 8080}},
		{"empty subset", []string{":method", "CONNECT", ":authority", good, "x-meshgate-subset", ""}, "200", hbone.Target{Service: webHost, Port: 8080}},
		{"hex-looking name is only a name", []string{":method", "CONNECT", ":authority", "0x7f000001:8080"}, "404", hbone.Target{Service: "0x7f000001", Port: 8080}},
	}
	h := dialRaw(t, f.addr, src)
	id := uint32(1)
	for _, c := range cases {
		before := len(f.asked())
		if err := h.headers(id, c.kv...); err != nil {
			t.Fatalf("%s: write: %v", c.name, err)
		}
		a := h.await(id)
		got := a.status
		switch {
		case a.rstSet:
			got = "rst"
		case a.goaway, a.closed != nil:
			got = "goaway"
		}
		if got != c.want {
			t.Errorf("%s: server answered %q (%+v); want %q", c.name, got, a, c.want)
		}
		after := f.asked()
		switch {
		case c.asked == (hbone.Target{}) && len(after) != before:
			t.Errorf("%s: the Connector was asked %+v; nothing may be resolved", c.name, after[before:])
		case c.asked != (hbone.Target{}) && (len(after) != before+1 || after[before] != c.asked):
			t.Errorf("%s: the Connector was asked %+v; want exactly %+v", c.name, after[before:], c.asked)
		}
		if got == "200" {
			_ = h.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
		if got == "goaway" {
			h = dialRaw(t, f.addr, src)
			id = 1
			continue
		}
		id += 2
	}
}

// TestAttackStreamReuseAfterReset: after a tunnel stream is reset, its
// stream ID cannot be opened again, nor can an older ID: the server ends
// the connection and dials nothing more.
func TestAttackStreamReuseAfterReset(t *testing.T) {
	f := newFixture(t, echoUntilEOF, nil)
	h := dialRaw(t, f.addr, f.mesh.source(t, gatewayID))
	kv := []string{":method", "CONNECT", ":authority", webHost + ":8080"}
	for _, id := range []uint32{1, 3} {
		if err := h.headers(id, kv...); err != nil {
			t.Fatal(err)
		}
		if a := h.await(id); a.status != "200" {
			t.Fatalf("stream %d: %+v; want 200", id, a)
		}
	}
	if err := h.fr.WriteRSTStream(3, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	// Data on the reset stream: ignored or a stream error, never relayed.
	_ = h.fr.WriteData(3, false, []byte("after reset"))
	// HEADERS again on the reset stream 3, then on the older stream 1's
	// neighbour 1 (lower than the last opened): connection errors.
	if err := h.headers(3, kv...); err != nil {
		t.Fatal(err)
	}
	a := h.await(3)
	if a.status != "" {
		t.Fatalf("a second CONNECT on the reset stream 3 was answered %s", a.status)
	}
	if !a.goaway && a.closed == nil && !a.rstSet {
		t.Fatalf("a second CONNECT on a closed stream: %+v; want the connection or stream refused", a)
	}
	if n := len(f.asked()); n != 2 {
		t.Fatalf("the Connector was asked %d times; want 2 (the two legitimate streams)", n)
	}
}

// TestAttackStreamsOverTheCap: a peer that opens more streams than the
// announced SETTINGS_MAX_CONCURRENT_STREAMS gets the extra ones refused;
// they resolve nothing, and a slot freed by a reset is usable again.
func TestAttackStreamsOverTheCap(t *testing.T) {
	const cap = 3
	f := newFixture(t, echoUntilEOF, func(sc *hbone.ServerConfig, _ *hbone.PoolConfig) { sc.MaxStreamsPerConn = cap })
	h := dialRaw(t, f.addr, f.mesh.source(t, gatewayID))
	kv := []string{":method", "CONNECT", ":authority", webHost + ":8080"}
	id := uint32(1)
	for range cap {
		if err := h.headers(id, kv...); err != nil {
			t.Fatal(err)
		}
		if a := h.await(id); a.status != "200" {
			t.Fatalf("stream %d within the cap: %+v; want 200", id, a)
		}
		id += 2
	}
	over := 0
	for range 20 { // bounded: 20 streams over the cap
		if err := h.headers(id, kv...); err != nil {
			break
		}
		a := h.await(id)
		if a.status != "" {
			t.Fatalf("stream %d over the cap of %d was answered %s", id, cap, a.status)
		}
		over++
		id += 2
		if a.goaway || a.closed != nil {
			break
		}
	}
	if over == 0 {
		t.Fatal("no stream over the cap was attempted")
	}
	if n := len(f.asked()); n != cap {
		t.Fatalf("the Connector was asked %d times; want %d (the streams within the cap)", n, cap)
	}
}

// TestAttackContinuationFlood: a header block that never ends (HEADERS
// without END_HEADERS followed by CONTINUATION frames, the 2024 HTTP/2
// CONTINUATION flood) is cut off: the server ends the connection long
// before the attacker's bounded 8 MiB is sent, and resolves nothing.
func TestAttackContinuationFlood(t *testing.T) {
	f := newFixture(t, echoUntilEOF, nil)
	h := dialRaw(t, f.addr, f.mesh.source(t, gatewayID))
	first := h.block(":method", "CONNECT", ":authority", webHost+":8080")
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first}); err != nil {
		t.Fatal(err)
	}
	chunk := h.block("x-pad", strings.Repeat("a", 8000))
	h.quiet = true
	sent := 0
	var werr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 1024 { // 1024 * 8 KiB = 8 MiB, bounded
			if werr = h.fr.WriteContinuation(1, false, chunk); werr != nil {
				return
			}
			sent++
		}
	}()
	a := h.await(1)
	_ = h.c.Close() // unblocks the writer if it is stuck
	<-done
	if a.status != "" {
		t.Fatalf("an endless header block was answered %s", a.status)
	}
	if !a.goaway && a.closed == nil && !a.rstSet {
		t.Fatalf("continuation flood: %+v; want the connection ended", a)
	}
	if sent == 1024 && werr == nil && !a.goaway && a.closed == nil {
		t.Fatalf("the server took all %d continuation frames", sent)
	}
	if n := len(f.asked()); n != 0 {
		t.Fatalf("the Connector was asked %d times", n)
	}
	t.Logf("server ended the connection after %d continuation frames (%d KiB)", sent, sent*len(chunk)/1024)
}

// TestAttackHandshakeCredentials: clients with certificates that are not
// a live fleet gateway identity (a workload of the same CA, another
// trust domain, expired, revoked) or that speak below TLS 1.3 or without
// h2 are refused at the handshake and never reach the Connector.
func TestAttackHandshakeCredentials(t *testing.T) {
	past := pkitest.NewClock(time.Now().Add(-72 * time.Hour))
	ca, _ := pkitest.NewCA(t, pkitest.Config(t), pki.WithClock(past.Now))
	m := &mesh{ca: ca}
	issue := func(id pki.Identity, ttl time.Duration) *mtls.Source {
		t.Helper()
		c, err := ca.NodeCertificate(context.Background(), pki.NodeRequest{Identity: id, TTL: ttl})
		if err != nil {
			t.Fatalf("NodeCertificate(%s): %v", id, err)
		}
		return mtls.NewSource(c, m.source(t, gatewayID).Roots())
	}
	expired := issue(gatewayID, time.Hour) // valid 72h ago for an hour
	past.Advance(72 * time.Hour)
	revoked := issue(gatewayID, 0)
	// The CA refuses to sign outside its trust domain, so a gateway name
	// of another trust domain comes from another CA.
	evilCfg := pkitest.Config(t)
	evilCfg.TrustDomain = "evil.example"
	evilCA, _ := pkitest.NewCA(t, evilCfg)
	evilCert, err := evilCA.NodeCertificate(context.Background(), pki.NodeRequest{Identity: pki.Identity{TrustDomain: "evil.example", Namespace: gatewayID.Namespace, ServiceAccount: gatewayID.ServiceAccount}})
	if err != nil {
		t.Fatal(err)
	}
	otherTD := mtls.NewSource(evilCert, m.source(t, gatewayID).Roots())
	wl := issue(workload, 0)
	serverSrc := issue(gatewayID, 0)
	serverSrc.SetRevocations(serials{revoked.Certificate().Leaf.SerialNumber})

	f := &fixture{mesh: m, conn: &connector{}}
	f.conn.backend = backend(t, echoUntilEOF)
	sc := hbone.DefaultServerConfig()
	sc.Source, sc.Authorizer, sc.Connector = serverSrc, mtls.AuthorizeOneOf(gatewayID), f.conn
	srv, err := hbone.NewServer(sc)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })

	cfgFor := func(src *mtls.Source) *tls.Config {
		c := mtls.MutualConfig(src, func(pki.Identity) error { return nil })
		c.NextProtos = []string{"h2"}
		return c
	}
	tls12 := cfgFor(serverSrc)
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	noALPN := cfgFor(serverSrc)
	noALPN.NextProtos = []string{"http/1.1"}
	cases := []struct {
		name string
		cfg  *tls.Config
	}{
		{"workload identity of the mesh CA", cfgFor(wl)},
		{"gateway name in another trust domain", cfgFor(otherTD)},
		{"expired gateway certificate", cfgFor(expired)},
		{"revoked gateway certificate", cfgFor(revoked)},
		{"TLS 1.2 with a valid gateway certificate", tls12},
		{"no h2 in ALPN", noALPN},
	}
	for _, c := range cases {
		raw, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), c.cfg)
		if err == nil {
			// TLS 1.3: the server's alert arrives after the client's
			// Finished. Try to use the connection as a tunnel.
			_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.WriteString(raw, http2.ClientPreface)
			fr := http2.NewFramer(raw, raw)
			_ = fr.WriteSettings()
			var buf bytes.Buffer
			enc := hpack.NewEncoder(&buf)
			_ = enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
			_ = enc.WriteField(hpack.HeaderField{Name: ":authority", Value: webHost + ":8080"})
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: buf.Bytes(), EndHeaders: true})
			for err == nil {
				var fm http2.Frame
				if fm, err = fr.ReadFrame(); err == nil {
					if hf, ok := fm.(*http2.HeadersFrame); ok && hf.StreamID == 1 {
						t.Errorf("%s: the server answered a CONNECT", c.name)
						break
					}
				}
			}
			raw.Close()
		}
		if err == nil {
			t.Errorf("%s: connection usable", c.name)
		}
	}
	if n := len(f.asked()); n != 0 {
		t.Fatalf("refused clients reached the Connector %d times: %+v", n, f.asked())
	}
	// The server's own gateway certificate still gets through.
	h := dialRaw(t, ln.Addr().String(), serverSrc)
	if err := h.headers(1, ":method", "CONNECT", ":authority", webHost+":8080"); err != nil {
		t.Fatal(err)
	}
	if a := h.await(1); a.status != "200" {
		t.Fatalf("a valid gateway after the refusals: %+v; want 200", a)
	}
}

// serials is a revocation set of the listed serials.
type serials []*big.Int

func (s serials) Revoked(n *big.Int) bool {
	for _, x := range s {
		if x.Cmp(n) == 0 {
			return true
		}
	}
	return false
}

// TestAttackSlowHandshake: connections that open TCP and then stall (no
// ClientHello, or half of one) are closed after HandshakeTimeout and free
// their slot; while they hold every slot, new connections are closed at
// accept (conn_limit), and once they are gone a gateway gets in again.
func TestAttackSlowHandshake(t *testing.T) {
	const slots = 4
	f := newFixture(t, echoUntilEOF, func(sc *hbone.ServerConfig, _ *hbone.PoolConfig) {
		sc.HandshakeTimeout = 300 * time.Millisecond
		sc.MaxConns = slots
	})
	var stalled []net.Conn
	for i := range slots {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if i%2 == 1 {
			// Half a TLS record header of a ClientHello.
			_, _ = c.Write([]byte{0x16, 0x03, 0x01})
		}
		stalled = append(stalled, c)
	}
	for i, c := range stalled {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Read(make([]byte, 64))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("stalled connection %d still open after 10s (HandshakeTimeout 300ms)", i)
		}
	}
	waitCounter(t, f.srvReg, "meshgate_hbone_refused_total", slots, "reason", hbone.ReasonHandshake)
	// The slots are free again: a gateway opens a tunnel.
	c := f.dial(t, "")
	io.WriteString(c, "ok")
	c.(interface{ CloseWrite() error }).CloseWrite()
	if b, err := io.ReadAll(c); err != nil || string(b) != "got 2: ok" {
		t.Fatalf("after the stalled handshakes: %q, %v", b, err)
	}
	c.Close()
}

// TestAttackSlowPreface: a peer that completes TLS with a gateway
// certificate and never sends the HTTP/2 preface is dropped by the
// HTTP/2 server's preface timeout (10s in x/net/http2), not held.
func TestAttackSlowPreface(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the 10s HTTP/2 preface timeout")
	}
	f := newFixture(t, echoUntilEOF, nil)
	cfg := mtls.MutualConfig(f.mesh.source(t, gatewayID), func(pki.Identity) error { return nil })
	cfg.NextProtos = []string{"h2"}
	c, err := tls.Dial("tcp", f.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "PRI * HTTP/2.0\r\n") // a third of the preface, then nothing
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = io.Copy(io.Discard, c) // the server's SETTINGS, then its close
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("a peer without the HTTP/2 preface was held for 30s")
	}
}
