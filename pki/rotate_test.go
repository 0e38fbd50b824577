package pki_test

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
)

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func TestRotate(t *testing.T) {
	cfg := pkitest.Config(t)
	clock := pkitest.NewClock(time.Now())
	ca, st := pkitest.NewCA(t, cfg, pki.WithClock(clock.Now))
	other := cfg
	other.NodeID = "node-2"
	ca2, err := pki.NewCA(t.Context(), other, st, pki.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca2.Close() })

	oldRoot := ca.Roots()[0]
	csr, _ := pkitest.WorkloadCSR(t, web)
	before := pkitest.ParseChain(t, issueWithToken(t, ca, web, csr, 0).ChainPEM())[0]

	if err := ca.Rotate(t.Context()); err != nil {
		t.Fatalf("Rotate() = %v", err)
	}
	roots := ca.Roots()
	if len(roots) != 2 || !roots[1].Equal(oldRoot) || roots[0].Equal(oldRoot) {
		t.Fatalf("Roots() after Rotate = %d roots, want [new, old]", len(roots))
	}
	newRoot := roots[0]
	cert := issueWithToken(t, ca, web, csr, 0)
	chain := pkitest.ParseChain(t, cert.ChainPEM())
	if len(chain) != 3 || !chain[2].Equal(newRoot) {
		t.Fatalf("ChainPEM() during rotation = %d certs, want leaf, cross, new root", len(chain))
	}
	leaf, cross := chain[0], chain[1]
	if bundle := pkitest.ParseChain(t, cert.IstioChainPEM()[len(cert.IstioChainPEM())-1:]); len(bundle) != 2 {
		t.Fatalf("IstioChainPEM() last element holds %d roots, want 2", len(bundle))
	}
	now := clock.Now()
	for _, tc := range []struct {
		name  string
		cert  *x509.Certificate
		roots *x509.CertPool
		inter *x509.CertPool
	}{
		{"new leaf, peer trusts only the old root", leaf, pool(oldRoot), pool(cross)},
		{"new leaf, peer trusts only the new root", leaf, pool(newRoot), pool(cross)},
		{"old leaf, peer has the bundle", before, pool(roots...), nil},
	} {
		if _, err := tc.cert.Verify(x509.VerifyOptions{Roots: tc.roots, Intermediates: tc.inter, CurrentTime: now}); err != nil {
			t.Errorf("%s: Verify = %v, want nil", tc.name, err)
		}
	}
	if err := ca.Rotate(t.Context()); !errors.Is(err, pki.ErrRotation) {
		t.Fatalf("second Rotate() during rotation = %v, want ErrRotation", err)
	}

	// The other node picks the new root up.
	if err := ca2.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r := ca2.Roots(); len(r) != 2 || !r[0].Equal(newRoot) {
		t.Fatalf("node-2 Roots() after Reload = %d, want [new, old]", len(r))
	}

	// Once every old leaf has expired, the old root and cross cert go.
	clock.Advance(cfg.MaxTTL + cfg.Backdate + 2*time.Hour)
	// The next issuance notices the retirement by itself.
	after := pkitest.ParseChain(t, issueWithToken(t, ca, web, csr, 0).ChainPEM())
	if r := ca.Roots(); len(r) != 1 || !r[0].Equal(newRoot) {
		t.Fatalf("Roots() after retirement = %d roots, want [new]", len(r))
	}
	if len(after) != 2 || !after[1].Equal(newRoot) {
		t.Fatalf("ChainPEM() after retirement = %d certs, want leaf, new root", len(after))
	}
	if err := ca2.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r := ca2.Roots(); len(r) != 1 {
		t.Fatalf("node-2 Roots() after Reload past retirement = %d, want 1", len(r))
	}
	if err := ca.Rotate(t.Context()); err != nil {
		t.Fatalf("Rotate() after retirement = %v, want nil", err)
	}
}
