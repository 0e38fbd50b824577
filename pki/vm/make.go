package vm

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/api"
)

// DefaultJoinTokenTTL is the join token's lifetime when the request names
// none: Istio's istio-token default (3600 s).
const DefaultJoinTokenTTL = time.Hour

// JoinTokens mints CA join tokens; client.Admin (the "meshgate token
// create" client) implements it.
type JoinTokens interface {
	CreateToken(ctx context.Context, namespace, serviceAccount string, ttl time.Duration, uses int) (api.Token, error)
}

// GroupBinder binds workload groups on the CA; Groups implements it.
type GroupBinder interface {
	Put(ctx context.Context, g pki.WorkloadGroup) (pki.WorkloadGroup, error)
}

// MakeRequest is what Make needs besides the token minters.
type MakeRequest struct {
	// Spec describes the workload and the gateway; the token fields are
	// filled by Make. TrustDomain is required: take it from the gateway
	// (ServerTrustDomain) rather than from configuration.
	Spec Spec
	// Roots is the mesh trust bundle (the node's root-cert.pem).
	Roots []*x509.Certificate
	// JoinTokenTTL is the join token's lifetime; 0 means
	// DefaultJoinTokenTTL.
	JoinTokenTTL time.Duration
	// Subsets the VM's labels may claim ("service/subset"); default none.
	Subsets []string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Group returns the workload group a bundle of s binds: its service,
// ports, network and labels, and the subsets those labels may claim.
func Group(s Spec, subsets []string) pki.WorkloadGroup {
	g := pki.WorkloadGroup{Namespace: s.Namespace, ServiceAccount: s.ServiceAccount, Network: s.Network, Service: s.Service,
		Labels: s.Labels, Subsets: subsets, JoinTokenID: s.JoinTokenID, Ports: slices.Clone(s.Ports)}
	return g
}

// Make mints the bundle's credential, a join token that obtains one
// certificate (uses 1) for exactly spiffe://<td>/ns/<ns>/sa/<sa>, and
// binds that identity's workload group on the CA (Group), so the
// certificate may register exactly the bundle's service, ports, network
// and labels. No registration secret is minted: the VM registers with its
// certificate. On an error after the join token was minted, the error
// names its ID so it can be revoked.
func Make(ctx context.Context, req MakeRequest, jt JoinTokens, groups GroupBinder) (*Bundle, error) {
	now := time.Now
	if req.Now != nil {
		now = req.Now
	}
	s := req.Spec.withDefaults()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if len(req.Roots) == 0 {
		return nil, fmt.Errorf("%w: roots: the mesh root bundle is required", ErrInvalid)
	}
	id, _ := s.Identity()
	ttl := req.JoinTokenTTL
	if ttl == 0 {
		ttl = DefaultJoinTokenTTL
	}
	tok, err := jt.CreateToken(ctx, s.Namespace, s.ServiceAccount, ttl, 1)
	if err != nil {
		return nil, fmt.Errorf("vm: create the join token: %w", err)
	}
	if tok.Identity != "" && tok.Identity != id.String() {
		return nil, fmt.Errorf("%w: the CA made join token %s for %s, want %s: the CA's trust domain is not %s (revoke it: meshgate token revoke %s)",
			ErrTrustDomain, tok.ID, tok.Identity, id, s.TrustDomain, tok.ID)
	}
	s.JoinTokenID, s.JoinTokenExpires, s.Created = tok.ID, tok.ExpiresAt.UTC(), now().UTC().Truncate(time.Second)
	if _, err := groups.Put(ctx, Group(s, req.Subsets)); err != nil {
		return nil, fmt.Errorf("vm: bind the workload group of %s (join token %s was made; revoke it: meshgate token revoke %s): %w", id, tok.ID, tok.ID, err)
	}
	return &Bundle{Spec: s, Roots: req.Roots, JoinToken: tok.Secret}, nil
}

// IstiodName is the DNS name Istio's VM agents reach the CA under (the
// bundle's hosts file maps it to the gateway); meshgate's certificate API
// certificate carries it.
const IstiodName = "istiod.istio-system.svc"

// ServerIdentity finds the name that verifies the certificate API at addr:
// the host of addr, else IstiodName (a node whose API certificate names
// only loopback and istiod, as Istio's does). It returns that server name
// and the trust domain of the API's SPIFFE identity. A certificate roots
// do not verify gives ErrRootMismatch.
func ServerIdentity(ctx context.Context, addr string, roots *x509.CertPool) (serverName, trustDomain string, err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("%w: CA address %q: %v", ErrInvalid, addr, err)
	}
	td, err := ServerTrustDomain(ctx, addr, host, roots)
	var he x509.HostnameError
	if errors.As(err, &he) && host != IstiodName {
		if td, err2 := ServerTrustDomain(ctx, addr, IstiodName, roots); err2 == nil {
			return IstiodName, td, nil
		}
	}
	if err != nil {
		return "", "", err
	}
	return host, td, nil
}

// ServerTrustDomain connects to the certificate API at addr, verifies its
// certificate with roots for serverName (default the host of addr) and
// returns the trust domain of its SPIFFE identity (a meshgate node's
// spiffe://<td>/ns/meshgate-system/sa/...). A certificate roots do not
// verify gives ErrRootMismatch; one for another name, an error wrapping
// x509.HostnameError.
func ServerTrustDomain(ctx context.Context, addr, serverName string, roots *x509.CertPool) (string, error) {
	if serverName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return "", fmt.Errorf("%w: CA address %q: %v", ErrInvalid, addr, err)
		}
		serverName = host
	}
	d := tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			return "", fmt.Errorf("%w: %w", ErrRootMismatch, err)
		}
		return "", fmt.Errorf("vm: certificate API at %s: %w", addr, err)
	}
	defer c.Close()
	st := c.(*tls.Conn).ConnectionState()
	leaf := st.PeerCertificates[0]
	if len(leaf.URIs) != 1 {
		return "", fmt.Errorf("%w: the certificate API at %s presents %d URI SANs, want its SPIFFE identity", ErrTrustDomain, addr, len(leaf.URIs))
	}
	id, err := pki.IdentityFromURL(leaf.URIs[0])
	if err != nil {
		return "", fmt.Errorf("%w: the certificate API at %s: %v", ErrTrustDomain, addr, err)
	}
	return id.TrustDomain, nil
}
