package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// bridgeHost is the service that lives only in network B.
const bridgeHost = "web.default.svc.cluster.local"

// bridgeResources are every gateway's resources: a PASSTHROUGH server for
// web, a TCP server routing to it, and an AUTO_PASSTHROUGH server that also
// admits clients without a mesh ALPN.
const bridgeResources = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bridge-gw
  namespace: istio-system
  labels: {meshgate.io/require-mesh-alpn: "false"}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 8443, name: tls-web, protocol: TLS}
    tls: {mode: PASSTHROUGH}
    hosts: ["default/web.default.svc.cluster.local"]
  - port: {number: 9000, name: tcp-web, protocol: TCP}
    hosts: ["*"]
  - port: {number: 15443, name: auto, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web.default.svc.cluster.local]
  gateways: [istio-system/bridge-gw]
  tls:
  - match: [{port: 8443, sniHosts: [web.default.svc.cluster.local]}]
    route: [{destination: {host: web.default.svc.cluster.local, port: {number: 8443}}}]
  tcp:
  - match: [{port: 9000}]
    route: [{destination: {host: web.default.svc.cluster.local, port: {number: 8443}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 8443, name: tls, protocol: TLS}]
  resolution: STATIC
`

// spiffeCert writes a certificate and key for uri (client and server
// auth), with ips as IP SANs, signed by ca.
func spiffeCert(t *testing.T, ca *testCA, dir, name, uri string, ips ...string) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: n, Subject: pkix.Name{CommonName: name}, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(2 * time.Hour),
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
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

const nodeSPIFFE = "spiffe://cluster.local/ns/meshgate-system/sa/meshgate"

// TestBridgeAcrossNetworks: a client in network A reaches a backend that
// lives only in network B, through A's gateway and the HBONE bridge to B's
// gateways, by a PASSTHROUGH route (verifying the backend's own
// certificate end to end), a TCP route and an AUTO_PASSTHROUGH name
// without a mesh ALPN. The client cannot reach the backend directly. When
// B's first gateway dies, new connections go to the second one and none
// fails. A workload certificate, or one from another root, cannot open a
// tunnel.
func TestBridgeAcrossNetworks(t *testing.T) {
	for _, tool := range []string{"openssl", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	f := startBridgeFleet(t, bridgeResources, "info")
	nets, ca, root, caFile, gws := f.nets, f.ca, f.root, f.caFile, f.gws
	gwA, gwB1, gwB2 := gws[0], gws[1], gws[2]

	// The backend of network B: an openssl TLS server with its own
	// certificate for web, reachable only inside netB.
	leaf := ca.leaf(t, bridgeHost)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]})
	kb, _ := x509.MarshalECPrivateKey(leaf.PrivateKey.(*ecdsa.PrivateKey))
	wdir := filepath.Join(root, "backend")
	if err := os.MkdirAll(wdir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(wdir, "c.pem"), certPEM, 0o644)
	os.WriteFile(filepath.Join(wdir, "k.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	startCmd(t, wdir, nets.netB.cmd("openssl", "s_server", "-quiet", "-accept", bnBackendIP+":8443",
		"-cert", filepath.Join(wdir, "c.pem"), "-key", filepath.Join(wdir, "k.pem"), "-www"))

	admin, adminURL := f.admin, f.adminURL
	f.waitReady(t)
	// The backend registers with B's second gateway: its endpoint outlives
	// the first gateway.
	reg := fmt.Sprintf(`{"service":%q,"port":8443,"addr":"%s:8443","ttl":"600s"}`, bridgeHost, bnBackendIP)
	if out, err := admin(t, gwB2, "-f", "-X", "PUT", "-d", reg, adminURL(gwB2, "/v1/endpoints/web-b")); err != nil {
		t.Fatalf("register the backend at gw-b2: %v %s", err, out)
	}
	waitFor(t, 30*time.Second, "gw-a routes web through both B bridges", func() bool {
		out, err := admin(t, gwA, adminURL(gwA, "/debug/endpoints"))
		return err == nil && strings.Contains(out, bnGwB1WanIP+":15008") && strings.Contains(out, bnGwB2WanIP+":15008")
	})
	if out, _ := admin(t, gwA, adminURL(gwA, "/debug/explain?sni="+bridgeHost+"&port=8443")); !strings.Contains(out, "bridge") {
		t.Errorf("explain at gw-a does not say web goes through the bridge:\n%s", out)
	}

	// The client in A has no way to the backend but the gateways.
	if out, err := nets.netA.run(t, "curl", "-s", "--max-time", "3", "-k", "https://"+bnBackendIP+":8443/"); err == nil {
		t.Fatalf("client in netA reached the backend directly: %s", out)
	}
	if out, err := nets.netA.run(t, "curl", "-s", "--max-time", "3", "-k", "https://"+bnGwB1WanIP+":15008/"); err == nil {
		t.Fatalf("client in netA reached B's bridge directly: %s", out)
	}

	// viaA opens one TLS connection from netA to gw-a's port with sni,
	// verifying the backend's own certificate, and reads the backend's page.
	viaA := func(port int, sni string) (string, error) {
		c := nets.netA.cmd("openssl", "s_client", "-quiet", "-verify_return_error", "-CAfile", caFile,
			"-verify_hostname", bridgeHost, "-connect", bnGwALanIP+":"+strconv.Itoa(port), "-servername", sni)
		c.Stdin = strings.NewReader("GET / HTTP/1.0\r\n\r\n")
		b, err := c.CombinedOutput()
		if err != nil || !strings.Contains(string(b), "200 ok") {
			return string(b), fmt.Errorf("via gw-a:%d sni %s: %v: %s", port, sni, err, b)
		}
		return string(b), nil
	}
	waitFor(t, 30*time.Second, "PASSTHROUGH route through the bridge", func() bool { _, err := viaA(8443, bridgeHost); return err == nil })
	if _, err := viaA(9000, bridgeHost); err != nil {
		t.Errorf("TCP route through the bridge: %v", err)
	}
	if _, err := viaA(15443, "outbound_.8443_._."+bridgeHost); err != nil {
		t.Errorf("AUTO_PASSTHROUGH without mesh ALPN through the bridge: %v", err)
	}

	// Kill B's first gateway: once gw-a knows, no new connection fails.
	if err := gwB1.p.stop(t, 9, 10*time.Second); err != nil {
		t.Logf("gw-b1 stop: %v", err)
	}
	waitFor(t, 60*time.Second, "gw-a drops gw-b1's bridge", func() bool {
		out, err := admin(t, gwA, adminURL(gwA, "/debug/endpoints"))
		return err == nil && !strings.Contains(out, bnGwB1WanIP+":15008") && strings.Contains(out, bnGwB2WanIP+":15008")
	})
	failed := 0
	for i := range 20 {
		if _, err := viaA(8443, bridgeHost); err != nil {
			failed++
			t.Logf("connection %d after gw-b1 died: %v", i, err)
		}
	}
	if failed != 0 {
		t.Fatalf("%d of 20 new connections failed after gw-a learnt gw-b1 was dead; want 0", failed)
	}

	// A workload identity and another root cannot open a tunnel.
	wcert, wkey := spiffeCert(t, ca, root, "workload", "spiffe://cluster.local/ns/default/sa/web")
	other := newTestCA(t)
	ocert, okey := spiffeCert(t, other, root, "foreign", nodeSPIFFE)
	peerRefusals := func() float64 {
		out, _ := admin(t, gwB2, adminURL(gwB2, "/metrics"))
		for _, line := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(line, `meshgate_hbone_refused_total{reason="peer"} `); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		return -1
	}
	for _, c := range []struct{ name, cert, key string }{{"workload identity", wcert, wkey}, {"another root", ocert, okey}} {
		before := peerRefusals()
		if before < 0 {
			t.Fatal("gw-b2 exports no meshgate_hbone_refused_total{reason=\"peer\"}")
		}
		cmd := nets.gwA.cmd("openssl", "s_client", "-connect", bnGwB2WanIP+":15008", "-alpn", "h2", "-CAfile", caFile,
			"-cert", c.cert, "-key", c.key, "-tls1_3")
		cmd.Stdin = strings.NewReader("")
		out, _ := cmd.CombinedOutput()
		waitFor(t, 10*time.Second, c.name+": gw-b2 counts the refused tunnel handshake", func() bool { return peerRefusals() >= before+1 })
		if strings.Contains(string(out), "HTTP/2") {
			t.Errorf("%s: gw-b2 spoke HTTP/2 to a refused peer:\n%s", c.name, out)
		}
	}
}
