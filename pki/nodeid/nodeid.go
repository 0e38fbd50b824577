// Package nodeid keeps a gateway node's own certificate: it loads the one
// kept in the data dir, enrolls at a fleet's certificate API with a join
// token, or starts with a temporary certificate until the node's own CA
// issues the real one (a fleet's first node), then renews it at two thirds
// of its lifetime and follows root rotation. Its TLS configuration (mutual
// TLS limited to the allowed peer identities) serves the raft transport and
// write forwarding.
//
//	id, err := nodeid.New(ctx, nodeid.Config{DataDir: dir, Identity: gw, CAAddr: "10.0.0.1:15012", TokenFile: tok, RootFile: roots})
//	if err != nil { ... }
//	defer id.Close()
//	id.Start(ctx)
//	raftTLS := id.TLSConfig()
package nodeid

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshgate/meshgate/mtls"
	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/client"
)

// CertDir is where, under the data dir, a node keeps the certificate
// of its own identity (key.pem, cert-chain.pem, root-cert.pem).
const CertDir = "node"

// Enrollment timing: how long a joining node keeps asking the CA for its
// first certificate, and the renewal back-off bounds.
const (
	enrollFor       = 2 * time.Minute
	enrollBackoff   = 2 * time.Second
	renewRetryMin   = 5 * time.Second
	renewRetryMax   = 5 * time.Minute
	rootsCheckEvery = 30 * time.Second
)

// Config says how a gateway node gets the certificate of its own
// SPIFFE identity, used for the raft transport and write forwarding.
type Config struct {
	// DataDir keeps the certificate in DataDir/node across restarts.
	DataDir string
	// Identity is this node's SPIFFE identity. Required.
	Identity pki.Identity
	// Peers are the identities allowed to talk to this node over raft;
	// empty = only Identity (every gateway node shares one identity, as
	// Istio's east-west gateways share a service account).
	Peers []pki.Identity
	// CAAddr is a certificate API to enroll with (a token) and renew at
	// when this node does not run the CA itself.
	CAAddr string
	// TokenFile holds a join token for Identity (meshgate token create).
	// It is read only when no valid certificate is kept in DataDir.
	TokenFile string
	// RootFile is the mesh root bundle (root-cert.pem of an existing node),
	// which the CA at CAAddr must chain to before a token is sent to it.
	RootFile string
	// SelfIssue lets a node that will run the CA itself start with a
	// temporary certificate and issue its own once the CA is up
	// (AttachCA). Only a fleet's first node needs this.
	SelfIssue bool
	// Logger receives enrollment and renewal events. nil discards.
	Logger *slog.Logger
}

// Identity keeps a node's own certificate fresh: loaded from the data
// dir, obtained with a join token, or issued by the node's own CA, then
// renewed at two thirds of its lifetime. Its TLS configuration follows
// every renewal and root rotation without touching connections already
// established. The renewal loop runs between Start and Close; its methods
// are safe for concurrent use.
type Identity struct {
	cfg   Config
	log   *slog.Logger
	src   *mtls.Source
	auth  mtls.Authorizer
	ca    atomic.Pointer[pki.CA]
	mu    sync.Mutex // guards cur
	cur   *client.Bundle
	kick  chan struct{}
	stop  context.CancelFunc
	wg    sync.WaitGroup
	once  sync.Once
	temp  atomic.Bool // holding the temporary certificate of SelfIssue
	renew atomic.Int64
}

// New loads or obtains the node's certificate: the one kept in
// DataDir if it is for cfg.Identity and still valid, else one enrolled
// with cfg.TokenFile at cfg.CAAddr, else (SelfIssue) a temporary one that
// AttachCA replaces. It blocks while enrolling (bounded).
func New(ctx context.Context, cfg Config) (*Identity, error) {
	if cfg.Identity.IsZero() {
		return nil, fmt.Errorf("%w: no identity configured", ErrConfig)
	}
	peers := cfg.Peers
	if len(peers) == 0 {
		peers = []pki.Identity{cfg.Identity}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Identity{cfg: cfg, log: log, src: mtls.NewSource(nil, nil), auth: mtls.AuthorizeOneOf(peers...), kick: make(chan struct{}, 1)}
	dir := filepath.Join(cfg.DataDir, CertDir)
	b, err := client.LoadBundle(dir)
	switch {
	case err == nil && b.Identity != cfg.Identity:
		log.Warn("kept node certificate is for another identity; not using it", "have", b.Identity.String(), "want", cfg.Identity.String())
	case err == nil && time.Until(b.Chain[0].NotAfter) < time.Minute:
		log.Warn("kept node certificate has expired", "not_after", b.Chain[0].NotAfter)
	case err == nil:
		n.use(b)
		log.Info("node certificate loaded", "identity", b.Identity.String(), "not_after", b.Chain[0].NotAfter)
		return n, nil
	case !errors.Is(err, os.ErrNotExist):
		log.Warn("kept node certificate unusable", "err", err)
	}
	switch {
	case cfg.TokenFile != "":
		b, err := n.enroll(ctx)
		if err != nil {
			return nil, err
		}
		if err := n.store(b); err != nil {
			return nil, err
		}
		n.use(b)
		log.Info("node certificate obtained with join token", "identity", b.Identity.String(), "ca", cfg.CAAddr, "not_after", b.Chain[0].NotAfter)
		return n, nil
	case cfg.SelfIssue:
		cert, err := temporaryCert(cfg.Identity)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		pool.AddCert(cert.Leaf)
		n.src.SetCertificate(cert)
		n.src.SetRoots(pool)
		n.temp.Store(true)
		return n, nil
	default:
		return nil, fmt.Errorf("%w: %s: no valid certificate in %s and no join token (node.yaml tls.token_file with tls.ca_addr and tls.ca_file)", ErrConfig, cfg.Identity, dir)
	}
}

// TLSConfig is the mutual-TLS configuration of the raft transport: the
// node's current certificate, the current mesh roots, and only the peer
// identities allowed.
func (n *Identity) TLSConfig() *tls.Config { return mtls.MutualConfig(n.src, n.auth) }

// Source is the certificate source behind TLSConfig.
func (n *Identity) Source() *mtls.Source { return n.src }

// Authorizer admits the peer identities of Config.Peers (or, without any,
// only Config.Identity).
func (n *Identity) Authorizer() mtls.Authorizer { return n.auth }

// Current returns the node's certificate bundle (nil while the temporary
// certificate of SelfIssue is in use).
func (n *Identity) Current() *client.Bundle {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cur
}

// AttachCA makes the node's own CA the issuer of its certificate and the
// source of its trust bundle. If the node holds only the temporary
// certificate, a real one is issued now.
func (n *Identity) AttachCA(ctx context.Context, ca *pki.CA) error {
	n.ca.Store(ca)
	n.refreshRoots()
	if n.temp.Load() {
		if err := n.renewNow(ctx); err != nil {
			return err
		}
		n.temp.Store(false)
	}
	return nil
}

// Start runs the renewal loop until Close.
func (n *Identity) Start(ctx context.Context) error {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.stop = cancel
	n.wg.Go(func() { n.renewLoop(rctx) })
	return nil
}

// Close stops the renewal loop and waits for it. Idempotent.
func (n *Identity) Close() error {
	n.once.Do(func() {
		if n.stop != nil {
			n.stop()
		}
		n.wg.Wait()
	})
	return nil
}

// renewLoop renews at two thirds of the certificate's lifetime and keeps
// the trust bundle in step with the CA's roots.
func (n *Identity) renewLoop(ctx context.Context) {
	retry := renewRetryMin
	for {
		wait := rootsCheckEvery
		if due := n.renewAt(); !due.IsZero() {
			wait = min(wait, max(time.Until(due), 0))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-n.kick:
		}
		n.refreshRoots()
		if due := n.renewAt(); due.IsZero() || time.Now().Before(due) {
			continue
		}
		if err := n.renewNow(ctx); err != nil {
			n.log.Warn("node certificate renewal failed; retrying", "err", err, "retry_in", retry)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
			retry = min(2*retry, renewRetryMax)
			continue
		}
		retry = renewRetryMin
	}
}

// renewAt is when the current certificate is due for renewal (zero if
// none is held).
func (n *Identity) renewAt() time.Time {
	if ns := n.renew.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// renewNow gets a new certificate from the local CA or, without one, from
// the CA at CAAddr authenticated with the current certificate.
func (n *Identity) renewNow(ctx context.Context) error {
	var (
		b   *client.Bundle
		err error
	)
	if ca := n.ca.Load(); ca != nil {
		b, err = n.selfIssue(ctx, ca)
	} else {
		cur := n.Current()
		if cur == nil || n.cfg.CAAddr == "" {
			return errors.New("nodeid: no CA to renew with (no local CA and no tls.ca_addr)")
		}
		b, err = client.Renew(ctx, client.Config{Addr: n.cfg.CAAddr, RootCAs: n.src.Roots()}, cur, 0)
	}
	if err != nil {
		return fmt.Errorf("nodeid: %w", err)
	}
	if err := n.store(b); err != nil {
		return err
	}
	n.use(b)
	n.log.Info("node certificate renewed", "identity", b.Identity.String(), "not_after", b.Chain[0].NotAfter)
	return nil
}

func (n *Identity) selfIssue(ctx context.Context, ca *pki.CA) (*client.Bundle, error) {
	c, err := ca.NodeCertificate(ctx, pki.NodeRequest{Identity: n.cfg.Identity})
	if err != nil {
		return nil, err
	}
	key, ok := c.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("node key is not a crypto.Signer")
	}
	b := &client.Bundle{Identity: n.cfg.Identity, Key: key, Roots: ca.Info().Roots}
	for _, der := range c.Certificate {
		x, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		b.Chain = append(b.Chain, x)
	}
	return b, nil
}

// enroll asks the CA at CAAddr for the first certificate with the join
// token, retrying while the CA is not reachable yet (a fleet starting).
func (n *Identity) enroll(ctx context.Context) (*client.Bundle, error) {
	if n.cfg.CAAddr == "" || n.cfg.RootFile == "" {
		return nil, fmt.Errorf("%w: tls.token_file needs tls.ca_addr and tls.ca_file (the mesh root-cert.pem)", ErrConfig)
	}
	raw, err := os.ReadFile(n.cfg.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("nodeid: join token: %w", err)
	}
	token := strings.TrimSpace(string(raw))
	roots, err := client.LoadRoots(n.cfg.RootFile)
	if err != nil {
		return nil, fmt.Errorf("nodeid: tls.ca_file: %w", err)
	}
	req := client.IssueRequest{TrustDomain: n.cfg.Identity.TrustDomain, Namespace: n.cfg.Identity.Namespace, ServiceAccount: n.cfg.Identity.ServiceAccount, Token: token}
	deadline := time.Now().Add(enrollFor)
	for {
		b, err := client.Issue(ctx, client.Config{Addr: n.cfg.CAAddr, RootCAs: roots, Timeout: 10 * time.Second}, req)
		if err == nil {
			return b, nil
		}
		if !retryableEnroll(err) || time.Now().After(deadline) {
			return nil, fmt.Errorf("nodeid: enroll %s at %s: %w", n.cfg.Identity, n.cfg.CAAddr, err)
		}
		n.log.Info("CA not reachable yet; retrying enrollment", "ca", n.cfg.CAAddr, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(enrollBackoff):
		}
	}
}

// retryableEnroll: an unreachable CA is worth waiting for; a refusal (bad
// token, wrong identity) is not.
func retryableEnroll(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

func (n *Identity) use(b *client.Bundle) {
	tc := b.TLSCertificate()
	n.src.SetCertificate(&tc)
	pool := x509.NewCertPool()
	for _, r := range b.Roots {
		pool.AddCert(r)
	}
	if n.ca.Load() == nil {
		n.src.SetRoots(pool)
	}
	// Renew two thirds of the way from now (or NotBefore, if later) to
	// NotAfter; NotBefore itself is back-dated for clock skew.
	leaf := b.Chain[0]
	from := time.Now()
	if leaf.NotBefore.After(from) {
		from = leaf.NotBefore
	}
	n.renew.Store(from.Add(leaf.NotAfter.Sub(from) * 2 / 3).UnixNano())
	n.mu.Lock()
	n.cur = b
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *Identity) store(b *client.Bundle) error {
	dir := filepath.Join(n.cfg.DataDir, CertDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("nodeid: %w", err)
	}
	if err := client.WriteBundle(dir, b); err != nil {
		return fmt.Errorf("nodeid: %w", err)
	}
	return nil
}

// refreshRoots follows the local CA's trust bundle (root rotation).
func (n *Identity) refreshRoots() {
	ca := n.ca.Load()
	if ca == nil {
		return
	}
	pool := x509.NewCertPool()
	for _, r := range ca.Info().Roots {
		pool.AddCert(r)
	}
	if cur := n.src.Roots(); cur == nil || !cur.Equal(pool) {
		n.src.SetRoots(pool)
	}
}

// temporaryCert is a self-signed certificate for id that only this node
// trusts; it covers the moments between raft starting and the node's own
// CA issuing the real one.
func temporaryCert(id pki.Identity) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("nodeid: temporary certificate: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("nodeid: temporary certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("nodeid: temporary certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("nodeid: temporary certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
