package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// Peer names, as accepted by -only.
const (
	peerDirect   = "direct"
	peerMeshgate = "meshgate"
	peerHAProxy  = "haproxy"
	peerNginx    = "nginx"
)

// allPeers is every peer in report order.
var allPeers = []string{peerDirect, peerMeshgate, peerHAProxy, peerNginx}

// SNI names the proxies route: tlsName to the TLS backend, rawName to the
// raw sink.
const (
	tlsName = "bench.example.test"
	rawName = "bulk.example.test"
)

// readyTimeout bounds the wait for a proxy to route its first connection.
const readyTimeout = 20 * time.Second

// errUnavailable says a peer cannot run on this machine; the run goes on
// without it.
var errUnavailable = errors.New("proxybench: peer unavailable")

// peerSetup describes how run configures the named peer.
func peerSetup(name string, workers int) string {
	switch name {
	case peerDirect:
		return "client -> backend, no proxy"
	case peerMeshgate:
		return fmt.Sprintf("agent, Gateway PASSTHROUGH + VirtualService tls sniHosts, GOMAXPROCS=%d", workers)
	case peerHAProxy:
		return fmt.Sprintf("mode tcp, req_ssl_hello_type + req_ssl_sni, option splice-auto, nbthread %d", workers)
	case peerNginx:
		return fmt.Sprintf("stream, ssl_preread + map, proxy_half_close, default buffers, worker_processes %d", workers)
	}
	return ""
}

// peer is one way to reach the backends: directly or through a proxy.
type peer interface {
	// Name is one of allPeers.
	Name() string
	// TLSAddr is where handshake clients connect (SNI tlsName).
	TLSAddr() string
	// RawAddr is where throughput clients connect (SNI rawName).
	RawAddr() string
	// PID is the proxy's process ID, or 0 when no proxy is in the path.
	PID() int
	// Version describes the proxy build.
	Version() string
	// Close stops the proxy and waits for it; idempotent.
	Close() error
}

// peerEnv is what starting a peer needs.
type peerEnv struct {
	dir        string // a fresh temp dir for this peer's files
	tlsBackend string // host:port
	rawBackend string // host:port
	workers    int    // worker threads or processes
	maxConns   int    // client connections the proxy must accept at once
	nofile     uint64 // RLIMIT_NOFILE hard limit
	install    bool   // may apt-get missing packages
	meshgate   string // binary path
	taskset    string // taskset binary, when cpus is set
	cpus       []int  // CPUs the proxy runs on (taskset -c); nil: any
	log        *slog.Logger
	probe      func(ctx context.Context, addr string) error
}

// directPeer is the baseline: clients connect to the backends themselves.
type directPeer struct{ tls, raw string }

func (d directPeer) Name() string    { return peerDirect }
func (d directPeer) TLSAddr() string { return d.tls }
func (d directPeer) RawAddr() string { return d.raw }
func (d directPeer) PID() int        { return 0 }
func (d directPeer) Version() string { return "" }
func (d directPeer) Close() error    { return nil }

// procPeer is a proxy process listening on one loopback address.
type procPeer struct {
	*proc
	addr    string
	version string
}

func (p *procPeer) Name() string    { return p.name }
func (p *procPeer) TLSAddr() string { return p.addr }
func (p *procPeer) RawAddr() string { return p.addr }
func (p *procPeer) Version() string { return p.version }

var (
	_ peer = directPeer{}
	_ peer = (*procPeer)(nil)
)

// startPeer starts the named peer and waits until it routes a connection.
func startPeer(ctx context.Context, name string, env peerEnv) (peer, error) {
	switch name {
	case peerDirect:
		return directPeer{tls: env.tlsBackend, raw: env.rawBackend}, nil
	case peerMeshgate:
		return startMeshgate(ctx, env)
	case peerHAProxy:
		return startHAProxy(ctx, env)
	case peerNginx:
		return startNginx(ctx, env)
	}
	return nil, fmt.Errorf("%w: unknown peer %q", errUnavailable, name)
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("proxybench: find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitRouting retries probe through addr until it succeeds, the process
// exits or readyTimeout passes.
func waitRouting(ctx context.Context, p *proc, addr string, probe func(context.Context, string) error) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if err := p.exitError(); err != nil {
			return err
		}
		if last = probe(ctx, addr); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("proxybench: %s not routing %s after %s: %w\n%s", p.name, addr, readyTimeout, last, p.out.String())
		case <-p.done:
		case <-tick.C:
		}
	}
}

// findBin returns the path of name on PATH or in /usr/sbin, or "".
func findBin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	p := filepath.Join("/usr/sbin", name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// firstLine returns the first non-empty line of b, trimmed.
func firstLine(b []byte) string {
	for line := range bytes.Lines(b) {
		if s := strings.TrimSpace(string(line)); s != "" {
			return s
		}
	}
	return ""
}

// runOut runs a short command and returns its combined output.
func runOut(ctx context.Context, bin string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, bin, args...).CombinedOutput()
}

// aptInstall installs Debian packages when allowed (root, env.install).
// Service start by package scripts is refused for the duration (the packages
// would otherwise start a system nginx on port 80).
func aptInstall(ctx context.Context, env peerEnv, pkgs ...string) error {
	if !env.install {
		return fmt.Errorf("%w: %s missing and installing is off (-install=false)", errUnavailable, strings.Join(pkgs, " "))
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: %s missing and not root: apt-get install %s", errUnavailable, strings.Join(pkgs, " "), strings.Join(pkgs, " "))
	}
	apt := findBin("apt-get")
	if apt == "" {
		return fmt.Errorf("%w: %s missing and no apt-get", errUnavailable, strings.Join(pkgs, " "))
	}
	const policy = "/usr/sbin/policy-rc.d"
	if _, err := os.Stat(policy); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 101\n"), 0o755); err == nil {
			defer os.Remove(policy)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	env.log.Info("installing", "packages", pkgs)
	install := func() ([]byte, error) {
		cmd := exec.CommandContext(ctx, apt, append([]string{"install", "-y", "-q", "--no-install-recommends"}, pkgs...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	if _, err := install(); err == nil {
		return nil
	}
	if out, err := exec.CommandContext(ctx, apt, "update", "-q").CombinedOutput(); err != nil {
		return fmt.Errorf("%w: apt-get update: %v\n%s", errUnavailable, err, out)
	}
	if out, err := install(); err != nil {
		return fmt.Errorf("%w: apt-get install %s: %v\n%s", errUnavailable, strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// writeTemplate renders text with data into path.
func writeTemplate(path, text string, data any) error {
	var b bytes.Buffer
	if err := template.Must(template.New(filepath.Base(path)).Parse(text)).Execute(&b, data); err != nil {
		return fmt.Errorf("proxybench: render %s: %w", path, err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("proxybench: write %s: %w", path, err)
	}
	return nil
}

// ---- meshgate ----

const meshgateNode = `name: bench
network: bench-net
labels: {istio: eastwestgateway}
admin_addr: {{.Admin}}
data_dir: {{.Data}}
bind_addr: 127.0.0.1
ca: {addr: ""}
drain_timeout: 1s
hello_timeout: 5s
log: {format: json, level: warn}
`

const meshgateResources = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench, namespace: default}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - name: pass
    port: {number: {{.Port}}, name: tls-pass, protocol: TLS}
    tls: {mode: PASSTHROUGH}
    hosts: ["*.example.test"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench, namespace: default}
spec:
  hosts: ["*.example.test"]
  gateways: ["bench"]
  tls:
  - match:
    - sniHosts: ["` + tlsName + `"]
    route:
    - destination: {host: bench-tls.default.svc.cluster.local, port: {number: 9443}}
  - match:
    - sniHosts: ["` + rawName + `"]
    route:
    - destination: {host: bench-raw.default.svc.cluster.local, port: {number: 9443}}
{{- range .Services}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: {{.Name}}, namespace: default}
spec:
  host: {{.Name}}.default.svc.cluster.local
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: {{$.MaxConns}}, connectTimeout: 5s, idleTimeout: 1h}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: {{.Name}}, namespace: default}
spec:
  hosts: [{{.Name}}.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9443, name: tls, protocol: TLS}]
  resolution: STATIC
  workloadSelector: {labels: {app: {{.Name}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: {{.Name}}-0, namespace: default}
spec:
  address: 127.0.0.1
  ports: {tls: {{.Port}}}
  labels: {app: {{.Name}}}
{{- end}}
`

func startMeshgate(ctx context.Context, env peerEnv) (peer, error) {
	if env.meshgate == "" {
		return nil, fmt.Errorf("%w: MESHGATE_BIN is not set (or pass -meshgate PATH)", errUnavailable)
	}
	if _, err := os.Stat(env.meshgate); err != nil {
		return nil, fmt.Errorf("%w: meshgate binary: %v", errUnavailable, err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}
	admin := fmt.Sprintf("127.0.0.1:%d", adminPort)
	resDir := filepath.Join(env.dir, "resources")
	if err := os.MkdirAll(resDir, 0o755); err != nil {
		return nil, fmt.Errorf("proxybench: %w", err)
	}
	node := filepath.Join(env.dir, "node.yaml")
	if err := writeTemplate(node, meshgateNode, map[string]any{"Admin": admin, "Data": filepath.Join(env.dir, "data")}); err != nil {
		return nil, err
	}
	type svc struct {
		Name string
		Port string
	}
	_, tlsPort, _ := net.SplitHostPort(env.tlsBackend)
	_, rawPort, _ := net.SplitHostPort(env.rawBackend)
	if err := writeTemplate(filepath.Join(resDir, "bench.yaml"), meshgateResources, map[string]any{
		"Port":     port,
		"MaxConns": env.maxConns,
		"Services": []svc{{"bench-tls", tlsPort}, {"bench-raw", rawPort}},
	}); err != nil {
		return nil, err
	}
	version := "meshgate"
	if out, err := runOut(ctx, env.meshgate, "version"); err == nil {
		version = firstLine(out)
	}
	bin, args := pinnedCommand(env.taskset, env.cpus, env.meshgate, []string{"agent", "--config", node, "--resources", resDir})
	p, err := startProc(peerMeshgate, bin, args, []string{"GOMAXPROCS=" + strconv.Itoa(env.workers)}, env.dir)
	if err != nil {
		return nil, err
	}
	mp := &procPeer{proc: p, addr: fmt.Sprintf("127.0.0.1:%d", port), version: version}
	if err := waitReadyz(ctx, p, "http://"+admin+"/readyz"); err != nil {
		mp.Close()
		return nil, err
	}
	if err := waitRouting(ctx, p, mp.addr, env.probe); err != nil {
		mp.Close()
		return nil, err
	}
	return mp, nil
}

// waitReadyz polls url until it answers 200, the process exits or
// readyTimeout passes.
func waitReadyz(ctx context.Context, p *proc, url string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := "no answer"
	for {
		if err := p.exitError(); err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("proxybench: %w", err)
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("proxybench: %s: GET %s: %s after %s\n%s", p.name, url, last, readyTimeout, p.out.String())
		case <-p.done:
		case <-tick.C:
		}
	}
}

// ---- HAProxy ----

const haproxyConfig = `global
    nbthread {{.Workers}}
    maxconn {{.MaxConn}}
    maxpipes {{.MaxPipes}}

defaults
    mode tcp
    maxconn {{.MaxConn}}
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    option splice-auto

frontend sni
    bind {{.Addr}}
    tcp-request inspect-delay 5s
    tcp-request content accept if { req_ssl_hello_type 1 }
    use_backend tls_backend if { req_ssl_sni -i ` + tlsName + ` }
    use_backend raw_backend if { req_ssl_sni -i ` + rawName + ` }

backend tls_backend
    server tls {{.TLSBackend}}

backend raw_backend
    server raw {{.RawBackend}}
`

func startHAProxy(ctx context.Context, env peerEnv) (peer, error) {
	bin := findBin("haproxy")
	if bin == "" {
		if err := aptInstall(ctx, env, "haproxy"); err != nil {
			return nil, err
		}
		if bin = findBin("haproxy"); bin == "" {
			return nil, fmt.Errorf("%w: haproxy not found after install", errUnavailable)
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	// HAProxy needs two fds per connection and two per splice pipe, plus a
	// few of its own, and refuses to start when the limit cannot hold them.
	// Pipes are only held while data moves, so a few hundred are plenty.
	maxConn := min(env.maxConns, int(env.nofile/2)-200)
	maxPipes := max(16, min(maxConn/4, (int(env.nofile)-2*maxConn-200)/2))
	cfg := filepath.Join(env.dir, "haproxy.cfg")
	if err := writeTemplate(cfg, haproxyConfig, map[string]any{
		"Workers": env.workers, "MaxConn": maxConn, "MaxPipes": maxPipes, "Addr": addr,
		"TLSBackend": env.tlsBackend, "RawBackend": env.rawBackend,
	}); err != nil {
		return nil, err
	}
	if out, err := runOut(ctx, bin, "-c", "-f", cfg); err != nil {
		return nil, fmt.Errorf("proxybench: haproxy -c -f %s: %v\n%s", cfg, err, out)
	}
	version := "haproxy"
	if out, err := runOut(ctx, bin, "-v"); err == nil {
		version = firstLine(out)
	}
	bin, args := pinnedCommand(env.taskset, env.cpus, bin, []string{"-db", "-f", cfg})
	p, err := startProc(peerHAProxy, bin, args, nil, env.dir)
	if err != nil {
		return nil, err
	}
	hp := &procPeer{proc: p, addr: addr, version: version}
	if err := waitRouting(ctx, p, addr, env.probe); err != nil {
		hp.Close()
		return nil, err
	}
	return hp, nil
}

// ---- nginx ----

const nginxConfig = `{{if .LoadModule}}load_module {{.LoadModule}};
{{end}}daemon off;
master_process on;
worker_processes {{.Workers}};
worker_rlimit_nofile {{.NoFile}};
pid {{.Dir}}/nginx.pid;
error_log stderr warn;

events {
    worker_connections {{.WorkerConns}};
}

stream {
    map $ssl_preread_server_name $sni_upstream {
        ` + tlsName + ` tls_backend;
        ` + rawName + ` raw_backend;
    }
    upstream tls_backend {
        server {{.TLSBackend}};
    }
    upstream raw_backend {
        server {{.RawBackend}};
    }
    server {
        listen {{.Addr}} reuseport backlog=4096;
        ssl_preread on;
        preread_timeout 5s;
        proxy_pass $sni_upstream;
        proxy_connect_timeout 5s;
        proxy_timeout 1h;
        proxy_half_close on;
    }
}
`

// nginxModuleDirs are where Debian and RPM packages put dynamic modules.
var nginxModuleDirs = []string{"/usr/lib/nginx/modules", "/usr/share/nginx/modules", "/usr/lib64/nginx/modules"}

// nginxStream says how the stream module is available to bin: built in
// (ok, load ""), dynamic with the module file at load, or not at all.
func nginxStream(ctx context.Context, bin string) (load string, ok bool, err error) {
	out, err := runOut(ctx, bin, "-V")
	if err != nil {
		return "", false, fmt.Errorf("proxybench: nginx -V: %v\n%s", err, out)
	}
	var static, dynamic bool
	for _, f := range strings.Fields(string(out)) {
		switch f {
		case "--with-stream":
			static = true
		case "--with-stream=dynamic":
			dynamic = true
		}
	}
	if static {
		return "", true, nil
	}
	if !dynamic {
		return "", false, nil
	}
	for _, d := range nginxModuleDirs {
		p := filepath.Join(d, "ngx_stream_module.so")
		if _, err := os.Stat(p); err == nil {
			return p, true, nil
		}
	}
	return "", false, nil
}

func startNginx(ctx context.Context, env peerEnv) (peer, error) {
	bin := findBin("nginx")
	if bin == "" {
		if err := aptInstall(ctx, env, "nginx", "libnginx-mod-stream"); err != nil {
			return nil, err
		}
		if bin = findBin("nginx"); bin == "" {
			return nil, fmt.Errorf("%w: nginx not found after install", errUnavailable)
		}
	}
	load, ok, err := nginxStream(ctx, bin)
	if err != nil {
		return nil, err
	}
	if !ok {
		if err := aptInstall(ctx, env, "libnginx-mod-stream"); err != nil {
			return nil, err
		}
		if load, ok, err = nginxStream(ctx, bin); err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%w: nginx has no stream module", errUnavailable)
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := filepath.Join(env.dir, "nginx.conf")
	// worker_connections counts both sides of a proxied connection, and one
	// worker may get most of them.
	if err := writeTemplate(cfg, nginxConfig, map[string]any{
		"LoadModule": load, "Workers": env.workers, "NoFile": env.nofile, "Dir": env.dir,
		"WorkerConns": min(2*env.maxConns+64, int(env.nofile)-64), "Addr": addr,
		"TLSBackend": env.tlsBackend, "RawBackend": env.rawBackend,
	}); err != nil {
		return nil, err
	}
	args := []string{"-p", env.dir + "/", "-c", cfg, "-e", "stderr"}
	if out, err := runOut(ctx, bin, append(args, "-t")...); err != nil {
		return nil, fmt.Errorf("proxybench: nginx -t -c %s: %v\n%s", cfg, err, out)
	}
	version := "nginx"
	if out, err := runOut(ctx, bin, "-v"); err == nil {
		version = strings.TrimPrefix(firstLine(out), "nginx version: ")
	}
	bin, args = pinnedCommand(env.taskset, env.cpus, bin, args)
	p, err := startProc(peerNginx, bin, args, nil, env.dir)
	if err != nil {
		return nil, err
	}
	np := &procPeer{proc: p, addr: addr, version: version}
	if err := waitRouting(ctx, p, addr, env.probe); err != nil {
		np.Close()
		return nil, err
	}
	return np, nil
}
