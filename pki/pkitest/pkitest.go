// Package pkitest has helpers for tests of the CA and of its clients: a
// CA on an in-memory store with a key-encryption key in a temp dir, CSRs
// of every shape (good and hostile), a settable clock, and Istio plug-in
// CA files.
package pkitest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/store"
)

// Logger returns a logger writing to t.Output(), so logs show only when
// the test fails.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// KEKFile writes a new key-encryption key (mode 0600) in a temp dir and
// returns its path.
func KEKFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kek")
	if err := pki.WriteKEKFile(p); err != nil {
		t.Fatalf("pki.WriteKEKFile(%s) = %v, want nil", p, err)
	}
	return p
}

// Config returns pki.DefaultConfig with a fresh KEK file and a test logger.
func Config(t testing.TB) pki.Config {
	cfg := pki.DefaultConfig()
	cfg.KEKFile = KEKFile(t)
	cfg.Logger = Logger(t)
	return cfg
}

// NewCA builds a CA from cfg on a new in-memory store and closes it when
// the test ends.
func NewCA(t testing.TB, cfg pki.Config, opts ...pki.Option) (*pki.CA, *store.Memory) {
	t.Helper()
	st := store.NewMemory()
	ca, err := pki.NewCA(t.Context(), cfg, st, opts...)
	if err != nil {
		t.Fatalf("pki.NewCA() = %v, want nil", err)
	}
	t.Cleanup(func() { ca.Close() })
	return ca, st
}

// KeyType selects a CSR key.
type KeyType string

// Key types for CSROptions.
const (
	P256    KeyType = "p256"
	P384    KeyType = "p384"
	P224    KeyType = "p224"
	RSA1024 KeyType = "rsa1024"
	RSA2048 KeyType = "rsa2048"
	Ed25519 KeyType = "ed25519"
)

// CSROptions shapes a CSR.
type CSROptions struct {
	Key        KeyType // default P256
	URIs       []string
	DNSNames   []string
	IPs        []net.IP
	Emails     []string
	CommonName string
	// Org is put in the subject (Istio agents send O=<trust domain>).
	Org string
	// CA adds a basicConstraints CA:true extension.
	CA bool
}

// NewKey makes a private key of the given type.
func NewKey(t testing.TB, kt KeyType) crypto.Signer {
	t.Helper()
	var (
		k   crypto.Signer
		err error
	)
	switch kt {
	case "", P256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case P384:
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case P224:
		k, err = ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	case RSA1024:
		k, err = rsa.GenerateKey(rand.Reader, 1024)
	case RSA2048:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case Ed25519:
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("pkitest: unknown key type %q", kt)
	}
	if err != nil {
		t.Fatalf("pkitest: generate %s key: %v", kt, err)
	}
	return k
}

// CSR returns a PEM CSR shaped by o, and its key.
func CSR(t testing.TB, o CSROptions) ([]byte, crypto.Signer) {
	t.Helper()
	key := NewKey(t, o.Key)
	return CSRWithKey(t, key, o), key
}

// CSRWithKey is CSR with a given key.
func CSRWithKey(t testing.TB, key crypto.Signer, o CSROptions) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{
		DNSNames:       o.DNSNames,
		IPAddresses:    o.IPs,
		EmailAddresses: o.Emails,
		Subject:        pkix.Name{CommonName: o.CommonName},
	}
	if o.Org != "" {
		tmpl.Subject.Organization = []string{o.Org}
	}
	for _, s := range o.URIs {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("pkitest: url.Parse(%q) = %v", s, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	if o.CA {
		v, err := asn1.Marshal(struct {
			IsCA bool `asn1:"optional"`
		}{true})
		if err != nil {
			t.Fatal(err)
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: v})
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatalf("pkitest: x509.CreateCertificateRequest() = %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// WorkloadCSR returns a P-256 CSR whose only SAN is id, as an Istio agent
// with ECC_SIGNATURE_ALGORITHM=ECDSA sends it.
func WorkloadCSR(t testing.TB, id pki.Identity) ([]byte, crypto.Signer) {
	return CSR(t, CSROptions{URIs: []string{id.String()}, Org: id.TrustDomain})
}

// BadSignature returns csrPEM with one bit of its signature flipped.
func BadSignature(t testing.TB, csrPEM []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(csrPEM)
	if b == nil {
		t.Fatal("pkitest: BadSignature: not PEM")
	}
	der := append([]byte(nil), b.Bytes...)
	der[len(der)-3] ^= 0x01 // inside the signature BIT STRING
	return pem.EncodeToMemory(&pem.Block{Type: b.Type, Bytes: der})
}

// OffCurve returns csrPEM (an ECDSA CSR) with its public key changed to a
// point that is not on the curve: well formed, but a key no parser may
// accept.
func OffCurve(t testing.TB, csrPEM []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(csrPEM)
	if b == nil {
		t.Fatal("pkitest: OffCurve: not PEM")
	}
	req, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		t.Fatalf("pkitest: OffCurve: %v", err)
	}
	k, ok := req.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("pkitest: OffCurve: key is %T, want ECDSA", req.PublicKey)
	}
	point, err := k.Bytes()
	if err != nil {
		t.Fatalf("pkitest: OffCurve: %v", err)
	}
	der := append([]byte(nil), b.Bytes...)
	i := bytes.Index(der, point)
	if i < 0 {
		t.Fatal("pkitest: OffCurve: point not found in the CSR")
	}
	der[i+len(point)-1] ^= 0x01 // y changes: (x, y) leaves the curve
	return pem.EncodeToMemory(&pem.Block{Type: b.Type, Bytes: der})
}

// ParseChain parses PEM certificates (one or more per element).
func ParseChain(t testing.TB, pems []string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for i, p := range pems {
		rest := []byte(p)
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatalf("pkitest: chain element %d: %v", i, err)
			}
			out = append(out, c)
		}
	}
	return out
}

// Clock is a settable clock for pki.WithClock. Safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock set to start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// PluginCA is an offline root and an intermediate written as Istio's
// plug-in files.
type PluginCA struct {
	Dir          string
	Root         *x509.Certificate
	Intermediate *x509.Certificate
}

// WritePluginCA makes a root (O=trustDomain) and an intermediate signed by
// it, and writes ca-cert.pem, ca-key.pem (PKCS#8), root-cert.pem and
// cert-chain.pem (intermediate then root) into a new temp dir.
func WritePluginCA(t testing.TB, trustDomain string) *PluginCA {
	t.Helper()
	now := time.Now()
	rootKey := NewKey(t, P256)
	rootTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{trustDomain}, CommonName: "offline root"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(20 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	root := mustCert(t, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	interKey := NewKey(t, P256)
	interTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(2),
		Subject:               pkix.Name{Organization: []string{trustDomain}, CommonName: "cluster intermediate"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(5 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	inter := mustCert(t, interTmpl, root, interKey.Public(), rootKey)
	dir := t.TempDir()
	keyDER, err := x509.MarshalPKCS8PrivateKey(interKey)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(c *x509.Certificate) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	files := map[string][]byte{
		pki.FileCACert:    enc(inter),
		pki.FileCAKey:     pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		pki.FileRootCert:  enc(root),
		pki.FileCertChain: append(enc(inter), enc(root)...),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return &PluginCA{Dir: dir, Root: root, Intermediate: inter}
}

func mustCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatalf("pkitest: x509.CreateCertificate() = %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
