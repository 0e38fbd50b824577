package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// mesh is one meshgate agent process with its resources file and the
// backends it routes to.
type mesh struct {
	t         *testing.T
	dir       string
	resources string
	admin     string
	autoAddr  string
	passAddr  string
	tcpAddr   string
	ca        *testCA
	p         *proc
	tmpl      *template.Template
	params    meshParams // as last written
	caAddr    string     // certificate API
	dataDir   string
}

const serviceHost = "reviews.default.svc.cluster.local"

var resourcesTmpl = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: eastwest, namespace: istio-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - name: auto
    port: {number: {{.AutoPort}}, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - name: pass
    port: {number: {{.PassPort}}, name: tls-pass, protocol: TLS}
    tls: {mode: PASSTHROUGH}
    hosts: ["*.example.test"]
  - name: tcp
    port: {number: {{.TCPPort}}, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-edge, namespace: default}
spec:
  hosts: ["*.example.test"]
  gateways: ["edge"]
  tls:
  - match:
    - sniHosts: ["reviews.example.test"]
    route:
    - destination: {host: ` + serviceHost + `, subset: v1, port: {number: 9080}}
      weight: {{.W1}}
    - destination: {host: ` + serviceHost + `, subset: v2, port: {number: 9080}}
      weight: {{.W2}}
  - match:
    - sniHosts: ["*.example.test"]
    route:
    - destination: {host: ` + serviceHost + `, subset: v2, port: {number: 9080}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-tcp, namespace: default}
spec:
  hosts: ["*"]
  gateways: ["edge"]
  tcp:
  - match: [{port: {{.TCPPort}}}]
    route:
    - destination: {host: ` + serviceHost + `, subset: v1, port: {number: 9080}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: ` + serviceHost + `
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 1s}}
    outlierDetection: {consecutiveGatewayErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [` + serviceHost + `]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: tls, protocol: TLS}]
  resolution: STATIC
  workloadSelector: {labels: {app: reviews}}
{{- range .Workloads}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: {{.Name}}, namespace: default}
spec:
  address: 127.0.0.1
  ports: {tls: {{.Port}}}
  labels: {app: reviews, version: {{.Version}}}
{{- end}}
`

type workload struct {
	Name, Version string
	Port          int
}

type meshParams struct {
	AutoPort, PassPort, TCPPort int
	W1, W2                      int
	Workloads                   []workload
}

// newMesh writes node.yaml and resources and starts `meshgate agent`.
func newMesh(t *testing.T, ca *testCA, params meshParams) *mesh {
	t.Helper()
	dir := t.TempDir()
	m := &mesh{t: t, dir: dir, ca: ca, resources: filepath.Join(dir, "resources", "mesh.yaml")}
	m.tmpl = template.Must(template.New("r").Parse(resourcesTmpl))
	if err := os.MkdirAll(filepath.Dir(m.resources), 0o755); err != nil {
		t.Fatal(err)
	}
	if params.AutoPort == 0 {
		params.AutoPort, params.PassPort, params.TCPPort = freePort(t), freePort(t), freePort(t)
	}
	m.autoAddr = fmt.Sprintf("127.0.0.1:%d", params.AutoPort)
	m.passAddr = fmt.Sprintf("127.0.0.1:%d", params.PassPort)
	m.tcpAddr = fmt.Sprintf("127.0.0.1:%d", params.TCPPort)
	m.admin = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	m.caAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	m.dataDir = filepath.Join(dir, "data")
	m.write(params)
	node := fmt.Sprintf(`name: gw-a
network: network-a
labels: {istio: eastwestgateway}
admin_addr: %s
data_dir: %s
bind_addr: 127.0.0.1
drain_timeout: 10s
hello_timeout: 2s
log: {format: json, level: debug}
ca: {addr: %s}
`, m.admin, m.dataDir, m.caAddr)
	nodeFile := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(nodeFile, []byte(node), 0o644); err != nil {
		t.Fatal(err)
	}
	m.p = start(t, dir, "agent", "--config", nodeFile, "--resources", filepath.Dir(m.resources))
	waitReady(t, m.p, m.admin)
	return m
}

// write renders the resources atomically (rename), as an editor or a
// config-management tool would.
func (m *mesh) write(params meshParams) {
	m.t.Helper()
	m.params = params
	var sb strings.Builder
	if err := m.tmpl.Execute(&sb, params); err != nil {
		m.t.Fatal(err)
	}
	tmp := filepath.Join(m.dir, "mesh.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(sb.String()), 0o644); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(tmp, m.resources); err != nil {
		m.t.Fatal(err)
	}
}

func twoVersions(t *testing.T, ca *testCA) (*backend, *backend, meshParams) {
	v1 := startBackend(t, ca, "v1", "reviews.example.test", serviceHost)
	v2 := startBackend(t, ca, "v2", "reviews.example.test", "other.example.test", serviceHost)
	return v1, v2, meshParams{W1: 80, W2: 20, Workloads: []workload{
		{Name: "reviews-v1", Version: "v1", Port: v1.port()},
		{Name: "reviews-v2", Version: "v2", Port: v2.port()},
	}}
}

var istioALPN = []string{"istio-peer-exchange", "istio"}

func TestPassthroughWeightedRoutes(t *testing.T) {
	ca := newTestCA(t)
	_, _, params := twoVersions(t, ca)
	m := newMesh(t, ca, params)
	ctx := t.Context()

	const n = 200
	counts := map[string]int{}
	for range n {
		id, err := ask(ctx, m.passAddr, "reviews.example.test", []string{"http/1.1"}, ca.pool, "reviews.example.test")
		if err != nil {
			t.Fatalf("ask via PASSTHROUGH: %v", err)
		}
		counts[id]++
	}
	// 80/20 split: with n=200 the v1 share lies far inside [0.65, 0.95]
	// unless weights are ignored.
	if share := float64(counts["v1"]) / n; share < 0.65 || share > 0.95 {
		t.Errorf("v1 share over %d connections = %.2f (counts %v), want about 0.80", n, share, counts)
	}
	// The wildcard sniHosts route catches every other name under the host.
	if id, err := ask(ctx, m.passAddr, "other.example.test", nil, ca.pool, "other.example.test"); err != nil || id != "v2" {
		t.Errorf("ask(other.example.test) = %q, %v; want v2 via the *.example.test route", id, err)
	}
}

func TestAutoPassthroughSubsets(t *testing.T) {
	ca := newTestCA(t)
	v1, v2, params := twoVersions(t, ca)
	m := newMesh(t, ca, params)
	ctx := t.Context()
	for _, tc := range []struct {
		sni  string
		want map[string]bool
	}{
		{"outbound_.9080_.v1_." + serviceHost, map[string]bool{"v1": true}},
		{"outbound_.9080_.v2_." + serviceHost, map[string]bool{"v2": true}},
		{"outbound_.9080_._." + serviceHost, map[string]bool{"v1": true, "v2": true}},
		{"outbound|9080|v2|" + serviceHost, map[string]bool{"v2": true}},
	} {
		for range 10 {
			id, err := ask(ctx, m.autoAddr, tc.sni, istioALPN, ca.pool, serviceHost)
			if err != nil {
				t.Fatalf("ask(%s): %v", tc.sni, err)
			}
			if !tc.want[id] {
				t.Fatalf("ask(%s) answered by %q, want one of %v", tc.sni, id, tc.want)
			}
		}
	}
	if v1.accepted.Load() == 0 || v2.accepted.Load() == 0 {
		t.Fatalf("backends accepted v1=%d v2=%d, want both used", v1.accepted.Load(), v2.accepted.Load())
	}
}

func TestRefusedNamesDialNothing(t *testing.T) {
	ca := newTestCA(t)
	v1, v2, params := twoVersions(t, ca)
	m := newMesh(t, ca, params)
	ctx := t.Context()
	for _, tc := range []struct {
		name, addr, sni string
		alpn            []string
		reason          string
	}{
		{"unknown service", m.autoAddr, "outbound_.9080_._.ratings.default.svc.cluster.local", istioALPN, "no_route"},
		{"unknown subset", m.autoAddr, "outbound_.9080_.v9_." + serviceHost, istioALPN, "no_route"},
		{"unknown port", m.autoAddr, "outbound_.9999_._." + serviceHost, istioALPN, "no_route"},
		{"no mesh alpn", m.autoAddr, "outbound_.9080_.v1_." + serviceHost, []string{"h2"}, "alpn"},
		{"not under server hosts", m.autoAddr, "outbound_.9080_._.reviews.default.svc.cluster.example", istioALPN, "no_route"},
		{"plain name on auto port", m.autoAddr, "reviews.example.test", istioALPN, "no_route"},
		{"passthrough unknown", m.passAddr, "reviews.other.test", nil, "no_route"},
		{"no sni", m.passAddr, "", nil, "no_sni"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := metric(t, m.admin, `meshgate_sni_refused_total{reason="`+tc.reason+`"}`)
			_, err := ask(ctx, tc.addr, tc.sni, tc.alpn, nil, "")
			if err == nil {
				t.Fatalf("ask(%q) succeeded, want the gateway to refuse it", tc.sni)
			}
			waitFor(t, 5*time.Second, "refusal counted as "+tc.reason, func() bool {
				return metric(t, m.admin, `meshgate_sni_refused_total{reason="`+tc.reason+`"}`) > before
			})
		})
	}
	if n := v1.accepted.Load() + v2.accepted.Load(); n != 0 {
		t.Fatalf("backends accepted %d connections for refused names, want 0", n)
	}
	// explain says why, by name
	_, body, err := httpGet("http://" + m.admin + "/debug/explain?sni=outbound_.9080_.v9_." + serviceHost + "&alpn=istio")
	if err != nil || !strings.Contains(body, "v9") {
		t.Fatalf("explain unknown subset = %q, %v; want a reason naming subset v9", body, err)
	}
}

func TestTCPRoute(t *testing.T) {
	ca := newTestCA(t)
	_, _, params := twoVersions(t, ca)
	m := newMesh(t, ca, params)
	// Plain TCP port: no SNI needed; the TLS inside is the backend's.
	id, err := ask(t.Context(), m.tcpAddr, "", nil, ca.pool, "reviews.example.test")
	if err != nil || id != "v1" {
		t.Fatalf("ask via TCP route = %q, %v; want v1", id, err)
	}
}

func TestFailoverToLiveEndpoint(t *testing.T) {
	ca := newTestCA(t)
	v1 := startBackend(t, ca, "v1", serviceHost)
	dead := freePort(t) // nothing listens here
	m := newMesh(t, ca, meshParams{W1: 100, W2: 0, Workloads: []workload{
		{Name: "reviews-dead", Version: "v1", Port: dead},
		{Name: "reviews-v1", Version: "v1", Port: v1.port()},
	}})
	for i := range 20 {
		id, err := ask(t.Context(), m.autoAddr, "outbound_.9080_.v1_."+serviceHost, istioALPN, ca.pool, serviceHost)
		if err != nil || id != "v1" {
			t.Fatalf("connection %d = %q, %v; want v1 after failing over from the dead endpoint", i, id, err)
		}
	}
	if got := metric(t, m.admin, "meshgate_sni_upstream_connect_failures_total"); got < 1 {
		t.Fatalf("upstream connect failures = %v, want ≥ 1 (the dead endpoint was tried)", got)
	}
}

func TestReloadUnderLoadDropsNothing(t *testing.T) {
	ca := newTestCA(t)
	_, _, params := twoVersions(t, ca)
	m := newMesh(t, ca, params)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	// Long-lived connections opened before the reloads must keep working.
	var held []net.Conn
	for range 8 {
		c, err := dialVia(ctx, m.autoAddr, "outbound_.9080_._."+serviceHost, istioALPN, ca.pool, serviceHost)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		held = append(held, c)
	}
	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		okCount atomic.Int64
		errMu   sync.Mutex
		errs    []error
	)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; i < 2000 && !stop.Load(); i++ {
				if _, err := ask(ctx, m.autoAddr, "outbound_.9080_._."+serviceHost, istioALPN, ca.pool, serviceHost); err != nil {
					errMu.Lock()
					errs = append(errs, fmt.Errorf("worker %d conn %d: %w", w, i, err))
					errMu.Unlock()
					return
				}
				okCount.Add(1)
			}
		})
	}
	for i := range 6 {
		p := m.params
		p.W1, p.W2 = 10+i*10, 90-i*10
		m.write(p)
		if i%2 == 1 {
			_ = m.p.cmd.Process.Signal(syscall.SIGHUP)
		}
		want := float64(i + 1)
		waitFor(t, 10*time.Second, "reload applied", func() bool {
			return metric(t, m.admin, `meshgate_config_reloads_total{result="ok"}`) >= want
		})
		for j, c := range held {
			if _, err := roundTrip(c, "still there"); err != nil {
				t.Fatalf("held connection %d after reload %d: %v", j, i, err)
			}
		}
	}
	// A bad edit is refused whole; traffic goes on.
	if err := os.WriteFile(m.resources, []byte("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: x}\nspec: {servers: [{port: {number: 1}}]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "bad reload refused", func() bool {
		return metric(t, m.admin, `meshgate_config_reloads_total{result="error"}`) >= 1
	})
	if _, err := ask(ctx, m.autoAddr, "outbound_.9080_._."+serviceHost, istioALPN, ca.pool, serviceHost); err != nil {
		t.Fatalf("after a refused reload, routing failed: %v", err)
	}
	stop.Store(true)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d connections failed during reloads; first: %v", len(errs), errs[0])
	}
	if okCount.Load() == 0 {
		t.Fatal("no connection completed during the reloads")
	}
}

func TestDrainOnSIGTERM(t *testing.T) {
	ca := newTestCA(t)
	_, _, params := twoVersions(t, ca)
	m := newMesh(t, ca, params)
	c, err := dialVia(t.Context(), m.autoAddr, "outbound_.9080_._."+serviceHost, istioALPN, ca.pool, serviceHost)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = m.p.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, 5*time.Second, "readyz turns 503 while draining", func() bool {
		code, _, err := httpGet("http://" + m.admin + "/readyz")
		return err != nil || code == 503
	})
	// New connections are refused...
	waitFor(t, 5*time.Second, "listener closed", func() bool {
		_, err := ask(t.Context(), m.autoAddr, "outbound_.9080_._."+serviceHost, istioALPN, ca.pool, serviceHost)
		return err != nil
	})
	// ...while the one in flight still carries bytes.
	if _, err := roundTrip(c, "during drain"); err != nil {
		t.Fatalf("connection in flight during drain: %v", err)
	}
	select {
	case <-m.p.done:
		t.Fatal("meshgate exited while a connection was still open (drain did not wait)")
	default:
	}
	c.Close()
	select {
	case <-m.p.done:
		var ee *exec.ExitError
		if errors.As(m.p.err, &ee) {
			t.Fatalf("meshgate exit after drain = %v, want 0", m.p.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("meshgate did not exit after its last connection closed")
	}
}
