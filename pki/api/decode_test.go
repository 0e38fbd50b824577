package api

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/cloudflare/cfssl/auth"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
)

var web = pki.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}

func certRequestRows(t testing.TB) []struct {
	name string
	body string
	ttl  time.Duration
	ok   bool
} {
	csr, _ := pkitest.WorkloadCSR(t, web)
	c, _ := json.Marshal(string(csr))
	return []struct {
		name string
		body string
		ttl  time.Duration
		ok   bool
	}{
		{"no ttl", `{"csr":` + string(c) + `}`, 0, true},
		{"duration", `{"csr":` + string(c) + `,"ttl":"90m"}`, 90 * time.Minute, true},
		{"seconds", `{"csr":` + string(c) + `,"ttl":3600}`, time.Hour, true},
		{"null ttl", `{"csr":"x","ttl":null}`, 0, true},
		{"huge seconds saturate", `{"csr":"x","ttl":9223372036854775807}`, time.Duration(1<<63 - 1), true},
		{"empty", ``, 0, false},
		{"array", `[]`, 0, false},
		{"no csr", `{"ttl":"1h"}`, 0, false},
		{"unknown field", `{"csr":"x","hosts":[]}`, 0, false},
		{"negative", `{"csr":"x","ttl":-1}`, 0, false},
		{"negative duration", `{"csr":"x","ttl":"-1h"}`, 0, false},
		{"float", `{"csr":"x","ttl":1e3}`, 0, false},
		{"bool", `{"csr":"x","ttl":true}`, 0, false},
		{"trailing", `{"csr":"x"}{"csr":"y"}`, 0, false},
		{"csr not string", `{"csr":1}`, 0, false},
	}
}

func TestDecodeCertificateRequest(t *testing.T) {
	for _, tc := range certRequestRows(t) {
		t.Run(tc.name, func(t *testing.T) {
			r, err := decodeCertificateRequest([]byte(tc.body))
			if (err == nil) != tc.ok {
				t.Fatalf("decodeCertificateRequest(%s) = %v, want ok=%v", tc.body, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrBadRequest) {
				t.Fatalf("decodeCertificateRequest(%s) error %v does not wrap ErrBadRequest", tc.body, err)
			}
			if err == nil && r.TTL != tc.ttl {
				t.Fatalf("decodeCertificateRequest(%s).TTL = %v, want %v", tc.body, r.TTL, tc.ttl)
			}
		})
	}
}

func FuzzDecodeCertificateRequest(f *testing.F) {
	for _, tc := range certRequestRows(f) {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeCertificateRequest(b)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		if len(r.CSR) == 0 || r.TTL < 0 {
			t.Fatalf("accepted a request with empty CSR or negative TTL: %+v", r)
		}
	})
}

func grpcRows() []*pb.IstioCertificateRequest {
	imp, _ := structpb.NewStruct(map[string]any{"ImpersonatedIdentity": "spiffe://x/ns/a/sa/b"})
	other, _ := structpb.NewStruct(map[string]any{"ClusterID": "Kubernetes", "ImpersonatedIdentity": ""})
	return []*pb.IstioCertificateRequest{
		{Csr: "x"},
		{Csr: "x", ValidityDuration: 3600},
		{Csr: "x", ValidityDuration: -5},
		{Csr: "x", ValidityDuration: 1 << 62},
		{Csr: "x", Metadata: imp},
		{Csr: "x", Metadata: other},
		{},
	}
}

func TestDecodeGRPCRequest(t *testing.T) {
	for i, req := range grpcRows() {
		r, err := decodeGRPCRequest(req)
		switch {
		case req.Csr == "":
			if !errors.Is(err, ErrBadRequest) {
				t.Errorf("row %d: decodeGRPCRequest(no csr) = %v, want ErrBadRequest", i, err)
			}
		case req.Metadata != nil && req.Metadata.Fields["ImpersonatedIdentity"].GetStringValue() != "":
			if !errors.Is(err, pki.ErrPermissionDenied) {
				t.Errorf("row %d: decodeGRPCRequest(impersonation) = %v, want ErrPermissionDenied", i, err)
			}
		case err != nil:
			t.Errorf("row %d: decodeGRPCRequest(%v) = %v", i, req, err)
		case req.ValidityDuration <= 0 && r.TTL != 0:
			t.Errorf("row %d: TTL = %v for validity %d, want 0 (default)", i, r.TTL, req.ValidityDuration)
		case req.ValidityDuration > 0 && r.TTL <= 0:
			t.Errorf("row %d: TTL = %v for validity %d, want positive", i, r.TTL, req.ValidityDuration)
		}
	}
}

func FuzzDecodeGRPCRequest(f *testing.F) {
	for _, r := range grpcRows() {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req pb.IstioCertificateRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		r, err := decodeGRPCRequest(&req)
		if err != nil {
			return
		}
		if string(r.CSR) != req.Csr || r.TTL < 0 || (req.ValidityDuration > 0) != (r.TTL > 0) {
			t.Fatalf("decodeGRPCRequest(%v) = %+v", &req, r)
		}
	})
}

var testAuth, _ = auth.New("00112233445566778899aabbccddeeff", nil)

func signBody(inner []byte) []byte {
	tok, _ := testAuth.Token(inner)
	b, _ := json.Marshal(auth.AuthenticatedRequest{Token: tok, Request: inner})
	return b
}

func signRows() [][]byte {
	return [][]byte{
		[]byte(`{"certificate_request":"x","profile":"workload"}`),
		[]byte(`{"certificate_request":"x","hosts":["spiffe://cluster.local/ns/a/sa/b"]}`),
		[]byte(`{"certificate_request":"x","hosts":[]}`),
		[]byte(`{"certificate_request":"x","hostname":"a,b"}`),
		[]byte(`{"certificate_request":"x","subject":{"CN":"x"}}`),
		[]byte(`{"certificate_request":"x","profile":"other"}`),
		[]byte(`{"hosts":null,"certificate_request":"x","profile":"workload","crl_override":"","label":"","NotBefore":"0001-01-01T00:00:00Z","NotAfter":"0001-01-01T00:00:00Z","ReturnPrecert":false,"metadata":null}`),
		[]byte(`{}`),
		[]byte(`nope`),
	}
}

func FuzzDecodeAuthSign(f *testing.F) {
	for _, inner := range signRows() {
		f.Add(signBody(inner), false)
		f.Add(inner, true)
	}
	f.Fuzz(func(t *testing.T, b []byte, wrap bool) {
		if wrap {
			b = signBody(b) // reach the inner decoder with a valid HMAC
		}
		req, err := decodeAuthSign(b, testAuth)
		if err != nil {
			return
		}
		if req.Request == "" || checkProfile(req.Profile) != nil || !isJSONEmpty(req.Subject) || !isJSONEmpty(req.Extensions) {
			t.Fatalf("decodeAuthSign accepted %q", b)
		}
		id, err := req.requestedIdentity()
		if err == nil && (req.Hosts != nil || req.Hostname != "") && id.IsZero() {
			t.Fatalf("hosts %q / hostname %q accepted without an identity", req.Hosts, req.Hostname)
		}
	})
}

func TestDecodeAuthSignRejectsTamper(t *testing.T) {
	b := signBody(signRows()[0])
	var ar auth.AuthenticatedRequest
	json.Unmarshal(b, &ar)
	ar.Request = []byte(`{"certificate_request":"x","profile":"workload","hosts":["spiffe://cluster.local/ns/kube-system/sa/admin"]}`)
	tampered, _ := json.Marshal(ar)
	if _, err := decodeAuthSign(tampered, testAuth); !errors.Is(err, pki.ErrUnauthenticated) {
		t.Fatalf("decodeAuthSign(tampered inner request) = %v, want ErrUnauthenticated", err)
	}
}
