package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// gossipkeyAdmin sends every admin API request of this file (one place to
// add credentials).
func gossipkeyAdmin(method, url, token string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// gossipkeyMembers lists the gossip members a node sees.
func gossipkeyMembers(t *testing.T, admin string) []memberRow {
	t.Helper()
	code, b, err := gossipkeyAdmin(http.MethodGet, "http://"+admin+"/v1/members", "", nil)
	if err != nil || code != http.StatusOK {
		return nil
	}
	var ms []memberRow
	_ = json.Unmarshal(b, &ms)
	return ms
}

// gossipkeyLocal is the keyring a node runs with, from GET /v1/keyring.
func gossipkeyLocal(t *testing.T, admin, token string) []string {
	t.Helper()
	code, b, err := gossipkeyAdmin(http.MethodGet, "http://"+admin+"/v1/keyring", token, nil)
	if err != nil || code != http.StatusOK {
		return nil
	}
	var res struct {
		Local []string `json:"local"`
	}
	_ = json.Unmarshal(b, &res)
	return res.Local
}

// keptKeys reads data_dir/gossip.keyring and checks its mode.
func keptKeys(t *testing.T, data string) []string {
	t.Helper()
	p := filepath.Join(data, "gossip.keyring")
	st, err := os.Stat(p)
	if err != nil {
		t.Fatalf("kept gossip keyring: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("%s mode %v; want 0600", p, st.Mode().Perm())
	}
	return strings.Fields(readFile(t, p))
}

// rogueMember starts an in-process memberlist on ip that tries to join
// addr, with key as its only gossip key (nil = no encryption).
func rogueMember(t *testing.T, name, ip, addr string, key []byte) *memberlist.Memberlist {
	t.Helper()
	c := memberlist.DefaultLANConfig()
	c.Name = name
	c.BindAddr = ip
	c.BindPort = 0
	c.AdvertiseAddr = ip
	c.Logger = log.New(io.Discard, "", 0)
	if key != nil {
		kr, err := memberlist.NewKeyring(nil, key)
		if err != nil {
			t.Fatal(err)
		}
		c.Keyring = kr
		c.GossipVerifyIncoming, c.GossipVerifyOutgoing = true, true
	}
	ml, err := memberlist.Create(c)
	if err != nil {
		t.Fatalf("rogue memberlist %s: %v", name, err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	if _, err := ml.Join([]string{addr}); err == nil {
		t.Logf("rogue %s: Join reported success", name)
	}
	return ml
}

// TestGossipKeyDeliveredOverMTLS: a fleet's first node makes the gossip
// key itself (no keyring_file anywhere); a node that joins with a token
// fetches it over mutual TLS with its new node certificate, before its
// first gossip join, and keeps it. Gossip members without the key, with
// another key, with a workload certificate or with only a token never get
// it and never appear among the members; the fleet counts what it dropped.
// A restarted node rejoins with the kept key while the CA is down.
func TestGossipKeyDeliveredOverMTLS(t *testing.T) {
	root := t.TempDir()
	gw1 := newEnrolledNode(t, root, "gw-1", "127.0.0.1")
	gw2 := newEnrolledNode(t, root, "gw-2", "127.0.0.2")
	gw1.write(t, "bootstrap: true", "")
	gw1.start(t)
	waitReady(t, gw1.p, gw1.admin)

	fleetKeys := keptKeys(t, gw1.data)
	if len(fleetKeys) != 1 {
		t.Fatalf("first node kept %d gossip keys; want the 1 it made", len(fleetKeys))
	}
	if k, err := base64.StdEncoding.DecodeString(fleetKeys[0]); err != nil || len(k) != 32 {
		t.Fatalf("first node's gossip key: %v, %d bytes; want 32 (AES-256)", err, len(k))
	}
	waitFor(t, 30*time.Second, "gw-1 running the key it made", func() bool {
		return slices.Equal(gossipkeyLocal(t, gw1.admin, operatorToken(t, filepath.Join(gw1.data, "operator.token"))), fleetKeys)
	})
	if got := metric(t, gw1.admin, "meshgate_cluster_gossip_encrypted"); got != 1 {
		t.Fatalf("gw-1 meshgate_cluster_gossip_encrypted = %v; want 1", got)
	}

	bin := meshgateBin(t)
	rootCert := filepath.Join(gw1.data, "root-cert.pem")
	token := func(ns, sa string) string {
		t.Helper()
		cmd := exec.Command(bin, "token", "create", "--namespace", ns, "--service-account", sa, "--uses", "1",
			"--ca-addr", gw1.caAddr, "--data-dir", gw1.data)
		cmd.Stderr = io.Discard
		o, err := cmd.Output()
		if err != nil {
			t.Fatalf("token create %s/%s: %v", ns, sa, err)
		}
		f := filepath.Join(root, ns+"-"+sa+strconv.FormatInt(time.Now().UnixNano(), 10)+".token")
		if err := os.WriteFile(f, o, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	join := fmt.Sprintf("join: [%s]", gw1.gossip)
	enroll := func(tokFile string) string {
		return fmt.Sprintf("tls: {token_file: %s, ca_addr: %s, ca_file: %s}", tokFile, gw1.caAddr, rootCert)
	}

	gw2.write(t, join, enroll(token("meshgate-system", "meshgate")))
	gw2.start(t)
	waitReady(t, gw2.p, gw2.admin)
	if got := keptKeys(t, gw2.data); !slices.Equal(got, fleetKeys) {
		t.Fatalf("gw-2 kept gossip keys %q; want the fleet's %q", got, fleetKeys)
	}
	if out := gw2.p.out.String(); !strings.Contains(out, "gossip keyring received over mutual TLS") {
		t.Fatalf("gw-2 did not log receiving the keyring over mutual TLS:\n%s", out)
	}
	alive := func(admin string, names ...string) bool {
		n := 0
		for _, m := range gossipkeyMembers(t, admin) {
			if slices.Contains(names, m.Name) && m.Status == "alive" {
				n++
			}
		}
		return n == len(names)
	}
	waitFor(t, 60*time.Second, "gw-1 and gw-2 alive at both", func() bool {
		return alive(gw1.admin, "gw-1", "gw-2") && alive(gw2.admin, "gw-1", "gw-2")
	})

	// The endpoint itself: a bare token, a workload certificate and a
	// certificate of another PKI are refused; the node certificate works.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(readFile(t, rootCert)))
	keyringGet := func(cert *tls.Certificate, bearer string) (int, string) {
		t.Helper()
		tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
		defer hc.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodGet, "https://"+gw1.caAddr+"/v1/gossip/keyring", nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET /v1/gossip/keyring: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	wl := filepath.Join(root, "workload")
	if o, err := exec.Command(bin, "cert", "issue", "--token", token("default", "web"), "--namespace", "default", "--service-account", "web",
		"--out", wl, "--ca-addr", gw1.caAddr, "--data-dir", gw1.data).CombinedOutput(); err != nil {
		t.Fatalf("cert issue default/web: %v\n%s", err, o)
	}
	wlCert, err := tls.LoadX509KeyPair(filepath.Join(wl, "cert-chain.pem"), filepath.Join(wl, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	nodeCert, err := tls.LoadX509KeyPair(filepath.Join(gw2.data, "node", "cert-chain.pem"), filepath.Join(gw2.data, "node", "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	otherPKI := newTestCA(t).leaf(t, "gw-9")
	tokenSecret := strings.TrimSpace(readFile(t, token("meshgate-system", "meshgate")))
	for _, tc := range []struct {
		name   string
		cert   *tls.Certificate
		bearer string
		want   int
	}{
		{"gateway token, no certificate", nil, tokenSecret, http.StatusUnauthorized},
		{"workload certificate of the mesh", &wlCert, "", http.StatusForbidden},
		{"workload certificate and gateway token", &wlCert, tokenSecret, http.StatusForbidden},
		{"certificate of another PKI", &otherPKI, "", http.StatusForbidden},
		{"fleet node certificate", &nodeCert, "", http.StatusOK},
	} {
		code, body := keyringGet(tc.cert, tc.bearer)
		if code != tc.want {
			t.Errorf("%s: GET /v1/gossip/keyring = %d %q; want %d", tc.name, code, body, tc.want)
		}
		if leaked := strings.Contains(body, fleetKeys[0]); leaked != (tc.want == http.StatusOK) {
			t.Errorf("%s: body holds the fleet key = %v; want %v", tc.name, leaked, tc.want == http.StatusOK)
		}
	}
	if got := metric(t, gw1.admin, `meshgate_cluster_keyring_requests_total{result="not_allowed"}`); got < 3 {
		t.Errorf("gw-1 meshgate_cluster_keyring_requests_total{not_allowed} = %v; want >= 3", got)
	}

	// A node that enrolls as a workload gets no key and does not start.
	wlNode := newEnrolledNode(t, root, "wl-node", "127.0.0.6")
	wlNode.write(t, join, enroll(token("default", "web")))
	if err := os.WriteFile(wlNode.nodeFile, []byte(strings.Replace(readFile(t, wlNode.nodeFile), "tls: {", "tls: {identity: spiffe://cluster.local/ns/default/sa/web, ", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	wlNode.start(t)
	select {
	case <-wlNode.p.done:
	case <-time.After(60 * time.Second):
		t.Fatal("a node enrolled as a workload kept running without the gossip key; want it to exit")
	}
	if out := wlNode.p.out.String(); wlNode.p.err == nil || !strings.Contains(out, "gossip keyring refused") {
		t.Fatalf("node enrolled as a workload: exit %v; want a failure saying the keyring was refused\n%s", wlNode.p.err, out)
	}
	if _, err := os.Stat(filepath.Join(wlNode.data, "gossip.keyring")); err == nil {
		t.Fatal("the node enrolled as a workload kept a gossip keyring")
	}

	// Gossip members without the key, or with another, never join.
	decrypt0 := metric(t, gw1.admin, `meshgate_catalog_dropped_total{reason="decrypt"}`)
	plain0 := metric(t, gw1.admin, `meshgate_catalog_dropped_total{reason="plaintext"}`)
	rogueMember(t, "rogue-plain", "127.0.0.4", gw1.gossip, nil)
	rogueMember(t, "rogue-key", "127.0.0.5", gw1.gossip, bytes.Repeat([]byte{0x66}, 32))
	waitFor(t, 30*time.Second, "gw-1 dropping the rogues' plaintext and undecryptable gossip", func() bool {
		return metric(t, gw1.admin, `meshgate_catalog_dropped_total{reason="decrypt"}`) > decrypt0 &&
			metric(t, gw1.admin, `meshgate_catalog_dropped_total{reason="plaintext"}`) > plain0
	})
	for _, fn := range []*enrolledNode{gw1, gw2} {
		for _, m := range gossipkeyMembers(t, fn.admin) {
			if strings.HasPrefix(m.Name, "rogue") || m.Name == "wl-node" {
				t.Fatalf("%s lists %s (%s) as a member; want members without the fleet key kept out", fn.name, m.Name, m.Status)
			}
		}
	}

	// gw-2 restarts while gw-1's CA is unreachable for it: the kept key
	// is enough to rejoin gossip.
	if err := gw2.p.stop(t, syscall.SIGTERM, 30*time.Second); err != nil {
		t.Fatalf("gw-2 exit after SIGTERM = %v", err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.2:0") // a CA address nobody answers at
	deadCA := ln.Addr().String()
	ln.Close()
	if err := os.WriteFile(gw2.nodeFile, []byte(strings.Replace(readFile(t, gw2.nodeFile), "ca_addr: "+gw1.caAddr, "ca_addr: "+deadCA, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	gw2.start(t)
	waitReady(t, gw2.p, gw2.admin)
	if out := gw2.p.out.String(); !strings.Contains(out, "gossip keys loaded from the data dir") {
		t.Fatalf("restarted gw-2 did not use its kept gossip keys:\n%s", out)
	}
	waitFor(t, 60*time.Second, "restarted gw-2 alive at gw-1", func() bool { return alive(gw1.admin, "gw-1", "gw-2") })
}

// TestGossipCertFileFleetWarnsInTheClear: a node with certificate files
// and no keyring_file has nobody to get a key from; it starts, gossips in
// the clear, says so loudly and reports it in a metric.
func TestGossipCertFileFleetWarnsInTheClear(t *testing.T) {
	fn := newFleet(t, 1)[0]
	fn.start(t)
	waitReady(t, fn.p, fn.admin)
	if got := metric(t, fn.admin, "meshgate_cluster_gossip_encrypted"); got != 0 {
		t.Fatalf("meshgate_cluster_gossip_encrypted = %v; want 0 for a cert-file node without keyring_file", got)
	}
	if out := fn.p.out.String(); !strings.Contains(out, "GOSSIP IS NOT ENCRYPTED") || !strings.Contains(out, "gossip.keyring_file") {
		t.Fatalf("cert-file node without keyring_file did not warn naming gossip.keyring_file:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(fn.dir, "data", "gossip.keyring")); err == nil {
		t.Fatal("cert-file node without keyring_file kept a gossip keyring; want none")
	}
}
