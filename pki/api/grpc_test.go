package api_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/api"
	"github.com/meshgate/meshgate/pki/pkitest"
)

func withToken(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

func TestGRPCCreateCertificate(t *testing.T) {
	ts := startServer(t, nil, nil)
	for _, tc := range []struct {
		name   string
		protos []string
	}{
		{"native grpc transport (ALPN h2 only)", nil},
		{"through net/http (ALPN h2 and http/1.1)", []string{"h2", "http/1.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.grpcClient(t, nil, tc.protos...)
			csr, key := pkitest.WorkloadCSR(t, web)
			resp, err := c.CreateCertificate(withToken(t.Context(), ts.token(t, "default", "web", 0)),
				&pb.IstioCertificateRequest{Csr: string(csr), ValidityDuration: 3600})
			if err != nil {
				t.Fatalf("CreateCertificate() = %v, want a chain", err)
			}
			chain := pkitest.ParseChain(t, resp.CertChain)
			if len(resp.CertChain) != 2 || len(chain) != 2 {
				t.Fatalf("cert_chain has %d elements (%d certs), want leaf and root", len(resp.CertChain), len(chain))
			}
			leaf, root := chain[0], chain[1]
			if !root.Equal(ts.ca.Roots()[0]) {
				t.Fatal("last cert_chain element is not the root")
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != web.String() || !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
				t.Fatalf("leaf URIs %v / key mismatch, want %s and the CSR key", leaf.URIs, web)
			}
			if got := leaf.NotAfter.Sub(leaf.NotBefore); got != time.Hour+2*time.Minute {
				t.Fatalf("leaf lifetime = %v, want 1h + 2m backdate", got)
			}
			for _, e := range leaf.Extensions {
				if e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) && !e.Critical {
					t.Fatal("SAN extension is not critical")
				}
			}
			for _, p := range resp.CertChain {
				if !strings.HasSuffix(p, "\n") {
					t.Fatalf("chain element does not end with a newline: %q", p[len(p)-10:])
				}
			}
		})
	}
}

func TestServerCertificateIsTheNodes(t *testing.T) {
	ts := startServer(t, nil, nil)
	conn, err := tls.Dial("tcp", ts.addr, &tls.Config{RootCAs: ts.roots, ServerName: "istiod.istio-system.svc", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatalf("tls.Dial(istiod.istio-system.svc) = %v", err)
	}
	defer conn.Close()
	leaf := conn.ConnectionState().PeerCertificates[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/meshgate-system/sa/meshgate" {
		t.Fatalf("server certificate URIs = %v, want the node identity", leaf.URIs)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ts.roots, DNSName: "localhost"}); err != nil {
		t.Fatalf("server certificate for localhost: %v", err)
	}
	conn2, err := tls.Dial("tcp", ts.addr, &tls.Config{RootCAs: ts.roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("tls.Dial(127.0.0.1) = %v", err)
	}
	conn2.Close()
}

func TestGRPCRenewal(t *testing.T) {
	ts := startServer(t, nil, nil)
	csr, key := pkitest.WorkloadCSR(t, web)
	resp, err := ts.grpcClient(t, nil).CreateCertificate(withToken(t.Context(), ts.token(t, "default", "web", 1)), &pb.IstioCertificateRequest{Csr: string(csr)})
	if err != nil {
		t.Fatal(err)
	}
	chain := pkitest.ParseChain(t, resp.CertChain)
	cert := &tls.Certificate{Certificate: [][]byte{chain[0].Raw}, PrivateKey: key, Leaf: chain[0]}
	c := ts.grpcClient(t, cert)

	csr2, _ := pkitest.WorkloadCSR(t, web)
	resp2, err := c.CreateCertificate(t.Context(), &pb.IstioCertificateRequest{Csr: string(csr2)})
	if err != nil {
		t.Fatalf("CreateCertificate(mTLS renewal) = %v", err)
	}
	if leaf := pkitest.ParseChain(t, resp2.CertChain)[0]; leaf.URIs[0].String() != web.String() || leaf.SerialNumber.Cmp(chain[0].SerialNumber) == 0 {
		t.Fatalf("renewed leaf = %v serial %v, want a new certificate for %s", leaf.URIs, leaf.SerialNumber, web)
	}
	db := pki.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "db"}
	csr3, _ := pkitest.WorkloadCSR(t, db)
	_, err = c.CreateCertificate(t.Context(), &pb.IstioCertificateRequest{Csr: string(csr3)})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("CreateCertificate(mTLS as web, CSR for db) = %v, want PermissionDenied", err)
	}
}

func TestGRPCHostile(t *testing.T) {
	ts := startServer(t, nil, nil)
	limited := startServer(t, func(c *pki.Config) { c.RateLimit, c.RateBurst = 0.001, 1 }, nil)
	good := func(t *testing.T) string { c, _ := pkitest.WorkloadCSR(t, web); return string(c) }
	impersonate, _ := structpb.NewStruct(map[string]any{"ImpersonatedIdentity": "spiffe://cluster.local/ns/kube-system/sa/admin"})
	for _, tc := range []struct {
		name string
		srv  *testServer
		ctx  func(t *testing.T) context.Context
		req  func(t *testing.T) *pb.IstioCertificateRequest
		want codes.Code
	}{
		{"no credential", ts, func(t *testing.T) context.Context { return t.Context() },
			func(t *testing.T) *pb.IstioCertificateRequest { return &pb.IstioCertificateRequest{Csr: good(t)} }, codes.Unauthenticated},
		{"bad token", ts, func(t *testing.T) context.Context { return withToken(t.Context(), "mgt.nope") },
			func(t *testing.T) *pb.IstioCertificateRequest { return &pb.IstioCertificateRequest{Csr: good(t)} }, codes.Unauthenticated},
		{"kubernetes JWT", ts, func(t *testing.T) context.Context { return withToken(t.Context(), "eyJhbGciOiJSUzI1NiJ9.e30.sig") },
			func(t *testing.T) *pb.IstioCertificateRequest { return &pb.IstioCertificateRequest{Csr: good(t)} }, codes.Unauthenticated},
		{"used-up token", ts, func(t *testing.T) context.Context {
			tok := ts.token(t, "default", "web", 1)
			if _, err := ts.ca.Issue(t.Context(), pki.Request{CSR: []byte(good(t)), Credential: pki.BearerToken(tok)}); err != nil {
				t.Fatal(err)
			}
			return withToken(t.Context(), tok)
		}, func(t *testing.T) *pb.IstioCertificateRequest { return &pb.IstioCertificateRequest{Csr: good(t)} }, codes.PermissionDenied},
		{"token for another namespace", ts, func(t *testing.T) context.Context { return withToken(t.Context(), ts.token(t, "prod", "web", 0)) },
			func(t *testing.T) *pb.IstioCertificateRequest { return &pb.IstioCertificateRequest{Csr: good(t)} }, codes.PermissionDenied},
		{"TTL above max", ts, func(t *testing.T) context.Context { return withToken(t.Context(), ts.token(t, "default", "web", 0)) },
			func(t *testing.T) *pb.IstioCertificateRequest {
				return &pb.IstioCertificateRequest{Csr: good(t), ValidityDuration: 91 * 24 * 3600}
			}, codes.InvalidArgument},
		{"TTL overflowing", ts, func(t *testing.T) context.Context { return withToken(t.Context(), ts.token(t, "default", "web", 0)) },
			func(t *testing.T) *pb.IstioCertificateRequest {
				return &pb.IstioCertificateRequest{Csr: good(t), ValidityDuration: 1 << 62}
			}, codes.InvalidArgument},
		{"empty CSR", ts, func(t *testing.T) context.Context { return withToken(t.Context(), ts.token(t, "default", "web", 0)) },
			func(t *testing.T) *pb.IstioCertificateRequest { return &pb.IstioCertificateRequest{} }, codes.InvalidArgument},
		{"garbage CSR", ts, func(t *testing.T) context.Context { return withToken(t.Context(), ts.token(t, "default", "web", 0)) },
			func(t *testing.T) *pb.IstioCertificateRequest { return &pb.IstioCertificateRequest{Csr: "garbage"} }, codes.InvalidArgument},
		{"oversized message", ts, func(t *testing.T) context.Context { return withToken(t.Context(), ts.token(t, "default", "web", 0)) },
			func(t *testing.T) *pb.IstioCertificateRequest {
				return &pb.IstioCertificateRequest{Csr: strings.Repeat("A", 100<<10)}
			}, codes.ResourceExhausted},
		{"impersonation", ts, func(t *testing.T) context.Context { return withToken(t.Context(), ts.token(t, "default", "web", 0)) },
			func(t *testing.T) *pb.IstioCertificateRequest {
				return &pb.IstioCertificateRequest{Csr: good(t), Metadata: impersonate}
			}, codes.PermissionDenied},
		{"rate limited", limited, func(t *testing.T) context.Context {
			tok := limited.token(t, "default", "web", 0)
			if _, err := limited.ca.Issue(t.Context(), pki.Request{CSR: []byte(good(t)), Credential: pki.BearerToken(tok)}); err != nil {
				t.Fatal(err)
			}
			return withToken(t.Context(), tok)
		}, func(t *testing.T) *pb.IstioCertificateRequest { return &pb.IstioCertificateRequest{Csr: good(t)} }, codes.ResourceExhausted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, req := tc.ctx(t), tc.req(t)
			before := issued(t, tc.srv.ca)
			resp, err := tc.srv.grpcClient(t, nil).CreateCertificate(ctx, req)
			if status.Code(err) != tc.want {
				t.Fatalf("CreateCertificate(%s) = %v, want code %v", tc.name, err, tc.want)
			}
			if resp != nil {
				t.Fatalf("CreateCertificate(%s) returned a chain with its error", tc.name)
			}
			if after := issued(t, tc.srv.ca); after != before {
				t.Fatalf("CreateCertificate(%s): issued audit records %d -> %d, want unchanged", tc.name, before, after)
			}
		})
	}
}

func issued(t *testing.T, ca *pki.CA) int {
	t.Helper()
	recs, err := ca.AuditLog(t.Context(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range recs {
		if r.Outcome == pki.OutcomeIssued && !strings.HasPrefix(r.Caller, "operator:node") {
			n++
		}
	}
	return n
}

func TestServeStopsAndHandshakeGarbage(t *testing.T) {
	ts := startServer(t, nil, nil)
	// A client that sends no TLS at all must not wedge the server.
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	buf := make([]byte, 64)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	c.Read(buf) // the server answers with a TLS alert or closes
	c.Close()
	csr, _ := pkitest.WorkloadCSR(t, web)
	if _, err := ts.grpcClient(t, nil).CreateCertificate(withToken(t.Context(), ts.token(t, "default", "web", 0)), &pb.IstioCertificateRequest{Csr: string(csr)}); err != nil {
		t.Fatalf("CreateCertificate() after a garbage connection = %v", err)
	}
}

func TestCloseEndsServe(t *testing.T) {
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	srv, err := api.NewServer(api.DefaultConfig(), ca)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), ln) }()
	// Wait until it serves.
	for {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.RootPool(), ServerName: "localhost"})
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-t.Context().Done():
			t.Fatal("server never answered")
		case <-time.After(5 * time.Millisecond):
		}
	}
	srv.Close()
	srv.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve() after Close = %v, want nil", err)
	}
	if err := srv.Serve(context.Background(), ln); err == nil {
		t.Fatal("Serve() on a closed server = nil, want an error")
	}
}
