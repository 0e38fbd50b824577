// Package demo runs the demo workloads of `meshgate dev`: TLS backends on
// loopback standing in for two versions of a service, with a throwaway CA
// so clients can verify them through the gateway, and the Istio resources
// that route to them.
package demo

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/template"
	"time"
)

// Names the demo routes.
const (
	ServiceHost     = "reviews.default.svc.cluster.local"
	ServicePort     = 9080
	PassthroughHost = "reviews.demo.internal"
	// RatingsHost is a plain-text service reached through the
	// ISTIO_MUTUAL server by the SNI MutualHost.
	RatingsHost = "ratings.default.svc.cluster.local"
	RatingsPort = 9081
	MutualHost  = "ratings.mesh.internal"
)

// Options place the demo.
type Options struct {
	// Dir receives ca.pem and resources/demo.yaml.
	Dir string
	// Host is the loopback address backends and gateway listeners use.
	Host string
	// AutoPassthroughPort is the AUTO_PASSTHROUGH listener (15443).
	AutoPassthroughPort int
	// PassthroughPort is the PASSTHROUGH listener (8443).
	PassthroughPort int
	// TCPPort is a plain TCP route to the v1 backend (9000); 0 disables.
	TCPPort int
	// MutualPort is an ISTIO_MUTUAL server (9443) whose tcp route goes to
	// the plain-text ratings backend; 0 disables.
	MutualPort int
}

// Demo is the running set of backends.
type Demo struct {
	opts      Options
	CAFile    string
	Resources string
	backends  []*backend
	ratings   *backend // plain HTTP, behind the ISTIO_MUTUAL server
	wg        sync.WaitGroup
}

type backend struct {
	version string
	ln      net.Listener
	srv     *http.Server
}

// Start writes the demo CA and resources and starts two TLS backends
// (reviews v1 and v2). They stop when ctx is done; Wait waits for that.
func Start(ctx context.Context, opts Options) (*Demo, error) {
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if err := os.MkdirAll(filepath.Join(opts.Dir, "resources"), 0o755); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	caCert, caKey, caPEM, err := newCA()
	if err != nil {
		return nil, err
	}
	d := &Demo{opts: opts, CAFile: filepath.Join(opts.Dir, "ca.pem"), Resources: filepath.Join(opts.Dir, "resources", "demo.yaml")}
	if err := os.WriteFile(d.CAFile, caPEM, 0o644); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	leaf, err := newLeaf(caCert, caKey, []string{PassthroughHost, ServiceHost})
	if err != nil {
		return nil, err
	}
	for _, v := range []string{"v1", "v2"} {
		ln, err := net.Listen("tcp", net.JoinHostPort(opts.Host, "0"))
		if err != nil {
			d.stop()
			return nil, fmt.Errorf("demo: backend %s: %w", v, err)
		}
		b := &backend{version: v, ln: ln}
		b.srv = &http.Server{
			ReadHeaderTimeout: 5 * time.Second,
			Handler:           b.handler(),
			// net/http closes connections whose ALPN it has no handler
			// for; answer the mesh ALPNs with plain HTTP/1.
			TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){
				"istio":               b.serveMesh,
				"istio-peer-exchange": b.serveMesh,
			},
			TLSConfig: &tls.Config{
				Certificates: []tls.Certificate{leaf},
				// Istio sidecars offer their mesh ALPNs; answer them so
				// openssl -alpn istio gets a handshake.
				NextProtos: []string{"istio", "istio-peer-exchange", "http/1.1"},
			},
		}
		d.backends = append(d.backends, b)
	}
	if opts.MutualPort != 0 {
		ln, err := net.Listen("tcp", net.JoinHostPort(opts.Host, "0"))
		if err != nil {
			d.stop()
			return nil, fmt.Errorf("demo: ratings backend: %w", err)
		}
		r := &backend{version: "ratings", ln: ln}
		r.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "hello from ratings (plain HTTP at %s; the gateway terminated ISTIO_MUTUAL)\n", ln.Addr())
		})}
		d.ratings = r
	}
	for _, b := range d.backends {
		d.wg.Go(func() { _ = b.srv.ServeTLS(b.ln, "", "") })
	}
	if r := d.ratings; r != nil {
		d.wg.Go(func() { _ = r.srv.Serve(r.ln) })
	}
	context.AfterFunc(ctx, d.stop)
	if err := d.writeResources(); err != nil {
		d.stop()
		return nil, err
	}
	return d, nil
}

// Wait returns once every backend has stopped.
func (d *Demo) Wait() { d.wg.Wait() }

func (d *Demo) stop() {
	all := d.backends
	if d.ratings != nil {
		all = append(all[:len(all):len(all)], d.ratings)
	}
	for _, b := range all {
		if b.srv != nil {
			_ = b.srv.Close()
		}
		_ = b.ln.Close()
	}
}

// BackendAddrs returns version → address of each backend.
func (d *Demo) BackendAddrs() map[string]string {
	m := map[string]string{}
	for _, b := range d.backends {
		m[b.version] = b.ln.Addr().String()
	}
	return m
}

func (b *backend) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, b.greeting(r.TLS))
	})
}

func (b *backend) greeting(cs *tls.ConnectionState) string {
	alpn, sni := "", ""
	if cs != nil {
		alpn, sni = cs.NegotiatedProtocol, cs.ServerName
	}
	return fmt.Sprintf("hello from reviews %s (backend %s, sni=%q, alpn=%q)\n", b.version, b.ln.Addr(), sni, alpn)
}

// serveMesh answers HTTP/1 requests on a connection that negotiated a mesh
// ALPN, the way a sidecar's application would see them.
func (b *backend) serveMesh(_ *http.Server, c *tls.Conn, _ http.Handler) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		cs := c.ConnectionState()
		body := b.greeting(&cs)
		keep := !req.Close && req.ProtoAtLeast(1, 1)
		conn := "close"
		if keep {
			conn = "keep-alive"
		}
		if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n%s", len(body), conn, body); err != nil || !keep {
			return
		}
	}
}

var resources = template.Must(template.New("demo").Parse(`# Demo resources written by meshgate dev. Edit this file while dev runs:
# the gateway reloads it (a bad edit is refused and the running config stays).
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: cross-network-gateway
  namespace: istio-system
spec:
  selector:
    istio: eastwestgateway
  servers:
  - name: tls
    port: {number: {{.AutoPort}}, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: demo-passthrough
  namespace: default
spec:
  selector:
    istio: eastwestgateway
  servers:
  - name: passthrough
    port: {number: {{.PassPort}}, name: tls-passthrough, protocol: TLS}
    tls: {mode: PASSTHROUGH}
    hosts: ["*.demo.internal"]
{{- if .TCPPort}}
  - name: tcp
    port: {number: {{.TCPPort}}, name: tcp, protocol: TCP}
    hosts: ["*"]
{{- end}}
{{- if .MutualPort}}
  - name: mutual
    port: {number: {{.MutualPort}}, name: tls-mutual, protocol: TLS}
    tls: {mode: ISTIO_MUTUAL}
    hosts: ["{{.MutualHost}}"]
{{- end}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews-passthrough
  namespace: default
spec:
  hosts: ["{{.PassHost}}"]
  gateways: ["demo-passthrough"]
  tls:
  - match:
    - sniHosts: ["{{.PassHost}}"]
    route:
    - destination: {host: {{.Host}}, subset: v1, port: {number: {{.Port}}}}
      weight: 80
    - destination: {host: {{.Host}}, subset: v2, port: {number: {{.Port}}}}
      weight: 20
{{- if .TCPPort}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews-tcp
  namespace: default
spec:
  hosts: ["*"]
  gateways: ["demo-passthrough"]
  tcp:
  - match:
    - port: {{.TCPPort}}
    route:
    - destination: {host: {{.Host}}, subset: v1, port: {number: {{.Port}}}}
{{- end}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: {{.Host}}
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool:
      tcp: {maxConnections: 10000, connectTimeout: 2s, idleTimeout: 1h}
    outlierDetection:
      consecutiveGatewayErrors: 3
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
  namespace: default
spec:
  hosts: ["{{.Host}}"]
  location: MESH_INTERNAL
  ports:
  - {number: {{.Port}}, name: tls, protocol: TLS}
  resolution: STATIC
  workloadSelector:
    labels: {app: reviews}
{{- if .MutualPort}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings-mutual
  namespace: default
spec:
  hosts: ["{{.MutualHost}}"]
  gateways: ["demo-passthrough"]
  tcp:
  - match:
    - port: {{.MutualPort}}
    route:
    - destination: {host: {{.RatingsHost}}, port: {number: {{.RatingsPort}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ratings
  namespace: default
spec:
  hosts: ["{{.RatingsHost}}"]
  location: MESH_INTERNAL
  ports:
  - {number: {{.RatingsPort}}, name: tcp, protocol: TCP}
  resolution: STATIC
  endpoints:
  - address: {{.RatingsIP}}
    ports: {tcp: {{.RatingsBackendPort}}}
{{- end}}
{{- range .Backends}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-{{.Version}}
  namespace: default
spec:
  address: {{.IP}}
  ports: {tls: {{.Port}}}
  labels: {app: reviews, version: {{.Version}}}
  serviceAccount: reviews
{{- end}}
`))

type backendView struct {
	Version, IP string
	Port        string
}

func (d *Demo) writeResources() error {
	var bs []backendView
	for _, b := range d.backends {
		host, port, _ := net.SplitHostPort(b.ln.Addr().String())
		bs = append(bs, backendView{Version: b.version, IP: host, Port: port})
	}
	var rIP, rPort string
	if d.ratings != nil {
		rIP, rPort, _ = net.SplitHostPort(d.ratings.ln.Addr().String())
	}
	var sb strings.Builder
	err := resources.Execute(&sb, map[string]any{
		"AutoPort": d.opts.AutoPassthroughPort, "PassPort": d.opts.PassthroughPort, "TCPPort": d.opts.TCPPort,
		"PassHost": PassthroughHost, "Host": ServiceHost, "Port": ServicePort, "Backends": bs,
		"MutualPort": d.opts.MutualPort, "MutualHost": MutualHost, "RatingsHost": RatingsHost, "RatingsPort": RatingsPort,
		"RatingsIP": rIP, "RatingsBackendPort": rPort,
	})
	if err != nil {
		return fmt.Errorf("demo: rendering resources: %w", err)
	}
	tmp := d.Resources + ".tmp"
	if err := os.WriteFile(tmp, []byte(sb.String()), 0o644); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return os.Rename(tmp, d.Resources)
}

// Footer is the last line `meshgate dev` prints, once every instruction
// is out.
func (d *Demo) Footer() string {
	return fmt.Sprintf(`
  Resources: %s (edit it; the gateway reloads). Ctrl-C drains and stops.
`, d.Resources)
}

// MutualInstructions is what `meshgate dev` prints about the ISTIO_MUTUAL
// server, given the folder holding a workload's key.pem, cert-chain.pem
// and root-cert.pem ("" when the demo has no such server).
func (d *Demo) MutualInstructions(certDir string) string {
	if d.opts.MutualPort == 0 {
		return ""
	}
	return fmt.Sprintf(`
  # ISTIO_MUTUAL on %[2]d: the gateway terminates with its mesh certificate and asks for the workload's (then plain TCP to ratings)
  printf 'GET / HTTP/1.0\r\n\r\n' | openssl s_client -quiet -verify_return_error -connect %[1]s:%[2]d -servername %[3]s -cert %[4]s/cert-chain.pem -key %[4]s/key.pem -CAfile %[4]s/root-cert.pem
  # without a mesh certificate the handshake is refused
  openssl s_client -connect %[1]s:%[2]d -servername %[3]s </dev/null
`, d.opts.Host, d.opts.MutualPort, MutualHost, certDir)
}

// Instructions is what `meshgate dev` prints once the node is ready.
func (d *Demo) Instructions(adminAddr string) string {
	h := d.opts.Host
	sniV1 := fmt.Sprintf("outbound_.%d_.v1_.%s", ServicePort, ServiceHost)
	var b strings.Builder
	fmt.Fprintf(&b, `
meshgate dev is ready. Try, from another terminal in this folder:

  # PASSTHROUGH on %[2]d: curl verifies the backend's own certificate through the gateway (80%% v1, 20%% v2)
  curl --cacert %[3]s --resolve %[4]s:%[2]d:%[1]s https://%[4]s:%[2]d/

  # AUTO_PASSTHROUGH on %[5]d (Istio's cross-network port): SNI names service, port and subset; mesh ALPN required
  printf 'GET / HTTP/1.0\r\n\r\n' | openssl s_client -quiet -connect %[1]s:%[5]d -servername %[6]s -alpn istio

  # refused without dialling anything: unknown service, or no Istio ALPN
  openssl s_client -connect %[1]s:%[5]d -servername outbound_.%[7]d_._.unknown.default.svc.cluster.local -alpn istio </dev/null
  openssl s_client -connect %[1]s:%[5]d -servername %[6]s </dev/null

  # why a name routes (or not), the route table, and the counters
  curl -s 'http://%[8]s/debug/explain?sni=%[6]s&alpn=istio'
  curl -s http://%[8]s/debug/routes
  curl -s http://%[8]s/metrics | grep ^meshgate_sni
`, h, d.opts.PassthroughPort, d.CAFile, PassthroughHost, d.opts.AutoPassthroughPort, sniV1, ServicePort, adminAddr)
	if d.opts.TCPPort != 0 {
		fmt.Fprintf(&b, `
  # plain TCP route on %[2]d (to reviews v1)
  curl --cacert %[3]s --resolve %[4]s:%[2]d:%[1]s https://%[4]s:%[2]d/
`, h, d.opts.TCPPort, d.CAFile, PassthroughHost)
	}
	return b.String()
}

func newCA() (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("demo: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"meshgate demo"}, CommonName: "meshgate demo backends CA"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("demo: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("demo: %w", err)
	}
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func newLeaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, names []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("demo: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     ca.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("demo: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Raw}, PrivateKey: key}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(errors.New("demo: no randomness"))
	}
	return n
}
