package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/api"
	"github.com/meshgate/meshgate/pki/pkitest"
	"github.com/meshgate/meshgate/pki/store"
)

// floodServer is a CA served on 127.0.0.1 with its store and metrics at
// hand, for tests that measure what hostile traffic leaves behind.
type floodServer struct {
	*testServer
	store *store.Memory
	reg   *prometheus.Registry
}

func startFloodServer(t testing.TB, caMod func(*pki.Config), apiMod func(*api.Config)) *floodServer {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := pkitest.Config(t)
	cfg.Registerer = reg
	if caMod != nil {
		caMod(&cfg)
	}
	ca, st := pkitest.NewCA(t, cfg)
	acfg := api.DefaultConfig()
	acfg.Logger = pkitest.Logger(t)
	acfg.Registerer = reg
	if apiMod != nil {
		apiMod(&acfg)
	}
	srv, err := api.NewServer(acfg, ca)
	if err != nil {
		t.Fatalf("api.NewServer() = %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve() = %v, want nil after cancel", err)
		}
		srv.Close()
	})
	return &floodServer{
		testServer: &testServer{ca: ca, srv: srv, addr: ln.Addr().String(), roots: ca.RootPool()},
		store:      st,
		reg:        reg,
	}
}

// stateBytes is the size of everything the CA keeps in its store (keys
// and values): what raft would replicate and snapshot.
func (fs *floodServer) stateBytes(t testing.TB) int {
	t.Helper()
	kvs, err := fs.store.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, kv := range kvs {
		n += len(kv.Key) + len(kv.Value)
	}
	return n
}

// settle waits until the server holds its own certificate (issued, and
// audited, when Serve starts), so that measurements start after it.
func (fs *floodServer) settle(t testing.TB) {
	t.Helper()
	c, err := tls.Dial("tcp", fs.addr, &tls.Config{RootCAs: fs.roots, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("first handshake: %v", err)
	}
	c.Close()
}

// auditRecords returns the CA's audit log.
func (fs *floodServer) auditRecords(t testing.TB) []pki.AuditRecord {
	t.Helper()
	recs, err := fs.ca.AuditLog(context.Background(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// counter returns the value of counter name with label=value (summed over
// other labels).
func (fs *floodServer) counter(t testing.TB, name, label, value string) float64 {
	t.Helper()
	mfs, err := fs.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// fromAddr is a dialer bound to a loopback source address (127.0.0.x), so
// that one test can be many remote addresses.
func fromAddr(ip string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
}

// httpsFrom is an HTTPS client whose connections come from ip.
func (ts *testServer) httpsFrom(t testing.TB, ip string, cert *tls.Certificate) *http.Client {
	tc := &tls.Config{RootCAs: ts.roots, ServerName: "localhost"}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: tc, DialContext: fromAddr(ip).DialContext, MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// grpcFrom is a gRPC client (ALPN h2 only) whose connection comes from ip.
func (ts *testServer) grpcFrom(t testing.TB, ip string, cert *tls.Certificate) pb.IstioCertificateServiceClient {
	t.Helper()
	tc := &tls.Config{RootCAs: ts.roots, ServerName: "istiod.istio-system.svc"}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	d := fromAddr(ip)
	conn, err := grpc.NewClient("passthrough:///"+ts.addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewIstioCertificateServiceClient(conn)
}

// selfSignedClientCert is a client certificate of a key of its own (no
// CA), with one URI SAN of uriLen bytes.
func selfSignedClientCert(t testing.TB, uriLen int) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u := &url.URL{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/default/sa/" + strings.Repeat("a", max(uriLen-len("spiffe://cluster.local/ns/default/sa/"), 1))}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		URIs:         []*url.URL{u},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func postCert(ctx context.Context, c *http.Client, addr, auth string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+"/v1/certificates", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestCAHostileRequests sends each kind of hostile request many times over
// real sockets and checks that each is refused, counted by reason, and
// leaves (almost) nothing in the replicated store.
func TestCAHostileRequests(t *testing.T) {
	const repeat = 150
	csr, _ := pkitest.WorkloadCSR(t, web)
	good := jsonBody(t, map[string]any{"csr": string(csr)})
	for _, tc := range []struct {
		name string
		// send makes one hostile request and returns what came back
		// (HTTP status, or gRPC code as a string).
		send func(t *testing.T, fs *floodServer) string
		// want are the acceptable answers: the refusal, or rate_limited
		// once the address has spent its failure budget.
		want   []string
		reason string // meshgate_pki_api_refused_total reason that must grow
	}{
		{"bogus bearer token (HTTP)", func(t *testing.T, fs *floodServer) string {
			st, err := postCert(t.Context(), fs.httpsFrom(t, "127.0.0.1", nil), fs.addr, "Bearer mgt.bogus-"+rand.Text(), good)
			return answer(st, err)
		}, []string{"401", "429"}, "bad_token"},
		{"bogus bearer token (gRPC)", func(t *testing.T, fs *floodServer) string {
			ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer mgt.bogus-"+rand.Text())
			_, err := fs.grpcFrom(t, "127.0.0.1", nil).CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: string(csr)})
			return status.Code(err).String()
		}, []string{"Unauthenticated", "ResourceExhausted"}, "bad_token"},
		{"self-signed client cert with a 60 KB URI SAN", func(t *testing.T, fs *floodServer) string {
			st, err := postCert(t.Context(), fs.httpsFrom(t, "127.0.0.1", selfSignedClientCert(t, 60<<10)), fs.addr, "", good)
			return answer(st, err)
		}, []string{"401", "429"}, "bad_client_cert"},
		{"malformed JSON body", func(t *testing.T, fs *floodServer) string {
			st, err := postCert(t.Context(), fs.httpsFrom(t, "127.0.0.1", nil), fs.addr, "Bearer mgt.x", []byte(`{"csr": "`+strings.Repeat("A", 40<<10)))
			return answer(st, err)
		}, []string{"400", "429"}, "bad_request"},
		{"body over the size limit", func(t *testing.T, fs *floodServer) string {
			st, err := postCert(t.Context(), fs.httpsFrom(t, "127.0.0.1", nil), fs.addr, "", bytes.Repeat([]byte("x"), 100<<10))
			return answer(st, err)
		}, []string{"400", "429"}, "bad_request"},
		{"empty gRPC CSR", func(t *testing.T, fs *floodServer) string {
			_, err := fs.grpcFrom(t, "127.0.0.1", nil).CreateCertificate(t.Context(), &pb.IstioCertificateRequest{})
			return status.Code(err).String()
		}, []string{"InvalidArgument", "ResourceExhausted"}, "bad_request"},
		{"cfssl authsign with a forged token", func(t *testing.T, fs *floodServer) string {
			body := jsonBody(t, map[string]any{"token": []byte("forged-hmac-0123456789abcdef"), "request": []byte(`{"certificate_request":"x"}`)})
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "https://"+fs.addr+"/api/v1/cfssl/authsign", bytes.NewReader(body))
			resp, err := fs.httpsFrom(t, "127.0.0.1", nil).Do(req)
			if err != nil {
				return err.Error()
			}
			resp.Body.Close()
			return fmt.Sprint(resp.StatusCode)
		}, []string{"401", "429"}, "unauthenticated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := startFloodServer(t, nil, func(c *api.Config) { c.CFSSLAuthKey = "00112233445566778899aabbccddeeff" })
			fs.settle(t)
			before, records := fs.stateBytes(t), len(fs.auditRecords(t))
			counted := 0.0
			if tc.reason != "" {
				counted = fs.counter(t, "meshgate_pki_api_refused_total", "reason", tc.reason)
			}
			got := map[string]int{}
			for range repeat {
				got[tc.send(t, fs)]++
			}
			for a := range got {
				if !slices.Contains(tc.want, a) {
					t.Fatalf("%d x %s: answers %v, want only %v", repeat, tc.name, got, tc.want)
				}
			}
			if got[tc.want[0]] == 0 {
				t.Fatalf("%d x %s: answers %v, want some %s", repeat, tc.name, got, tc.want[0])
			}
			if tc.reason != "" {
				if n := fs.counter(t, "meshgate_pki_api_refused_total", "reason", tc.reason); n-counted < float64(got[tc.want[0]]) {
					t.Fatalf("%s: meshgate_pki_api_refused_total{reason=%q} grew by %v, want >= %d", tc.name, tc.reason, n-counted, got[tc.want[0]])
				}
			}
			if n := len(fs.auditRecords(t)); n != records {
				t.Fatalf("%d x %s: audit records went %d -> %d, want no record of unauthenticated refusals", repeat, tc.name, records, n)
			}
			// The node's own server certificate is the only write allowed.
			if after := fs.stateBytes(t); after-before > 4<<10 {
				t.Fatalf("%d x %s: store grew %d -> %d bytes, want at most 4 KiB", repeat, tc.name, before, after)
			}
		})
	}
}

func answer(status int, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprint(status)
}

// TestCASilentSockets checks that a connection that never starts its
// handshake is closed after HandshakeTimeout, and that connections beyond
// the per-address handshake bound are closed at once, while another
// address still gets its answer.
func TestCASilentSockets(t *testing.T) {
	const perRemote = 8
	fs := startFloodServer(t, nil, func(c *api.Config) {
		c.HandshakeTimeout = 500 * time.Millisecond
		c.MaxHandshakesPerRemote = perRemote
	})
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range 3 * perRemote {
		c, err := fromAddr("127.0.0.2").Dial("tcp", fs.addr)
		if err != nil {
			t.Fatalf("dial from 127.0.0.2: %v", err)
		}
		conns = append(conns, c)
	}
	// Every silent socket is closed by the server: the extra ones at once
	// (remote_handshake_limit), the others at the handshake timeout.
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
			t.Fatalf("silent socket %d: Read = %v, want the server to close it (EOF)", i, err)
		}
	}
	if n := fs.counter(t, "meshgate_pki_api_refused_total", "reason", "remote_handshake_limit"); n < 2*perRemote {
		t.Fatalf("refused{remote_handshake_limit} = %v, want >= %d", n, 2*perRemote)
	}
	if n := fs.counter(t, "meshgate_pki_api_refused_total", "reason", "handshake_timeout"); n < 1 {
		t.Fatalf("refused{handshake_timeout} = %v, want >= 1", n)
	}
	// The slots are released just after the close the client saw.
	waitFor(t, 5*time.Second, "the handshake slots of closed silent sockets to be released", func() bool {
		_, hs := fs.srv.Conns()
		return hs == 0
	})
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

// floodLoad is a bogus-token flood and a set of silent sockets against a
// server, from their own loopback addresses, bounded in count and time.
type floodLoad struct {
	sent    atomic.Int64
	silent  []net.Conn
	stop    chan struct{}
	wg      sync.WaitGroup
	stopped sync.Once
}

// startFlood opens silent sockets (spread over silentAddrs source
// addresses 127.0.0.10, .11, ...) and runs workers sending bogus-token
// requests (from 127.0.0.100, .101, ...) until stop, at most maxRequests.
func startFlood(t testing.TB, ts *testServer, silent, silentAddrs, workers int, maxRequests int64, body []byte) *floodLoad {
	t.Helper()
	f := &floodLoad{stop: make(chan struct{})}
	for i := range silent {
		ip := fmt.Sprintf("127.0.0.%d", 10+i%silentAddrs)
		c, err := fromAddr(ip).Dial("tcp", ts.addr)
		if err != nil {
			// The server closes what is beyond its bounds; the client
			// side only needs to have tried.
			continue
		}
		f.silent = append(f.silent, c)
	}
	for w := range workers {
		c := ts.httpsFrom(t, fmt.Sprintf("127.0.0.%d", 100+w), nil)
		f.wg.Go(func() {
			for {
				select {
				case <-f.stop:
					return
				default:
				}
				if f.sent.Add(1) > maxRequests {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				postCert(ctx, c, ts.addr, "Bearer mgt.bogus-"+rand.Text(), body)
				cancel()
			}
		})
	}
	return f
}

func (f *floodLoad) close() {
	f.stopped.Do(func() {
		close(f.stop)
		f.wg.Wait()
		for _, c := range f.silent {
			c.Close()
		}
	})
}

// TestCAFloodLegitimateCallers: while a bogus-token flood runs and 3,000
// silent sockets sit on the CA port, 20 of 20 legitimate issues and 20 of
// 20 renewals succeed and GET /v1/roots answers; the audit log holds
// exactly the legitimate issuances.
func TestCAFloodLegitimateCallers(t *testing.T) {
	if testing.Short() {
		t.Skip("flood test")
	}
	const legit = 20
	fs := startFloodServer(t, nil, nil)
	fs.settle(t)
	csr, _ := pkitest.WorkloadCSR(t, web)
	body := jsonBody(t, map[string]any{"csr": string(csr)})
	flood := startFlood(t, fs.testServer, 3000, 10, 4, 200_000, body)
	t.Cleanup(flood.close)
	// Let the flood spend its failure budget before the first legitimate call.
	waitFor(t, 20*time.Second, "the flood's first refusals", func() bool {
		return fs.counter(t, "meshgate_pki_api_refused_total", "reason", "bad_token") > 0
	})

	legitHTTP := fs.httpsFrom(t, "127.0.0.1", nil)
	var rootTimes []time.Duration
	for i := range legit {
		tok := fs.token(t, "default", "web", 0)
		wcsr, key := pkitest.WorkloadCSR(t, web)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		resp, err := fs.grpcFrom(t, "127.0.0.1", nil).CreateCertificate(
			metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), &pb.IstioCertificateRequest{Csr: string(wcsr)})
		if err != nil {
			cancel()
			t.Fatalf("legitimate issue %d/%d under flood: %v", i+1, legit, err)
		}
		chain := pkitest.ParseChain(t, resp.CertChain)
		cert := &tls.Certificate{Certificate: [][]byte{chain[0].Raw}, PrivateKey: key, Leaf: chain[0]}
		rcsr, _ := pkitest.WorkloadCSR(t, web)
		if _, err := fs.grpcFrom(t, "127.0.0.1", cert).CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: string(rcsr)}); err != nil {
			cancel()
			t.Fatalf("legitimate renewal %d/%d under flood: %v", i+1, legit, err)
		}
		start := time.Now()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+fs.addr+"/v1/roots", nil)
		r, err := legitHTTP.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("GET /v1/roots under flood: %v", err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		rootTimes = append(rootTimes, time.Since(start))
		cancel()
		if r.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/roots under flood = %d, want 200", r.StatusCode)
		}
		legitHTTP.Transport.(*http.Transport).CloseIdleConnections() // a new handshake each time
	}
	sent := flood.sent.Load()
	flood.close()
	slices.Sort(rootTimes)
	t.Logf("under a flood of %d bogus-token requests and %d silent sockets: %d/%d issues and %d/%d renewals; GET /v1/roots (new connection) p50 %v max %v",
		sent, 3000, legit, legit, legit, legit, rootTimes[len(rootTimes)/2], rootTimes[len(rootTimes)-1])
	if worst := rootTimes[len(rootTimes)-1]; worst > 5*time.Second {
		t.Fatalf("GET /v1/roots under flood took %v, want well under the 5s handshake timeout", worst)
	}
	recs := fs.auditRecords(t)
	issued := 0
	for _, r := range recs {
		if r.Outcome == pki.OutcomeIssued {
			issued++
		} else {
			t.Fatalf("audit record of a refusal under a bogus-token flood: %+v", r)
		}
	}
	if issued < 2*legit {
		t.Fatalf("audit log holds %d issuances, want >= %d", issued, 2*legit)
	}
	t.Logf("refused: bad_token %v, rate_limited %v, remote_handshake_limit %v, handshake_timeout %v",
		fs.counter(t, "meshgate_pki_api_refused_total", "reason", "bad_token"),
		fs.counter(t, "meshgate_pki_api_refused_total", "reason", "rate_limited"),
		fs.counter(t, "meshgate_pki_api_refused_total", "reason", "remote_handshake_limit"),
		fs.counter(t, "meshgate_pki_api_refused_total", "reason", "handshake_timeout"))
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
