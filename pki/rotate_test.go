package pki_test

import (
	"bytes"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
	"github.com/meshgate/meshgate/pki/store"
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
	if bytes.Equal(cross.RawSubject, cross.RawIssuer) {
		t.Errorf("cross certificate subject %q equals its issuer; OpenSSL takes it for self-issued", cross.Subject)
	}
	if !bytes.Equal(cross.AuthorityKeyId, oldRoot.SubjectKeyId) || len(cross.AuthorityKeyId) == 0 {
		t.Errorf("cross certificate authority key id = %x, want the old root's subject key id %x", cross.AuthorityKeyId, oldRoot.SubjectKeyId)
	}
	if !bytes.Equal(cross.RawSubject, newRoot.RawSubject) || !bytes.Equal(leaf.RawIssuer, newRoot.RawSubject) {
		t.Errorf("cross subject %q / leaf issuer %q, want both the new root's subject %q", cross.Subject, leaf.Issuer, newRoot.Subject)
	}
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

// A plug-in CA's root is rotated the way Istio's plug-in certificates are:
// both roots in root-cert.pem, then the new intermediate, then the old
// root taken out; the CA follows each step when it reloads its files.
func TestPluginRootRotation(t *testing.T) {
	oldCA := pkitest.WritePluginCA(t, "cluster.local")
	newCA := pkitest.WritePluginCA(t, "cluster.local")
	dir := oldCA.Dir
	cfg := pkitest.Config(t)
	cfg.PluginDir = dir
	st := store.NewMemory()
	open := func(step string) *pki.CA {
		t.Helper()
		ca, err := pki.NewCA(t.Context(), cfg, st)
		if err != nil {
			t.Fatalf("%s: NewCA = %v", step, err)
		}
		t.Cleanup(func() { ca.Close() })
		return ca
	}
	csr, _ := pkitest.WorkloadCSR(t, web)
	ca := open("start")
	oldLeaf := pkitest.ParseChain(t, issueWithToken(t, ca, web, csr, 0).ChainPEM())[0]

	// Step 1: root-cert.pem gains the new root; signing is unchanged.
	appendFile(t, filepath.Join(newCA.Dir, pki.FileRootCert), filepath.Join(dir, pki.FileRootCert))
	ca = open("both roots")
	if r := ca.Roots(); len(r) != 2 || !slices.ContainsFunc(r, newCA.Root.Equal) || !slices.ContainsFunc(r, oldCA.Root.Equal) {
		t.Fatalf("Roots() with both roots in root-cert.pem = %d roots, want the old and the new", len(r))
	}
	if chain := pkitest.ParseChain(t, issueWithToken(t, ca, web, csr, 0).ChainPEM()); !chain[1].Equal(oldCA.Intermediate) {
		t.Fatal("step 1 leaf is not signed by the old intermediate")
	}

	// Step 2: the new intermediate signs; the old root stays trusted.
	for _, f := range []string{pki.FileCACert, pki.FileCAKey, pki.FileCertChain} {
		copyFile(t, filepath.Join(newCA.Dir, f), filepath.Join(dir, f))
	}
	ca = open("new intermediate")
	newLeaf := pkitest.ParseChain(t, issueWithToken(t, ca, web, csr, 0).ChainPEM())
	if !newLeaf[1].Equal(newCA.Intermediate) {
		t.Fatal("step 2 leaf is not signed by the new intermediate")
	}
	bundle := pool(ca.Roots()...)
	for name, c := range map[string]*x509.Certificate{"old leaf": oldLeaf, "new leaf": newLeaf[0]} {
		inter := pool(oldCA.Intermediate, newCA.Intermediate)
		if _, err := c.Verify(x509.VerifyOptions{Roots: bundle, Intermediates: inter}); err != nil {
			t.Errorf("step 2: %s against the served bundle: Verify = %v, want nil", name, err)
		}
	}

	// Step 3: the old root is taken out of root-cert.pem.
	copyFile(t, filepath.Join(newCA.Dir, pki.FileRootCert), filepath.Join(dir, pki.FileRootCert))
	ca = open("old root removed")
	if r := ca.Roots(); len(r) != 1 || !r[0].Equal(newCA.Root) {
		t.Fatalf("Roots() after the old root left root-cert.pem = %d roots, want only the new", len(r))
	}
}

func appendFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(to, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}
