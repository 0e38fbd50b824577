package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestVMJoinExpiredToken: a bundle made with `meshgate vm bundle
// --token-ttl 2s` whose join token has expired, on a VM with no
// certificate yet, stops `meshgate workload join` with an error that names
// the join-token file, says it expired and to make a new bundle, and
// leaves nothing in the cert dir; the CA still holds the token unspent.
// The same holds when the bundle does not say when its token expires (a
// bundle whose meshgate.yaml lost the field, or a VM whose clock runs
// behind): then the CA itself refuses the token. A fresh bundle then joins
// into the same cert dir.
func TestVMJoinExpiredToken(t *testing.T) {
	root := t.TempDir()
	gdir := filepath.Join(root, "gw")
	data := filepath.Join(gdir, "data")
	res := filepath.Join(gdir, "resources")
	if err := os.MkdirAll(res, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(res, "reviews.yaml"), []byte(reviewsServiceEntry), 0o644); err != nil {
		t.Fatal(err)
	}
	nodeFile := filepath.Join(gdir, "node.yaml")
	if err := os.WriteFile(nodeFile, []byte(`name: gw
network: network-a
admin_addr: 127.0.0.1:0
bind_addr: 127.0.0.1
data_dir: `+data+`
drain_timeout: 1s
log: {format: json, level: info}
bootstrap: true
gossip: {bind: 127.0.0.1, port: 0}
raft: {bind: 127.0.0.1, port: 0}
ca: {addr: "127.0.0.1:0"}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	gw := start(t, gdir, "agent", "--config", nodeFile, "--resources", res)
	ready := agentReadyLine(t, gw, 60*time.Second)
	adminAddr, caAddr := readyAddr(t, ready, "admin"), readyAddr(t, ready, "ca")
	operatorToken(t, filepath.Join(data, "operator.token"))

	makeBundle := func(name, ttl string) (string, bundleManifest) {
		t.Helper()
		dir := filepath.Join(root, name)
		args := []string{"vm", "bundle", "--data-dir", data, "--ca-addr", caAddr, "--admin", adminAddr,
			"--namespace", "default", "--service-account", "reviews", "--network", "network-a", "--service", serviceHost,
			"--port", "9080", "--out", dir}
		if ttl != "" {
			args = append(args, "--token-ttl", ttl)
		}
		if out, err := cliCmd(t, nil, args...).CombinedOutput(); err != nil {
			t.Fatalf("meshgate vm bundle --token-ttl %q: %v\n%s", ttl, err, out)
		}
		return dir, readManifest(t, dir)
	}
	// tokenRow is the CA's row for a token in `meshgate token list`.
	tokenRow := func(id string) string {
		t.Helper()
		out, err := cliCmd(t, nil, "token", "list", "--ca-addr", caAddr, "--data-dir", data).CombinedOutput()
		if err != nil {
			t.Fatalf("meshgate token list: %v\n%s", err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, id) {
				return strings.Join(strings.Fields(l), " ")
			}
		}
		t.Fatalf("meshgate token list has no row for %s:\n%s", id, out)
		return ""
	}
	// waitExpired waits, with a deadline, until the CA's expiry of the
	// bundle's token has passed; the manifest's time is the CA's.
	waitExpired := func(m bundleManifest) {
		t.Helper()
		if m.JoinTokenID == "" || m.JoinTokenExpires.IsZero() {
			t.Fatalf("bundle manifest names no join token and expiry: %+v", m)
		}
		row := tokenRow(m.JoinTokenID)
		f := strings.Fields(row) // ID IDENTITY EXPIRES USES STATE
		if len(f) != 5 {
			t.Fatalf("the CA's row for the join token %q has %d columns, want 5", row, len(f))
		}
		if exp, err := time.Parse(time.RFC3339, f[2]); err != nil || !exp.Equal(m.JoinTokenExpires.Truncate(time.Second)) {
			t.Fatalf("the CA's row for the join token %q does not expire at the bundle's %s (%v)", row, m.JoinTokenExpires, err)
		}
		if d := time.Until(m.JoinTokenExpires); d > 10*time.Second {
			t.Fatalf("the join token of --token-ttl 2s expires in %v", d)
		}
		waitFor(t, 15*time.Second, "the join token's expiry", func() bool { return time.Now().After(m.JoinTokenExpires) })
	}
	// joinFails runs the join with no certificate and returns its output,
	// failing the test if it succeeded or left anything in certDir.
	joinFails := func(bundle, certDir string) string {
		t.Helper()
		out, err := cliCmd(t, nil, "workload", "join", bundle, "--cert-dir", certDir, "--advertise", "127.0.0.1").CombinedOutput()
		if err == nil {
			t.Fatalf("workload join with an expired token and no certificate succeeded:\n%s", out)
		}
		t.Logf("workload join %s with no certificate: %v\n%s", filepath.Base(bundle), err, out)
		// The cert dir did not exist before the join; a failed first
		// join must not leave it behind, empty or not.
		if _, rerr := os.Stat(certDir); !os.IsNotExist(rerr) {
			ents, _ := os.ReadDir(certDir)
			t.Errorf("the failed join left the cert dir %s behind (%d entries, stat: %v)", certDir, len(ents), rerr)
		}
		return string(out)
	}
	unspent := regexp.MustCompile(` 0/1 expired$`)

	// The bundle knows its token expired: the join stops before the CA
	// is asked for a certificate.
	b1, m1 := makeBundle("expired", "2s")
	waitExpired(m1)
	certDir := filepath.Join(root, "vm", "certs")
	out := joinFails(b1, certDir)
	tokFile := filepath.Join(b1, "join-token")
	for _, want := range []string{"token spent or expired: make a new bundle", tokFile, "expired at " + m1.JoinTokenExpires.Format(time.RFC3339), certDir} {
		if !strings.Contains(out, want) {
			t.Errorf("join with an expired token says:\n%s\nwant it to contain %q", out, want)
		}
	}
	if row := tokenRow(m1.JoinTokenID); !unspent.MatchString(row) {
		t.Errorf("the CA's row for the expired join token = %q; want it unspent and expired", row)
	}
	if _, err := os.Stat(tokFile); err != nil {
		t.Errorf("the failed join removed the bundle's join token: %v", err)
	}

	// The bundle does not say when its token expires: the CA refuses it.
	b2, m2 := makeBundle("expired-unmarked", "2s")
	manPath := filepath.Join(b2, "meshgate.yaml")
	manBody, err := os.ReadFile(manPath)
	if err != nil {
		t.Fatal(err)
	}
	unmarked := regexp.MustCompile(`(?m)^joinTokenExpires:.*\n`).ReplaceAll(manBody, nil)
	if len(unmarked) == len(manBody) {
		t.Fatalf("meshgate.yaml has no joinTokenExpires line to remove:\n%s", manBody)
	}
	if err := os.WriteFile(manPath, unmarked, 0o600); err != nil {
		t.Fatal(err)
	}
	waitExpired(m2)
	out = joinFails(b2, certDir)
	for _, want := range []string{"token spent or expired: make a new bundle", "the CA refused " + filepath.Join(b2, "join-token")} {
		if !strings.Contains(out, want) {
			t.Errorf("join with an expired token the bundle does not know of says:\n%s\nwant it to contain %q", out, want)
		}
	}
	if row := tokenRow(m2.JoinTokenID); !unspent.MatchString(row) {
		t.Errorf("the CA's row for the refused join token = %q; want it unspent and expired", row)
	}

	// A fresh bundle gets its certificate into the same cert dir. This
	// test runs on loopback, and the certificate API refuses to register
	// a loopback address (a workload must not point the gateway at its
	// own local services), so the join then stops at registration.
	b3, _ := makeBundle("fresh", "")
	out3, err := cliCmd(t, nil, "workload", "join", b3, "--cert-dir", certDir, "--advertise", "127.0.0.1", "--ttl", "5s").CombinedOutput()
	if err == nil {
		t.Fatalf("workload join registering 127.0.0.1 succeeded:\n%s", out3)
	}
	if leafSerial(t, filepath.Join(certDir, "cert-chain.pem")) == "" {
		t.Fatalf("the fresh bundle's join left no certificate in %s:\n%s", certDir, out3)
	}
	if !strings.Contains(string(out3), "registration refused") || !strings.Contains(string(out3), "addr") {
		t.Errorf("the fresh join's registration of 127.0.0.1 should be refused naming addr; it says:\n%s", out3)
	}
}
