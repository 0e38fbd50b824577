package client

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshgate/meshgate/pki"
)

// ErrBadResponse: the server's reply is not a usable certificate chain.
var ErrBadResponse = errors.New("client: bad response from the CA")

// Config says how to reach the certificate API.
type Config struct {
	// Addr is host:port of the API (default port 15012).
	Addr string
	// ServerName is checked against the server certificate. Default: the
	// host part of Addr.
	ServerName string
	// RootCAs verify the server certificate (the mesh root, root-cert.pem).
	// Required: a bearer token is never sent to an unverified server.
	RootCAs *x509.CertPool
	// Timeout bounds each call. Default 30s.
	Timeout time.Duration
}

func (c Config) withDefaults() (Config, error) {
	if c.Addr == "" {
		return c, errors.New("client: Addr is required")
	}
	if c.RootCAs == nil {
		return c, errors.New("client: RootCAs is required (the mesh root certificate)")
	}
	if c.ServerName == "" {
		host, _, err := net.SplitHostPort(c.Addr)
		if err != nil {
			return c, fmt.Errorf("client: Addr %q: %w", c.Addr, err)
		}
		c.ServerName = host
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	return c, nil
}

// IssueRequest asks for a first certificate with a bearer token.
type IssueRequest struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
	// Token is the bearer token from "meshgate token create".
	Token string
	// TTL requested; 0 lets the CA choose (24h by default).
	TTL time.Duration
}

// Bundle is a workload's key and certificates.
type Bundle struct {
	Identity pki.Identity
	Key      crypto.Signer
	// Chain is leaf, then intermediates (what a TLS peer presents).
	Chain []*x509.Certificate
	// Roots is the trust bundle (root-cert.pem).
	Roots []*x509.Certificate
}

// TLSCertificate returns the bundle as a tls.Certificate.
func (b *Bundle) TLSCertificate() tls.Certificate {
	c := tls.Certificate{PrivateKey: b.Key, Leaf: b.Chain[0]}
	for _, x := range b.Chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// RootPool returns the trust bundle as a pool.
func (b *Bundle) RootPool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range b.Roots {
		p.AddCert(r)
	}
	return p
}

// Issue generates an ECDSA P-256 key and a CSR for the identity, and asks
// the CA for a certificate over gRPC with the bearer token.
func Issue(ctx context.Context, cfg Config, req IssueRequest) (*Bundle, error) {
	id, err := pki.NewIdentity(req.TrustDomain, req.Namespace, req.ServiceAccount)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if req.Token == "" {
		return nil, errors.New("client: a token is required")
	}
	return call(ctx, cfg, id, nil, req.Token, req.TTL)
}

// Renew asks for a new certificate of cur's identity, with a new key,
// authenticating with cur over mTLS.
func Renew(ctx context.Context, cfg Config, cur *Bundle, ttl time.Duration) (*Bundle, error) {
	if cur == nil || len(cur.Chain) == 0 || cur.Key == nil {
		return nil, errors.New("client: no current certificate to renew with")
	}
	tc := cur.TLSCertificate()
	return call(ctx, cfg, cur.Identity, &tc, "", ttl)
}

func call(ctx context.Context, cfg Config, id pki.Identity, clientCert *tls.Certificate, token string, ttl time.Duration) (*Bundle, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("client: key: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, fmt.Errorf("client: CSR: %w", err)
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})

	tlsCfg := &tls.Config{RootCAs: cfg.RootCAs, ServerName: cfg.ServerName, MinVersion: tls.VersionTLS12}
	if clientCert != nil {
		tlsCfg.Certificates = []tls.Certificate{*clientCert}
	}
	conn, err := grpc.NewClient(cfg.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	resp, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &pb.IstioCertificateRequest{
		Csr:              string(csrPEM),
		ValidityDuration: int64(ttl / time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("client: CreateCertificate: %w", err)
	}
	return bundleFromChain(id, key, resp.GetCertChain())
}

// bundleFromChain checks an Istio-shaped chain (leaf, intermediates, trust
// bundle last) against the key and identity it was asked for.
func bundleFromChain(id pki.Identity, key crypto.Signer, chainPEM []string) (*Bundle, error) {
	if len(chainPEM) < 2 {
		return nil, fmt.Errorf("%w: chain has %d elements, want leaf ... root", ErrBadResponse, len(chainPEM))
	}
	var chain []*x509.Certificate
	for i, p := range chainPEM[:len(chainPEM)-1] {
		certs, err := ParseCerts([]byte(p))
		if err != nil || len(certs) != 1 {
			return nil, fmt.Errorf("%w: chain element %d: %v", ErrBadResponse, i, err)
		}
		chain = append(chain, certs[0])
	}
	roots, err := ParseCerts([]byte(chainPEM[len(chainPEM)-1]))
	if err != nil {
		return nil, fmt.Errorf("%w: root bundle: %v", ErrBadResponse, err)
	}
	b := &Bundle{Identity: id, Key: key, Chain: chain, Roots: roots}
	if err := b.check(); err != nil {
		return nil, err
	}
	return b, nil
}

// check verifies that the leaf matches the key and identity and chains to
// the roots.
func (b *Bundle) check() error {
	leaf := b.Chain[0]
	if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(b.Key.Public()) {
		return fmt.Errorf("%w: certificate does not match the private key", ErrBadResponse)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != b.Identity.String() {
		return fmt.Errorf("%w: certificate identity %v, want %s", ErrBadResponse, leaf.URIs, b.Identity)
	}
	inter := x509.NewCertPool()
	for _, c := range b.Chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: b.RootPool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("%w: certificate does not verify against the returned roots: %v", ErrBadResponse, err)
	}
	return nil
}

// ParseCerts returns every CERTIFICATE block of data in order, skipping
// blocks of other types; no certificate at all is an error.
func ParseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}
