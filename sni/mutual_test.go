package sni

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/mtls"
	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
	"github.com/meshgate/meshgate/sni/snitest"
)

var (
	mutualGateway = pki.Identity{TrustDomain: "cluster.local", Namespace: "meshgate-system", ServiceAccount: "meshgate"}
	mutualWeb     = pki.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}
	mutualOther   = pki.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "other"}
)

// mutualCA is a real CA (cfssl signing) issuing node and workload
// certificates.
type mutualCA struct{ ca *pki.CA }

func (m mutualCA) source(t *testing.T, id pki.Identity) *mtls.Source {
	t.Helper()
	c, err := m.ca.NodeCertificate(context.Background(), pki.NodeRequest{Identity: id})
	if err != nil {
		t.Fatalf("NodeCertificate(%s) = %v", id, err)
	}
	return mtls.NewSource(c, m.roots())
}

func (m mutualCA) roots() *x509.CertPool {
	roots := x509.NewCertPool()
	for _, r := range m.ca.Info().Roots {
		roots.AddCert(r)
	}
	return roots
}

// mutualTable: Gateway server db (TLS ISTIO_MUTUAL, host db.example.com,
// optional subjectAltNames) whose VirtualService tcp route goes to a
// plain TCP service at backend.
func mutualTable(t *testing.T, backend string, sans []string) *Table {
	t.Helper()
	gw := serverGateway("TLS", networking.ServerTLSSettings_ISTIO_MUTUAL, []string{"db.example.com"}, 15443)
	gw.Spec.Servers[0].Tls.SubjectAltNames = sans
	set := &config.Set{
		Gateways:       []*config.Gateway{gw},
		ServiceEntries: []*config.ServiceEntry{serverServiceEntry(t, "db", "db.backend.test", 5432, "TCP", false, []string{backend}, nil)},
		VirtualServices: []*config.VirtualService{{Meta: serverMeta("db"), Spec: &networking.VirtualService{
			Hosts: []string{"db.example.com"}, Gateways: []string{"gw"},
			Tcp: []*networking.TCPRoute{{Route: []*networking.RouteDestination{{Destination: &networking.Destination{
				Host: "db.backend.test", Port: &networking.PortSelector{Number: 5432}}}}}},
		}}},
	}
	return serverBuild(t, set)
}

// mutualClient is a workload's TLS client: it presents src's certificate
// (nil = none) and accepts only a server with the gateway identity under
// the roots it trusts.
func mutualClient(src *mtls.Source, roots *x509.CertPool) *tls.Config {
	cfg := &tls.Config{
		ServerName:         "db.example.com",
		InsecureSkipVerify: true, // replaced by the SPIFFE check below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			var chain []*x509.Certificate
			for _, der := range raw {
				c, err := x509.ParseCertificate(der)
				if err != nil {
					return err
				}
				chain = append(chain, c)
			}
			_, err := mtls.VerifyPeer(roots, chain, mtls.AuthorizeOneOf(mutualGateway))
			return err
		},
	}
	if src != nil {
		cfg.Certificates = []tls.Certificate{*src.Certificate()}
	}
	return cfg
}

// mutualEcho sends msg over TLS, half-closes and returns what came back.
func mutualEcho(addr string, cfg *tls.Config, msg string) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	if err := c.CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// TestServerIstioMutual terminates an ISTIO_MUTUAL server with the node's
// mesh certificate: a mesh workload gets through to the tcp route's plain
// backend, which sees the decrypted bytes, and the access log names the
// client's SPIFFE ID.
func TestServerIstioMutual(t *testing.T) {
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	m := mutualCA{ca}
	be := snitest.NewBackend(t, snitest.BackendConfig{Trailer: []byte("|bye")})
	h := newServerHarness(t, func(c *ServerConfig) {
		c.MeshIdentity = mtls.NewTerminator(m.source(t, mutualGateway), mtls.AuthorizeTrustDomain("cluster.local"))
	})
	h.apply(t, mutualTable(t, be.Addr(), nil))
	got, err := mutualEcho(h.addr(t, ""), mutualClient(m.source(t, mutualWeb), m.roots()), "SELECT 1")
	if err != nil || got != "SELECT 1|bye" {
		t.Fatalf("echo through ISTIO_MUTUAL = %q, %v; want %q", got, err, "SELECT 1|bye")
	}
	line := h.log.waitClose(t, "db.example.com", closeEOF)
	if line["peer"] != mutualWeb.String() || line["upstream"] != be.Addr() {
		t.Fatalf("access log peer=%q upstream=%q; want %s and %s", line["peer"], line["upstream"], mutualWeb, be.Addr())
	}
}

// TestServerIstioMutualRefusals: each client that is not an admitted mesh
// workload fails the handshake, reaches no backend and is counted by
// reason.
func TestServerIstioMutualRefusals(t *testing.T) {
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	m := mutualCA{ca}
	otherCA, _ := pkitest.NewCA(t, pkitest.Config(t))
	foreign := mutualCA{otherCA}
	gw := m.source(t, mutualGateway)
	cases := []struct {
		name   string
		ident  MeshIdentity
		sans   []string
		client *tls.Config
		reason Reason
	}{
		{"no client certificate", mtls.NewTerminator(gw, mtls.AuthorizeTrustDomain("cluster.local")), nil,
			mutualClient(nil, m.roots()), ReasonHandshake},
		{"certificate from another root", mtls.NewTerminator(gw, mtls.AuthorizeTrustDomain("cluster.local")), nil,
			mutualClient(foreign.source(t, mutualWeb), m.roots()), ReasonHandshake},
		{"another trust domain", mtls.NewTerminator(gw, mtls.AuthorizeTrustDomain("prod.example")), nil,
			mutualClient(m.source(t, mutualWeb), m.roots()), ReasonHandshake},
		{"identity not in subjectAltNames", mtls.NewTerminator(gw, mtls.AuthorizeTrustDomain("cluster.local")), []string{mutualWeb.String()},
			mutualClient(m.source(t, mutualOther), m.roots()), ReasonForbidden},
		{"node without a mesh identity", nil, nil,
			mutualClient(m.source(t, mutualWeb), m.roots()), ReasonNoIdentity},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := snitest.NewBackend(t, snitest.BackendConfig{})
			h := newServerHarness(t, func(c *ServerConfig) {
				if tc.ident != nil {
					c.MeshIdentity = tc.ident
				}
			})
			h.apply(t, mutualTable(t, be.Addr(), tc.sans))
			got, err := mutualEcho(h.addr(t, ""), tc.client, "SELECT 1")
			if err == nil && got != "" {
				t.Fatalf("a refused client read %q", got)
			}
			h.log.waitClose(t, "db.example.com", closeRefused(tc.reason))
			if n := h.refused(t, tc.reason); n != 1 {
				t.Fatalf("refused{reason=%s} = %v, want 1", tc.reason, n)
			}
			if n := be.Accepts(); n != 0 {
				t.Fatalf("backend accepted %d connections, want 0", n)
			}
		})
	}
	// Admitted by subjectAltNames: the listed workload gets through.
	be := snitest.NewBackend(t, snitest.BackendConfig{})
	h := newServerHarness(t, func(c *ServerConfig) {
		c.MeshIdentity = mtls.NewTerminator(gw, mtls.AuthorizeTrustDomain("cluster.local"))
	})
	h.apply(t, mutualTable(t, be.Addr(), []string{mutualOther.String(), mutualWeb.String()}))
	if got, err := mutualEcho(h.addr(t, ""), mutualClient(m.source(t, mutualWeb), m.roots()), "ok"); err != nil || !strings.HasPrefix(got, "ok") {
		t.Fatalf("listed identity: echo = %q, %v; want ok", got, err)
	}
}

// TestServerIstioMutualBridged: an ISTIO_MUTUAL server on A whose tcp
// route's endpoints are only in network B: the decrypted bytes go through
// the bridge to B's plain backend, never A's hello to B's 15443.
func TestServerIstioMutualBridged(t *testing.T) {
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	m := mutualCA{ca}
	dialer := &bridgeDialer{}
	db := snitest.NewTCPBackend(t)
	b := newServerHarness(t, nil)
	tb, err := NewBuilder(DefaultBuilderConfig()).Build(BuildInput{Config: bridgeSetB(t, db.Addr(), db.Addr()), Node: NodeInfo{Name: "gw-b", Network: "net-b", Bridge: true}})
	if err != nil {
		t.Fatal(err)
	}
	b.apply(t, tb)
	acc := newBridgeAcceptor(t, b.s)
	gw15443 := snitest.ClosedAddr(t)
	a := newServerHarness(t, func(c *ServerConfig) {
		c.Bridge = dialer
		c.MeshIdentity = mtls.NewTerminator(m.source(t, mutualGateway), mtls.AuthorizeTrustDomain("cluster.local"))
	})
	gw := serverGateway("TLS", networking.ServerTLSSettings_ISTIO_MUTUAL, []string{"db.example.com"}, 15443)
	setA := &config.Set{
		Gateways: []*config.Gateway{gw},
		VirtualServices: []*config.VirtualService{{Meta: serverMeta("db"), Spec: &networking.VirtualService{
			Hosts: []string{"db.example.com"}, Gateways: []string{"gw"},
			Tcp: []*networking.TCPRoute{{Route: []*networking.RouteDestination{{Destination: &networking.Destination{
				Host: bridgeSrvDB, Port: &networking.PortSelector{Number: 5432}}}}}},
		}}},
	}
	ta, err := NewBuilder(DefaultBuilderConfig()).Build(BuildInput{Config: setA, Node: NodeInfo{Name: "gw-a", Network: "net-a", Bridge: true},
		Endpoints: bridgeEntries([2]string{gw15443, acc.Addr()})})
	if err != nil {
		t.Fatal(err)
	}
	a.apply(t, ta)
	msg := strings.Repeat("row;", 10000)
	got, err := mutualEcho(a.addr(t, ""), mutualClient(m.source(t, mutualWeb), m.roots()), msg)
	if err != nil || got != msg {
		t.Fatalf("echo through ISTIO_MUTUAL and the bridge = %d bytes, %v; want %d bytes", len(got), err, len(msg))
	}
	if calls := dialer.Calls(); len(calls) != 1 || calls[0] != acc.Addr()+" "+bridgeSrvDB+" 5432 " {
		t.Fatalf("DialBridge calls = %q, want one to %s for %s:5432", calls, acc.Addr(), bridgeSrvDB)
	}
	line := a.log.waitClose(t, "db.example.com", closeEOF)
	if line["upstream"] != "bridge:"+acc.Addr() || line["peer"] != mutualWeb.String() {
		t.Fatalf("access log upstream=%q peer=%q; want bridge:%s and %s", line["upstream"], line["peer"], acc.Addr(), mutualWeb)
	}
}
