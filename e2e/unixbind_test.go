package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Gateway servers bound to unix sockets in every form validation accepts
// (Istio's unix:///path and unix://@name, and the short /path and @name)
// are listened on and routed, not skipped.
func TestUnixSocketBinds(t *testing.T) {
	ca := newTestCA(t)
	be := startBackend(t, ca, "uds", "reviews.example.test")
	dir := t.TempDir()
	abstract := fmt.Sprintf("meshgate-e2e-%d", os.Getpid())
	binds := []struct{ bind, network, addr string }{
		{"unix://" + filepath.Join(dir, "long.sock"), "unix", filepath.Join(dir, "long.sock")},
		{filepath.Join(dir, "short.sock"), "unix", filepath.Join(dir, "short.sock")},
		{"unix://@" + abstract + "-long", "unix", "@" + abstract + "-long"},
		{"@" + abstract + "-short", "unix", "@" + abstract + "-short"},
	}
	var servers strings.Builder
	for i, b := range binds {
		fmt.Fprintf(&servers, "  - name: s%d\n    bind: %q\n    port: {number: 0, name: tcp-%d, protocol: TCP}\n    hosts: [\"*\"]\n", i, b.bind, i)
	}
	res := `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: uds, namespace: default}
spec:
  servers:
` + servers.String() + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: uds, namespace: default}
spec:
  hosts: ["*"]
  gateways: [uds]
  tcp:
  - route:
    - destination: {host: backend.default.svc.cluster.local, port: {number: 9080}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp: ` + fmt.Sprint(be.port()) + `}}]
`
	if err := os.MkdirAll(filepath.Join(dir, "resources"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "resources", "uds.yaml"), []byte(res), 0o644); err != nil {
		t.Fatal(err)
	}
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	node := fmt.Sprintf("name: gw-uds\nnetwork: net-a\nadmin_addr: %s\ndata_dir: %s\nbind_addr: 127.0.0.1\nca: {addr: \"\"}\n", admin, filepath.Join(dir, "data"))
	nf := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(nf, []byte(node), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, dir, "agent", "--config", nf, "--resources", filepath.Join(dir, "resources"))
	waitReady(t, p, admin)
	for _, b := range binds {
		t.Run(b.bind, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			var d net.Dialer
			raw, err := d.DialContext(ctx, b.network, b.addr)
			if err != nil {
				t.Fatalf("dial %s %s (server bind %q): %v; want the gateway listening there", b.network, b.addr, b.bind, err)
			}
			c := tls.Client(raw, &tls.Config{ServerName: "reviews.example.test", RootCAs: ca.pool})
			defer c.Close()
			ans, err := roundTrip(c, "ping")
			if err != nil || !strings.HasPrefix(ans, "uds ") {
				t.Fatalf("round trip through bind %q = %q, %v; want the backend's answer", b.bind, ans, err)
			}
		})
	}
}
