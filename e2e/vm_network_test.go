package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// agentReadyLine waits for p's "meshgate agent ready" log line (the node
// logs JSON) and returns its fields: "admin" and "ca" are the bound
// addresses, so a node can be given port 0 and read back.
func agentReadyLine(t *testing.T, p *proc, within time.Duration) map[string]any {
	t.Helper()
	var fields map[string]any
	waitFor(t, within, "the agent's \"meshgate agent ready\" log line", func() bool {
		select {
		case <-p.done:
			t.Fatalf("meshgate exited before it was ready: %v\n%s", p.err, p.out.String())
		default:
		}
		for _, l := range strings.Split(p.out.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "meshgate agent ready" {
				fields = m
				return true
			}
		}
		return false
	})
	return fields
}

// readyAddr is field key ("admin", "ca") of a ready line, a host:port.
func readyAddr(t *testing.T, fields map[string]any, key string) string {
	t.Helper()
	s, _ := fields[key].(string)
	if _, _, err := net.SplitHostPort(s); err != nil {
		t.Fatalf("the ready line's %q is %q, not host:port: %v", key, s, fields)
	}
	return s
}

// cliCmd runs the meshgate CLI with args in namespace ns ("" for this
// one) and no node.yaml (MESHGATE_CONFIG=), so only the flags given count.
func cliCmd(t *testing.T, ns *netns, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(meshgateBin(t), args...)
	if ns != nil {
		cmd = ns.cmd(meshgateBin(t), args...)
	}
	cmd.Env = append(os.Environ(), "MESHGATE_CONFIG=")
	return cmd
}

// loadRoots reads a PEM bundle (a node's root-cert.pem) into a pool.
func loadRoots(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		t.Fatalf("%s holds no certificate", path)
	}
	return p
}

// bundleManifest is what the tests read of a bundle's meshgate.yaml.
type bundleManifest struct {
	CAAddr           string    `json:"caAddr"`
	CAServerName     string    `json:"caServerName"`
	JoinTokenID      string    `json:"joinTokenID"`
	JoinTokenExpires time.Time `json:"joinTokenExpires"`
}

func readManifest(t *testing.T, bundle string) bundleManifest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(bundle, "meshgate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var m bundleManifest
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s/meshgate.yaml: %v", bundle, err)
	}
	return m
}

// vmnetResources are both gateways' resources: a PASSTHROUGH server for
// reviews routed by a VirtualService, and an AUTO_PASSTHROUGH server that
// also admits clients without a mesh ALPN (those go through the bridge).
const vmnetResources = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: eastwest
  namespace: istio-system
  labels: {meshgate.io/require-mesh-alpn: "false"}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 8443, name: tls-reviews, protocol: TLS}
    tls: {mode: PASSTHROUGH}
    hosts: ["default/reviews.default.svc.cluster.local"]
  - port: {number: 15443, name: auto, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  gateways: [istio-system/eastwest]
  tls:
  - match: [{port: 8443, sniHosts: [reviews.default.svc.cluster.local]}]
    route: [{destination: {host: reviews.default.svc.cluster.local, port: {number: 9080}}}]
---
` + reviewsServiceEntry

// vmnetGateway is one gateway of TestVMServiceRoutedFromSecondNetwork.
type vmnetGateway struct {
	dir, data string
	ns        netns
	admin     string // bound admin address, read back
	p         *proc
}

// start writes node.yaml (body) and the resources and runs the agent in
// its namespace; it returns once the agent logged that it is ready.
func (g *vmnetGateway) start(t *testing.T, body string) map[string]any {
	t.Helper()
	res := filepath.Join(g.dir, "resources")
	if err := os.MkdirAll(res, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(res, "vmnet.yaml"), []byte(vmnetResources), 0o644); err != nil {
		t.Fatal(err)
	}
	nf := filepath.Join(g.dir, "node.yaml")
	if err := os.WriteFile(nf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	g.p = startCmd(t, g.dir, g.ns.cmd(meshgateBin(t), "agent", "--config", nf, "--resources", res))
	ready := agentReadyLine(t, g.p, 90*time.Second)
	g.admin = readyAddr(t, ready, "admin")
	return ready
}

// get reads an admin path with curl from the gateway's namespace, with the
// fleet's operator token (read from token).
func (g *vmnetGateway) get(t *testing.T, token, path string) (string, error) {
	return g.ns.run(t, "curl", "-sf", "--max-time", "5", "-H", "Authorization: Bearer "+token, "http://"+g.admin+path)
}

// vmnetRow is what the test reads of a /debug/endpoints row.
type vmnetRow struct {
	Service string `json:"service"`
	Port    uint32 `json:"port"`
	Addr    string `json:"addr"`
	Network string `json:"network"`
	Gateway bool   `json:"gateway"`
	Bridge  string `json:"bridge"`
}

// routes returns the gateway's routing view of host (GET
// /debug/endpoints); ok is false when the view could not be read, which
// proves neither presence nor absence.
func (g *vmnetGateway) routes(t *testing.T, token, host string) (rows []vmnetRow, ok bool) {
	out, err := g.get(t, token, "/debug/endpoints")
	if err != nil {
		return nil, false
	}
	var all []vmnetRow
	if json.Unmarshal([]byte(out), &all) != nil {
		return nil, false
	}
	for _, r := range all {
		if r.Service == host {
			rows = append(rows, r)
		}
	}
	return rows, true
}

// TestVMServiceRoutedFromSecondNetwork: one fleet across two networks in
// the bridge topology, whose node certificates all come from the built-in
// CA. gw-b (network B) bootstraps the fleet and runs the CA; gw-a
// (network A) enrolls with a one-use token minted from gw-a's namespace
// against gw-b's certificate API by its IP. A "VM" in network B joins gw-b
// from a bundle made with `meshgate vm bundle`; a client in network A
// reaches the VM's TLS service through gw-a and the HBONE bridge (a
// PASSTHROUGH route and an AUTO_PASSTHROUGH name without a mesh ALPN,
// verifying the VM's own certificate end to end), and a mesh-ALPN client
// with a leg in the wan reaches it at gw-b's 15443 (split horizon). gw-a
// only ever sees the VM through gw-b. The VM outlives its join token:
// once the token has expired it is stopped (withdrawn from A's view too),
// restarted from the certificate it kept, renews with it and is routed
// from A again. When its service stops answering its check, gw-b
// withdraws it and it leaves A's view.
func TestVMServiceRoutedFromSecondNetwork(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	nets := newBridgeNets(t)
	root := t.TempDir()
	gwB := &vmnetGateway{dir: filepath.Join(root, "gw-b"), ns: nets.gwB}
	gwA := &vmnetGateway{dir: filepath.Join(root, "gw-a"), ns: nets.gwA}
	gwB.data, gwA.data = filepath.Join(gwB.dir, "data"), filepath.Join(gwA.dir, "data")

	// gw-b: the fleet's first node, with the CA. Its gossip, raft, admin
	// and CA ports are picked by the kernel and read back. The CA listens
	// on every address: the wan (gw-a, the CLI) and network B's LAN (the
	// VM). The admin API faces the VM's LAN.
	readyB := gwB.start(t, fmt.Sprintf(`name: gw-b
network: network-b
labels: {istio: eastwestgateway}
admin_addr: %s:0
gateway_addr: %s:15443
bridge: {addr: "%s:15008"}
data_dir: %s
drain_timeout: 1s
log: {format: json, level: info}
bootstrap: true
gossip: {bind: %s, port: 0}
raft: {bind: %s, port: 0}
ca: {addr: "0.0.0.0:0"}
`, bnGwBLanIP, bnGwB1WanIP, bnGwB1WanIP, gwB.data, bnGwB1WanIP, bnGwB1WanIP))
	caPort, err := portOf(readyAddr(t, readyB, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	caWan, caLan := net.JoinHostPort(bnGwB1WanIP, fmt.Sprint(caPort)), net.JoinHostPort(bnGwBLanIP, fmt.Sprint(caPort))
	token := operatorToken(t, filepath.Join(gwB.data, "operator.token"))
	rootCert := filepath.Join(gwB.data, "root-cert.pem")
	meshRoots := loadRoots(t, rootCert)
	var gossipB string
	waitFor(t, 30*time.Second, "gw-b's gossip address in /v1/members", func() bool {
		out, err := gwB.get(t, token, "/v1/members")
		var ms []struct{ Name, Addr string }
		if err != nil || json.Unmarshal([]byte(out), &ms) != nil {
			return false
		}
		for _, m := range ms {
			if m.Name == "gw-b" && m.Addr != "" {
				gossipB = m.Addr
			}
		}
		return gossipB != ""
	})

	// The certificate API's server certificate names the addresses it is
	// dialled at: from another namespace, by IP, with the mesh root.
	tokFile := filepath.Join(root, "gw-a.token")
	if out, err := cliCmd(t, &nets.gwA, "token", "create", "--namespace", "meshgate-system", "--service-account", "meshgate", "--uses", "1",
		"--ca-addr", caWan, "--data-dir", gwB.data, "--out", tokFile).CombinedOutput(); err != nil {
		t.Fatalf("meshgate token create from gw-a's namespace at %s: %v\n%s", caWan, err, out)
	}
	if err := inNetns(nets.netB.name, func() error {
		c, err := tls.Dial("tcp", caLan, &tls.Config{RootCAs: meshRoots, ServerName: bnGwBLanIP, MinVersion: tls.VersionTLS12})
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		t.Fatalf("the certificate API at %s, dialled from the VM's network by IP: %v", caLan, err)
	}

	// gw-a: network A's gateway, enrolled from gw-b's CA with the token; it
	// runs no CA and renews at gw-b's.
	gwA.start(t, fmt.Sprintf(`name: gw-a
network: network-a
labels: {istio: eastwestgateway}
admin_addr: %s:0
gateway_addr: %s:15443
bridge: {addr: "%s:15008"}
data_dir: %s
drain_timeout: 1s
log: {format: json, level: info}
join: [%s]
gossip: {bind: %s, port: 0}
raft: {bind: %s, port: 0}
ca: {addr: ""}
tls: {token_file: %s, ca_addr: "%s", ca_file: %s}
`, bnGwALanIP, bnGwAWanIP, bnGwAWanIP, gwA.data, gossipB, bnGwAWanIP, bnGwAWanIP, tokFile, caWan, rootCert))
	if got := nodeLeafURI(t, gwA.data); got != nodeSPIFFE {
		t.Fatalf("gw-a enrolled as %q; want %q", got, nodeSPIFFE)
	}
	waitFor(t, 60*time.Second, "two alive members, a raft leader, both nodes ready", func() bool {
		out, err := gwA.get(t, token, "/v1/members")
		if err != nil || strings.Count(out, `"alive"`) != 2 || !strings.Contains(out, `"leader"`) {
			return false
		}
		_, errA := gwA.get(t, token, "/readyz")
		_, errB := gwB.get(t, token, "/readyz")
		return errA == nil && errB == nil
	})

	// The VM's service, in network B, on a port the kernel picks.
	ca := newTestCA(t)
	be := startBackendIn(t, nets.netB.name, bnBackendIP+":0", ca, "vm-reviews", serviceHost)
	vmAddr := net.JoinHostPort(bnBackendIP, fmt.Sprint(be.port()))

	// On gw-b: the bundle. Its join token expires soon, on purpose.
	bundle := filepath.Join(root, "bundle")
	if out, err := cliCmd(t, &nets.gwB, "vm", "bundle", "--data-dir", gwB.data, "--ca-addr", caLan, "--admin", gwB.admin,
		"--namespace", "default", "--service-account", "reviews", "--network", "network-b", "--service", serviceHost,
		"--port", fmt.Sprintf("9080:%d", be.port()), "--labels", "app=reviews", "--token-ttl", "20s", "--out", bundle).CombinedOutput(); err != nil {
		t.Fatalf("meshgate vm bundle: %v\n%s", err, out)
	}
	man := readManifest(t, bundle)
	if man.CAAddr != caLan || man.CAServerName != "" {
		t.Errorf("bundle names the CA %q (server name %q); want %s verified by its own address", man.CAAddr, man.CAServerName, caLan)
	}
	if h, _ := os.ReadFile(filepath.Join(bundle, "hosts")); string(h) != bnGwBLanIP+" istiod.istio-system.svc\n" {
		t.Errorf("bundle hosts = %q; want gw-b's LAN address as istiod", h)
	}

	// On the VM: the join.
	certDir := filepath.Join(root, "vm", "etc", "certs")
	chain := filepath.Join(certDir, "cert-chain.pem")
	joinArgs := []string{"workload", "join", bundle, "--cert-dir", certDir, "--advertise", bnBackendIP,
		"--check", "tcp", "--check-interval", "300ms", "--check-timeout", "300ms", "--ttl", "5s", "--cert-ttl", "30s"}
	join := startCmd(t, root, cliCmd(t, &nets.netB, joinArgs...))

	// routedFromA: gw-a's view holds the VM only through gw-b's gateway
	// and bridge addresses, never the VM's own.
	bridgeB, gatewayB := net.JoinHostPort(bnGwB1WanIP, "15008"), net.JoinHostPort(bnGwB1WanIP, "15443")
	var viewA []vmnetRow
	routedFromA := func() bool {
		rows, ok := gwA.routes(t, token, serviceHost)
		viewA = rows
		if !ok || len(rows) == 0 {
			return false
		}
		for _, r := range rows {
			if r.Network != "network-b" || !r.Gateway || r.Bridge != bridgeB || r.Addr != gatewayB || r.Port != 9080 {
				return false
			}
		}
		return true
	}
	goneFromA := func() bool { rows, ok := gwA.routes(t, token, serviceHost); return ok && len(rows) == 0 }
	waitFor(t, 60*time.Second, "gw-a routing reviews to network B through gw-b", routedFromA)
	for _, r := range viewA {
		if strings.HasPrefix(r.Addr, bnBackendIP+":") {
			t.Fatalf("gw-a's view holds the VM's own address %s; it must only know gw-b:\n%+v", r.Addr, viewA)
		}
	}
	if rows, _ := gwB.routes(t, token, serviceHost); len(rows) != 1 || rows[0].Addr != vmAddr || rows[0].Gateway {
		t.Errorf("gw-b's view of reviews = %+v; want the VM at %s", rows, vmAddr)
	}
	waitFor(t, 10*time.Second, "the first join reporting a certificate from the token", func() bool {
		return strings.Contains(join.out.String(), "certificate from token")
	})

	// A client in network A, through gw-a and the bridge, verifying the
	// VM's own certificate.
	sni := "outbound_.9080_._." + serviceHost
	reach := func(ns, addr, sni string, alpn []string) error {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		return inNetns(ns, func() error {
			id, err := ask(ctx, addr, sni, alpn, ca.pool, serviceHost)
			if err == nil && id != "vm-reviews" {
				err = fmt.Errorf("answered by %q", id)
			}
			return err
		})
	}
	viaBridge := func() error { return reach(nets.netA.name, net.JoinHostPort(bnGwALanIP, "8443"), serviceHost, nil) }
	viaAuto := func() error { return reach(nets.netA.name, net.JoinHostPort(bnGwALanIP, "15443"), sni, nil) }
	viaMeshALPN := func() error { return reach(nets.gwA.name, gatewayB, sni, []string{"istio"}) }
	var rerr error
	waitFor(t, 30*time.Second, "a client in A served by the VM through gw-a's PASSTHROUGH route and the bridge", func() bool { rerr = viaBridge(); return rerr == nil })
	if err := viaAuto(); err != nil {
		t.Errorf("AUTO_PASSTHROUGH without a mesh ALPN at gw-a, through the bridge: %v", err)
	}
	if err := viaMeshALPN(); err != nil {
		t.Errorf("mesh-ALPN client on the wan at gw-b's %s: %v", gatewayB, err)
	}
	if out, err := nets.netA.run(t, "curl", "-s", "--max-time", "3", "-k", "https://"+vmAddr+"/"); err == nil {
		t.Fatalf("the client in network A reached the VM directly: %s", out)
	}

	// The join token expires while the VM runs on its certificate
	// (renewing it); then the VM stops: withdrawn, from A's view too.
	var tokList string
	waitFor(t, 60*time.Second, "the bundle's join token used and expired at the CA", func() bool {
		out, err := cliCmd(t, &nets.gwB, "token", "list", "--ca-addr", caLan, "--data-dir", gwB.data).CombinedOutput()
		tokList = string(out)
		for _, l := range strings.Split(tokList, "\n") {
			if strings.HasPrefix(l, man.JoinTokenID) {
				return err == nil && strings.Contains(l, "1/1") && strings.HasSuffix(strings.TrimSpace(l), "expired")
			}
		}
		return false
	})
	if err := join.stop(t, syscall.SIGTERM, 20*time.Second); err != nil {
		t.Fatalf("join exit after SIGTERM = %v, want 0\n%s", err, join.out.String())
	}
	waitFor(t, 30*time.Second, "the stopped VM gone from gw-a's view", goneFromA)

	// Restarted with the token expired: from the kept certificate, routed
	// from A again, and renewed with itself.
	kept := leafSerial(t, chain)
	join2 := startCmd(t, root, cliCmd(t, &nets.netB, joinArgs...))
	waitFor(t, 60*time.Second, "the restarted VM routed from gw-a again", routedFromA)
	waitFor(t, 10*time.Second, "the restarted join reporting the certificate it kept", func() bool {
		return strings.Contains(join2.out.String(), "certificate from cert-dir")
	})
	waitFor(t, 30*time.Second, "a client in A served by the restarted VM", func() bool { rerr = viaBridge(); return rerr == nil })
	waitFor(t, 60*time.Second, "the kept certificate renewed after the token expired", func() bool {
		s := leafSerial(t, chain)
		return s != "" && s != kept && strings.Contains(join2.out.String(), "certificate renewed")
	})
	if err := viaBridge(); err != nil {
		t.Errorf("client in A after the renewal: %v", err)
	}
	if err := viaMeshALPN(); err != nil {
		t.Errorf("mesh-ALPN client at gw-b after the restart: %v", err)
	}

	// The VM's service stops answering its check: gw-b withdraws it, and
	// it leaves A's view; the registration stays, failing.
	be.ln.Close()
	waitFor(t, 30*time.Second, "the failing VM withdrawn from gw-a's view", goneFromA)
	if regs, _ := gwB.get(t, token, "/v1/registrations"); !strings.Contains(regs, `"healthy":false`) {
		t.Errorf("gw-b's registrations after the check failed: %s; want the VM's kept, unhealthy", regs)
	}
	if err := viaBridge(); err == nil {
		t.Fatal("a client in A still reached the withdrawn VM")
	}
	if err := join2.stop(t, syscall.SIGTERM, 20*time.Second); err != nil {
		t.Fatalf("second join exit after SIGTERM = %v\n%s", err, join2.out.String())
	}
}
