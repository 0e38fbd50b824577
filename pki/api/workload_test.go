package api_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/api"
	"github.com/meshgate/meshgate/pki/pkitest"
)

// recordingRegistrar is a fake catalog that records what it was given.
type recordingRegistrar struct {
	mu   sync.Mutex
	regs map[string]api.WorkloadEndpoint
}

func (r *recordingRegistrar) RegisterWorkload(_ context.Context, ep api.WorkloadEndpoint) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.regs[ep.ID] = ep
	return nil
}

func (r *recordingRegistrar) DeregisterWorkload(_ context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.regs, id)
	return nil
}

func (r *recordingRegistrar) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.regs)
}

// workloadCert issues a real workload certificate for ns/sa through the
// API with a one-use token.
func (ts *testServer) workloadCert(t *testing.T, ns, sa string) *tls.Certificate {
	t.Helper()
	id := pki.Identity{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: sa}
	csr, key := pkitest.WorkloadCSR(t, id)
	cert, err := ts.ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.Credentials{Token: pki.BearerToken(ts.token(t, ns, sa, 1))}})
	if err != nil {
		t.Fatalf("Issue(%s) = %v", id, err)
	}
	chain := pkitest.ParseChain(t, cert.ChainPEM())
	tc := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc
}

// call sends method /v1/workload/endpoints with body, as cert.
func (ts *testServer) call(t *testing.T, cert *tls.Certificate, method, path string, body any, bearer string) (int, api.ErrorResponse) {
	t.Helper()
	tc := &tls.Config{RootCAs: ts.roots, ServerName: "localhost"}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: tc}
	defer tr.CloseIdleConnections()
	var rd io.Reader
	if s, ok := body.(string); ok {
		rd = strings.NewReader(s)
	} else if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(t.Context(), method, "https://"+ts.addr+path, rd)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var er api.ErrorResponse
	data, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(data, &er)
	return resp.StatusCode, er
}

var reviewsGroup = pki.WorkloadGroup{Namespace: "default", ServiceAccount: "reviews", Network: "vm-net",
	Service: "reviews.default.svc.cluster.local", Ports: []pki.GroupPort{{Port: 9080, TargetPort: 9443}},
	Labels: map[string]string{"app": "reviews"}}

func goodEndpoint() api.WorkloadEndpointRequest {
	return api.WorkloadEndpointRequest{Service: "reviews.default.svc.cluster.local", Port: 9080, Addr: "10.1.2.3:9443",
		Network: "vm-net", Labels: map[string]string{"app": "reviews"}, TTL: "30s",
		Check: &api.WorkloadCheckRequest{Interval: "5s", Timeout: "2s"}}
}

// TestWorkloadRegistrationByCertificate: a workload certificate registers
// only what its group binds; other identities, node certificates, no
// certificate and a revoked binding are refused, each with its reason.
func TestWorkloadRegistrationByCertificate(t *testing.T) {
	reg := &recordingRegistrar{regs: map[string]api.WorkloadEndpoint{}}
	ts := startServer(t, nil, func(c *api.Config) { c.Registrar = reg })
	code, er := ts.call(t, nil, http.MethodPut, "/v1/workload/groups", reviewsGroup, adminKey)
	if code != http.StatusOK {
		t.Fatalf("PUT /v1/workload/groups = %d %+v", code, er)
	}
	if code, _ := ts.call(t, nil, http.MethodPut, "/v1/workload/groups", reviewsGroup, "wrong-key-wrong-key"); code != http.StatusUnauthorized {
		t.Fatalf("PUT /v1/workload/groups with a wrong admin key = %d, want 401", code)
	}
	reviews := ts.workloadCert(t, "default", "reviews")
	ratings := ts.workloadCert(t, "default", "ratings")
	node, err := ts.ca.NodeCertificate(t.Context(), pki.NodeRequest{Identity: pki.Identity{TrustDomain: "cluster.local", Namespace: "meshgate-system", ServiceAccount: "meshgate"}, DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}

	code, er = ts.call(t, reviews, http.MethodPut, "/v1/workload/endpoints", goodEndpoint(), "")
	if code != http.StatusOK || reg.len() != 1 {
		t.Fatalf("register as reviews = %d %+v (%d registrations), want 200 and one", code, er, reg.len())
	}
	for _, ep := range reg.regs {
		if ep.Identity.ServiceAccount != "reviews" || ep.Addr != "10.1.2.3:9443" || ep.TTL.Seconds() != 30 || ep.Check.Interval.Seconds() != 5 {
			t.Fatalf("registrar got %+v", ep)
		}
	}

	mod := func(f func(*api.WorkloadEndpointRequest)) api.WorkloadEndpointRequest {
		r := goodEndpoint()
		f(&r)
		return r
	}
	for _, tc := range []struct {
		name   string
		cert   *tls.Certificate
		body   any
		status int
		reason string
	}{
		{"no client certificate", nil, goodEndpoint(), http.StatusUnauthorized, "no_client_cert"},
		{"another service account", ratings, goodEndpoint(), http.StatusForbidden, "no_group"},
		{"node certificate", node, goodEndpoint(), http.StatusForbidden, "node_cert"},
		{"other service", reviews, mod(func(r *api.WorkloadEndpointRequest) { r.Service = "ratings.default.svc.cluster.local" }), http.StatusForbidden, "service"},
		{"other port", reviews, mod(func(r *api.WorkloadEndpointRequest) { r.Port = 9081 }), http.StatusForbidden, "port"},
		{"other target port", reviews, mod(func(r *api.WorkloadEndpointRequest) { r.Addr = "10.1.2.3:22" }), http.StatusForbidden, "target_port"},
		{"other network", reviews, mod(func(r *api.WorkloadEndpointRequest) { r.Network = "network-a" }), http.StatusForbidden, "network"},
		{"extra label", reviews, mod(func(r *api.WorkloadEndpointRequest) {
			r.Labels = map[string]string{"app": "reviews", "version": "canary"}
		}), http.StatusForbidden, "labels"},
		{"loopback addr", reviews, mod(func(r *api.WorkloadEndpointRequest) { r.Addr = "127.0.0.1:9443" }), http.StatusForbidden, "addr"},
		{"lease too long", reviews, mod(func(r *api.WorkloadEndpointRequest) { r.TTL = "1h" }), http.StatusForbidden, "ttl"},
		{"no check", reviews, mod(func(r *api.WorkloadEndpointRequest) { r.Check = nil }), http.StatusBadRequest, "bad_request"},
		{"not JSON", reviews, "{", http.StatusBadRequest, "bad_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, er := ts.call(t, tc.cert, http.MethodPut, "/v1/workload/endpoints", tc.body, "")
			if code != tc.status || er.Error.Code != tc.reason {
				t.Fatalf("PUT /v1/workload/endpoints = %d %q (%s), want %d %q", code, er.Error.Code, er.Error.Message, tc.status, tc.reason)
			}
		})
	}
	if reg.len() != 1 {
		t.Fatalf("refused requests changed the registrations: %d, want 1", reg.len())
	}

	// Withdraw, then revoke the binding: the certificate can no longer
	// register.
	if code, er := ts.call(t, reviews, http.MethodDelete, "/v1/workload/endpoints", map[string]any{"port": 9080, "addr": "10.1.2.3:9443"}, ""); code != http.StatusNoContent || reg.len() != 0 {
		t.Fatalf("DELETE = %d %+v (%d left), want 204 and none", code, er, reg.len())
	}
	if code, er := ts.call(t, nil, http.MethodDelete, "/v1/workload/groups/default/reviews", nil, adminKey); code != http.StatusOK {
		t.Fatalf("DELETE group = %d %+v", code, er)
	}
	if code, er := ts.call(t, reviews, http.MethodPut, "/v1/workload/endpoints", goodEndpoint(), ""); code != http.StatusForbidden || er.Error.Code != "no_group" {
		t.Fatalf("register after the group was revoked = %d %q, want 403 no_group", code, er.Error.Code)
	}
	if code, _ := ts.call(t, nil, http.MethodDelete, "/v1/workload/groups/default/reviews", nil, adminKey); code != http.StatusNotFound {
		t.Fatalf("DELETE of a deleted group = %d, want 404", code)
	}
}

// TestWorkloadGroupSurvivesReopen: the binding lives in the CA's store
// and is read back by a CA opened on the same store.
func TestWorkloadGroupSurvivesReopen(t *testing.T) {
	cfg := pkitest.Config(t)
	ca, st := pkitest.NewCA(t, cfg)
	if _, err := ca.PutWorkloadGroup(t.Context(), reviewsGroup); err != nil {
		t.Fatal(err)
	}
	ca2, err := pki.NewCA(t.Context(), cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca2.Close() })
	g, err := ca2.WorkloadGroup(t.Context(), pki.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "reviews"})
	if err != nil || g.Service != reviewsGroup.Service || g.Ports[0].Target() != 9443 {
		t.Fatalf("WorkloadGroup() after reopen = %+v, %v", g, err)
	}
	bad := reviewsGroup
	bad.Namespace = "meshgate-system"
	if _, err := ca.PutWorkloadGroup(t.Context(), bad); !errors.Is(err, pki.ErrInvalidGroup) || !strings.Contains(err.Error(), "namespace") {
		t.Fatalf("PutWorkloadGroup(meshgate-system) = %v, want ErrInvalidGroup naming namespace", err)
	}
}

var hostileEndpoints = []struct {
	name, body, field string
}{
	{"empty", "", "body"},
	{"truncated", `{"service":"a"`, "body"},
	{"unknown field", `{"port":9080,"addr":"10.0.0.1:1","id":"x"}`, "body"},
	{"trailing", `{"port":9080,"addr":"10.0.0.1:1"}{}`, "body"},
	{"port zero", `{"port":0,"addr":"10.0.0.1:1"}`, "port"},
	{"port overflow", `{"port":4294967296,"addr":"10.0.0.1:1"}`, "body"},
	{"host name addr", `{"port":9080,"addr":"evil.example:80"}`, "addr"},
	{"addr port zero", `{"port":9080,"addr":"10.0.0.1:0"}`, "addr"},
	{"no service", `{"port":9080,"addr":"10.0.0.1:1","network":"n","ttl":"5s"}`, "service"},
	{"long service", `{"port":9080,"addr":"10.0.0.1:1","network":"n","service":"` + strings.Repeat("a", 300) + `"}`, "service"},
	{"bad ttl", `{"port":9080,"addr":"10.0.0.1:1","network":"n","service":"s","ttl":"soon"}`, "ttl"},
	{"no check", `{"port":9080,"addr":"10.0.0.1:1","network":"n","service":"s","ttl":"5s"}`, "check"},
	{"timeout over interval", `{"port":9080,"addr":"10.0.0.1:1","network":"n","service":"s","ttl":"5s","check":{"interval":"1s","timeout":"2s"}}`, "check.timeout"},
	{"check url", `{"port":9080,"addr":"10.0.0.1:1","network":"n","service":"s","ttl":"5s","check":{"interval":"1s","timeout":"1s","http":"http://169.254.169.254/"}}`, "check.http"},
	{"negative failures", `{"port":9080,"addr":"10.0.0.1:1","network":"n","service":"s","ttl":"5s","check":{"interval":"1s","timeout":"1s","failures":-1}}`, "check.failures"},
}

func TestDecodeWorkloadEndpointHostile(t *testing.T) {
	for _, tc := range hostileEndpoints {
		t.Run(tc.name, func(t *testing.T) {
			_, err := api.DecodeWorkloadEndpoint([]byte(tc.body), false)
			var wr *api.WorkloadRefusal
			if !errors.As(err, &wr) || wr.Field != tc.field {
				t.Fatalf("DecodeWorkloadEndpoint(%q) = %v, want a refusal naming %s", tc.body, err, tc.field)
			}
		})
	}
	good, _ := json.Marshal(goodEndpoint())
	if _, err := api.DecodeWorkloadEndpoint(good, false); err != nil {
		t.Fatalf("DecodeWorkloadEndpoint(good) = %v", err)
	}
}

func FuzzDecodeWorkloadEndpoint(f *testing.F) {
	for _, tc := range hostileEndpoints {
		f.Add([]byte(tc.body), false)
	}
	good, _ := json.Marshal(goodEndpoint())
	f.Add(good, false)
	f.Add([]byte(`{"port":9080,"addr":"[::1]:9443"}`), true)
	f.Fuzz(func(t *testing.T, b []byte, withdraw bool) {
		r, err := api.DecodeWorkloadEndpoint(b, withdraw)
		if err != nil {
			var wr *api.WorkloadRefusal
			if !errors.As(err, &wr) || wr.Field == "" {
				t.Fatalf("DecodeWorkloadEndpoint(%q) error %v names no field", b, err)
			}
			return
		}
		if r.Port == 0 || r.Port > 65535 || (!withdraw && r.Check == nil) {
			t.Fatalf("DecodeWorkloadEndpoint(%q) accepted %+v", b, r)
		}
	})
}
