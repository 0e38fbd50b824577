package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"time"
)

// NodeRequest asks for the gateway node's own certificate: its SPIFFE
// identity plus the DNS names and addresses clients dial it by (for
// example the certificate API's server certificate, which Istio agents
// check against CA_ADDR's host name).
type NodeRequest struct {
	Identity    Identity
	DNSNames    []string
	IPAddresses []net.IP
	// TTL is the lifetime; <= 0 means Config.DefaultTTL.
	TTL time.Duration
}

// NodeCertificate generates an ECDSA P-256 key and issues the node's own
// certificate with it, directly from the CA (no token, no rate limit; it
// is audited with caller "operator:node"). The returned tls.Certificate
// holds the leaf and the intermediates (not the root) and has Leaf set.
func (ca *CA) NodeCertificate(ctx context.Context, req NodeRequest) (*tls.Certificate, error) {
	if err := req.Identity.validate(); err != nil {
		return nil, err
	}
	if req.Identity.TrustDomain != ca.cfg.TrustDomain {
		return nil, fmt.Errorf("pki: node identity %s is outside trust domain %s", req.Identity, ca.cfg.TrustDomain)
	}
	hosts := []string{req.Identity.String()}
	for _, d := range req.DNSNames {
		if !isDNSName(d, 253, true) {
			return nil, fmt.Errorf("pki: node DNS name %q is not a DNS-1123 name", d)
		}
		hosts = append(hosts, d)
	}
	for _, ip := range req.IPAddresses {
		if ip == nil || ip.To16() == nil {
			return nil, fmt.Errorf("pki: node IP address %v is invalid", ip)
		}
		hosts = append(hosts, ip.String())
	}
	if ca.closed.Load() {
		return nil, ErrClosed
	}
	ttl, err := ca.ttl(req.TTL)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: node key: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("pki: node CSR: %w", err)
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})
	now := ca.now()
	rec := AuditRecord{Time: now.UTC(), Node: ca.cfg.NodeID, Caller: Operator{Name: "node"}.caller(), Identity: req.Identity.String()}
	st := ca.state.Load()
	cert, err := ca.sign(st, string(csrPEM), profileNode, hosts, ttl, now)
	if err != nil {
		return nil, ca.refused(ctx, Request{Credential: Operator{Name: "node"}}, &rec, err, false)
	}
	rec.Outcome = OutcomeIssued
	rec.Serial = cert.Serial.Text(16)
	rec.NotAfter = cert.NotAfter
	if err := ca.audit.record(ctx, rec, ""); err != nil {
		return nil, &RefusalError{Reason: ReasonAuditFailed, Err: ErrAudit, Detail: err.Error()}
	}
	ca.m.issued.Inc()
	leafBlock, _ := pem.Decode([]byte(cert.LeafPEM))
	leaf, err := x509.ParseCertificate(leafBlock.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: parse node certificate: %w", err)
	}
	out := &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	for _, p := range cert.IntermediatesPEM {
		b, _ := pem.Decode([]byte(p))
		out.Certificate = append(out.Certificate, b.Bytes)
	}
	return out, nil
}
