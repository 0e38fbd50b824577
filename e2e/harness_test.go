package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// meshgateBin returns the binary under test: $MESHGATE_BIN, or one built
// into a temporary folder once per test process.
func meshgateBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("MESHGATE_BIN"); p != "" {
		return p
	}
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "meshgate-e2e-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "meshgate")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/meshgate").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// handedOut holds every port freePort has returned in this process: a
// port handed to one process under test stays free until that process
// binds it, so without this record a later draw (of the same test or of
// one running in parallel) could return it again.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// freePort returns a loopback port that was free a moment ago and that no
// earlier call returned. It is drawn below the kernel's ephemeral range
// (ip_local_port_range), so that no outgoing connection of a test running
// meanwhile can be given it before the process under test binds it;
// listening on port 0 would draw from that very range.
func freePort(t testing.TB) int {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = make(map[int]bool)
	}
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				lo = v
			}
		}
	}
	const floor = 10000
	if lo-floor < 1000 {
		lo = 0 // no room below the range: take the kernel's choice
	}
	for range 200 {
		port := 0
		if lo > 0 {
			port = floor + mrand.IntN(lo-floor)
		}
		if handedOut.ports[port] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		port = ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		if handedOut.ports[port] {
			continue
		}
		handedOut.ports[port] = true
		return port
	}
	t.Fatal("no free loopback port found in 200 tries")
	return 0
}

// proc is a meshgate process under test; its output goes to t.Output().
type proc struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan struct{}
	waitMu sync.Mutex
	err    error
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	tee io.Writer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tee != nil {
		b.tee.Write(p)
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// start runs meshgate with args; Cleanup kills it if the test did not stop it.
func start(t *testing.T, dir string, args ...string) *proc {
	t.Helper()
	return startCmd(t, dir, exec.Command(meshgateBin(t), args...))
}

// startCmd runs a prepared command with its output in t.Output(); Cleanup
// kills it if the test did not stop it.
func startCmd(t *testing.T, dir string, cmd *exec.Cmd) *proc {
	t.Helper()
	cmd.Dir = dir
	out := &syncBuffer{tee: t.Output()}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	p := &proc{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.waitMu.Lock()
		p.err = err
		p.waitMu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// stop sends sig and waits for exit, returning the exit error.
func (p *proc) stop(t *testing.T, sig syscall.Signal, within time.Duration) error {
	t.Helper()
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("meshgate did not exit within %v of %v", within, sig)
	}
	p.waitMu.Lock()
	defer p.waitMu.Unlock()
	return p.err
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// httpGet returns status and body of a plain HTTP GET (admin endpoint).
func httpGet(url string) (int, string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func waitReady(t *testing.T, p *proc, admin string) {
	t.Helper()
	waitFor(t, 30*time.Second, "meshgate /readyz at "+admin, func() bool {
		select {
		case <-p.done:
			t.Fatalf("meshgate exited early: %v\n%s", p.err, p.out.String())
		default:
		}
		code, _, err := httpGet("http://" + admin + "/readyz")
		return err == nil && code == 200
	})
}

// metric returns the sum of every sample of a metric whose line starts
// with prefix (name plus optional label text).
func metric(t *testing.T, admin, prefix string) float64 {
	t.Helper()
	_, body, err := httpGet("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// testCA issues server certificates for TLS backends.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	pem  []byte
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) leaf(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: n, Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// backend is a TLS server on loopback that answers each connection with
// its id after reading one line, and counts the connections it accepted.
type backend struct {
	id       string
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
}

func startBackend(t *testing.T, ca *testCA, id string, names ...string) *backend {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", backendTLS(t, ca, names...))
	if err != nil {
		t.Fatal(err)
	}
	return serveBackend(t, ln, id)
}

// backendTLS is a backend's server config: a leaf for names, and the mesh
// and HTTP ALPNs a gateway may forward.
func backendTLS(t *testing.T, ca *testCA, names ...string) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{ca.leaf(t, names...)},
		NextProtos:   []string{"istio", "istio-peer-exchange", "http/1.1"},
	}
}

// serveBackend runs a backend's accept loop on ln until cleanup.
func serveBackend(t *testing.T, ln net.Listener, id string) *backend {
	b := &backend{id: id, ln: ln}
	b.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			b.wg.Go(func() { b.serve(c) })
		}
	})
	t.Cleanup(func() { ln.Close(); b.wg.Wait() })
	return b
}

// serve answers every line it reads with "<id> <line>", so a test can hold
// a connection open and prove it still carries bytes.
func (b *backend) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := fmt.Fprintf(c, "%s %s", b.id, line); err != nil {
			return
		}
	}
}

func (b *backend) port() int { return b.ln.Addr().(*net.TCPAddr).Port }

// dialVia opens a TLS connection through the gateway at addr with the
// given SNI and ALPN, verifying the backend's certificate for verifyName.
func dialVia(ctx context.Context, addr, sni string, alpn []string, pool *x509.CertPool, verifyName string) (*tls.Conn, error) {
	d := &tls.Dialer{Config: &tls.Config{
		ServerName: sni, NextProtos: alpn, RootCAs: pool,
		// The SNI (outbound_...) is not the certificate's name, so the
		// chain is checked for verifyName in VerifyConnection instead.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if pool == nil {
				return nil
			}
			opts := x509.VerifyOptions{Roots: pool, DNSName: verifyName, Intermediates: x509.NewCertPool()}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		},
	}}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

// roundTrip sends one line and returns the backend's answer.
func roundTrip(c net.Conn, line string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
		return "", err
	}
	s, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(s), err
}

// ask opens a connection, does one round trip and closes; it returns the
// backend id that answered.
func ask(ctx context.Context, addr, sni string, alpn []string, pool *x509.CertPool, verifyName string) (string, error) {
	c, err := dialVia(ctx, addr, sni, alpn, pool, verifyName)
	if err != nil {
		return "", err
	}
	defer c.Close()
	ans, err := roundTrip(c, "ping")
	if err != nil {
		return "", err
	}
	id, _, _ := strings.Cut(ans, " ")
	return id, nil
}

// adminRequest is the one way e2e tests send admin API requests: it adds
// "Authorization: Bearer <token>" when token is set and, for writes, the
// JSON content type the admin API requires (contentType overrides it; pass
// "-" to send none).
func adminRequest(method, url, token, contentType, body string) (int, string, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	switch {
	case contentType == "-":
	case contentType != "":
		req.Header.Set("Content-Type", contentType)
	case method != http.MethodGet && method != http.MethodHead:
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// operatorToken waits for the bootstrap operator token that one of the
// glob's matches (data dirs' operator.token files) holds and returns it.
func operatorToken(t testing.TB, glob string) string {
	t.Helper()
	var tok string
	waitFor(t, 60*time.Second, "an operator.token matching "+glob, func() bool {
		m, _ := filepath.Glob(glob)
		for _, f := range m {
			if b, err := os.ReadFile(f); err == nil && len(bytes.TrimSpace(b)) > 0 {
				tok = string(bytes.TrimSpace(b))
				return true
			}
		}
		return false
	})
	return tok
}
