package vm_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/api"
	"github.com/meshgate/meshgate/pki/client"
	"github.com/meshgate/meshgate/pki/pkitest"
	"github.com/meshgate/meshgate/pki/vm"
)

const adminKey = "fedcba9876543210fedcba9876543210"

// testCA serves a real CA's certificate API on loopback, with a
// recording registrar behind its workload registration route.
type testCA struct {
	ca    *pki.CA
	addr  string
	admin client.Admin
	reg   *fakeRegistrar
}

// fakeRegistrar is the node's catalog as the API sees it: it records what
// the API let through.
type fakeRegistrar struct {
	mu   sync.Mutex
	regs map[string]api.WorkloadEndpoint
	puts int
}

func (f *fakeRegistrar) RegisterWorkload(_ context.Context, ep api.WorkloadEndpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.regs[ep.ID] = ep
	f.puts++
	return nil
}

func (f *fakeRegistrar) DeregisterWorkload(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.regs, id)
	return nil
}

func (f *fakeRegistrar) snapshot() (map[string]api.WorkloadEndpoint, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]api.WorkloadEndpoint{}
	for k, v := range f.regs {
		out[k] = v
	}
	return out, f.puts
}

func serveCA(t *testing.T, td string) *testCA {
	t.Helper()
	pc := pkitest.Config(t)
	pc.TrustDomain = td
	ca, _ := pkitest.NewCA(t, pc)
	reg := &fakeRegistrar{regs: map[string]api.WorkloadEndpoint{}}
	cfg := api.DefaultConfig()
	cfg.Logger = pkitest.Logger(t)
	cfg.AdminKey = adminKey
	cfg.Registrar = reg
	srv, err := api.NewServer(cfg, ca)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	addr := ln.Addr().String()
	return &testCA{ca: ca, addr: addr, reg: reg, admin: client.Admin{Config: client.Config{Addr: addr, RootCAs: ca.RootPool()}, Key: adminKey}}
}

func (ca *testCA) groups() vm.Groups { return vm.Groups{Config: ca.admin.Config, Key: adminKey} }

func spec(ca *testCA, td string) vm.Spec {
	return vm.Spec{TrustDomain: td, Namespace: "shop", ServiceAccount: "billing", Network: "vm-net",
		Ports: []vm.Port{{Port: 9080, TargetPort: 8080}}, Labels: map[string]string{"app": "billing", "version": "v1"},
		CAAddr: ca.addr}
}

// makeBundle mints and writes a bundle into a new dir.
func makeBundle(t *testing.T, ca *testCA, td string) (string, *vm.Bundle) {
	t.Helper()
	b, err := vm.Make(t.Context(), vm.MakeRequest{Spec: spec(ca, td), Roots: ca.ca.Roots()}, ca.admin, ca.groups())
	if err != nil {
		t.Fatalf("Make() = %v", err)
	}
	dir := filepath.Join(t.TempDir(), "bundle")
	if err := vm.WriteBundle(dir, b, false); err != nil {
		t.Fatalf("WriteBundle() = %v", err)
	}
	return dir, b
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMakeWriteLoadBundle(t *testing.T) {
	ca := serveCA(t, "example.org")
	dir, b := makeBundle(t, ca, "example.org")

	modes := map[string]os.FileMode{
		vm.FileManifest: 0o644, vm.FileRootCert: 0o644, vm.FileJoinToken: 0o600, vm.FileIstioToken: 0o600,
		vm.FileClusterEnv: 0o644, vm.FileMeshConfig: 0o644, vm.FileHosts: 0o644, vm.FileWorkloadEntry: 0o644,
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != len(modes) {
		t.Errorf("bundle has %d files, want %d", len(ents), len(modes))
	}
	for name, mode := range modes {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v; want mode %v", name, err, fi.Mode().Perm(), mode)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("bundle dir mode %v, want 0700 (it holds secrets)", fi.Mode().Perm())
	}
	read := func(name string) string {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	env := read(vm.FileClusterEnv)
	for _, want := range []string{"ISTIO_INBOUND_PORTS='8080'\n", "ISTIO_NAMESPACE='shop'\n", "SERVICE_ACCOUNT='billing'\n",
		"ISTIO_META_NETWORK='vm-net'\n", "ISTIO_SERVICE='billing.shop'\n", "ISTIO_SERVICE_CIDR='*'\n", "TRUST_DOMAIN='example.org'\n",
		"ISTIO_METAJSON_LABELS='{\"app\":\"billing\",\"version\":\"v1\"}'\n", "CA_ADDR='" + ca.addr + "'\n", "PROV_CERT='/etc/certs'\n"} {
		if !strings.Contains(env, want) {
			t.Errorf("cluster.env lacks %q:\n%s", want, env)
		}
	}
	if mesh := read(vm.FileMeshConfig); !strings.Contains(mesh, "discoveryAddress: istiod.istio-system.svc:") || !strings.Contains(mesh, "ISTIO_META_NETWORK: vm-net") {
		t.Errorf("mesh.yaml:\n%s", mesh)
	}
	if h := read(vm.FileHosts); h != "127.0.0.1 istiod.istio-system.svc\n" {
		t.Errorf("hosts = %q", h)
	}
	if we := read(vm.FileWorkloadEntry); !strings.Contains(we, "kind: WorkloadEntry") || !strings.Contains(we, "serviceAccount: billing") || !strings.Contains(we, "network: vm-net") || !strings.Contains(we, "version: v1") {
		t.Errorf("workload.yaml:\n%s", we)
	}
	if strings.TrimSpace(read(vm.FileIstioToken)) != b.JoinToken || strings.TrimSpace(read(vm.FileJoinToken)) != b.JoinToken {
		t.Errorf("istio-token and join-token must hold the join token")
	}

	// The token is one-use and for this identity only.
	toks, err := ca.admin.ListTokens(t.Context())
	if err != nil || len(toks) != 1 || toks[0].Uses != 1 || toks[0].Identity != "spiffe://example.org/ns/shop/sa/billing" || toks[0].ID != b.JoinTokenID {
		t.Fatalf("tokens = %+v, %v; want one one-use token for spiffe://example.org/ns/shop/sa/billing", toks, err)
	}
	_, err = client.Issue(t.Context(), client.Config{Addr: ca.addr, RootCAs: ca.ca.RootPool()}, client.IssueRequest{TrustDomain: "example.org", Namespace: "shop", ServiceAccount: "other", Token: b.JoinToken})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("the bundle's token got a certificate for another service account: %v", err)
	}

	got, err := vm.LoadBundle(dir)
	if err != nil {
		t.Fatalf("LoadBundle() = %v", err)
	}
	if got.Service != "billing.shop.svc.cluster.local" || got.TrustDomain != "example.org" || got.JoinToken != b.JoinToken || len(got.Roots) != 1 || got.JoinTokenID != b.JoinTokenID {
		t.Fatalf("LoadBundle() = %+v, want what was written", got.Spec)
	}

	// An existing bundle is kept unless replace; replacing leaves no
	// temp dirs behind.
	if err := vm.WriteBundle(dir, b, false); err == nil {
		t.Fatalf("WriteBundle over an existing bundle without replace succeeded")
	}
	b2 := *b
	b2.Labels = map[string]string{"app": "billing", "version": "v2"}
	if err := vm.WriteBundle(dir, &b2, true); err != nil {
		t.Fatalf("WriteBundle(replace) = %v", err)
	}
	if got, _ := vm.LoadBundle(dir); got == nil || got.Labels["version"] != "v2" {
		t.Fatalf("replaced bundle not read back")
	}
	siblings, _ := os.ReadDir(filepath.Dir(dir))
	if len(siblings) != 1 {
		t.Fatalf("parent holds %d entries after the writes, want only the bundle (no temp dirs)", len(siblings))
	}
}

func TestWriteBundleNothingHalfWritten(t *testing.T) {
	ca := serveCA(t, "cluster.local")
	_, b := makeBundle(t, ca, "cluster.local")
	parent := t.TempDir()
	// A file where the bundle's parent dir should be: nothing is created.
	blocker := filepath.Join(parent, "blocker")
	os.WriteFile(blocker, []byte("x"), 0o644)
	if err := vm.WriteBundle(filepath.Join(blocker, "bundle"), b, false); err == nil {
		t.Fatalf("WriteBundle under a regular file succeeded")
	}
	// An invalid bundle writes nothing.
	bad := *b
	bad.Ports = nil
	out := filepath.Join(parent, "bad")
	if err := vm.WriteBundle(out, &bad, false); !errors.Is(err, vm.ErrInvalid) || !strings.Contains(err.Error(), "ports") {
		t.Fatalf("WriteBundle(no ports) = %v, want ErrInvalid naming ports", err)
	}
	ents, _ := os.ReadDir(parent)
	if len(ents) != 1 {
		t.Fatalf("parent holds %d entries, want only the blocker", len(ents))
	}
}

func joinConfig(bundle, certs string) vm.JoinConfig {
	c := vm.DefaultJoinConfig()
	// Loopback is refused as an endpoint address; the fake registrar dials nothing.
	c.BundleDir, c.CertDir, c.Advertise = bundle, certs, "10.9.8.7"
	c.Check = vm.Check{HTTPPath: "/healthz", Interval: time.Second, Timeout: time.Second}
	c.TTL = 3 * time.Second
	c.RetryInterval = 50 * time.Millisecond
	return c
}

func TestJoinRenewRestartWithdraw(t *testing.T) {
	ca := serveCA(t, "cluster.local")
	bundle, b := makeBundle(t, ca, "cluster.local")
	certs := filepath.Join(t.TempDir(), "etc", "certs")
	cfg := joinConfig(bundle, certs)
	cfg.CertTTL = 2 * time.Second
	cfg.Logger = pkitest.Logger(t)

	w, err := vm.Join(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Join() = %v", err)
	}
	first, src := w.Certificate()
	if src != "token" || first.Identity.String() != "spiffe://cluster.local/ns/shop/sa/billing" {
		t.Fatalf("Certificate() = %v from %q, want the bundle's identity from the token", first.Identity, src)
	}
	onDisk, err := client.LoadBundle(certs)
	if err != nil || !onDisk.Chain[0].Equal(first.Chain[0]) {
		t.Fatalf("cert dir does not hold the certificate: %v", err)
	}
	regs, _ := ca.reg.snapshot()
	id := w.EndpointIDs()[0]
	r, ok := regs[id]
	if len(regs) != 1 || !ok || r.Addr != "10.9.8.7:8080" || r.Port != 9080 || r.Service != "billing.shop.svc.cluster.local" ||
		r.Network != "vm-net" || r.Labels["version"] != "v1" || r.TTL != 3*time.Second || r.Check.HTTPPath != "/healthz" || r.Identity.ServiceAccount != "billing" {
		t.Fatalf("registrations = %+v, want %s for 10.9.8.7:8080 with an HTTP check, by billing's certificate", regs, id)
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	waitFor(t, "a renewal by certificate", func() bool {
		c, src := w.Certificate()
		return src == "renewal" && !c.Chain[0].Equal(first.Chain[0])
	})
	waitFor(t, "the registration refreshed", func() bool { _, puts := ca.reg.snapshot(); return puts >= 2 })
	renewed, _ := w.Certificate()
	if d, err := client.LoadBundle(certs); err != nil || d.Chain[0].NotAfter.Before(renewed.Chain[0].NotAfter) {
		t.Fatalf("cert dir does not hold the renewed certificate: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run() = %v, want nil after withdrawing", err)
	}
	if regs, _ := ca.reg.snapshot(); len(regs) != 0 {
		t.Fatalf("registrations after stop = %+v, want withdrawn", regs)
	}

	// The token is spent: a restart works from the certificate alone.
	_, err = client.Issue(t.Context(), client.Config{Addr: ca.addr, RootCAs: ca.ca.RootPool()}, client.IssueRequest{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "billing", Token: b.JoinToken})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("join token still usable after the join: %v", err)
	}
	cfg.CertTTL = time.Hour
	w2, err := vm.Join(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Join() after restart = %v", err)
	}
	if c, src := w2.Certificate(); src != "cert-dir" || c.Identity != first.Identity {
		t.Fatalf("restart took its certificate from %q, want cert-dir", src)
	}
	if regs, _ := ca.reg.snapshot(); len(regs) != 1 {
		t.Fatalf("restart registered %d endpoints, want 1", len(regs))
	}
}

func TestJoinBadInput(t *testing.T) {
	ca := serveCA(t, "cluster.local")
	other := serveCA(t, "other.example")

	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) (bundle, certs string)
		want  error
		say   []string // substrings of the message
	}{
		{"bundle for another trust domain", func(t *testing.T) (string, string) {
			// Made at the other mesh's CA, pointed at ours (same root
			// pool trick: ours is trusted, so only the domain differs).
			dir, b := makeBundle(t, other, "other.example")
			b.CAAddr = ca.addr
			b.Roots = ca.ca.Roots()
			if err := vm.WriteBundle(dir, b, true); err != nil {
				t.Fatal(err)
			}
			return dir, filepath.Join(t.TempDir(), "certs")
		}, vm.ErrTrustDomain, []string{vm.FileManifest, `"other.example"`, `"cluster.local"`, "make the bundle on a node of this mesh"}},
		{"spent token without a certificate", func(t *testing.T) (string, string) {
			dir, b := makeBundle(t, ca, "cluster.local")
			if _, err := client.Issue(t.Context(), client.Config{Addr: ca.addr, RootCAs: ca.ca.RootPool()}, client.IssueRequest{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "billing", Token: b.JoinToken}); err != nil {
				t.Fatal(err)
			}
			return dir, filepath.Join(t.TempDir(), "certs")
		}, vm.ErrTokenSpent, []string{"token spent or expired: make a new bundle", vm.FileJoinToken}},
		{"expired token without a certificate", func(t *testing.T) (string, string) {
			dir, b := makeBundle(t, ca, "cluster.local")
			b.JoinTokenExpires = time.Now().Add(-time.Minute)
			if err := vm.WriteBundle(dir, b, true); err != nil {
				t.Fatal(err)
			}
			return dir, filepath.Join(t.TempDir(), "certs")
		}, vm.ErrTokenSpent, []string{"token spent or expired: make a new bundle", "expired at"}},
		{"bundle root not the gateway's", func(t *testing.T) (string, string) {
			dir, b := makeBundle(t, ca, "cluster.local")
			b.Roots = other.ca.Roots()
			if err := vm.WriteBundle(dir, b, true); err != nil {
				t.Fatal(err)
			}
			return dir, filepath.Join(t.TempDir(), "certs")
		}, vm.ErrRootMismatch, []string{vm.FileRootCert, "make a new bundle"}},
		{"unreadable cert dir", func(t *testing.T) (string, string) {
			dir, _ := makeBundle(t, ca, "cluster.local")
			notDir := filepath.Join(t.TempDir(), "certs")
			os.WriteFile(notDir, []byte("not a directory"), 0o644)
			return dir, notDir
		}, vm.ErrCertDir, []string{"certs", "--cert-dir"}},
		{"cert dir of another identity", func(t *testing.T) (string, string) {
			dir, _ := makeBundle(t, ca, "cluster.local")
			tok, _ := ca.admin.CreateToken(t.Context(), "shop", "payroll", time.Hour, 1)
			cb, err := client.Issue(t.Context(), client.Config{Addr: ca.addr, RootCAs: ca.ca.RootPool()}, client.IssueRequest{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "payroll", Token: tok.Secret})
			if err != nil {
				t.Fatal(err)
			}
			certs := t.TempDir()
			client.WriteBundle(certs, cb)
			return dir, certs
		}, vm.ErrCertDir, []string{client.FileCertChain, "payroll", "another --cert-dir"}},
		{"missing bundle", func(t *testing.T) (string, string) {
			return filepath.Join(t.TempDir(), "nope"), t.TempDir()
		}, vm.ErrBundle, []string{vm.FileManifest}},
		{"binding revoked", func(t *testing.T) (string, string) {
			dir, _ := makeBundle(t, ca, "cluster.local")
			if _, err := ca.groups().Delete(t.Context(), "shop", "billing"); err != nil {
				t.Fatal(err)
			}
			return dir, filepath.Join(t.TempDir(), "certs")
		}, vm.ErrRegister, []string{"no_group", "403", "make a new bundle"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bundle, certs := tc.setup(t)
			_, err := vm.Join(t.Context(), joinConfig(bundle, certs))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Join() = %v, want %v", err, tc.want)
			}
			for _, s := range tc.say {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Join() error %q does not say %q", err, s)
				}
			}
			// Nothing half-written: a refused join leaves no certificate.
			if !errors.Is(tc.want, vm.ErrRegister) && tc.name != "cert dir of another identity" {
				if _, err := os.Stat(filepath.Join(certs, client.FileKey)); err == nil {
					t.Errorf("a refused join left %s", filepath.Join(certs, client.FileKey))
				}
			}
		})
	}
}

func TestServerTrustDomain(t *testing.T) {
	ca := serveCA(t, "prod.example")
	td, err := vm.ServerTrustDomain(t.Context(), ca.addr, "", ca.ca.RootPool())
	if err != nil || td != "prod.example" {
		t.Fatalf("ServerTrustDomain() = %q, %v; want prod.example", td, err)
	}
	other := serveCA(t, "prod.example")
	if _, err := vm.ServerTrustDomain(t.Context(), ca.addr, "", other.ca.RootPool()); !errors.Is(err, vm.ErrRootMismatch) {
		t.Fatalf("ServerTrustDomain(wrong roots) = %v, want ErrRootMismatch", err)
	}
}
