package sni

// Attacks on ISTIO_MUTUAL Gateway servers with real sockets and
// certificates chaining to the real mesh roots. The CA is the real one
// fed with Istio plug-in files, so the test also holds the intermediate
// key and can forge the odd certificates (a DNS SAN only, two URI SANs,
// an expired leaf) an attacker with a compromised or sloppy signer would
// present.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/meshgate/meshgate/mtls"
	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
	"github.com/meshgate/meshgate/sni/snitest"
)

// forgeCA is the mesh CA built from plug-in files, and the plug-in
// intermediate's key to sign arbitrary leaves under the mesh roots.
type forgeCA struct {
	mutualCA
	inter    *x509.Certificate
	interKey crypto.Signer
}

func newForgeCA(t *testing.T) *forgeCA {
	t.Helper()
	p := pkitest.WritePluginCA(t, "cluster.local")
	cfg := pkitest.Config(t)
	cfg.PluginDir = p.Dir
	ca, _ := pkitest.NewCA(t, cfg)
	b, err := os.ReadFile(filepath.Join(p.Dir, pki.FileCAKey))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return &forgeCA{mutualCA: mutualCA{ca}, inter: p.Intermediate, interKey: k.(crypto.Signer)}
}

var forgeSerial = big.NewInt(1000)

// leaf signs a client certificate under the plug-in intermediate; mod
// shapes the template.
func (f *forgeCA) leaf(t *testing.T, mod func(*x509.Certificate)) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	forgeSerial = new(big.Int).Add(forgeSerial, big.NewInt(1))
	tmpl := &x509.Certificate{
		SerialNumber: forgeSerial,
		Subject:      pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	mod(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.inter, key.Public(), f.interKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, f.inter.Raw}, PrivateKey: key, Leaf: c}
}

func spiffeURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// mutualClientCert is mutualClient presenting cert.
func mutualClientCert(cert *tls.Certificate, roots *x509.CertPool) *tls.Config {
	cfg := mutualClient(nil, roots)
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// TestAttackIstioMutualCertificates: certificates that chain to the mesh
// roots but are not one admitted SPIFFE identity, and clients below TLS
// 1.2, are refused at the handshake; the backend never sees a connection.
func TestAttackIstioMutualCertificates(t *testing.T) {
	f := newForgeCA(t)
	gw := f.source(t, mutualGateway)
	web := mutualWeb.String()
	webCert := func(uris ...string) func(*x509.Certificate) {
		return func(c *x509.Certificate) {
			for _, u := range uris {
				c.URIs = append(c.URIs, spiffeURL(t, u))
			}
		}
	}
	tls10 := mutualClient(f.source(t, mutualWeb), f.roots())
	tls10.MinVersion, tls10.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	cases := []struct {
		name   string
		client *tls.Config
		reason Reason
	}{
		{"DNS SAN only, naming the server host", mutualClientCert(f.leaf(t, func(c *x509.Certificate) { c.DNSNames = []string{"db.example.com"} }), f.roots()), ReasonHandshake},
		{"DNS SAN spelling the allowed SPIFFE ID", mutualClientCert(f.leaf(t, func(c *x509.Certificate) { c.DNSNames = []string{web}; c.Subject.CommonName = web }), f.roots()), ReasonHandshake},
		{"two URI SANs, one allowed", mutualClientCert(f.leaf(t, webCert(mutualOther.String(), web)), f.roots()), ReasonHandshake},
		{"allowed ID with an extra path segment", mutualClientCert(f.leaf(t, webCert(web+"/x")), f.roots()), ReasonHandshake},
		{"allowed ID with a query", mutualClientCert(f.leaf(t, webCert(web+"?x=1")), f.roots()), ReasonHandshake},
		{"allowed ID with an escaped slash", mutualClientCert(f.leaf(t, webCert("spiffe://cluster.local/ns/default/sa/web%2Fx")), f.roots()), ReasonHandshake},
		{"allowed ID as a prefix", mutualClientCert(f.leaf(t, webCert(web+"2")), f.roots()), ReasonForbidden},
		{"allowed ID in another trust domain", mutualClientCert(f.leaf(t, webCert("spiffe://evil.local/ns/default/sa/web")), f.roots()), ReasonHandshake},
		{"expired allowed ID", mutualClientCert(f.leaf(t, func(c *x509.Certificate) {
			webCert(web)(c)
			c.NotBefore, c.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
		}), f.roots()), ReasonHandshake},
		{"allowed ID not yet valid", mutualClientCert(f.leaf(t, func(c *x509.Certificate) {
			webCert(web)(c)
			c.NotBefore, c.NotAfter = time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)
		}), f.roots()), ReasonHandshake},
		{"TLS 1.0 and 1.1 with an allowed certificate", tls10, ReasonHandshake},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := snitest.NewBackend(t, snitest.BackendConfig{})
			h := newServerHarness(t, func(c *ServerConfig) {
				c.MeshIdentity = mtls.NewTerminator(gw, mtls.AuthorizeTrustDomain("cluster.local"))
			})
			h.apply(t, mutualTable(t, be.Addr(), []string{web}))
			got, err := mutualEcho(h.addr(t, ""), tc.client, "SELECT 1")
			if err == nil && got != "" {
				t.Fatalf("a refused client read %q", got)
			}
			h.log.waitClose(t, "db.example.com", closeRefused(tc.reason))
			if n := h.refused(t, tc.reason); n != 1 {
				t.Fatalf("refused{reason=%s} = %v, want 1", tc.reason, n)
			}
			if n := be.Accepts(); n != 0 {
				t.Fatalf("backend accepted %d connections, want 0", n)
			}
		})
	}
	// The forged-CA path works for a proper leaf: the allowed identity,
	// signed the same way, gets through (so the refusals above are about
	// the certificates, not the signer).
	be := snitest.NewBackend(t, snitest.BackendConfig{})
	h := newServerHarness(t, func(c *ServerConfig) {
		c.MeshIdentity = mtls.NewTerminator(gw, mtls.AuthorizeTrustDomain("cluster.local"))
	})
	h.apply(t, mutualTable(t, be.Addr(), []string{web}))
	if got, err := mutualEcho(h.addr(t, ""), mutualClientCert(f.leaf(t, webCert(web)), f.roots()), "ok"); err != nil || got != "ok" {
		t.Fatalf("allowed forged-CA leaf: echo = %q, %v; want ok", got, err)
	}
}

// TestAttackIstioMutualStalledHandshake: a client that sends its
// ClientHello and then never sends its certificate (its
// GetClientCertificate blocks) is cut off by the hello timeout, counted
// as timeout, holds no connection afterwards and reaches no backend.
func TestAttackIstioMutualStalledHandshake(t *testing.T) {
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	m := mutualCA{ca}
	be := snitest.NewBackend(t, snitest.BackendConfig{})
	h := newServerHarness(t, func(c *ServerConfig) {
		c.Limits.Timeout = 500 * time.Millisecond
		c.MeshIdentity = mtls.NewTerminator(m.source(t, mutualGateway), mtls.AuthorizeTrustDomain("cluster.local"))
	})
	h.apply(t, mutualTable(t, be.Addr(), nil))
	release := make(chan struct{})
	defer close(release)
	cfg := mutualClient(nil, m.roots())
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		<-release // the attacker never answers the CertificateRequest
		return nil, errors.New("released")
	}
	raw, err := net.Dial("tcp", h.addr(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	go func() { _ = tls.Client(raw, cfg).Handshake() }()
	h.log.waitClose(t, "db.example.com", closeRefused(ReasonTimeout))
	if n := h.refused(t, ReasonTimeout); n != 1 {
		t.Fatalf("refused{timeout} = %v, want 1", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.s.Active() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Active() = %d 10s after the stalled handshake was refused", h.s.Active())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := be.Accepts(); n != 0 {
		t.Fatalf("backend accepted %d connections, want 0", n)
	}
}

// ticketCache is a client session cache that records every session
// ticket the server hands out.
type ticketCache struct {
	mu      sync.Mutex
	tickets int
	m       map[string]*tls.ClientSessionState
}

func (c *ticketCache) Get(k string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.m[k]
	return s, ok
}

func (c *ticketCache) Put(k string, s *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s != nil {
		c.tickets++
	}
	if c.m == nil {
		c.m = map[string]*tls.ClientSessionState{}
	}
	c.m[k] = s
}

// TestAttackIstioMutualResumption: a client admitted by subjectAltNames
// must not keep its access through TLS session resumption once the
// allow-list no longer names it (crypto/tls does not run
// VerifyPeerCertificate on a resumed session). The server hands out no
// session ticket, so every connection runs the full check.
func TestAttackIstioMutualResumption(t *testing.T) {
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	m := mutualCA{ca}
	be := snitest.NewBackend(t, snitest.BackendConfig{})
	h := newServerHarness(t, func(c *ServerConfig) {
		c.MeshIdentity = mtls.NewTerminator(m.source(t, mutualGateway), mtls.AuthorizeTrustDomain("cluster.local"))
	})
	h.apply(t, mutualTable(t, be.Addr(), []string{mutualWeb.String()}))
	cache := &ticketCache{}
	cfg := mutualClient(m.source(t, mutualWeb), m.roots())
	cfg.ClientSessionCache = cache
	for i := range 2 {
		if got, err := mutualEcho(h.addr(t, ""), cfg, "ok"); err != nil || got != "ok" {
			t.Fatalf("admitted client, connection %d: %q, %v", i, got, err)
		}
	}
	// The allow-list changes: web is no longer admitted.
	h.apply(t, mutualTable(t, be.Addr(), []string{mutualOther.String()}))
	got, err := mutualEcho(h.addr(t, ""), cfg, "SELECT 1")
	if err == nil && got != "" {
		t.Fatalf("a client removed from subjectAltNames read %q (resumed session?)", got)
	}
	h.log.waitClose(t, "db.example.com", closeRefused(ReasonForbidden))
	if n := be.Accepts(); n != 2 {
		t.Fatalf("backend accepted %d connections, want 2 (only while admitted)", n)
	}
	cache.mu.Lock()
	n := cache.tickets
	cache.mu.Unlock()
	if n != 0 {
		t.Fatalf("the server handed out %d session tickets; resumption would skip the client certificate checks", n)
	}
}

// TestAttackIstioMutualNotTLS: bytes that are not a ClientHello, and a
// ClientHello followed by garbage instead of the rest of the handshake,
// never reach the backend of an ISTIO_MUTUAL server.
func TestAttackIstioMutualNotTLS(t *testing.T) {
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	m := mutualCA{ca}
	be := snitest.NewBackend(t, snitest.BackendConfig{})
	h := newServerHarness(t, func(c *ServerConfig) {
		c.MeshIdentity = mtls.NewTerminator(m.source(t, mutualGateway), mtls.AuthorizeTrustDomain("cluster.local"))
	})
	h.apply(t, mutualTable(t, be.Addr(), nil))
	// Plain bytes.
	c, err := net.Dial("tcp", h.addr(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("SELECT 1\r\n"))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, _ := c.Read(make([]byte, 16)); n != 0 {
		t.Fatalf("a plain-text client read %d bytes", n)
	}
	c.Close()
	// A real ClientHello (captured from crypto/tls), then garbage where
	// the client's second flight belongs.
	hello := captureHello(t, mutualClient(m.source(t, mutualWeb), m.roots()))
	c, err = net.Dial("tcp", h.addr(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write(hello)
	_, _ = c.Write([]byte("\x17\x03\x03\x00\x05hello"))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	h.log.waitClose(t, "db.example.com", closeRefused(ReasonHandshake))
	if n := be.Accepts(); n != 0 {
		t.Fatalf("backend accepted %d connections, want 0", n)
	}
}

// captureHello returns the first flight crypto/tls sends with cfg.
func captureHello(t *testing.T, cfg *tls.Config) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tls.Client(a, cfg).HandshakeContext(ctx)
	}()
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16<<10)
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	return buf[:n]
}
