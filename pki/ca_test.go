package pki_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
	"github.com/meshgate/meshgate/pki/store"
)

var oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}

// issueWithToken creates a token for id and issues a certificate for csr.
func issueWithToken(t *testing.T, ca *pki.CA, id pki.Identity, csr []byte, ttl time.Duration) *pki.Certificate {
	t.Helper()
	tok, _, err := ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: id.Namespace, ServiceAccount: id.ServiceAccount})
	if err != nil {
		t.Fatalf("CreateToken(%v) = %v, want nil", id, err)
	}
	cert, err := ca.Issue(t.Context(), pki.Request{CSR: csr, TTL: ttl, Credential: pki.BearerToken(tok)})
	if err != nil {
		t.Fatalf("Issue(token for %v) = %v, want a certificate", id, err)
	}
	return cert
}

// checkLeafProfile asserts Istio's workload leaf profile.
func checkLeafProfile(t *testing.T, leaf *x509.Certificate, id pki.Identity, pub crypto.PublicKey) {
	t.Helper()
	if len(leaf.Subject.Names) != 0 || len(leaf.RawSubject) != 2 {
		t.Errorf("leaf subject = %q (raw %x), want empty", leaf.Subject, leaf.RawSubject)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Errorf("leaf URI SANs = %v, want [%s]", leaf.URIs, id)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("leaf has other SANs: %v %v %v, want none", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	critical := false
	for _, e := range leaf.Extensions {
		if e.Id.Equal(oidSAN) {
			critical = e.Critical
		}
	}
	if !critical {
		t.Errorf("leaf SAN extension critical = false, want true")
	}
	if want := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment; leaf.KeyUsage != want {
		t.Errorf("leaf KeyUsage = %b, want %b", leaf.KeyUsage, want)
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Errorf("leaf ExtKeyUsage = %v, want [serverAuth clientAuth]", leaf.ExtKeyUsage)
	}
	if len(leaf.UnknownExtKeyUsage) != 0 {
		t.Errorf("leaf has unknown EKUs %v", leaf.UnknownExtKeyUsage)
	}
	if !leaf.BasicConstraintsValid || leaf.IsCA {
		t.Errorf("leaf basic constraints valid=%v CA=%v, want valid CA:FALSE", leaf.BasicConstraintsValid, leaf.IsCA)
	}
	if pub != nil && !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
		t.Errorf("leaf public key differs from the CSR key")
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() < 128 {
		t.Errorf("leaf serial %v is not a large positive random number", leaf.SerialNumber)
	}
}

func TestIssueLeafProfile(t *testing.T) {
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := pkitest.NewClock(start)
	ca, _ := pkitest.NewCA(t, pkitest.Config(t), pki.WithClock(clock.Now))
	csr, key := pkitest.WorkloadCSR(t, web)
	cert := issueWithToken(t, ca, web, csr, 0)

	chain := pkitest.ParseChain(t, cert.ChainPEM())
	if len(chain) != 2 {
		t.Fatalf("ChainPEM() has %d certificates, want 2 (leaf, root)", len(chain))
	}
	leaf, root := chain[0], chain[1]
	checkLeafProfile(t, leaf, web, key.Public())
	if !root.Equal(ca.Roots()[0]) {
		t.Fatalf("last chain element is not the CA root")
	}
	if want := start.Add(-2 * time.Minute); !leaf.NotBefore.Equal(want) {
		t.Errorf("leaf NotBefore = %v, want now-2m = %v", leaf.NotBefore, want)
	}
	if want := start.Add(24 * time.Hour); !leaf.NotAfter.Equal(want) {
		t.Errorf("leaf NotAfter = %v, want now+24h = %v", leaf.NotAfter, want)
	}
	if !cert.NotAfter.Equal(leaf.NotAfter) || cert.Serial.Cmp(leaf.SerialNumber) != 0 || cert.Identity != web {
		t.Errorf("Certificate metadata (%v, %v, %v) disagrees with the leaf", cert.NotAfter, cert.Serial, cert.Identity)
	}
	// Root: ECDSA P-256, O = trust domain, 10 years.
	if _, ok := root.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("root key is %T, want ECDSA", root.PublicKey)
	}
	if len(root.Subject.Organization) != 1 || root.Subject.Organization[0] != "cluster.local" {
		t.Errorf("root subject = %q, want O=cluster.local", root.Subject)
	}
	if got := root.NotAfter.Sub(start); got < 3649*24*time.Hour || got > 3651*24*time.Hour {
		t.Errorf("root lifetime = %v, want 10 years", got)
	}
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.RootPool(), CurrentTime: start, KeyUsages: []x509.ExtKeyUsage{eku}}); err != nil {
			t.Errorf("leaf.Verify(%v) = %v, want nil", eku, err)
		}
	}
	// A requested TTL is honoured.
	cert2 := issueWithToken(t, ca, web, csr, 2*time.Hour)
	if want := start.Add(2 * time.Hour); !cert2.NotAfter.Equal(want) {
		t.Errorf("Issue(TTL 2h) NotAfter = %v, want %v", cert2.NotAfter, want)
	}
}

func TestIssueSANFromCallerNotCSR(t *testing.T) {
	// A CSR without SANs and with a subject gets exactly the caller's
	// identity and an empty subject.
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	csr, key := pkitest.CSR(t, pkitest.CSROptions{CommonName: "evil", Org: "evil corp"})
	cert := issueWithToken(t, ca, web, csr, 0)
	checkLeafProfile(t, pkitest.ParseChain(t, cert.ChainPEM())[0], web, key.Public())
}

func TestIssueRSARoot(t *testing.T) {
	cfg := pkitest.Config(t)
	cfg.KeyAlgorithm = pki.RSA2048
	ca, _ := pkitest.NewCA(t, cfg)
	root := ca.Roots()[0]
	if k, ok := root.PublicKey.(*rsa.PublicKey); !ok || k.N.BitLen() != 2048 {
		t.Fatalf("root key = %T, want RSA 2048", root.PublicKey)
	}
	csr, key := pkitest.CSR(t, pkitest.CSROptions{Key: pkitest.RSA2048, URIs: []string{web.String()}})
	cert := issueWithToken(t, ca, web, csr, 0)
	leaf := pkitest.ParseChain(t, cert.ChainPEM())[0]
	checkLeafProfile(t, leaf, web, key.Public())
	if leaf.SignatureAlgorithm != x509.SHA256WithRSA {
		t.Errorf("leaf signature algorithm = %v, want SHA256-RSA", leaf.SignatureAlgorithm)
	}
}

func TestIssueClampedToSigningCert(t *testing.T) {
	start := time.Now()
	clock := pkitest.NewClock(start)
	ca, _ := pkitest.NewCA(t, pkitest.Config(t), pki.WithClock(clock.Now))
	rootEnd := ca.Roots()[0].NotAfter
	clock.Advance(rootEnd.Sub(start) - time.Hour)
	csr, _ := pkitest.WorkloadCSR(t, web)
	cert := issueWithToken(t, ca, web, csr, 0)
	if !cert.NotAfter.Equal(rootEnd) {
		t.Fatalf("Issue() 1h before the root expires: NotAfter = %v, want the root's %v", cert.NotAfter, rootEnd)
	}
	clock.Advance(2 * time.Hour)
	tok, _, err := ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: "default", ServiceAccount: "web"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)})
	if !errors.Is(err, pki.ErrSigning) {
		t.Fatalf("Issue() after the root expired = %v, want ErrSigning", err)
	}
}

func TestIssuePluginCA(t *testing.T) {
	p := pkitest.WritePluginCA(t, "cluster.local")
	cfg := pkitest.Config(t)
	cfg.PluginDir = p.Dir
	ca, st := pkitest.NewCA(t, cfg)
	csr, key := pkitest.WorkloadCSR(t, web)
	cert := issueWithToken(t, ca, web, csr, 0)
	chain := pkitest.ParseChain(t, cert.ChainPEM())
	if len(chain) != 3 || !chain[1].Equal(p.Intermediate) || !chain[2].Equal(p.Root) {
		t.Fatalf("ChainPEM() = %d certs, want leaf, ca-cert.pem, root-cert.pem", len(chain))
	}
	checkLeafProfile(t, chain[0], web, key.Public())
	if !bytes.Equal(chain[0].RawIssuer, p.Intermediate.RawSubject) {
		t.Fatalf("leaf issuer = %q, want the intermediate", chain[0].Issuer)
	}
	if ca.Info().Source != "plugin" {
		t.Fatalf("Info().Source = %q, want plugin", ca.Info().Source)
	}
	// The stored state must not hold the plug-in key in clear.
	keyPEM, _ := os.ReadFile(filepath.Join(p.Dir, pki.FileCAKey))
	assertNoSecret(t, st, keyPEM)
	if err := ca.Rotate(t.Context()); !errors.Is(err, pki.ErrRotation) {
		t.Fatalf("Rotate() on a plug-in CA = %v, want ErrRotation", err)
	}
}

func TestPluginCAHostile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T, dir string)
	}{
		{"missing key", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, pki.FileCAKey)) }},
		{"key mismatch", func(t *testing.T, dir string) {
			other := pkitest.WritePluginCA(t, "cluster.local")
			copyFile(t, filepath.Join(other.Dir, pki.FileCAKey), filepath.Join(dir, pki.FileCAKey))
		}},
		{"foreign root", func(t *testing.T, dir string) {
			other := pkitest.WritePluginCA(t, "cluster.local")
			copyFile(t, filepath.Join(other.Dir, pki.FileRootCert), filepath.Join(dir, pki.FileRootCert))
			copyFile(t, filepath.Join(other.Dir, pki.FileRootCert), filepath.Join(dir, pki.FileCertChain))
		}},
		{"garbage cert", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, pki.FileCACert), []byte("not pem"), 0o600)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pkitest.WritePluginCA(t, "cluster.local")
			tc.break_(t, p.Dir)
			if _, err := pki.LoadPluginCA(p.Dir); !errors.Is(err, pki.ErrCAFiles) {
				t.Fatalf("LoadPluginCA(%s) = %v, want ErrCAFiles", tc.name, err)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// assertNoSecret fails if any stored value contains secret or its DER.
func assertNoSecret(t *testing.T, st *store.Memory, secretPEM []byte) {
	t.Helper()
	key, err := pki.ParsePrivateKeyPEM(secretPEM)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	kvs, err := st.List(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		for _, needle := range [][]byte{der, der[len(der)-32:], secretPEM} {
			if bytes.Contains(kv.Value, needle) || bytes.Contains(kv.Value, []byte(strings.TrimSpace(string(needle)))) {
				t.Fatalf("store key %s holds the CA key in clear", kv.Key)
			}
		}
	}
}

func TestCAKeySealedAndKEKChecked(t *testing.T) {
	cfg := pkitest.Config(t)
	st := store.NewMemory()
	ca, err := pki.NewCA(t.Context(), cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	ca.Close()
	raw, err := st.Get(t.Context(), "pki/ca/state")
	if err != nil {
		t.Fatalf("store.Get(pki/ca/state) = %v", err)
	}
	if bytes.Contains(raw, []byte("PRIVATE KEY")) {
		t.Fatal("stored CA state contains a PEM private key")
	}

	// Same store, same KEK: same root.
	ca2, err := pki.NewCA(t.Context(), cfg, st)
	if err != nil {
		t.Fatalf("NewCA(same KEK) = %v", err)
	}
	if !ca2.Roots()[0].Equal(ca.Roots()[0]) {
		t.Fatal("reopened CA has a different root")
	}
	ca2.Close()

	// Another KEK cannot open it.
	other := cfg
	other.KEKFile = pkitest.KEKFile(t)
	if _, err := pki.NewCA(t.Context(), other, st); !errors.Is(err, pki.ErrKEK) {
		t.Fatalf("NewCA(other KEK) = %v, want ErrKEK", err)
	}

	// A KEK file readable by others is refused.
	loose := pkitest.KEKFile(t)
	os.Chmod(loose, 0o644)
	other.KEKFile = loose
	if _, err := pki.NewCA(t.Context(), other, store.NewMemory()); !errors.Is(err, pki.ErrKEK) {
		t.Fatalf("NewCA(KEK mode 0644) = %v, want ErrKEK", err)
	}

	// KEK from the environment.
	b, _ := os.ReadFile(cfg.KEKFile)
	t.Setenv("MESHGATE_TEST_KEK", strings.TrimSpace(string(b)))
	env := cfg
	env.KEKFile, env.KEKEnv = "", "MESHGATE_TEST_KEK"
	ca3, err := pki.NewCA(t.Context(), env, st)
	if err != nil {
		t.Fatalf("NewCA(KEK from env) = %v, want nil", err)
	}
	ca3.Close()

	// No KEK at all is a config error.
	none := cfg
	none.KEKFile = ""
	if err := none.Validate(); !errors.Is(err, pki.ErrInvalidConfig) {
		t.Fatalf("Validate(no KEK) = %v, want ErrInvalidConfig", err)
	}
	// Bootstrap off and an empty store: ErrNoCA.
	nb := cfg
	nb.Bootstrap = false
	if _, err := pki.NewCA(t.Context(), nb, store.NewMemory()); !errors.Is(err, pki.ErrNoCA) {
		t.Fatalf("NewCA(Bootstrap=false, empty store) = %v, want ErrNoCA", err)
	}
}

func TestConcurrentBootstrapOneRoot(t *testing.T) {
	cfg := pkitest.Config(t)
	st := store.NewMemory()
	var (
		wg    sync.WaitGroup
		roots = make([]*x509.Certificate, 4)
	)
	for i := range roots {
		wg.Go(func() {
			c := cfg
			c.NodeID = "n" + string(rune('a'+i))
			ca, err := pki.NewCA(t.Context(), c, st)
			if err != nil {
				t.Errorf("NewCA(node %d) = %v", i, err)
				return
			}
			roots[i] = ca.Roots()[0]
			ca.Close()
		})
	}
	wg.Wait()
	for i, r := range roots {
		if r == nil || !r.Equal(roots[0]) {
			t.Fatalf("node %d bootstrapped a different root", i)
		}
	}
}

func TestFileStoreRestart(t *testing.T) {
	cfg := pkitest.Config(t)
	path := filepath.Join(t.TempDir(), "pki.journal")
	fs, err := store.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewCA(t.Context(), cfg, fs)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: "default", ServiceAccount: "web", Uses: 2})
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := pkitest.WorkloadCSR(t, web)
	if _, err := ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)}); err != nil {
		t.Fatalf("Issue(use 1 of 2) = %v", err)
	}
	root := ca.Roots()[0]
	ca.Close()
	fs.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("journal mode = %v (%v), want 0600", fi.Mode().Perm(), err)
	}

	fs2, err := store.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs2.Close() })
	ca2, err := pki.NewCA(t.Context(), cfg, fs2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca2.Close() })
	if !ca2.Roots()[0].Equal(root) {
		t.Fatal("CA after restart has another root")
	}
	if _, err := ca2.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)}); err != nil {
		t.Fatalf("Issue(use 2 of 2, after restart) = %v", err)
	}
	if _, err := ca2.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)}); !errors.Is(err, pki.ErrTokenUsedUp) {
		t.Fatalf("Issue(use 3 of 2, after restart) = %v, want ErrTokenUsedUp", err)
	}
	recs, err := ca2.AuditLog(t.Context(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if n := countOutcome(recs, pki.OutcomeIssued); n != 2 {
		t.Fatalf("audit log after restart has %d issued records, want 2", n)
	}
}

func countOutcome(recs []pki.AuditRecord, outcome string) int {
	n := 0
	for _, r := range recs {
		if r.Outcome == outcome {
			n++
		}
	}
	return n
}

func TestOpenSSLLeaf(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	p := pkitest.WritePluginCA(t, "cluster.local")
	for _, tc := range []struct {
		name string
		cfg  func(*pki.Config)
	}{
		{"self-signed", func(*pki.Config) {}},
		{"plugin", func(c *pki.Config) { c.PluginDir = p.Dir }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := pkitest.Config(t)
			tc.cfg(&cfg)
			ca, _ := pkitest.NewCA(t, cfg)
			csr, _ := pkitest.WorkloadCSR(t, web)
			cert := issueWithToken(t, ca, web, csr, 0)
			dir := t.TempDir()
			leaf := filepath.Join(dir, "leaf.pem")
			roots := filepath.Join(dir, "root.pem")
			untrusted := filepath.Join(dir, "chain.pem")
			os.WriteFile(leaf, []byte(cert.LeafPEM), 0o600)
			os.WriteFile(roots, []byte(strings.Join(cert.RootsPEM, "")), 0o600)
			os.WriteFile(untrusted, []byte(strings.Join(append(cert.IntermediatesPEM, ""), "")), 0o600)

			out, err := exec.CommandContext(t.Context(), "openssl", "x509", "-in", leaf, "-noout", "-ext", "subjectAltName,basicConstraints,keyUsage,extendedKeyUsage", "-subject").CombinedOutput()
			if err != nil {
				t.Fatalf("openssl x509 -ext: %v\n%s", err, out)
			}
			text := string(out)
			for _, want := range []string{
				"X509v3 Subject Alternative Name: critical",
				"URI:" + web.String(),
				"CA:FALSE",
				"Digital Signature, Key Encipherment",
				"TLS Web Server Authentication, TLS Web Client Authentication",
			} {
				if !strings.Contains(text, want) {
					t.Errorf("openssl x509 output lacks %q:\n%s", want, text)
				}
			}
			if strings.Contains(text, "DNS:") || strings.Contains(text, "IP Address:") {
				t.Errorf("openssl x509 shows extra SANs:\n%s", text)
			}
			args := []string{"verify", "-CAfile", roots, "-purpose", "sslclient"}
			if len(cert.IntermediatesPEM) > 0 {
				args = append(args, "-untrusted", untrusted)
			}
			for _, purpose := range []string{"sslclient", "sslserver"} {
				args[4] = purpose
				out, err = exec.CommandContext(t.Context(), "openssl", append(args, leaf)...).CombinedOutput()
				if err != nil || !strings.Contains(string(out), ": OK") {
					t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
				}
			}
		})
	}
}

func TestNodeCertificate(t *testing.T) {
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	node := pki.Identity{TrustDomain: "cluster.local", Namespace: "meshgate-system", ServiceAccount: "gw-1"}
	tc, err := ca.NodeCertificate(t.Context(), pki.NodeRequest{Identity: node, DNSNames: []string{"istiod.istio-system.svc", "gw-1.example"}})
	if err != nil {
		t.Fatalf("NodeCertificate() = %v", err)
	}
	leaf := tc.Leaf
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != node.String() {
		t.Fatalf("node cert URIs = %v, want [%s]", leaf.URIs, node)
	}
	if strings.Join(leaf.DNSNames, ",") != "istiod.istio-system.svc,gw-1.example" {
		t.Fatalf("node cert DNS = %v", leaf.DNSNames)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.RootPool(), DNSName: "istiod.istio-system.svc"}); err != nil {
		t.Fatalf("node cert Verify(istiod.istio-system.svc) = %v", err)
	}
	if _, err := ca.NodeCertificate(t.Context(), pki.NodeRequest{Identity: node, DNSNames: []string{"evil@x"}}); err == nil {
		t.Fatal("NodeCertificate(DNS name with @) = nil error, want refusal")
	}
}

// gatedStore blocks the first audit write until release is closed.
type gatedStore struct {
	*store.Memory
	once    sync.Once
	blocked chan struct{} // closed when the first audit write is waiting
	release chan struct{}
}

func (g *gatedStore) Apply(ctx context.Context, ops []pki.Op) error {
	if len(ops) > 0 && strings.HasPrefix(ops[0].Key, "pki/audit/") {
		g.once.Do(func() {
			close(g.blocked)
			<-g.release
		})
	}
	return g.Memory.Apply(ctx, ops)
}

func TestGroupCommit(t *testing.T) {
	gs := &gatedStore{Memory: store.NewMemory(), blocked: make(chan struct{}), release: make(chan struct{})}
	ca, err := pki.NewCA(t.Context(), pkitest.Config(t), gs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca.Close() })
	tok, _, err := ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: "default", ServiceAccount: "web"})
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := pkitest.WorkloadCSR(t, web)
	issue := func() {
		if _, err := ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)}); err != nil {
			t.Errorf("Issue() = %v", err)
		}
	}
	before := gs.Applies()
	var wg sync.WaitGroup
	wg.Go(issue)
	<-gs.blocked // the first record's write is in progress
	const n = 63
	for range n {
		wg.Go(issue)
	}
	// Wait until every other record is queued behind the blocked write.
	for pki.AuditQueueLen(ca) < n {
		select {
		case <-t.Context().Done():
			t.Fatal("test ended before the audit queue filled")
		case <-time.After(time.Millisecond):
		}
	}
	close(gs.release)
	wg.Wait()
	if writes := gs.Applies() - before; writes != 2 {
		t.Fatalf("1 + %d queued issuances took %d audit writes, want 2 (one group commit for the %d)", n, writes, n)
	}
	recs, err := ca.AuditLog(t.Context(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if got := countOutcome(recs, pki.OutcomeIssued); got != n+1 {
		t.Fatalf("audit log holds %d issued records, want %d", got, n+1)
	}
	infos, err := ca.Tokens(t.Context())
	if err != nil || len(infos) != 1 || infos[0].Used != n+1 {
		t.Fatalf("Tokens() = %+v, %v; want one token with Used=%d", infos, err, n+1)
	}
}

// failingStore fails every Apply after armed.
type failingStore struct {
	*store.Memory
	mu    sync.Mutex
	armed bool
}

func (f *failingStore) Apply(ctx context.Context, ops []pki.Op) error {
	f.mu.Lock()
	armed := f.armed
	f.mu.Unlock()
	if armed {
		return errors.New("replication unavailable")
	}
	return f.Memory.Apply(ctx, ops)
}

func TestAuditFailureWithholdsCertificate(t *testing.T) {
	fs := &failingStore{Memory: store.NewMemory()}
	ca, err := pki.NewCA(t.Context(), pkitest.Config(t), fs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca.Close() })
	tok, _, err := ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: "default", ServiceAccount: "web"})
	if err != nil {
		t.Fatal(err)
	}
	fs.mu.Lock()
	fs.armed = true
	fs.mu.Unlock()
	csr, _ := pkitest.WorkloadCSR(t, web)
	cert, err := ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)})
	if !errors.Is(err, pki.ErrAudit) || cert != nil {
		t.Fatalf("Issue() with a failing store = %v, %v; want nil, ErrAudit", cert, err)
	}
}

func TestCloseIdempotentAndRefuses(t *testing.T) {
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	tok, _, _ := ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: "default", ServiceAccount: "web"})
	ca.Close()
	ca.Close()
	csr, _ := pkitest.WorkloadCSR(t, web)
	if _, err := ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)}); !errors.Is(err, pki.ErrClosed) {
		t.Fatalf("Issue() after Close = %v, want ErrClosed", err)
	}
}
