package api_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/api"
	"github.com/meshgate/meshgate/pki/pkitest"
)

var web = pki.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}

const adminKey = "0123456789abcdef0123456789abcdef"

// testServer is a CA and its API served with TLS on loopback.
type testServer struct {
	ca    *pki.CA
	srv   *api.Server
	addr  string
	roots *x509.CertPool
}

func startServer(t testing.TB, caMod func(*pki.Config), apiMod func(*api.Config)) *testServer {
	t.Helper()
	cfg := pkitest.Config(t)
	if caMod != nil {
		caMod(&cfg)
	}
	ca, _ := pkitest.NewCA(t, cfg)
	acfg := api.DefaultConfig()
	acfg.Logger = pkitest.Logger(t)
	acfg.AdminKey = adminKey
	if apiMod != nil {
		apiMod(&acfg)
	}
	srv, err := api.NewServer(acfg, ca)
	if err != nil {
		t.Fatalf("api.NewServer() = %v", err)
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
		if err := <-done; err != nil {
			t.Errorf("Serve() = %v, want nil after cancel", err)
		}
		srv.Close()
	})
	return &testServer{ca: ca, srv: srv, addr: ln.Addr().String(), roots: ca.RootPool()}
}

func (ts *testServer) token(t testing.TB, ns, sa string, uses int) string {
	t.Helper()
	tok, _, err := ts.ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: ns, ServiceAccount: sa, Uses: uses})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// grpcClient dials the server as an Istio agent would: TLS, ALPN h2 only,
// server name istiod.istio-system.svc, optional client certificate.
func (ts *testServer) grpcClient(t testing.TB, cert *tls.Certificate, nextProtos ...string) pb.IstioCertificateServiceClient {
	t.Helper()
	tc := &tls.Config{RootCAs: ts.roots, ServerName: "istiod.istio-system.svc", NextProtos: nextProtos}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewIstioCertificateServiceClient(conn)
}

func apiNewServer(ca *pki.CA) (*api.Server, error) {
	cfg := api.DefaultConfig()
	return api.NewServer(cfg, ca)
}

func listenLoopback() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
