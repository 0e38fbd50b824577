package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestTrustLifecycle drives the certificate lifecycle from the binary: a
// token issuance, a renewal asking for 90 days that gets at most the
// original 24h, `meshgate cert revoke`, the refused renewal, and the CRL
// (read with openssl when it is installed).
func TestTrustLifecycle(t *testing.T) {
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
	// adminRun runs an admin CLI command (token create, cert revoke): the
	// one place to add admin credentials.
	adminRun := func(args ...string) (string, error) { return run(bin, append(args, common...)...) }

	tok, err := adminRun("token", "create", "--namespace", "default", "--service-account", "reviews")
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, tok)
	}
	tokFile := filepath.Join(m.dir, "reviews.token")
	if err := os.WriteFile(tokFile, []byte(strings.SplitN(tok, "\n", 2)[0]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(m.dir, "certs")
	if o, err := run(bin, append([]string{"cert", "issue", "--token", tokFile, "--namespace", "default", "--service-account", "reviews", "--out", out}, common...)...); err != nil {
		t.Fatalf("cert issue: %v\n%s", err, o)
	}
	for i := range 2 {
		o, err := run(bin, append([]string{"cert", "renew", "--out", out, "--ttl", "2160h"}, common...)...)
		if err != nil {
			t.Fatalf("cert renew %d --ttl 2160h: %v\n%s", i, err, o)
		}
		leaf := readLeaf(t, filepath.Join(out, "cert-chain.pem"))
		if life := leaf.NotAfter.Sub(leaf.NotBefore); life > 24*time.Hour+2*time.Minute+5*time.Minute {
			t.Fatalf("renewal %d with --ttl 2160h lives %v (NotBefore %v NotAfter %v), want <= 24h plus the backdate", i, life, leaf.NotBefore, leaf.NotAfter)
		}
	}
	leaf := readLeaf(t, filepath.Join(out, "cert-chain.pem"))
	serial := leaf.SerialNumber.Text(16)
	if o, err := adminRun("cert", "revoke", serial, "--reason", "keyCompromise"); err != nil || !strings.Contains(o, serial) {
		t.Fatalf("cert revoke %s: %v\n%s", serial, err, o)
	}
	o, err := run(bin, append([]string{"cert", "renew", "--out", out}, common...)...)
	if err == nil || !strings.Contains(o, "revoked") {
		t.Fatalf("cert renew with a revoked certificate = %v\n%s\nwant a refusal naming the revocation", err, o)
	}

	crlFile := filepath.Join(m.dir, "crl.der")
	if o, err := run(bin, append([]string{"ca", "crl", "--out", crlFile}, common...)...); err != nil {
		t.Fatalf("ca crl: %v\n%s", err, o)
	}
	der, err := os.ReadFile(crlFile)
	if err != nil {
		t.Fatal(err)
	}
	l, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("ParseRevocationList(/v1/crl) = %v", err)
	}
	found := false
	for _, e := range l.RevokedCertificateEntries {
		found = found || e.SerialNumber.Cmp(leaf.SerialNumber) == 0
	}
	if !found {
		t.Fatalf("CRL entries %v lack serial %s", l.RevokedCertificateEntries, serial)
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Log("openssl not installed; the CRL was checked with Go's parser only")
		return
	}
	o, err = run("openssl", "crl", "-inform", "DER", "-in", crlFile, "-noout", "-text")
	if err != nil {
		t.Fatalf("openssl crl -inform DER: %v\n%s", err, o)
	}
	want := strings.ToUpper(serial)
	if len(want)%2 == 1 {
		want = "0" + want
	}
	if !strings.Contains(strings.ToUpper(o), want) || !regexp.MustCompile(`(?i)key compromise`).MatchString(o) {
		t.Fatalf("openssl crl output lacks serial %s or its reason:\n%s", want, o)
	}
}

func readLeaf(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}
