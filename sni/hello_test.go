package sni

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var updateOpenSSL = flag.Bool("update-openssl", false, "capture testdata/"+opensslFixture+" by running openssl s_client")

// opensslFixture is a ClientHello sent by `openssl s_client -servername x
// -alpn istio` (OpenSSL 3.0), captured with -update-openssl.
const opensslFixture = "openssl-s_client-sni-x-alpn-istio.bin"

// ---- building ClientHellos ----

// helloExtension is one extension of a synthetic ClientHello.
type helloExtension struct {
	typ  uint16
	data []byte
}

// helloSpec describes a synthetic ClientHello message. Zero fields take
// plausible defaults, so each hostile row changes only what it breaks.
type helloSpec struct {
	version      uint16 // default 0x0303
	sessionID    []byte
	suites       []byte // raw cipher_suites body; default TLS_AES_128_GCM_SHA256
	compression  []byte // raw compression_methods body; default null
	exts         []helloExtension
	noExtensions bool   // omit the extensions block entirely
	extLenDelta  int    // added to the extensions block length
	suitesLen    int    // if non-zero, replaces the cipher_suites length
	msgLenDelta  int    // added to the handshake length
	msgType      byte   // default client_hello
	tail         []byte // raw bytes appended after the extensions block
}

func be16(v int) []byte { return []byte{byte(v >> 8), byte(v)} }

// helloMessage encodes s as a handshake message, header included.
func helloMessage(s helloSpec) []byte {
	if s.version == 0 {
		s.version = 0x0303
	}
	if s.suites == nil {
		s.suites = []byte{0x13, 0x01}
	}
	if s.compression == nil {
		s.compression = []byte{0}
	}
	var body []byte
	body = append(body, be16(int(s.version))...)
	body = append(body, bytes.Repeat([]byte{0xab}, 32)...)
	body = append(body, byte(len(s.sessionID)))
	body = append(body, s.sessionID...)
	suitesLen := len(s.suites)
	if s.suitesLen != 0 {
		suitesLen = s.suitesLen
	}
	body = append(body, be16(suitesLen)...)
	body = append(body, s.suites...)
	body = append(body, byte(len(s.compression)))
	body = append(body, s.compression...)
	if !s.noExtensions {
		var exts []byte
		for _, e := range s.exts {
			exts = append(exts, be16(int(e.typ))...)
			exts = append(exts, be16(len(e.data))...)
			exts = append(exts, e.data...)
		}
		body = append(body, be16(len(exts)+s.extLenDelta)...)
		body = append(body, exts...)
	}
	body = append(body, s.tail...)
	typ := s.msgType
	if typ == 0 {
		typ = typeClientHello
	}
	n := len(body) + s.msgLenDelta
	return append([]byte{typ, byte(n >> 16), byte(n >> 8), byte(n)}, body...)
}

// sniExtension builds a server_name extension with one host_name entry
// per name.
func sniExtension(names ...string) helloExtension {
	var list []byte
	for _, n := range names {
		list = append(list, hostNameType)
		list = append(list, be16(len(n))...)
		list = append(list, n...)
	}
	return helloExtension{typ: extServerName, data: append(be16(len(list)), list...)}
}

// alpnExtension builds an ALPN extension.
func alpnExtension(protos ...string) helloExtension {
	var list []byte
	for _, p := range protos {
		list = append(list, byte(len(p)))
		list = append(list, p...)
	}
	return helloExtension{typ: extALPN, data: append(be16(len(list)), list...)}
}

// helloRecord frames frag as one TLS record.
func helloRecord(typ byte, version uint16, frag []byte) []byte {
	out := []byte{typ, byte(version >> 8), byte(version)}
	out = append(out, be16(len(frag))...)
	return append(out, frag...)
}

// helloRecords splits a handshake message into handshake records of the
// given fragment sizes (the last size repeats); no sizes means one record.
func helloRecords(msg []byte, sizes ...int) []byte {
	var out []byte
	for i := 0; len(msg) > 0; i++ {
		n := len(msg)
		if len(sizes) > 0 {
			n = min(sizes[min(i, len(sizes)-1)], len(msg))
		}
		out = append(out, helloRecord(recordTypeHandshake, 0x0301, msg[:n])...)
		msg = msg[n:]
	}
	return out
}

// unrecord strips record headers, returning the handshake message bytes.
func unrecord(tb testing.TB, b []byte) []byte {
	tb.Helper()
	var msg []byte
	for len(b) > 0 {
		if len(b) < 5 {
			tb.Fatalf("unrecord: %d stray bytes", len(b))
		}
		n := int(b[3])<<8 | int(b[4])
		msg = append(msg, b[5:5+n]...)
		b = b[5+n:]
	}
	return msg
}

// readHelloRecords reads handshake records from r until they hold one
// whole handshake message, and returns the records as read. It shares no
// code with ParseHello, so tests do not check the parser against itself.
func readHelloRecords(r io.Reader) ([]byte, error) {
	var out, msg []byte
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, fmt.Errorf("record header: %w", err)
		}
		frag := make([]byte, int(hdr[3])<<8|int(hdr[4]))
		if _, err := io.ReadFull(r, frag); err != nil {
			return nil, fmt.Errorf("record body: %w", err)
		}
		out = append(append(out, hdr[:]...), frag...)
		msg = append(msg, frag...)
		if len(msg) >= 4 && len(msg) >= 4+(int(msg[1])<<16|int(msg[2])<<8|int(msg[3])) {
			return out, nil
		}
	}
}

// helloFromGo captures the ClientHello a crypto/tls client sends with cfg,
// over net.Pipe.
func helloFromGo(tb testing.TB, cfg *tls.Config) []byte {
	tb.Helper()
	cli, srv := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tls.Client(cli, cfg).Handshake() // fails once srv closes
	}()
	b, err := readHelloRecords(srv)
	srv.Close()
	<-done
	cli.Close()
	if err != nil {
		tb.Fatalf("reading ClientHello of a crypto/tls client: %v", err)
	}
	return b
}

// helloTestCert is a self-signed ECDSA certificate for names, and a pool
// that trusts it.
func helloTestCert(tb testing.TB, names ...string) (tls.Certificate, *x509.CertPool) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("generating key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatalf("creating certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("parsing certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}

// helloResumedFromGo captures the ClientHello of a crypto/tls client that
// resumes a TLS 1.3 session, as a long-lived mesh client does: the default
// post-quantum key shares plus a pre_shared_key ticket.
func helloResumedFromGo(tb testing.TB, name string, alpn ...string) []byte {
	tb.Helper()
	cert, pool := helloTestCert(tb, name)
	srvCfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: alpn}
	cliCfg := &tls.Config{ServerName: name, RootCAs: pool, NextProtos: alpn,
		ClientSessionCache: tls.NewLRUClientSessionCache(1)}
	cli, srv := net.Pipe()
	done := make(chan error, 1)
	go func() {
		s := tls.Server(srv, srvCfg)
		err := s.Handshake()
		if err == nil {
			_, err = s.Write([]byte{1}) // after the session ticket
		}
		done <- err
	}()
	c := tls.Client(cli, cliCfg)
	var one [1]byte
	if _, err := io.ReadFull(c, one[:]); err != nil {
		tb.Fatalf("first handshake: %v", err)
	}
	if err := <-done; err != nil {
		tb.Fatalf("first handshake, server side: %v", err)
	}
	cli.Close()
	srv.Close()
	return helloFromGo(tb, cliCfg)
}

// realHello is a captured ClientHello and what it should parse to.
type realHello struct {
	name string
	b    []byte
	sni  string
	alpn []string
}

const (
	apSNI     = "outbound_.9080_.v1_.reviews.default.svc.cluster.local"
	reviewSNI = "reviews.default.svc.cluster.local"
)

var realHellos = sync.OnceValue(func() []realHello {
	tb := &onceTB{}
	hs := []realHello{
		{name: "go default (post-quantum)", sni: reviewSNI,
			b: helloFromGo(tb, &tls.Config{ServerName: reviewSNI, InsecureSkipVerify: true})},
		{name: "go TLS 1.2 only", sni: reviewSNI, alpn: []string{"h2", "http/1.1"},
			b: helloFromGo(tb, &tls.Config{ServerName: reviewSNI, MaxVersion: tls.VersionTLS12,
				NextProtos: []string{"h2", "http/1.1"}, InsecureSkipVerify: true})},
		{name: "go istio ALPN", sni: apSNI, alpn: []string{"istio-peer-exchange", "istio"},
			b: helloFromGo(tb, &tls.Config{ServerName: apSNI, NextProtos: []string{"istio-peer-exchange", "istio"},
				InsecureSkipVerify: true})},
		{name: "go resumed istio (post-quantum)", sni: apSNI, alpn: []string{"istio-peer-exchange", "istio"},
			b: helloResumedFromGo(tb, apSNI, "istio-peer-exchange", "istio")},
		{name: "go upper case", sni: "reviews.default.svc.cluster.local",
			b: helloFromGo(tb, &tls.Config{ServerName: "Reviews.DEFAULT.svc.Cluster.Local", InsecureSkipVerify: true})},
	}
	if b, err := os.ReadFile(filepath.Join("testdata", opensslFixture)); err == nil {
		hs = append(hs, realHello{name: "openssl s_client", b: b, sni: "x", alpn: []string{"istio"}})
	}
	if tb.err != "" {
		panic(tb.err)
	}
	return hs
})

// onceTB lets helloFromGo run inside sync.OnceValue.
type onceTB struct {
	testing.TB
	err string
}

func (o *onceTB) Helper() {}
func (o *onceTB) Fatalf(format string, args ...any) {
	o.err = fmt.Sprintf(format, args...)
	panic(o.err)
}

// goPQHello is the resumed istio hello of a crypto/tls client: default
// post-quantum key shares, mesh ALPN and a session ticket, about 1.7 KiB.
func goPQHello(tb testing.TB) []byte {
	tb.Helper()
	b := realHelloNamed(tb, "go resumed istio (post-quantum)")
	if len(b) < 1700 {
		tb.Fatalf("resumed crypto/tls ClientHello is %d bytes, want a post-quantum hello of at least 1700", len(b))
	}
	return b
}

func realHelloNamed(tb testing.TB, name string) []byte {
	tb.Helper()
	for _, rh := range realHellos() {
		if rh.name == name {
			return rh.b
		}
	}
	tb.Fatalf("no real hello named %q", name)
	return nil
}

// tlsServerView feeds hello to a crypto/tls server and returns what it saw.
func tlsServerView(tb testing.TB, hello []byte) *tls.ClientHelloInfo {
	tb.Helper()
	cli, srv := net.Pipe()
	defer cli.Close()
	errStop := errors.New("stop")
	var seen *tls.ClientHelloInfo
	cfg := &tls.Config{GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		c := *chi
		seen = &c
		return nil, errStop
	}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		cli.Write(hello)
		io.Copy(io.Discard, cli) // the alert
	}()
	err := tls.Server(srv, cfg).Handshake()
	srv.Close()
	<-done
	if seen == nil {
		tb.Fatalf("crypto/tls server did not accept the ClientHello: %v", err)
	}
	return seen
}

// ---- tests ----

func TestParseHelloRealClients(t *testing.T) {
	for _, rh := range realHellos() {
		t.Run(rh.name, func(t *testing.T) {
			var h RawHello
			if err := ParseHello(rh.b, &h); err != nil {
				t.Fatalf("ParseHello(%d-byte hello) = %v, want nil", len(rh.b), err)
			}
			if got := string(h.ServerName); got != rh.sni {
				t.Errorf("ParseHello ServerName = %q, want %q", got, rh.sni)
			}
			if got := alpnList(&h); !slices.Equal(got, rh.alpn) {
				t.Errorf("ParseHello ALPN = %q, want %q", got, rh.alpn)
			}
			if h.Len != len(rh.b) {
				t.Errorf("ParseHello Len = %d, want %d", h.Len, len(rh.b))
			}
			// crypto/tls reads the same hello the same way.
			seen := tlsServerView(t, rh.b)
			if got := strings.ToLower(strings.TrimSuffix(seen.ServerName, ".")); got != string(h.ServerName) {
				t.Errorf("crypto/tls saw ServerName %q, ParseHello %q", seen.ServerName, h.ServerName)
			}
			if !slices.Equal(seen.SupportedProtos, alpnList(&h)) {
				t.Errorf("crypto/tls saw ALPN %q, ParseHello %q", seen.SupportedProtos, alpnList(&h))
			}
		})
	}
}

func alpnList(h *RawHello) []string {
	var out []string
	for p := range h.ALPN() {
		out = append(out, string(p))
	}
	return out
}

func TestParseHelloRealSizes(t *testing.T) {
	if b := realHelloNamed(t, "go default (post-quantum)"); len(b) < 1200 {
		t.Errorf("default crypto/tls ClientHello is %d bytes, want over 1200 with an ML-KEM key share", len(b))
	}
	goPQHello(t)
	for _, rh := range realHellos() {
		t.Logf("%s: %d bytes", rh.name, len(rh.b))
	}
}

// TestParseHelloTruncated cuts real hellos, in one record and in many, at
// every offset: each prefix must ask for more bytes, and Need must be a
// true lower bound (more than the prefix, at most the whole).
func TestParseHelloTruncated(t *testing.T) {
	for _, rh := range realHellos() {
		for _, sizes := range [][]int{nil, {1}, {3, 700}, {1000}} {
			b := rh.b
			if sizes != nil {
				b = helloRecords(unrecord(t, rh.b), sizes...)
			}
			t.Run(fmt.Sprintf("%s/records%v", rh.name, sizes), func(t *testing.T) {
				var h RawHello
				for i := range len(b) {
					err := ParseHello(b[:i], &h)
					if err != ErrIncomplete {
						t.Fatalf("ParseHello(first %d of %d bytes) = %v, want ErrIncomplete", i, len(b), err)
					}
					if h.Need <= i || h.Need > len(b) {
						t.Fatalf("ParseHello(first %d of %d bytes) Need = %d, want in (%d, %d]", i, len(b), h.Need, i, len(b))
					}
				}
				if err := ParseHello(b, &h); err != nil || string(h.ServerName) != rh.sni {
					t.Fatalf("ParseHello(all %d bytes) = %q, %v; want %q, nil", len(b), h.ServerName, err, rh.sni)
				}
			})
		}
	}
}

// TestParseHelloSplitRecords reassembles real hellos fragmented into
// records of many sizes, including 1-byte records that split every header.
func TestParseHelloSplitRecords(t *testing.T) {
	for _, rh := range realHellos() {
		msg := unrecord(t, rh.b)
		for _, sizes := range [][]int{{1}, {2}, {3}, {4, 1}, {5}, {100}, {1000}, {len(msg) - 1}, {maxRecordLen}} {
			t.Run(fmt.Sprintf("%s/records%v", rh.name, sizes), func(t *testing.T) {
				b := helloRecords(msg, sizes...)
				// Bytes after the hello (a ChangeCipherSpec, early data)
				// are not part of it.
				in := append(slices.Clip(b), helloRecord(0x14, 0x0303, []byte{1})...)
				var h RawHello
				if err := ParseHello(in, &h); err != nil {
					t.Fatalf("ParseHello(records of %v bytes) = %v, want nil", sizes, err)
				}
				if string(h.ServerName) != rh.sni || !slices.Equal(alpnList(&h), rh.alpn) || h.Len != len(b) {
					t.Fatalf("ParseHello = (%q, %q, Len %d), want (%q, %q, Len %d)",
						h.ServerName, alpnList(&h), h.Len, rh.sni, rh.alpn, len(b))
				}
			})
		}
	}
}

// Offsets of a synthetic hello built with helloSpec defaults and one
// record: header 0-4, handshake header 5-8, version 9, random 11,
// session_id 43, cipher_suites 44, compression 48, extensions 50, first
// extension 52 (data at 56).
const (
	offVersion    = 9
	offSessionID  = 43
	offSuites     = 44
	offCompress   = 48
	offExtensions = 50
	offFirstExt   = 52
	offSNIList    = 56 // with server_name as the first extension
	offSNIName    = 61
)

type helloRow struct {
	name  string
	in    []byte
	want  error  // a sentinel, or nil for success or a *MalformedError
	field string // *MalformedError.Field wanted
	off   int    // *MalformedError.Offset wanted; -1 = any
	cause error  // errors.Is(err, cause) wanted, if set
	sni   string // ServerName wanted on success
}

func withExts(exts ...helloExtension) []byte {
	return helloRecords(helloMessage(helloSpec{exts: exts}), maxRecordLen)
}

func helloRows() []helloRow {
	good := helloMessage(helloSpec{exts: []helloExtension{sniExtension("a.example"), alpnExtension("istio")}})
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)
	cut := helloMessage(helloSpec{noExtensions: true})[:20] // ends inside the random
	cut[3] = byte(len(cut) - handshakeHeaderLen)
	trailing := helloRecords(good)
	trailing[4]++ // one more record byte than the message has
	trailing = append(trailing, 0)
	return []helloRow{
		{name: "ok", in: helloRecords(good), sni: "a.example"},
		{name: "ok record version 0x0303", in: helloRecord(0x16, 0x0303, good), sni: "a.example"},
		{name: "ok upper case and trailing dot", in: withExts(sniExtension("A.Example.")), sni: "a.example"},
		{name: "ok istio name", in: withExts(sniExtension(apSNI)), sni: apSNI},
		{name: "ok 253 bytes", in: withExts(sniExtension(long)), sni: long},
		{name: "ok GREASE repeated", in: withExts(helloExtension{typ: 0x0a0a}, sniExtension("a.example"), helloExtension{typ: 0x0a0a}), sni: "a.example"},
		{name: "ok unknown name type skipped", in: withExts(helloExtension{typ: 0, data: []byte{0, 8, 7, 0, 1, 'z', 0, 0, 1, 'q'}}), sni: "q"},

		{name: "empty", in: nil, want: ErrIncomplete},
		{name: "one byte", in: []byte{0x16}, want: ErrIncomplete},
		{name: "header only", in: []byte{0x16, 3, 1, 0, 10}, want: ErrIncomplete},
		{name: "http request", in: []byte("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"), want: ErrNotTLS},
		{name: "http2 preface", in: []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), want: ErrNotTLS},
		{name: "application data record", in: helloRecord(0x17, 0x0303, good), want: ErrNotTLS},
		{name: "alert record", in: helloRecord(0x15, 0x0303, []byte{2, 40}), want: ErrNotTLS},
		{name: "change cipher spec record", in: helloRecord(0x14, 0x0303, []byte{1}), want: ErrNotTLS},
		{name: "sslv2 hello", in: []byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10}, want: ErrNotTLS},
		{name: "record version 2.0", in: helloRecord(0x16, 0x0200, good), want: ErrNotTLS},
		{name: "record version 3.5", in: helloRecord(0x16, 0x0305, good), want: ErrNotTLS},
		{name: "record version byte alone", in: []byte{0x16, 0x04}, want: ErrNotTLS},
		{name: "proxy protocol", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), want: ErrNotTLS},

		{name: "record length zero", in: []byte{0x16, 3, 1, 0, 0}, field: "record.length", off: 3},
		{name: "record length 0xffff", in: []byte{0x16, 3, 1, 0xff, 0xff}, want: ErrTooLarge},
		{name: "record length 16385", in: []byte{0x16, 3, 1, 0x40, 0x01, 1}, want: ErrTooLarge},
		{name: "record longer than message", in: trailing, field: "record.length", off: 3},
		{name: "second record application data", in: append(helloRecords(good[:10]), helloRecord(0x17, 0x0303, good[10:])...), field: "record.type", off: 15},
		{name: "second record alert, 1 byte", in: append(helloRecords(good[:10]), 0x15), field: "record.type", off: 15},
		{name: "second record version 2.0", in: append(helloRecords(good[:10]), helloRecord(0x16, 0x0200, good[10:])...), field: "record.version", off: 16},
		{name: "second record length zero", in: append(helloRecords(good[:10]), 0x16, 3, 3, 0, 0), field: "record.length", off: 18},

		{name: "server hello", in: helloRecords(helloMessage(helloSpec{msgType: 2})), field: "handshake.type", off: 5},
		{name: "handshake type in second record", in: helloRecords([]byte{2, 0, 0, 1, 0}, 1), field: "handshake.type", off: 5},
		{name: "handshake length zero", in: helloRecords([]byte{1, 0, 0, 0}), field: "handshake.length", off: 6},
		{name: "handshake length 16 MiB", in: helloRecords([]byte{1, 0xff, 0xff, 0xff, 0}), want: ErrTooLarge},
		{name: "handshake length 64 KiB", in: helloRecords([]byte{1, 0x01, 0x00, 0x00, 0}), want: ErrTooLarge},
		{name: "handshake length past data", in: helloRecords(helloMessage(helloSpec{msgLenDelta: 1})), want: ErrIncomplete},
		{name: "handshake length short of data", in: helloRecords(helloMessage(helloSpec{msgLenDelta: -1})), field: "record.length", off: 3},

		{name: "legacy version 2.0", in: helloRecords(helloMessage(helloSpec{version: 0x0200})), field: "client_hello.version", off: offVersion},
		{name: "truncated in random", in: helloRecords(cut), field: "client_hello.random", off: 11},
		{name: "session id 33 bytes", in: helloRecords(helloMessage(helloSpec{sessionID: make([]byte, 33)})), field: "client_hello.session_id.length", off: offSessionID},
		{name: "cipher suites odd", in: helloRecords(helloMessage(helloSpec{suites: []byte{1, 2, 3}})), field: "client_hello.cipher_suites.length", off: offSuites},
		{name: "cipher suites empty", in: helloRecords(helloMessage(helloSpec{suites: []byte{}})), field: "client_hello.cipher_suites.length", off: offSuites},
		{name: "cipher suites length overflow", in: helloRecords(helloMessage(helloSpec{suitesLen: 0xfffe})), field: "client_hello.cipher_suites.length", off: offSuites},
		{name: "no compression methods", in: helloRecords(helloMessage(helloSpec{compression: []byte{}})), field: "client_hello.compression_methods.length", off: offCompress},
		{name: "extensions length too long", in: helloRecords(helloMessage(helloSpec{exts: []helloExtension{sniExtension("a.example")}, extLenDelta: 1})), field: "client_hello.extensions.length", off: offExtensions},
		{name: "extensions length too short", in: helloRecords(helloMessage(helloSpec{exts: []helloExtension{sniExtension("a.example")}, extLenDelta: -1})), field: "client_hello.extensions.length", off: offExtensions},
		{name: "extensions length one byte", in: helloRecords(helloMessage(helloSpec{noExtensions: true, tail: []byte{0}})), field: "client_hello.extensions.length", off: offExtensions},
		{name: "extension header truncated", in: helloRecords(helloMessage(helloSpec{noExtensions: true, tail: []byte{0, 3, 0, 0, 0}})), field: "extension.header", off: offFirstExt},
		{name: "extension length 0xffff", in: helloRecords(helloMessage(helloSpec{noExtensions: true, tail: []byte{0, 4, 0, 0x15, 0xff, 0xff}})), field: "extension.length", off: offFirstExt + 2},
		{name: "duplicate server_name", in: withExts(sniExtension("a.example"), sniExtension("b.example")), field: "extension.duplicate", off: -1},
		{name: "duplicate alpn", in: withExts(alpnExtension("h2"), sniExtension("a.example"), alpnExtension("istio")), field: "extension.duplicate", off: -1},
		{name: "two host names", in: withExts(sniExtension("a.example", "b.example")), field: "server_name.host_name.duplicate", off: offSNIList + 2 + 3 + 9},
		{name: "server_name empty", in: withExts(helloExtension{typ: 0}), field: "server_name.list.length", off: offSNIList},
		{name: "server_name list empty", in: withExts(helloExtension{typ: 0, data: []byte{0, 0}}), field: "server_name.list.length", off: offSNIList},
		{name: "server_name list too long", in: withExts(helloExtension{typ: 0, data: []byte{0, 9, 0, 0, 1, 'a'}}), field: "server_name.list.length", off: offSNIList},
		{name: "server_name entry cut", in: withExts(helloExtension{typ: 0, data: []byte{0, 2, 0, 0}}), field: "server_name.entry", off: offSNIList + 2},
		{name: "server_name length overflow", in: withExts(helloExtension{typ: 0, data: []byte{0, 4, 0, 0xff, 0xff, 'a'}}), field: "server_name.entry.length", off: offSNIList + 3},
		{name: "host name empty", in: withExts(sniExtension("")), field: "server_name.host_name", off: offSNIName, cause: ErrInvalidName},
		{name: "host name IPv4", in: withExts(sniExtension("10.0.0.1")), field: "server_name.host_name", off: offSNIName + 7, cause: ErrInvalidName},
		{name: "host name IPv4 hex", in: withExts(sniExtension("0x7f000001")), field: "server_name.host_name", off: offSNIName, cause: ErrInvalidName},
		{name: "host name IPv6", in: withExts(sniExtension("::1")), field: "server_name.host_name", off: offSNIName, cause: ErrInvalidName},
		{name: "host name non-ASCII", in: withExts(sniExtension("bücher.example")), field: "server_name.host_name", off: offSNIName + 1, cause: ErrInvalidName},
		{name: "host name NUL", in: withExts(sniExtension("a\x00.example")), field: "server_name.host_name", off: offSNIName + 1, cause: ErrInvalidName},
		{name: "host name space", in: withExts(sniExtension("a example")), field: "server_name.host_name", off: offSNIName + 1, cause: ErrInvalidName},
		{name: "host name 254 bytes", in: withExts(sniExtension(long + "e")), field: "server_name.host_name", cause: ErrInvalidName, off: -1},
		{name: "host name label 64", in: withExts(sniExtension(strings.Repeat("a", 64) + ".example")), field: "server_name.host_name", off: offSNIName + 63, cause: ErrInvalidName},
		{name: "host name empty label", in: withExts(sniExtension("a..example")), field: "server_name.host_name", off: offSNIName + 2, cause: ErrInvalidName},
		{name: "host name only a dot", in: withExts(sniExtension(".")), field: "server_name.host_name", off: offSNIName, cause: ErrInvalidName},
		{name: "host name 60 KiB", in: withExts(sniExtension(strings.Repeat("a", 60000))), field: "server_name.host_name", off: -1, cause: ErrInvalidName},
		{name: "alpn empty", in: withExts(helloExtension{typ: extALPN}, sniExtension("a.example")), field: "alpn.list.length", off: offFirstExt + 4},
		{name: "alpn list empty", in: withExts(helloExtension{typ: extALPN, data: []byte{0, 0}}, sniExtension("a.example")), field: "alpn.list.length", off: offFirstExt + 4},
		{name: "alpn protocol empty", in: withExts(helloExtension{typ: extALPN, data: []byte{0, 2, 0, 'a'}}, sniExtension("a.example")), field: "alpn.protocol.length", off: offFirstExt + 6},
		{name: "alpn protocol overflow", in: withExts(helloExtension{typ: extALPN, data: []byte{0, 3, 9, 'a', 'b'}}, sniExtension("a.example")), field: "alpn.protocol.length", off: offFirstExt + 6},

		{name: "no extensions", in: helloRecords(helloMessage(helloSpec{noExtensions: true})), want: ErrNoSNI},
		{name: "no server_name", in: withExts(alpnExtension("istio")), want: ErrNoSNI},
		{name: "only unknown name type", in: withExts(helloExtension{typ: 0, data: []byte{0, 4, 7, 0, 1, 'z'}}), want: ErrNoSNI},
	}
}

func checkHelloErr(t *testing.T, call string, err error, h *RawHello, row helloRow) {
	t.Helper()
	var me *MalformedError
	switch {
	case row.field != "":
		if !errors.As(err, &me) {
			t.Fatalf("%s = %v, want *MalformedError{Field: %q}", call, err, row.field)
		}
		if me.Field != row.field || row.off >= 0 && me.Offset != row.off {
			t.Fatalf("%s = %v, want Field %q at offset %d", call, err, row.field, row.off)
		}
	case row.want != nil:
		if !errors.Is(err, row.want) {
			t.Fatalf("%s = %v, want %v", call, err, row.want)
		}
	default:
		if err != nil {
			t.Fatalf("%s = %v, want nil", call, err)
		}
		if string(h.ServerName) != row.sni {
			t.Fatalf("%s ServerName = %q, want %q", call, h.ServerName, row.sni)
		}
	}
	if row.cause != nil && !errors.Is(err, row.cause) {
		t.Fatalf("%s = %v, want it to wrap %v", call, err, row.cause)
	}
}

func TestParseHelloHostile(t *testing.T) {
	for _, row := range helloRows() {
		t.Run(row.name, func(t *testing.T) {
			var h RawHello
			err := ParseHello(row.in, &h)
			checkHelloErr(t, fmt.Sprintf("ParseHello(% x…)", row.in[:min(len(row.in), 12)]), err, &h, row)
		})
	}
}

// TestParseHelloSplitOffsets refragments each hostile hello whose fault is
// inside the handshake body: the same field must be named, and its offset
// must point at the same byte of the record stream.
func TestParseHelloSplitOffsets(t *testing.T) {
	for _, row := range helloRows() {
		if row.field == "" || strings.HasPrefix(row.field, "record.") || strings.HasPrefix(row.field, "handshake.") ||
			len(row.in) > MaxHelloBytes/4 { // 7-byte records would pass the size cap
			continue
		}
		t.Run(row.name, func(t *testing.T) {
			var h RawHello
			var me1, me2 *MalformedError
			if err := ParseHello(row.in, &h); !errors.As(err, &me1) {
				t.Fatalf("ParseHello(one record) = %v, want *MalformedError", err)
			}
			split := helloRecords(unrecord(t, row.in), 7)
			if err := ParseHello(split, &h); !errors.As(err, &me2) {
				t.Fatalf("ParseHello(7-byte records) = %v, want *MalformedError", err)
			}
			if me2.Field != me1.Field {
				t.Fatalf("ParseHello(7-byte records) Field = %q, want %q", me2.Field, me1.Field)
			}
			// A field at the very end of the message points past it.
			if me1.Offset == len(row.in) {
				if me2.Offset != len(split) {
					t.Fatalf("ParseHello(7-byte records) Offset = %d, want end %d", me2.Offset, len(split))
				}
				return
			}
			if me2.Offset >= len(split) || split[me2.Offset] != row.in[me1.Offset] {
				t.Fatalf("ParseHello(7-byte records) Offset %d does not point at the byte 0x%02x at offset %d of one record",
					me2.Offset, row.in[me1.Offset], me1.Offset)
			}
		})
	}
}

func TestParseHelloReusesRawHello(t *testing.T) {
	var h RawHello
	if err := ParseHello(realHelloNamed(t, "go istio ALPN"), &h); err != nil || !h.HasMeshALPN() {
		t.Fatalf("ParseHello(istio hello) = %v, HasMeshALPN %v; want nil, true", err, h.HasMeshALPN())
	}
	if err := ParseHello(withExts(sniExtension("b.example")), &h); err != nil {
		t.Fatalf("ParseHello(second hello) = %v, want nil", err)
	}
	if string(h.ServerName) != "b.example" || len(alpnList(&h)) != 0 || h.HasMeshALPN() {
		t.Fatalf("ParseHello(second hello) left (%q, %q), want (\"b.example\", none)", h.ServerName, alpnList(&h))
	}
}

func TestParseHelloZeroAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("allocation counts differ under -cover")
	}
	pq := goPQHello(t)
	split := helloRecords(unrecord(t, pq), 500)
	for _, tc := range []struct {
		name string
		b    []byte
	}{{"one record", pq}, {"500-byte records", split}} {
		t.Run(tc.name, func(t *testing.T) {
			var h RawHello
			_ = ParseHello(tc.b, &h) // warm the reassembly buffer
			allocs := testing.AllocsPerRun(100, func() {
				if err := ParseHello(tc.b, &h); err != nil || !h.HasMeshALPN() && len(h.ServerName) == 0 {
					t.Fatalf("ParseHello = %v", err)
				}
			})
			if allocs != 0 {
				t.Fatalf("ParseHello(%d-byte hello) allocates %v times per call, want 0", len(tc.b), allocs)
			}
		})
	}
}

func TestParseHelloOpenSSLFixture(t *testing.T) {
	path := filepath.Join("testdata", opensslFixture)
	if *updateOpenSSL {
		captureOpenSSLHello(t, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading fixture (make it with -update-openssl): %v", err)
	}
	var h RawHello
	if err := ParseHello(b, &h); err != nil {
		t.Fatalf("ParseHello(%s) = %v, want nil", path, err)
	}
	if string(h.ServerName) != "x" || !slices.Equal(alpnList(&h), []string{"istio"}) || !h.HasMeshALPN() {
		t.Fatalf("ParseHello(%s) = (%q, %q), want (\"x\", [istio])", path, h.ServerName, alpnList(&h))
	}
}

// captureOpenSSLHello runs openssl s_client against a loopback listener
// and writes the ClientHello records it sends to path.
func captureOpenSSLHello(t *testing.T, path string) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("-update-openssl needs openssl on PATH: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := exec.CommandContext(t.Context(), bin, "s_client", "-connect", ln.Addr().String(), "-servername", "x", "-alpn", "istio")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := readHelloRecords(c)
	c.Close()
	_ = cmd.Wait() // it fails: the server hung up
	if err != nil {
		t.Fatalf("reading openssl's ClientHello: %v\n%s", err, out.Bytes())
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", path, len(b))
}

func FuzzParseHello(f *testing.F) {
	for _, row := range helloRows() {
		if len(row.in) <= 8<<10 { // big seeds slow every mutation down
			f.Add(row.in)
		}
	}
	for _, rh := range realHellos() {
		f.Add(rh.b)
		f.Add(helloRecords(unrecord(f, rh.b), 300))
		f.Add(unrecord(f, rh.b)[handshakeHeaderLen:]) // a body, for the framed check
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkParseHello(t, b)
		// Also frame b as a ClientHello body, in one record and in
		// records of a size taken from b, so that mutations reach the
		// body and extension parsers without breaking the framing.
		if len(b) > 0 && len(b)+handshakeHeaderLen <= maxRecordLen {
			msg := append([]byte{typeClientHello, 0, byte(len(b) >> 8), byte(len(b))}, b...)
			checkParseHello(t, helloRecords(msg))
			checkParseHello(t, helloRecords(msg, 1+int(b[0])))
		}
	})
}

// checkParseHello checks the documented contract of ParseHello on b.
func checkParseHello(t *testing.T, b []byte) {
	t.Helper()
	var h RawHello
	err := ParseHello(b, &h)
	var me *MalformedError
	switch {
	case err == nil || err == ErrNoSNI:
		if h.Len <= 0 || h.Len > len(b) {
			t.Fatalf("ParseHello = %v with Len %d, want 0 < Len <= %d", err, h.Len, len(b))
		}
		if err == nil {
			if n, perr := ParseName(string(h.ServerName)); perr != nil || string(n) != string(h.ServerName) {
				t.Fatalf("ParseHello accepted server name %q; ParseName says %q, %v", h.ServerName, n, perr)
			}
		}
		for p := range h.ALPN() {
			if len(p) == 0 {
				t.Fatalf("ParseHello yielded an empty ALPN protocol")
			}
		}
		// Bytes past Len never matter.
		name, alpn, n := string(h.ServerName), alpnList(&h), h.Len
		var h2 RawHello
		if err2 := ParseHello(b[:n], &h2); err2 != err || string(h2.ServerName) != name || !slices.Equal(alpnList(&h2), alpn) {
			t.Fatalf("ParseHello(first %d bytes) = (%q, %v), ParseHello(all) = (%q, %v)", n, h2.ServerName, err2, name, err)
		}
		// Every prefix asks for more, and Need is a lower bound.
		for _, i := range []int{0, 1, n / 3, n / 2, n - 1} {
			if err := ParseHello(b[:i], &h2); err != ErrIncomplete || h2.Need <= i || h2.Need > n {
				t.Fatalf("ParseHello(first %d of %d bytes) = %v, Need %d; want ErrIncomplete, Need in (%d, %d]", i, n, err, h2.Need, i, n)
			}
		}
	case err == ErrIncomplete:
		if h.Need <= len(b) || h.Need > MaxHelloBytes {
			t.Fatalf("ParseHello(%d bytes) = ErrIncomplete, Need %d; want in (%d, %d]", len(b), h.Need, len(b), MaxHelloBytes)
		}
	case errors.Is(err, ErrNotTLS), errors.Is(err, ErrTooLarge):
	case errors.As(err, &me):
		if me.Field == "" || me.Offset < 0 || me.Offset > len(b) {
			t.Fatalf("ParseHello(%d bytes) = %#v, want a field and an offset in [0, %d]", len(b), me, len(b))
		}
	default:
		t.Fatalf("ParseHello = %v (%T), not a documented error", err, err)
	}
}

func BenchmarkParseHello(b *testing.B) {
	pq := goPQHello(b)
	for _, bc := range []struct {
		name string
		in   []byte
	}{
		{"go-pq-1record", pq},
		{"go-pq-500B-records", helloRecords(unrecord(b, pq), 500)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var h RawHello
			b.SetBytes(int64(len(bc.in)))
			b.ReportAllocs()
			for b.Loop() {
				if err := ParseHello(bc.in, &h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
