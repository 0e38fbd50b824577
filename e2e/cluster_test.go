package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fleetNode is one `meshgate agent` process of a fleet on loopback; node i
// binds 127.0.0.(i+1) so every node can serve the same Gateway port.
type fleetNode struct {
	name, ip                 string
	admin, gossip, caAddr    string
	dir, nodeFile, resources string
	p                        *proc
}

// nodeCert writes a certificate for ip (server and client auth) signed by
// ca, as a fleet's raft transport needs.
func nodeCert(t *testing.T, ca *testCA, dir, name string, ips ...string) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: n, Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// newFleet writes node.yaml for n nodes that find each other through the
// first node's gossip address and bootstrap raft together.
func newFleet(t *testing.T, n int) []*fleetNode {
	t.Helper()
	ca := newTestCA(t)
	root := t.TempDir()
	caFile := filepath.Join(root, "ca.pem")
	if err := os.WriteFile(caFile, ca.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	// Every node of a fleet seals and unseals the one replicated CA key
	// with the same key-encryption key.
	kek := make([]byte, 32)
	rand.Read(kek)
	var nodes []*fleetNode
	for i := range n {
		fn := &fleetNode{name: fmt.Sprintf("gw-%d", i+1), ip: fmt.Sprintf("127.0.0.%d", i+1)}
		fn.dir = filepath.Join(root, fn.name)
		fn.resources = filepath.Join(fn.dir, "resources")
		if err := os.MkdirAll(fn.resources, 0o755); err != nil {
			t.Fatal(err)
		}
		// The registration API accepts only services the configuration
		// declares: the fleet's tests register reviews on 9080.
		if err := os.WriteFile(filepath.Join(fn.resources, "reviews-serviceentry.yaml"), []byte(reviewsServiceEntry), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(fn.dir, "data"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(fn.dir, "data", "kek"), []byte(hex.EncodeToString(kek)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		fn.admin = fmt.Sprintf("%s:%d", fn.ip, freePort(t))
		fn.gossip = fmt.Sprintf("%s:%d", fn.ip, freePort(t))
		fn.caAddr = fmt.Sprintf("%s:%d", fn.ip, freePort(t))
		nodes = append(nodes, fn)
	}
	for _, fn := range nodes {
		cert, key := nodeCert(t, ca, fn.dir, fn.name, fn.ip)
		_, gport, _ := net.SplitHostPort(fn.gossip)
		node := fmt.Sprintf(`name: %s
network: network-a
labels: {istio: eastwestgateway}
admin_addr: %s
bind_addr: %s
data_dir: %s
drain_timeout: 2s
log: {format: json, level: info}
bootstrap_expect: %d
join: [%s]
gossip: {bind: %s, port: %s}
raft: {bind: %s, port: %d}
ca: {addr: %s}
tls: {cert_file: %s, key_file: %s, ca_file: %s}
`, fn.name, fn.admin, fn.ip, filepath.Join(fn.dir, "data"), n, nodes[0].gossip, fn.ip, gport, fn.ip, freePort(t), fn.caAddr, cert, key, caFile)
		fn.nodeFile = filepath.Join(fn.dir, "node.yaml")
		if err := os.WriteFile(fn.nodeFile, []byte(node), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

// reviewsServiceEntry declares the service the fleet tests register.
const reviewsServiceEntry = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: tls, protocol: TLS}]
  resolution: STATIC
`

func (fn *fleetNode) start(t *testing.T) {
	t.Helper()
	fn.p = start(t, fn.dir, "agent", "--config", fn.nodeFile, "--resources", fn.resources)
}

type memberRow struct {
	Name     string `json:"name"`
	Status   string `json:"status"`
	RaftRole string `json:"raft_role"`
}

func (fn *fleetNode) members(t *testing.T) []memberRow {
	_, body, err := httpGet("http://" + fn.admin + "/v1/members")
	if err != nil {
		return nil
	}
	var ms []memberRow
	_ = json.Unmarshal([]byte(body), &ms)
	return ms
}

func (fn *fleetNode) role(t *testing.T) string {
	for _, m := range fn.members(t) {
		if m.Name == fn.name {
			return m.RaftRole
		}
	}
	return ""
}

func (fn *fleetNode) apply(t *testing.T, yaml string) error {
	code, body, err := adminRequest(http.MethodPut, "http://"+fn.admin+"/v1/config?file=test.yaml", fn.adminToken(t), "application/yaml", yaml)
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("apply at %s: %d: %s", fn.name, code, body)
	}
	return nil
}

// adminToken is the fleet's bootstrap operator token, which the node that
// won the bootstrap wrote to its data dir (tokens are fleet-wide).
func (fn *fleetNode) adminToken(t testing.TB) string {
	return operatorToken(t, filepath.Join(filepath.Dir(fn.dir), "*", "data", "operator.token"))
}

func (fn *fleetNode) has(t *testing.T, kind, name string) bool {
	code, body, err := httpGet("http://" + fn.admin + "/v1/config?kind=" + kind + "&name=" + name)
	return err == nil && code == 200 && strings.Contains(body, "name: "+name)
}

func gatewayYAML(port int) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: eastwest, namespace: istio-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: %d, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
`, port)
}

func TestFleetReplicatesConfigAndGossipsEndpoints(t *testing.T) {
	nodes := newFleet(t, 3)
	for _, fn := range nodes {
		fn.start(t)
	}
	for _, fn := range nodes {
		waitReady(t, fn.p, fn.admin)
	}
	var leader *fleetNode
	waitFor(t, 60*time.Second, "3 alive members and a raft leader", func() bool {
		ms := nodes[0].members(t)
		alive, leaders := 0, 0
		for _, m := range ms {
			if m.Status == "alive" {
				alive++
			}
			if m.RaftRole == "leader" {
				leaders++
			}
		}
		return alive == 3 && leaders == 1
	})
	var follower *fleetNode
	for _, fn := range nodes {
		switch fn.role(t) {
		case "leader":
			leader = fn
		default:
			follower = fn
		}
	}
	if leader == nil || follower == nil {
		t.Fatalf("no leader/follower among %v", nodes[0].members(t))
	}

	// A write at a follower is forwarded to the leader and read everywhere.
	port := freePort(t)
	if err := follower.apply(t, gatewayYAML(port)); err != nil {
		t.Fatal(err)
	}
	for _, fn := range nodes {
		waitFor(t, 10*time.Second, fn.name+" has the Gateway", func() bool { return fn.has(t, "Gateway", "eastwest") })
	}
	// A bad document at any node changes nothing.
	if err := nodes[2].apply(t, "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: broken}\nspec: {}\n"); err == nil {
		t.Fatal("apply of a Gateway without servers succeeded, want it refused")
	}

	// Kill the leader: the other two elect a new one and writes continue
	// at either of them.
	_ = leader.p.cmd.Process.Signal(syscall.SIGKILL)
	var alive []*fleetNode
	for _, fn := range nodes {
		if fn != leader {
			alive = append(alive, fn)
		}
	}
	waitFor(t, 30*time.Second, "a write after the leader died", func() bool {
		return alive[0].apply(t, strings.Replace(gatewayYAML(port), "eastwest", "eastwest-2", 1)) == nil
	})
	waitFor(t, 10*time.Second, alive[1].name+" has the write made after failover", func() bool {
		return alive[1].has(t, "Gateway", "eastwest-2")
	})

	// An endpoint registered at one node is routed by the others.
	ca := newTestCA(t)
	be := startBackend(t, ca, "v1", serviceHost)
	owner, other := alive[0], alive[1]
	reg := fmt.Sprintf(`{"service":%q,"port":9080,"addr":"127.0.0.1:%d","labels":{"version":"v1"},"ttl":"60s"}`, serviceHost, be.port())
	if code, body, err := adminRequest(http.MethodPut, "http://"+owner.admin+"/v1/endpoints/reviews-1", owner.adminToken(t), "", reg); err != nil || code/100 != 2 {
		t.Fatalf("register endpoint at %s: %d %s %v", owner.name, code, body, err)
	}
	sni := "outbound_.9080_._." + serviceHost
	for _, fn := range alive {
		addr := fmt.Sprintf("%s:%d", fn.ip, port)
		waitFor(t, 15*time.Second, fn.name+" routes the gossiped endpoint", func() bool {
			id, err := ask(t.Context(), addr, sni, istioALPN, ca.pool, serviceHost)
			return err == nil && id == "v1"
		})
	}

	// The owner crashes: its endpoint vanishes from the other node's table
	// and nothing is dialled for the name any more.
	_ = owner.p.cmd.Process.Signal(syscall.SIGKILL)
	waitFor(t, 30*time.Second, other.name+" withdraws the dead node's endpoint", func() bool {
		_, body, err := httpGet("http://" + other.admin + "/debug/explain?sni=" + sni + "&alpn=istio")
		return err == nil && (strings.Contains(body, "no_endpoint") || strings.Contains(body, "no_route"))
	})
	before := be.accepted.Load()
	if _, err := ask(t.Context(), fmt.Sprintf("%s:%d", other.ip, port), sni, istioALPN, ca.pool, serviceHost); err == nil {
		t.Fatal("connection for a withdrawn endpoint succeeded")
	}
	if be.accepted.Load() != before {
		t.Fatal("the backend of a withdrawn endpoint was dialled")
	}
}

func TestFleetRestartKeepsState(t *testing.T) {
	nodes := newFleet(t, 3)
	for _, fn := range nodes {
		fn.start(t)
	}
	waitLeader := func(what string) {
		waitFor(t, 60*time.Second, what, func() bool {
			for _, fn := range nodes {
				if fn.role(t) == "leader" {
					return true
				}
			}
			return false
		})
	}
	waitLeader("a raft leader")
	port := freePort(t)
	waitFor(t, 20*time.Second, "apply accepted", func() bool { return nodes[0].apply(t, gatewayYAML(port)) == nil })
	for _, fn := range nodes {
		if err := fn.p.stop(t, syscall.SIGTERM, 30*time.Second); err != nil {
			t.Fatalf("%s exit after SIGTERM = %v, want 0", fn.name, err)
		}
	}
	for _, fn := range nodes {
		fn.start(t)
	}
	waitLeader("a raft leader after restarting every node")
	for _, fn := range nodes {
		waitFor(t, 20*time.Second, fn.name+" has the Gateway after restart", func() bool { return fn.has(t, "Gateway", "eastwest") })
	}
}
