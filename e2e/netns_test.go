package e2e

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// netns is a network namespace made for one test, joined to its peer by a
// veth pair. Traffic stays inside the namespaces the test created.
type netns struct{ name, ip string }

func (n netns) cmd(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.name, name}, args...)...)
}

func (n netns) run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := n.cmd(name, args...).CombinedOutput()
	return string(out), err
}

// twoNetworks makes namespaces A (10.77.0.1) and B (10.77.0.2) linked by a
// veth pair, or skips when the machine cannot (not root, no iproute2).
func twoNetworks(t *testing.T) (netns, netns) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2 not installed")
	}
	id := os.Getpid() % 100000
	a := netns{name: fmt.Sprintf("mg-a-%d", id), ip: "10.77.0.1"}
	b := netns{name: fmt.Sprintf("mg-b-%d", id), ip: "10.77.0.2"}
	va, vb := fmt.Sprintf("mgva%d", id), fmt.Sprintf("mgvb%d", id)
	sh := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := sh("netns", "add", a.name); err != nil {
		t.Skipf("cannot create a network namespace here: %v", err)
	}
	t.Cleanup(func() { _ = sh("netns", "del", a.name) })
	if err := sh("netns", "add", b.name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sh("netns", "del", b.name) })
	for _, step := range [][]string{
		{"link", "add", va, "type", "veth", "peer", "name", vb},
		{"link", "set", va, "netns", a.name},
		{"link", "set", vb, "netns", b.name},
		{"-n", a.name, "addr", "add", a.ip + "/24", "dev", va},
		{"-n", b.name, "addr", "add", b.ip + "/24", "dev", vb},
		{"-n", a.name, "link", "set", va, "up"},
		{"-n", b.name, "link", "set", vb, "up"},
		{"-n", a.name, "link", "set", "lo", "up"},
		{"-n", b.name, "link", "set", "lo", "up"},
	} {
		if err := sh(step...); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

// TestTwoNetworksSplitHorizon runs a gateway in each of two networks. A
// workload registered in network B is seen by A's gateway through B's
// gateway address, never directly; and a client in A reaches it through
// B's AUTO_PASSTHROUGH listener, as an Istio sidecar in another network
// would.
func TestTwoNetworksSplitHorizon(t *testing.T) {
	for _, tool := range []string{"openssl", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	na, nb := twoNetworks(t)
	ca := newTestCA(t)
	root := t.TempDir()
	caFile := filepath.Join(root, "ca.pem")
	if err := os.WriteFile(caFile, ca.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	gateway := `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: cross-network-gateway, namespace: istio-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
`
	procs := map[string]*proc{}
	for _, x := range []struct {
		ns      netns
		name    string
		network string
	}{{na, "gw-a", "network-a"}, {nb, "gw-b", "network-b"}} {
		dir := filepath.Join(root, x.name)
		if err := os.MkdirAll(filepath.Join(dir, "resources"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "resources", "gw.yaml"), []byte(gateway), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "resources", "reviews-serviceentry.yaml"), []byte(reviewsServiceEntry), 0o644); err != nil {
			t.Fatal(err)
		}
		cert, key := nodeCert(t, ca, dir, x.name, x.ns.ip)
		node := fmt.Sprintf(`name: %s
network: %s
labels: {istio: eastwestgateway}
admin_addr: %s:15000
bind_addr: %s
gateway_addr: %s:15443
data_dir: %s
drain_timeout: 1s
log: {format: json, level: info}
bootstrap_expect: 2
join: [%s:7946]
gossip: {bind: %s, port: 7946}
raft: {bind: %s, port: 8300}
ca: {addr: ""}
tls: {cert_file: %s, key_file: %s, ca_file: %s}
`, x.name, x.network, x.ns.ip, x.ns.ip, x.ns.ip, filepath.Join(dir, "data"), na.ip, x.ns.ip, x.ns.ip, cert, key, caFile)
		nf := filepath.Join(dir, "node.yaml")
		if err := os.WriteFile(nf, []byte(node), 0o644); err != nil {
			t.Fatal(err)
		}
		procs[x.name] = startCmd(t, dir, x.ns.cmd(meshgateBin(t), "agent", "--config", nf, "--resources", filepath.Join(dir, "resources")))
	}

	// The workload of network B: an openssl TLS server inside B.
	leaf := ca.leaf(t, serviceHost)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]})
	kb, _ := x509.MarshalECPrivateKey(leaf.PrivateKey.(*ecdsa.PrivateKey))
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	wdir := filepath.Join(root, "workload")
	os.MkdirAll(wdir, 0o755)
	os.WriteFile(filepath.Join(wdir, "c.pem"), certPEM, 0o644)
	os.WriteFile(filepath.Join(wdir, "k.pem"), keyPEM, 0o600)
	ws := nb.cmd("openssl", "s_server", "-quiet", "-accept", nb.ip+":9443", "-cert", filepath.Join(wdir, "c.pem"), "-key", filepath.Join(wdir, "k.pem"), "-alpn", "istio", "-www")
	startCmd(t, wdir, ws)

	// The admin listeners bind the namespaces' addresses, not loopback, so
	// reads need a token too; the bootstrap node wrote it to its data dir.
	admin := func(n netns, args ...string) (string, error) {
		tok := operatorToken(t, filepath.Join(root, "*", "data", "operator.token"))
		return n.run(t, "curl", append([]string{"-s", "--max-time", "5", "-H", "Authorization: Bearer " + tok, "-H", "Content-Type: application/json"}, args...)...)
	}
	waitFor(t, 60*time.Second, "two alive members and a raft leader", func() bool {
		out, err := admin(na, "http://"+na.ip+":15000/v1/members")
		if err != nil || strings.Count(out, `"alive"`) != 2 || !strings.Contains(out, `"leader"`) {
			return false
		}
		// gw-b serves its admin API once its replicated store has synced.
		_, err = admin(nb, "-f", "http://"+nb.ip+":15000/readyz")
		return err == nil
	})
	reg := fmt.Sprintf(`{"service":%q,"port":9080,"addr":"%s:9443","labels":{"version":"v1"},"ttl":"120s"}`, serviceHost, nb.ip)
	if out, err := admin(nb, "-f", "-X", "PUT", "-d", reg, "http://"+nb.ip+":15000/v1/endpoints/reviews-b"); err != nil {
		t.Fatalf("register the workload at gw-b: %v %s", err, out)
	}

	// Gateway A sees the service through B's gateway, never the workload's
	// own address.
	var routes string
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		routes, err = admin(na, "http://"+na.ip+":15000/debug/endpoints")
		if err == nil && strings.Contains(routes, nb.ip+":15443") && strings.Contains(routes, "network-b") {
			break
		}
		if time.Now().After(deadline) {
			eps, _ := admin(na, "http://"+na.ip+":15000/v1/endpoints")
			t.Fatalf("gw-a's endpoints do not list network-b through %s:15443:\n%s\ngw-a catalog: %s", nb.ip, routes, eps)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(routes, nb.ip+":9443") {
		t.Fatalf("gw-a's endpoints hold network B's workload address %s:9443; it must only know B's gateway:\n%s", nb.ip, routes)
	}
	// AUTO_PASSTHROUGH at A never hairpins to another gateway.
	out, _ := admin(na, "http://"+na.ip+":15000/debug/explain?sni=outbound_.9080_._."+serviceHost+"&alpn=istio")
	if !strings.Contains(out, "no_endpoint") {
		t.Fatalf("gw-a AUTO_PASSTHROUGH for a network-B-only service = %s; want no_endpoint (never hairpin)", out)
	}

	// A client in network A reaches the workload through B's gateway.
	waitFor(t, 20*time.Second, "client in A served through gw-b", func() bool {
		c := na.cmd("openssl", "s_client", "-quiet", "-connect", nb.ip+":15443", "-servername", "outbound_.9080_._."+serviceHost, "-alpn", "istio")
		c.Stdin = strings.NewReader("GET / HTTP/1.0\r\n\r\n")
		b, _ := c.CombinedOutput()
		return strings.Contains(string(b), "200 ok")
	})
	_ = procs
}
