package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// startBackendIn is startBackend listening on addr inside network
// namespace ns (the listening socket is made there; the accept loop runs
// on ordinary goroutines).
func startBackendIn(t *testing.T, ns, addr string, ca *testCA, id string, names ...string) *backend {
	t.Helper()
	var ln net.Listener
	err := inNetns(ns, func() error {
		var err error
		ln, err = tls.Listen("tcp", addr, backendTLS(t, ca, names...))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return serveBackend(t, ln, id)
}

// leafSerial reads the serial of the leaf in a cert-chain.pem.
func leafSerial(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	blk, _ := pem.Decode(data)
	if blk == nil {
		return ""
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return ""
	}
	return c.SerialNumber.Text(16)
}

// TestVMJoinFromBundle: a gateway with the built-in CA runs in namespace
// A; `meshgate vm bundle` makes a bundle there; a "VM" in namespace B runs
// `meshgate workload join` from it, gets its certificate with the one-use
// token, registers its TLS service with that certificate at the
// certificate API (no client certificate: 401; another service account's
// certificate: 403), and a client reaches that service
// through the gateway's AUTO_PASSTHROUGH listener. The certificate is
// renewed with itself; after a restart (SIGTERM withdraws, exit 0) the
// join works from the certificate it kept while the token is spent; a
// join with no certificate and the spent token stops with a message
// saying so; and when the VM's service stops answering its check, the
// gateway withdraws it.
func TestVMJoinFromBundle(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	gwNS, vmNS := twoNetworks(t)
	bin := meshgateBin(t)
	root := t.TempDir()
	gdir := filepath.Join(root, "gw")
	res := filepath.Join(gdir, "resources")
	dataDir := filepath.Join(gdir, "data")
	if err := os.MkdirAll(res, 0o755); err != nil {
		t.Fatal(err)
	}
	gateway := `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: eastwest, namespace: istio-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
`
	ratings := `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9081, name: http, protocol: HTTP}]
  resolution: STATIC
`
	for name, body := range map[string]string{"gw.yaml": gateway, "reviews.yaml": reviewsServiceEntry, "ratings.yaml": ratings} {
		if err := os.WriteFile(filepath.Join(res, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The admin API stays on the gateway's loopback: the VM never needs it.
	adminAddr, caAddr := "127.0.0.1:15000", gwNS.ip+":15012"
	node := fmt.Sprintf(`name: gw-a
network: network-a
labels: {istio: eastwestgateway}
admin_addr: %s
bind_addr: %s
gateway_addr: %s:15443
data_dir: %s
drain_timeout: 1s
log: {format: json, level: info}
bootstrap: true
gossip: {bind: %s, port: 7946}
raft: {bind: %s, port: 8300}
ca: {addr: ":15012"}
`, adminAddr, gwNS.ip, gwNS.ip, dataDir, gwNS.ip, gwNS.ip)
	nodeFile := filepath.Join(gdir, "node.yaml")
	if err := os.WriteFile(nodeFile, []byte(node), 0o644); err != nil {
		t.Fatal(err)
	}
	startCmd(t, gdir, gwNS.cmd(bin, "agent", "--config", nodeFile, "--resources", res))
	admin := func(args ...string) (string, error) {
		tok := operatorToken(t, filepath.Join(dataDir, "operator.token"))
		return gwNS.run(t, "curl", append([]string{"-s", "--max-time", "5", "-H", "Authorization: Bearer " + tok}, args...)...)
	}
	waitFor(t, 60*time.Second, "the gateway ready", func() bool {
		_, err := admin("-f", "http://"+adminAddr+"/readyz")
		return err == nil
	})

	// On the gateway: the bundle.
	bundle := filepath.Join(root, "bundle")
	out, err := gwNS.run(t, bin, "vm", "bundle", "--config", nodeFile, "--data-dir", dataDir, "--ca-addr", caAddr, "--admin", adminAddr,
		"--namespace", "default", "--service-account", "reviews", "--network", "network-a", "--service", serviceHost,
		"--port", "9080:9443", "--labels", "app=reviews", "--out", bundle)
	if err != nil {
		t.Fatalf("meshgate vm bundle: %v\n%s", err, out)
	}
	for _, f := range []string{"cluster.env", "mesh.yaml", "root-cert.pem", "istio-token", "hosts", "join-token", "workload.yaml", "meshgate.yaml"} {
		if _, err := os.Stat(filepath.Join(bundle, f)); err != nil {
			t.Errorf("bundle lacks %s: %v", f, err)
		}
	}
	// No registration secret travels with the bundle: the VM registers
	// with its workload certificate.
	if _, err := os.Stat(filepath.Join(bundle, "endpoints-token")); err == nil {
		t.Errorf("bundle carries an endpoints-token")
	}
	if h, _ := os.ReadFile(filepath.Join(bundle, "hosts")); string(h) != gwNS.ip+" istiod.istio-system.svc\n" {
		t.Errorf("bundle hosts = %q", h)
	}

	// On the VM: its service, then the join.
	ca := newTestCA(t)
	be := startBackendIn(t, vmNS.name, vmNS.ip+":9443", ca, "vm-reviews", serviceHost)
	certDir := filepath.Join(root, "vm", "etc", "certs")
	os.MkdirAll(filepath.Dir(certDir), 0o755)
	joinArgs := []string{"workload", "join", bundle, "--cert-dir", certDir, "--advertise", `{{ GetAllInterfaces | include "address" "` + vmNS.ip + `" | attr "address" }}`,
		"--check", "tcp", "--check-interval", "300ms", "--check-timeout", "300ms", "--ttl", "5s", "--cert-ttl", "8s", "--log-level", "debug"}
	join := startCmd(t, root, vmNS.cmd(bin, joinArgs...))
	epURL := "http://" + adminAddr + "/v1/endpoints"
	// has reports whether the gateway's catalog lists addr; gone, that the
	// catalog answered without it (a failed request proves neither).
	has := func(addr string) (listed, gone bool) {
		out, err := admin("-f", epURL)
		if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "[") {
			return false, false
		}
		in := strings.Contains(out, `"addr":"`+addr+`"`)
		return in, !in
	}
	listed := func() bool { l, _ := has(vmNS.ip + ":9443"); return l }
	gone := func() bool { _, g := has(vmNS.ip + ":9443"); return g }
	waitFor(t, 30*time.Second, "the VM's endpoint in the gateway's catalog", listed)
	if !strings.Contains(join.out.String(), "certificate from token") {
		t.Fatalf("first join did not report a certificate from the token:\n%s", join.out.String())
	}
	for name, mode := range map[string]os.FileMode{"cert-chain.pem": 0o644, "key.pem": 0o600, "root-cert.pem": 0o644} {
		fi, err := os.Stat(filepath.Join(certDir, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("%s in the cert dir: %v, want mode %v", name, err, mode)
		}
	}

	// A client reaches the VM's service through the gateway.
	sni := "outbound_.9080_._." + serviceHost
	reach := func() error {
		return inNetns(gwNS.name, func() error {
			id, err := ask(t.Context(), gwNS.ip+":15443", sni, []string{"istio"}, ca.pool, serviceHost)
			if err == nil && id != "vm-reviews" {
				err = fmt.Errorf("answered by %q", id)
			}
			return err
		})
	}
	var rerr error
	waitFor(t, 20*time.Second, "a client through the gateway served by the VM", func() bool { rerr = reach(); return rerr == nil })

	// Registration is by certificate: a request with no client
	// certificate is refused, and a workload certificate of another
	// service account cannot register the bundle's service.
	regBody := `{"service":"` + serviceHost + `","port":9080,"addr":"` + vmNS.ip + `:9443","network":"network-a","labels":{"app":"reviews"},"ttl":"30s","check":{"interval":"1s","timeout":"1s"}}`
	rootPEM := filepath.Join(dataDir, "root-cert.pem")
	regCurl := func(extra ...string) string {
		args := append([]string{"-s", "--max-time", "5", "--cacert", rootPEM, "--resolve", "istiod.istio-system.svc:15012:" + gwNS.ip,
			"-X", "PUT", "-H", "Content-Type: application/json", "--data", regBody, "-w", " %{http_code}"}, extra...)
		out, _ := vmNS.run(t, "curl", append(args, "https://istiod.istio-system.svc:15012/v1/workload/endpoints")...)
		return out
	}
	if out := regCurl(); !strings.Contains(out, "no_client_cert") || !strings.HasSuffix(strings.TrimSpace(out), "401") {
		t.Fatalf("registration without a client certificate answered %q, want 401 no_client_cert", out)
	}
	otherCerts := filepath.Join(root, "other-certs")
	if out, err := gwNS.run(t, bin, "token", "create", "--config", nodeFile, "--data-dir", dataDir, "--ca-addr", caAddr,
		"--namespace", "default", "--service-account", "ratings", "--out", filepath.Join(root, "ratings.token")); err != nil {
		t.Fatalf("meshgate token create: %v\n%s", err, out)
	}
	if out, err := gwNS.run(t, bin, "cert", "issue", "--config", nodeFile, "--data-dir", dataDir, "--ca-addr", caAddr, "--token", filepath.Join(root, "ratings.token"),
		"--namespace", "default", "--service-account", "ratings", "--out", otherCerts); err != nil {
		t.Fatalf("meshgate cert issue (ratings): %v\n%s", err, out)
	}
	if out := regCurl("--cert", filepath.Join(otherCerts, "cert-chain.pem"), "--key", filepath.Join(otherCerts, "key.pem")); !strings.Contains(out, "no_group") || !strings.HasSuffix(strings.TrimSpace(out), "403") {
		t.Fatalf("registration of %s with the ratings certificate answered %q, want 403 no_group", serviceHost, out)
	}

	// Renewal by certificate.
	chain := filepath.Join(certDir, "cert-chain.pem")
	first := leafSerial(t, chain)
	waitFor(t, 30*time.Second, "the certificate renewed with itself", func() bool {
		s := leafSerial(t, chain)
		return s != "" && s != first && strings.Contains(join.out.String(), "certificate renewed")
	})

	// SIGTERM withdraws and exits 0.
	if err := join.stop(t, syscall.SIGTERM, 20*time.Second); err != nil {
		t.Fatalf("join exit after SIGTERM = %v, want 0\n%s", err, join.out.String())
	}
	if !gone() {
		out, _ := admin(epURL)
		t.Fatalf("endpoint still listed after the join stopped: %s", out)
	}

	// The token is spent: it gets no certificate...
	spentOut := filepath.Join(root, "spent")
	if out, err := gwNS.run(t, bin, "cert", "issue", "--config", nodeFile, "--data-dir", dataDir, "--ca-addr", caAddr, "--token", filepath.Join(bundle, "join-token"),
		"--namespace", "default", "--service-account", "reviews", "--out", spentOut); err == nil {
		t.Fatalf("the bundle's join token got a second certificate:\n%s", out)
	}
	// ...a join without a certificate says so...
	if out, err := vmNS.run(t, bin, "workload", "join", bundle, "--cert-dir", filepath.Join(root, "vm", "empty"), "--advertise", vmNS.ip); err == nil || !strings.Contains(out, "token spent or expired: make a new bundle") {
		t.Fatalf("join with a spent token and no certificate = %v\n%s\nwant it refused saying the token is spent", err, out)
	}
	// ...and the restarted join keeps working from its certificate.
	join2 := startCmd(t, root, vmNS.cmd(bin, joinArgs...))
	waitFor(t, 30*time.Second, "the restarted VM's endpoint back in the catalog", listed)
	if !strings.Contains(join2.out.String(), "certificate from cert-dir") {
		t.Fatalf("restarted join did not use the kept certificate:\n%s", join2.out.String())
	}
	waitFor(t, 20*time.Second, "the restarted VM served through the gateway", func() bool { rerr = reach(); return rerr == nil })
	renewed := leafSerial(t, chain)
	waitFor(t, 30*time.Second, "the kept certificate renewed after the restart", func() bool {
		s := leafSerial(t, chain)
		return s != "" && s != renewed
	})

	// The VM's service stops answering: the check fails and the gateway
	// withdraws the endpoint while the registration stays.
	be.ln.Close()
	waitFor(t, 20*time.Second, "the failing endpoint withdrawn", gone)
	regs, _ := admin("http://" + adminAddr + "/v1/registrations")
	if !strings.Contains(regs, `"healthy":false`) || !strings.Contains(regs, `"status":"failing"`) {
		t.Fatalf("registrations after the check failed: %s; want it kept, unhealthy and failing", regs)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if err := inNetns(gwNS.name, func() error {
		_, err := ask(ctx, gwNS.ip+":15443", sni, []string{"istio"}, ca.pool, serviceHost)
		return err
	}); err == nil {
		t.Fatalf("a client still reached the withdrawn VM")
	}
	if err := join2.stop(t, syscall.SIGTERM, 20*time.Second); err != nil {
		t.Fatalf("second join exit after SIGTERM = %v\n%s", err, join2.out.String())
	}

	// An HTTP-checked workload: withdrawn while /healthz answers 503,
	// published again once it answers 200.
	var health atomic.Int32
	health.Store(http.StatusOK)
	var hln net.Listener
	if err := inNetns(vmNS.name, func() error {
		var err error
		hln, err = net.Listen("tcp", vmNS.ip+":8081")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	hsrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.WriteHeader(int(health.Load()))
	}), ReadHeaderTimeout: 5 * time.Second}
	go hsrv.Serve(hln)
	t.Cleanup(func() { hsrv.Close() })
	bundle2 := filepath.Join(root, "bundle-ratings")
	if out, err := gwNS.run(t, bin, "vm", "bundle", "--config", nodeFile, "--data-dir", dataDir, "--ca-addr", caAddr, "--admin", adminAddr,
		"--namespace", "default", "--service-account", "ratings", "--network", "network-a", "--service", "ratings.default.svc.cluster.local",
		"--port", "9081:8081", "--out", bundle2); err != nil {
		t.Fatalf("meshgate vm bundle (ratings): %v\n%s", err, out)
	}
	join3 := startCmd(t, root, vmNS.cmd(bin, "workload", "join", bundle2, "--cert-dir", filepath.Join(root, "vm", "ratings-certs"), "--advertise", vmNS.ip,
		"--check", "http:/healthz", "--check-interval", "300ms", "--check-timeout", "300ms", "--ttl", "5s"))
	httpListed := func() bool { l, _ := has(vmNS.ip + ":8081"); return l }
	httpGone := func() bool { _, g := has(vmNS.ip + ":8081"); return g }
	waitFor(t, 30*time.Second, "the HTTP-checked endpoint published", httpListed)
	health.Store(http.StatusServiceUnavailable)
	waitFor(t, 20*time.Second, "the endpoint answering 503 withdrawn", httpGone)
	health.Store(http.StatusOK)
	waitFor(t, 20*time.Second, "the endpoint published again after a 200", httpListed)
	if err := join3.stop(t, syscall.SIGTERM, 20*time.Second); err != nil {
		t.Fatalf("ratings join exit after SIGTERM = %v\n%s", err, join3.out.String())
	}
	if !httpGone() {
		t.Fatalf("the HTTP-checked endpoint is still listed after its join stopped")
	}

	// The operator withdraws the ratings binding: its certificate, still
	// valid, can no longer register.
	if out, err := gwNS.run(t, bin, "vm", "revoke", "--config", nodeFile, "--data-dir", dataDir, "--ca-addr", caAddr,
		"--namespace", "default", "--service-account", "ratings"); err != nil {
		t.Fatalf("meshgate vm revoke: %v\n%s", err, out)
	}
	if out, err := vmNS.run(t, bin, "workload", "join", bundle2, "--cert-dir", filepath.Join(root, "vm", "ratings-certs"), "--advertise", vmNS.ip,
		"--check", "http:/healthz"); err == nil || !strings.Contains(out, "no_group") || !strings.Contains(out, "registration refused") {
		t.Fatalf("join after vm revoke = %v\n%s\nwant the registration refused (no_group)", err, out)
	}
	if httpListed() {
		t.Fatalf("the revoked workload's endpoint is listed")
	}
}
