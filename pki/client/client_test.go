package client_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/api"
	"github.com/meshgate/meshgate/pki/client"
	"github.com/meshgate/meshgate/pki/pkitest"
	"github.com/meshgate/meshgate/pki/store"
)

const adminKey = "fedcba9876543210fedcba9876543210"

var admin = pki.Identity{TrustDomain: "cluster.local", Namespace: "meshgate-system", ServiceAccount: "admin"}

func serve(t *testing.T) (*pki.CA, client.Config) {
	t.Helper()
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	cfg := api.DefaultConfig()
	cfg.Logger = pkitest.Logger(t)
	cfg.AdminKey = adminKey
	cfg.AdminIdentities = []pki.Identity{admin}
	srv, err := api.NewServer(cfg, ca)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return ca, client.Config{Addr: ln.Addr().String(), RootCAs: ca.RootPool()}
}

func TestIssueWriteLoadRenew(t *testing.T) {
	ca, cfg := serve(t)
	adm := client.Admin{Config: cfg, Key: adminKey}
	tok, err := adm.CreateToken(t.Context(), "default", "web", time.Hour, 1)
	if err != nil {
		t.Fatalf("Admin.CreateToken() = %v", err)
	}
	if tok.Secret == "" || tok.Identity != "spiffe://cluster.local/ns/default/sa/web" || tok.Uses != 1 {
		t.Fatalf("Admin.CreateToken() = %+v", tok)
	}
	b, err := client.Issue(t.Context(), cfg, client.IssueRequest{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web", Token: tok.Secret})
	if err != nil {
		t.Fatalf("client.Issue() = %v", err)
	}
	dir := filepath.Join(t.TempDir(), "certs")
	if err := client.WriteBundle(dir, b); err != nil {
		t.Fatalf("WriteBundle() = %v", err)
	}
	for name, mode := range map[string]os.FileMode{client.FileKey: 0o600, client.FileCertChain: 0o644, client.FileRootCert: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("%s: mode %v (%v), want %v", name, fi.Mode().Perm(), err, mode)
		}
	}
	loaded, err := client.LoadBundle(dir)
	if err != nil {
		t.Fatalf("LoadBundle() = %v", err)
	}
	if loaded.Identity.String() != "spiffe://cluster.local/ns/default/sa/web" || !loaded.Chain[0].Equal(b.Chain[0]) {
		t.Fatalf("LoadBundle() identity %v, want what was written", loaded.Identity)
	}

	// The token had one use; a second Issue is refused.
	_, err = client.Issue(t.Context(), cfg, client.IssueRequest{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web", Token: tok.Secret})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("client.Issue(used token) = %v, want PermissionDenied", err)
	}
	renewed, err := client.Renew(t.Context(), cfg, loaded, 2*time.Hour)
	if err != nil {
		t.Fatalf("client.Renew() = %v", err)
	}
	if renewed.Identity != loaded.Identity || renewed.Chain[0].Equal(loaded.Chain[0]) {
		t.Fatal("Renew() did not return a new certificate for the same identity")
	}
	if got := renewed.Chain[0].NotAfter.Sub(renewed.Chain[0].NotBefore); got != 2*time.Hour+2*time.Minute {
		t.Fatalf("renewed lifetime = %v, want 2h+2m", got)
	}
	if err := client.WriteBundle(dir, renewed); err != nil {
		t.Fatal(err)
	}

	list, err := adm.ListTokens(t.Context())
	if err != nil || len(list) != 1 || list[0].Used != 1 {
		t.Fatalf("ListTokens() = %+v, %v; want one token used once", list, err)
	}
	var buf bytes.Buffer
	client.WriteTokens(&buf, list, time.Now())
	if !bytes.Contains(buf.Bytes(), []byte("used up")) {
		t.Fatalf("WriteTokens() = %q, want the token shown as used up", buf.String())
	}
	rev, err := adm.RevokeToken(t.Context(), list[0].ID[:10])
	if err != nil || !rev.Revoked {
		t.Fatalf("RevokeToken() = %+v, %v", rev, err)
	}
	roots, err := client.FetchRoots(t.Context(), cfg)
	if err != nil || len(roots) != 1 || !roots[0].Equal(ca.Roots()[0]) {
		t.Fatalf("FetchRoots() = %d, %v", len(roots), err)
	}
}

func TestAdminAuth(t *testing.T) {
	ca, cfg := serve(t)
	var apiErr *client.APIError
	for _, tc := range []struct {
		name   string
		adm    func(t *testing.T) client.Admin
		status int
	}{
		{"no credential", func(*testing.T) client.Admin { return client.Admin{Config: cfg} }, http.StatusUnauthorized},
		{"wrong key", func(*testing.T) client.Admin { return client.Admin{Config: cfg, Key: "0000000000000000000000"} }, http.StatusUnauthorized},
		{"workload cert", func(t *testing.T) client.Admin {
			c := issueCert(t, ca, pki.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"})
			return client.Admin{Config: cfg, Certificate: &c}
		}, http.StatusUnauthorized},
		{"admin cert", func(t *testing.T) client.Admin {
			c := issueCert(t, ca, admin)
			return client.Admin{Config: cfg, Certificate: &c}
		}, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.adm(t).ListTokens(t.Context())
			got := http.StatusOK
			if errors.As(err, &apiErr) {
				got = apiErr.Status
			} else if err != nil {
				t.Fatalf("ListTokens() = %v", err)
			}
			if got != tc.status {
				t.Fatalf("ListTokens(%s) status %d (%v), want %d", tc.name, got, err, tc.status)
			}
		})
	}
	_, err := client.Admin{Config: cfg, Key: adminKey}.CreateToken(t.Context(), "Bad_NS", "x", 0, 0)
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest {
		t.Fatalf("CreateToken(bad namespace) = %v, want HTTP 400", err)
	}
	_, err = client.Admin{Config: cfg, Key: adminKey}.RevokeToken(t.Context(), "0000000000000000")
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
		t.Fatalf("RevokeToken(unknown) = %v, want HTTP 404", err)
	}
}

func issueCert(t *testing.T, ca *pki.CA, id pki.Identity) tls.Certificate {
	t.Helper()
	csr, key := pkitest.WorkloadCSR(t, id)
	c, err := ca.Issue(t.Context(), pki.Request{CSR: csr, Identity: id, Credential: pki.Operator{Name: "test"}})
	if err != nil {
		t.Fatal(err)
	}
	leaf := pkitest.ParseChain(t, c.ChainPEM()[:1])[0]
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

func TestClientRefusesUnverifiedServer(t *testing.T) {
	_, cfg := serve(t)
	other, _ := pkitest.NewCA(t, pkitest.Config(t))
	bad := cfg
	bad.RootCAs = other.RootPool()
	_, err := client.Issue(t.Context(), bad, client.IssueRequest{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web", Token: "mgt.secret"})
	if err == nil || status.Code(err) != codes.Unavailable {
		t.Fatalf("Issue() against a server of another CA = %v, want a TLS failure (Unavailable)", err)
	}
	noRoots := cfg
	noRoots.RootCAs = nil
	if _, err := client.Issue(t.Context(), noRoots, client.IssueRequest{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web", Token: "mgt.x"}); err == nil {
		t.Fatal("Issue() without RootCAs = nil error")
	}
}

func TestLoadBundleHostile(t *testing.T) {
	ca, cfg := serve(t)
	tok, _, _ := ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: "default", ServiceAccount: "web"})
	b, err := client.Issue(t.Context(), cfg, client.IssueRequest{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web", Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	other, err := client.Issue(t.Context(), cfg, client.IssueRequest{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web", Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		break_ func(dir string)
	}{
		{"missing key", func(dir string) { os.Remove(filepath.Join(dir, client.FileKey)) }},
		{"key of another cert", func(dir string) {
			d2 := filepath.Join(dir, "other")
			client.WriteBundle(d2, other)
			b, _ := os.ReadFile(filepath.Join(d2, client.FileKey))
			os.WriteFile(filepath.Join(dir, client.FileKey), b, 0o600)
		}},
		{"foreign root", func(dir string) {
			os.WriteFile(filepath.Join(dir, client.FileRootCert), []byte(otherRootPEM(t)), 0o644)
		}},
		{"garbage chain", func(dir string) { os.WriteFile(filepath.Join(dir, client.FileCertChain), []byte("nope"), 0o644) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := client.WriteBundle(dir, b); err != nil {
				t.Fatal(err)
			}
			tc.break_(dir)
			if _, err := client.LoadBundle(dir); err == nil {
				t.Fatalf("LoadBundle(%s) = nil error", tc.name)
			}
		})
	}
}

func otherRootPEM(t *testing.T) string {
	other, _ := pkitest.NewCA(t, pkitest.Config(t))
	return other.RootsPEM()[0]
}

func TestInitCAAndShow(t *testing.T) {
	cfg := pki.DefaultConfig()
	cfg.KEKFile = filepath.Join(t.TempDir(), "kek")
	st, err := store.OpenFile(filepath.Join(t.TempDir(), "pki.journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	info, err := client.InitCA(t.Context(), cfg, st)
	if err != nil {
		t.Fatalf("InitCA() = %v", err)
	}
	if fi, err := os.Stat(cfg.KEKFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("KEK file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	again, err := client.InitCA(t.Context(), cfg, st)
	if err != nil || !again.Roots[0].Equal(info.Roots[0]) {
		t.Fatalf("InitCA() twice = %v, want the same root", err)
	}
	var buf bytes.Buffer
	if err := client.WriteCAInfo(&buf, info); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cluster.local", "self-signed", "root[0]", "ECDSA"} {
		if !bytes.Contains(buf.Bytes(), []byte(want)) {
			t.Fatalf("WriteCAInfo() = %q, want it to mention %q", buf.String(), want)
		}
	}
}
