package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// adminWrite sends every admin write of this file (one place to add the
// operator credential once the admin API asks for it).
func adminWrite(t *testing.T, admin, token, method, path, contentType, body string) (int, string, error) {
	t.Helper()
	return adminRequest(method, "http://"+admin+path, token, contentType, body)
}

// trustRow is one row of GET /v1/members with its trust verdict.
type trustRow struct {
	Name        string `json:"name"`
	Status      string `json:"status"`
	Trusted     bool   `json:"trusted"`
	TrustReason string `json:"trust_reason"`
}

func trustRows(admin string) map[string]trustRow {
	_, body, err := httpGet("http://" + admin + "/v1/members")
	if err != nil {
		return nil
	}
	var rows []trustRow
	if json.Unmarshal([]byte(body), &rows) != nil {
		return nil
	}
	out := map[string]trustRow{}
	for _, r := range rows {
		out[r.Name] = r
	}
	return out
}

// rogueCertFiles writes a node certificate with the fleet's own SPIFFE
// identity, issued by a CA the fleet does not trust, and that CA as the
// rogue's root: the rogue trusts itself and signs its records correctly.
func rogueCertFiles(t *testing.T, dir, id string) (cert, key, ca string) {
	t.Helper()
	rca := newTestCA(t)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{
		SerialNumber: n, URIs: []*url.URL{u}, IPAddresses: []net.IP{net.ParseIP("127.0.0.4")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, rca.cert, &k.PublicKey, rca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalPKCS8PrivateKey(k)
	cert, key, ca = filepath.Join(dir, "rogue.pem"), filepath.Join(dir, "rogue-key.pem"), filepath.Join(dir, "rogue-ca.pem")
	for f, b := range map[string][]byte{
		cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}),
		ca:   rca.pem,
	} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, ca
}

// TestRogueGossipMemberGetsNoTraffic: a token-joined fleet of three and a
// rogue `meshgate agent` with its own PKI (a certificate of the fleet's
// SPIFFE identity from another CA) that joins the gossip port and
// registers an endpoint for the same service as a real one. Every gateway
// lists the rogue untrusted, counts its refused records, and sends none
// of N connections to the rogue's backend. A peer's registration of a
// gateway's own admin address is refused at that gateway.
func TestRogueGossipMemberGetsNoTraffic(t *testing.T) {
	root := t.TempDir()
	gw1 := newEnrolledNode(t, root, "gw-1", "127.0.0.1")
	gw2 := newEnrolledNode(t, root, "gw-2", "127.0.0.2")
	gw3 := newEnrolledNode(t, root, "gw-3", "127.0.0.3")
	gws := []*enrolledNode{gw1, gw2, gw3}
	const gatewayID = "spiffe://cluster.local/ns/meshgate-system/sa/meshgate"

	// The Gateway selects istio=eastwestgateway.
	const labels = "\nlabels: {istio: eastwestgateway}"
	gw1.write(t, "bootstrap: true"+labels, "")
	gw1.start(t)
	waitReady(t, gw1.p, gw1.admin)
	rootCert := filepath.Join(gw1.data, "root-cert.pem")
	bin := meshgateBin(t)
	token := func() string {
		t.Helper()
		cmd := exec.Command(bin, "token", "create", "--namespace", "meshgate-system", "--service-account", "meshgate", "--uses", "1",
			"--ca-addr", gw1.caAddr, "--data-dir", gw1.data)
		cmd.Stderr = io.Discard
		o, err := cmd.Output()
		if err != nil {
			t.Fatalf("token create: %v", err)
		}
		f := filepath.Join(root, fmt.Sprintf("gw-%d.token", time.Now().UnixNano()))
		if err := os.WriteFile(f, o, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	join := fmt.Sprintf("join: [%s]", gw1.gossip)
	for _, n := range []*enrolledNode{gw2, gw3} {
		n.write(t, join+labels, fmt.Sprintf("tls: {token_file: %s, ca_addr: %s, ca_file: %s}", token(), gw1.caAddr, rootCert))
		n.start(t)
	}
	for _, n := range gws {
		waitReady(t, n.p, n.admin)
	}
	waitFor(t, 60*time.Second, "three trusted alive members at every gateway", func() bool {
		for _, n := range gws {
			rows := trustRows(n.admin)
			for _, g := range gws {
				if r := rows[g.name]; r.Status != "alive" || !r.Trusted {
					return false
				}
			}
		}
		return true
	})
	fleetTok := func() string { return operatorToken(t, filepath.Join(gw1.data, "operator.token")) }
	port := freePort(t)
	waitFor(t, 30*time.Second, "the Gateway applied", func() bool {
		code, _, err := adminWrite(t, gw1.admin, fleetTok(), http.MethodPut, "/v1/config?file=trust.yaml", "application/yaml", gatewayYAML(port)+trustServices)
		return err == nil && code == 200
	})

	// The rogue: no token, its own CA, the gossip port of gw-1.
	rogueDir := filepath.Join(root, "rogue")
	if err := os.MkdirAll(filepath.Join(rogueDir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	cert, key, rca := rogueCertFiles(t, rogueDir, gatewayID)
	// The rogue holds the fleet's gossip key (stolen): encryption keeps
	// strangers out of the membership, but a member that has the key must
	// still contribute nothing without a node identity.
	stolenKey := filepath.Join(gw1.data, "gossip.keyring")
	waitFor(t, 30*time.Second, "gw-1's gossip keyring file", func() bool { _, err := os.Stat(stolenKey); return err == nil })
	rogueAdmin := fmt.Sprintf("127.0.0.4:%d", freePort(t))
	rogueYAML := fmt.Sprintf(`name: rogue
network: network-a
admin_addr: %s
bind_addr: 127.0.0.4
data_dir: %s
drain_timeout: 2s
log: {format: json, level: info}
bootstrap: true
join: [%s]
catalog: {allow_undeclared_services: true}
gossip: {bind: 127.0.0.4, port: %d, keyring_file: %s}
raft: {bind: 127.0.0.4, port: %d}
ca: {addr: ""}
tls: {cert_file: %s, key_file: %s, ca_file: %s}
`, rogueAdmin, filepath.Join(rogueDir, "data"), gw1.gossip, freePort(t), stolenKey, freePort(t), cert, key, rca)
	rogueFile := filepath.Join(rogueDir, "node.yaml")
	if err := os.WriteFile(rogueFile, []byte(rogueYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	rogue := start(t, rogueDir, "agent", "--config", rogueFile)
	// Its store never syncs (raft refuses it), so its admin API comes up
	// after the bounded wait for raft.
	waitFor(t, 90*time.Second, "the rogue's admin API", func() bool {
		select {
		case <-rogue.done:
			t.Fatalf("rogue agent exited: %v\n%s", rogue.err, rogue.out.String())
		default:
		}
		code, _, err := httpGet("http://" + rogueAdmin + "/healthz")
		return err == nil && code == 200
	})

	// The rogue runs a one-node fleet of its own (it holds the operator
	// token of that fleet, not of ours) and joins our gossip port.
	tokFor := func(admin string) string {
		if admin == rogueAdmin {
			return operatorToken(t, filepath.Join(rogueDir, "data", "operator.token"))
		}
		return fleetTok()
	}
	ca := newTestCA(t)
	good := startBackend(t, ca, "good", serviceHost)
	evil := startBackend(t, ca, "rogue", serviceHost)
	register := func(admin, id string, be *backend, weight int) (int, string) {
		t.Helper()
		body := fmt.Sprintf(`{"service":%q,"port":9080,"addr":"127.0.0.1:%d","weight":%d,"ttl":"300s"}`, serviceHost, be.port(), weight)
		code, resp, err := adminWrite(t, admin, tokFor(admin), http.MethodPut, "/v1/endpoints/"+id, "application/json", body)
		if err != nil {
			t.Fatalf("register %s at %s: %v", id, admin, err)
		}
		return code, resp
	}
	if code, resp := register(gw2.admin, "reviews-good", good, 1); code/100 != 2 {
		t.Fatalf("register at gw-2: %d %s", code, resp)
	}
	if code, resp := register(rogueAdmin, "reviews-evil", evil, 1000); code/100 != 2 {
		t.Fatalf("register at the rogue: %d %s", code, resp)
	}

	// Every gateway met the rogue, refused its chain, and counted its
	// records; it routes the real endpoint.
	sni := "outbound_.9080_._." + serviceHost
	for _, n := range gws {
		waitFor(t, 60*time.Second, n.name+" lists the rogue untrusted", func() bool {
			r, ok := trustRows(n.admin)["rogue"]
			return ok && r.Status == "alive" && !r.Trusted && strings.Contains(r.TrustReason, "does not chain")
		})
		waitFor(t, 30*time.Second, n.name+" counts the rogue's refused records", func() bool {
			return metric(t, n.admin, `meshgate_catalog_dropped_total{reason="untrusted"}`) > 0
		})
		waitFor(t, 30*time.Second, n.name+" routes the real endpoint", func() bool {
			id, err := ask(t.Context(), fmt.Sprintf("%s:%d", n.ip, port), sni, istioALPN, ca.pool, serviceHost)
			return err == nil && id == "good"
		})
	}
	out, err := exec.Command(bin, "members", "--admin", gw3.admin).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "untrusted: ") {
		t.Fatalf("meshgate members at gw-3: %v\n%s\nwant the rogue shown untrusted", err, out)
	}

	const conns = 100
	for _, n := range gws {
		before := evil.accepted.Load()
		for i := range conns {
			id, err := ask(t.Context(), fmt.Sprintf("%s:%d", n.ip, port), sni, istioALPN, ca.pool, serviceHost)
			if err != nil || id != "good" {
				t.Fatalf("connection %d at %s answered %q, %v; want the real backend", i, n.name, id, err)
			}
		}
		if got := evil.accepted.Load() - before; got != 0 {
			t.Fatalf("%s sent %d of %d connections to the rogue's backend; want 0", n.name, got, conns)
		}
		t.Logf("%s: %d/%d connections to the real backend, 0 to the rogue's", n.name, conns, conns)
	}

	// A fleet member registering gw-1's admin address: accepted by its
	// owner (it is not gw-2's own), dropped at gw-1 and counted.
	adminPort, _ := portOf(gw1.admin)
	body := fmt.Sprintf(`{"service":"admin.default.svc.cluster.local","port":80,"addr":"127.0.0.1:%d","ttl":"300s"}`, adminPort)
	if code, resp, err := adminWrite(t, gw2.admin, fleetTok(), http.MethodPut, "/v1/endpoints/at-gw1-admin", "application/json", body); err != nil || code/100 != 2 {
		t.Fatalf("register gw-1's admin address at gw-2: %d %s %v", code, resp, err)
	}
	waitFor(t, 30*time.Second, "gw-3 holding the endpoint at gw-1's admin address", func() bool {
		_, b, err := httpGet("http://" + gw3.admin + "/v1/endpoints")
		return err == nil && strings.Contains(b, fmt.Sprintf("127.0.0.1:%d", adminPort))
	})
	waitFor(t, 30*time.Second, "gw-1 counting the endpoint at its admin listener", func() bool {
		return metric(t, gw1.admin, `meshgate_catalog_dropped_total{reason="reserved"}`) > 0
	})
	if _, b, _ := httpGet("http://" + gw1.admin + "/v1/endpoints"); strings.Contains(b, fmt.Sprintf("127.0.0.1:%d", adminPort)) {
		t.Fatalf("gw-1 holds an endpoint at its own admin listener: %s", b)
	}
	// At the node itself, the registration is refused naming the listener.
	if code, resp, _ := adminWrite(t, gw1.admin, fleetTok(), http.MethodPut, "/v1/endpoints/self-admin", "application/json", body); code != http.StatusBadRequest || !strings.Contains(resp, "admin listener") {
		t.Fatalf("register gw-1's own admin address at gw-1: %d %s; want 400 naming the admin listener", code, resp)
	}
}

// portOf returns the port of a "host:port".
func portOf(hostport string) (int, error) {
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return 0, err
	}
	var n int
	_, err = fmt.Sscanf(p, "%d", &n)
	return n, err
}

// trustServices declares the services the test registers endpoints for.
const trustServices = `---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [` + serviceHost + `]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: tls, protocol: TLS}]
  resolution: STATIC
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: admin, namespace: default}
spec:
  hosts: [admin.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 80, name: tcp, protocol: TCP}]
  resolution: STATIC
`
