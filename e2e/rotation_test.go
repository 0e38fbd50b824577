package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRootRotationVerifiesWithOpenSSL rotates the root of a running node
// from the CLI and checks a new leaf against the old root only, the new
// root only and both, with OpenSSL and with Go, as peers in each stage of
// a rotation would.
func TestRootRotationVerifiesWithOpenSSL(t *testing.T) {
	ca := newTestCA(t)
	_, _, params := twoVersions(t, ca)
	m := newMesh(t, ca, params)
	bin := meshgateBin(t)
	run := func(name string, args ...string) (string, error) {
		cmd := exec.Command(name, args...)
		cmd.Dir = m.dir
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	common := []string{"--ca-addr", m.caAddr, "--data-dir", m.dataDir}
	issue := func(out string) {
		t.Helper()
		tok, err := run(bin, append([]string{"token", "create", "--namespace", "default", "--service-account", "reviews"}, common...)...)
		if err != nil {
			t.Fatalf("token create: %v\n%s", err, tok)
		}
		tokFile := filepath.Join(m.dir, filepath.Base(out)+".token")
		if err := os.WriteFile(tokFile, []byte(strings.SplitN(tok, "\n", 2)[0]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if o, err := run(bin, append([]string{"cert", "issue", "--token", tokFile, "--namespace", "default", "--service-account", "reviews", "--out", out}, common...)...); err != nil {
			t.Fatalf("cert issue: %v\n%s", err, o)
		}
	}
	before := filepath.Join(m.dir, "before")
	issue(before)
	oldRoot := readPEM(t, filepath.Join(before, "root-cert.pem"))

	if o, err := run(bin, "ca", "rotate", "--admin", m.admin, "--data-dir", m.dataDir); err != nil {
		t.Fatalf("ca rotate: %v\n%s", err, o)
	}
	after := filepath.Join(m.dir, "after")
	issue(after)
	chain := readPEM(t, filepath.Join(after, "cert-chain.pem"))
	if len(chain) != 2 {
		t.Fatalf("cert-chain.pem after rotation holds %d certificates, want the leaf and the cross-signed new root", len(chain))
	}
	leaf, cross := chain[0], chain[1]
	var newRoot *x509.Certificate
	bundle := readPEM(t, filepath.Join(after, "root-cert.pem"))
	for _, r := range bundle {
		if !r.Equal(oldRoot[0]) {
			newRoot = r
		}
	}
	if len(bundle) != 2 || newRoot == nil {
		t.Fatalf("root-cert.pem after rotation holds %d roots, want the new and the old", len(bundle))
	}

	dir := t.TempDir()
	write := func(name string, certs ...*x509.Certificate) string {
		var b []byte
		for _, c := range certs {
			b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leafFile, crossFile := write("leaf.pem", leaf), write("cross.pem", cross)
	trust := []struct {
		name  string
		roots []*x509.Certificate
	}{
		{"old root only", oldRoot},
		{"new root only", []*x509.Certificate{newRoot}},
		{"both roots", append([]*x509.Certificate{newRoot}, oldRoot...)},
	}
	for _, tc := range trust {
		t.Run(tc.name, func(t *testing.T) {
			roots, inter := x509.NewCertPool(), x509.NewCertPool()
			for _, r := range tc.roots {
				roots.AddCert(r)
			}
			inter.AddCert(cross)
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
				t.Errorf("Go Verify(new leaf) trusting %s = %v, want nil", tc.name, err)
			}
			if _, err := exec.LookPath("openssl"); err != nil {
				t.Skip("openssl not installed (.ci/run installs it)")
			}
			caFile := write(strings.ReplaceAll(tc.name, " ", "-")+".pem", tc.roots...)
			if o, err := run("openssl", "verify", "-CAfile", caFile, "-untrusted", crossFile, leafFile); err != nil {
				t.Errorf("openssl verify -CAfile <%s> -untrusted cross.pem leaf.pem = %v\n%s", tc.name, err, o)
			}
		})
	}
	// A leaf of the old root still verifies against the bundle the node now serves.
	if o, err := run("openssl", "verify", "-CAfile", filepath.Join(after, "root-cert.pem"), filepath.Join(before, "cert-chain.pem")); err != nil {
		if _, lerr := exec.LookPath("openssl"); lerr == nil {
			t.Errorf("openssl verify of the pre-rotation leaf against the served bundle = %v\n%s", err, o)
		}
	}
}

func readPEM(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatalf("%s holds no certificate", path)
	}
	return out
}
