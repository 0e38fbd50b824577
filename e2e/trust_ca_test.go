package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// workloadCSR is a PEM CSR of a fresh P-256 key with one URI SAN.
func workloadCSR(t *testing.T, uri string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := neturl.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*neturl.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// caNode starts `meshgate agent` outside any fleet, with bind_addr
// 127.0.0.1 and a host-less ca.addr, and returns its admin address, CA
// port and data dir.
func caNode(t *testing.T) (admin string, caPort int, dataDir string) {
	t.Helper()
	dir := t.TempDir()
	admin = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	caPort = freePort(t)
	dataDir = filepath.Join(dir, "data")
	res := filepath.Join(dir, "resources")
	if err := os.MkdirAll(res, 0o755); err != nil {
		t.Fatal(err)
	}
	node := fmt.Sprintf(`name: gw-ca
network: network-a
admin_addr: %s
data_dir: %s
bind_addr: 127.0.0.1
log: {format: json, level: info}
ca: {addr: ":%d"}
`, admin, dataDir, caPort)
	nodeFile := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(nodeFile, []byte(node), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, dir, "agent", "--config", nodeFile, "--resources", res)
	waitReady(t, p, admin)
	return admin, caPort, dataDir
}

// TestCABindFollowsBindAddr: with bind_addr 127.0.0.1 and ca.addr
// ":PORT", the certificate API listens on 127.0.0.1 only (127.0.0.2, which
// a listener on all addresses would also answer, is refused).
func TestCABindFollowsBindAddr(t *testing.T) {
	_, caPort, _ := caNode(t)
	waitFor(t, 30*time.Second, "the CA on 127.0.0.1", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", caPort), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.2:%d", caPort), time.Second); err == nil {
		c.Close()
		t.Fatalf("dial 127.0.0.2:%d succeeded: the CA listens beyond bind_addr 127.0.0.1", caPort)
	}
}

// TestCABogusTokenFloodNotReplicated: a bounded bogus-token flood against
// the built binary's CA is refused, counted by reason on /metrics, and
// does not grow the CA's state journal (where its audit log lives).
func TestCABogusTokenFloodNotReplicated(t *testing.T) {
	admin, caPort, dataDir := caNode(t)
	rootPEM, err := os.ReadFile(filepath.Join(dataDir, "root-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatal("root-cert.pem holds no certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := fmt.Sprintf("https://127.0.0.1:%d/v1/certificates", caPort)
	body, err := json.Marshal(map[string]string{"csr": workloadCSR(t, "spiffe://cluster.local/ns/default/sa/web")})
	if err != nil {
		t.Fatal(err)
	}
	post := func(i int) int {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Authorization", fmt.Sprintf("Bearer mgt.bogus-%d", i))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("bogus request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	post(-1) // the first connection; the server certificate is issued by now
	journal := filepath.Join(dataDir, "ca-state.journal")
	st0, err := os.Stat(journal)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	codes := map[int]int{}
	deadline := time.Now().Add(60 * time.Second)
	for i := range n {
		if time.Now().After(deadline) {
			break
		}
		codes[post(i)]++
	}
	for c := range codes {
		if c != http.StatusUnauthorized && c != http.StatusTooManyRequests {
			t.Fatalf("bogus-token flood answers %v, want only 401/429", codes)
		}
	}
	if codes[http.StatusUnauthorized] == 0 {
		t.Fatalf("bogus-token flood answers %v, want some 401", codes)
	}
	st1, err := os.Stat(journal)
	if err != nil {
		t.Fatal(err)
	}
	if grown := st1.Size() - st0.Size(); grown > 4<<10 {
		t.Fatalf("%v bogus-token requests grew the CA journal by %d bytes (%d -> %d), want at most 4 KiB", codes, grown, st0.Size(), st1.Size())
	}
	refused := metric(t, admin, `meshgate_pki_api_refused_total{`)
	if refused < float64(n)*0.9 {
		t.Fatalf("meshgate_pki_api_refused_total = %v after %v, want about %d", refused, codes, n)
	}
	t.Logf("%v; journal %d -> %d bytes; refused total %v", codes, st0.Size(), st1.Size(), refused)
}
