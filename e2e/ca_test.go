package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCAWithRealClients issues a workload certificate through the CLI,
// checks it with openssl, and signs with the real cfssl CLI.
func TestCAWithRealClients(t *testing.T) {
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

	tok, err := run(bin, append([]string{"token", "create", "--namespace", "default", "--service-account", "reviews"}, common...)...)
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, tok)
	}
	secret := strings.SplitN(tok, "\n", 2)[0]
	tokFile := filepath.Join(m.dir, "reviews.token")
	if err := os.WriteFile(tokFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(m.dir, "certs")
	if o, err := run(bin, append([]string{"cert", "issue", "--token", tokFile, "--namespace", "default", "--service-account", "reviews", "--out", out}, common...)...); err != nil {
		t.Fatalf("cert issue: %v\n%s", err, o)
	}
	fi, err := os.Stat(filepath.Join(out, "key.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem = %v, %v; want mode 0600", fi, err)
	}
	// The token was for one use: a second issue is refused.
	if o, err := run(bin, append([]string{"cert", "issue", "--token", tokFile, "--namespace", "default", "--service-account", "reviews", "--out", out + "2"}, common...)...); err == nil || !strings.Contains(o, "uses") {
		t.Fatalf("second cert issue with a one-use token = %v\n%s\nwant a refusal about uses", err, o)
	}
	// ...and so is a token for another identity.
	if o, err := run(bin, append([]string{"cert", "issue", "--token", tokFile, "--namespace", "kube-system", "--service-account", "admin", "--out", out + "3"}, common...)...); err == nil {
		t.Fatalf("cert issue for another identity succeeded:\n%s", o)
	}

	if _, err := exec.LookPath("openssl"); err == nil {
		o, err := run("openssl", "x509", "-in", filepath.Join(out, "cert-chain.pem"), "-noout", "-subject", "-ext", "subjectAltName,basicConstraints")
		if err != nil || !strings.Contains(o, "critical") || !strings.Contains(o, "URI:spiffe://cluster.local/ns/default/sa/reviews") {
			t.Fatalf("openssl x509 = %v\n%s\nwant a critical SPIFFE URI SAN", err, o)
		}
		if o, err := run("openssl", "verify", "-CAfile", filepath.Join(out, "root-cert.pem"), filepath.Join(out, "cert-chain.pem")); err != nil {
			t.Fatalf("openssl verify = %v\n%s", err, o)
		}
	}
	if o, err := run(bin, append([]string{"cert", "renew", "--out", out}, common...)...); err != nil {
		t.Fatalf("cert renew: %v\n%s", err, o)
	}

	if _, err := exec.LookPath("cfssl"); err != nil {
		t.Log("cfssl CLI not installed; skipping the cfssl part (.ci/run installs golang-cfssl)")
		return
	}
	if o, err := run("cfssl", "info", "-remote", "http://"+m.admin); err != nil || !strings.Contains(o, "BEGIN CERTIFICATE") {
		t.Fatalf("cfssl info -remote = %v\n%s", err, o)
	}
	key, err := os.ReadFile(filepath.Join(m.dataDir, "cfssl-auth.key"))
	if err != nil {
		t.Fatal(err)
	}
	remote := map[string]any{"auth_remote": map[string]any{"remote": "ca", "auth_key": "k"}}
	cfg, _ := json.Marshal(map[string]any{
		"signing":   map[string]any{"default": remote, "profiles": map[string]any{"workload": remote}},
		"auth_keys": map[string]any{"k": map[string]any{"type": "standard", "key": strings.TrimSpace(string(key))}},
		"remotes":   map[string]any{"ca": "http://" + m.admin},
	})
	if err := os.WriteFile(filepath.Join(m.dir, "cfssl.json"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.dir, "csr.json"), []byte(`{"CN":"","key":{"algo":"ecdsa","size":256}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	gen, err := exec.Command("cfssl", "genkey", filepath.Join(m.dir, "csr.json")).Output()
	if err != nil {
		t.Fatalf("cfssl genkey: %v", err)
	}
	var k struct{ CSR string }
	if err := json.Unmarshal(gen, &k); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.dir, "w.csr"), []byte(k.CSR), 0o644); err != nil {
		t.Fatal(err)
	}
	id := "spiffe://cluster.local/ns/default/sa/ratings"
	o, err := run("cfssl", "sign", "-config", "cfssl.json", "-profile", "workload", "-hostname", id, "w.csr")
	if err != nil {
		t.Fatalf("cfssl sign: %v\n%s", err, o)
	}
	var signed struct{ Cert string }
	if err := json.Unmarshal([]byte(o[strings.Index(o, "{"):]), &signed); err != nil || !strings.Contains(signed.Cert, "BEGIN CERTIFICATE") {
		t.Fatalf("cfssl sign printed %q, want a certificate", o)
	}
	// A host that is not a SPIFFE identity of the trust domain is refused.
	if o, err := run("cfssl", "sign", "-config", "cfssl.json", "-profile", "workload", "-hostname", "evil.example.com", "w.csr"); err == nil && strings.Contains(o, "BEGIN CERTIFICATE") {
		t.Fatalf("cfssl sign with hostname evil.example.com issued a certificate:\n%s", o)
	}
}
