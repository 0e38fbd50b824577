package api_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/api"
	"github.com/meshgate/meshgate/pki/pkitest"
)

func (ts *testServer) httpClient(t testing.TB, cert *tls.Certificate) *http.Client {
	tc := &tls.Config{RootCAs: ts.roots, ServerName: "localhost"}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func (ts *testServer) post(t testing.TB, path, auth string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "https://"+ts.addr+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := ts.httpClient(t, nil).Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func jsonBody(t testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHTTPCertificates(t *testing.T) {
	ts := startServer(t, nil, nil)
	csr, _ := pkitest.WorkloadCSR(t, web)
	resp, body := ts.post(t, "/v1/certificates", "Bearer "+ts.token(t, "default", "web", 0),
		jsonBody(t, map[string]any{"csr": string(csr), "ttl": "2h"}))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/certificates = %d %s, want 200", resp.StatusCode, body)
	}
	var cr api.CertificateResponse
	if err := json.Unmarshal(body, &cr); err != nil {
		t.Fatal(err)
	}
	chain := pkitest.ParseChain(t, cr.CertChain)
	if len(chain) != 2 || !chain[1].Equal(ts.ca.Roots()[0]) || len(cr.RootCerts) != 1 {
		t.Fatalf("certChain = %d certs, rootCerts = %d; want leaf+root and one root", len(chain), len(cr.RootCerts))
	}
	if got := chain[0].NotAfter.Sub(chain[0].NotBefore); got != 2*time.Hour+2*time.Minute {
		t.Fatalf("leaf lifetime = %v, want 2h + 2m", got)
	}
	if resp.ProtoMajor != 2 {
		t.Logf("served over HTTP/%d", resp.ProtoMajor)
	}

	// Seconds as a number work too.
	resp, body = ts.post(t, "/v1/certificates", "Bearer "+ts.token(t, "default", "web", 0),
		[]byte(`{"csr":`+string(jsonBody(t, string(csr)))+`,"ttl":600}`))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/certificates ttl=600 = %d %s", resp.StatusCode, body)
	}

	get, err := ts.httpClient(t, nil).Get("https://" + ts.addr + "/v1/roots")
	if err != nil {
		t.Fatal(err)
	}
	var rr api.RootsResponse
	json.NewDecoder(get.Body).Decode(&rr)
	get.Body.Close()
	if len(rr.RootCerts) != 1 || len(pkitest.ParseChain(t, rr.RootCerts)) != 1 {
		t.Fatalf("GET /v1/roots = %+v, want one root", rr)
	}
}

func TestHTTPHostile(t *testing.T) {
	ts := startServer(t, nil, nil)
	limited := startServer(t, func(c *pki.Config) { c.RateLimit, c.RateBurst = 0.001, 1 }, nil)
	csr, _ := pkitest.WorkloadCSR(t, web)
	good := func(ttl any) []byte { return jsonBody(t, map[string]any{"csr": string(csr), "ttl": ttl}) }
	tok := func(s *testServer) string { return "Bearer " + s.token(t, "default", "web", 0) }
	for _, tc := range []struct {
		name   string
		srv    *testServer
		auth   string
		body   []byte
		status int
		code   string
	}{
		{"no auth", ts, "", good(nil), 401, "no_credential"},
		{"basic auth", ts, "Basic dXNlcjpwYXNz", good(nil), 401, "no_credential"},
		{"bad token", ts, "Bearer mgt.xyz", good(nil), 401, "bad_token"},
		{"ttl too long", ts, tok(ts), good("2400h"), 400, "ttl_too_long"},
		{"ttl garbage", ts, tok(ts), good("soon"), 400, "bad_request"},
		{"ttl negative", ts, tok(ts), good(-5), 400, "bad_request"},
		{"ttl fraction", ts, tok(ts), good(1.5), 400, "bad_request"},
		{"unknown field", ts, tok(ts), []byte(`{"csr":"x","hosts":["a"]}`), 400, "bad_request"},
		{"not json", ts, tok(ts), []byte(`csr=...`), 400, "bad_request"},
		{"trailing data", ts, tok(ts), append(good(nil), []byte(`{}`)...), 400, "bad_request"},
		{"empty csr", ts, tok(ts), []byte(`{"csr":""}`), 400, "bad_request"},
		{"garbage csr", ts, tok(ts), []byte(`{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}`), 400, "csr_malformed"},
		{"oversized body", ts, tok(ts), jsonBody(t, map[string]any{"csr": strings.Repeat("A", 100<<10)}), 400, "bad_request"},
		{"rate limited", limited, tok(limited), good(nil), 429, "rate_limited"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "rate limited" {
				if _, err := limited.ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tc.auth[len("Bearer "):])}); err != nil {
					t.Fatal(err)
				}
			}
			before := issued(t, tc.srv.ca)
			resp, body := tc.srv.post(t, "/v1/certificates", tc.auth, tc.body)
			var er api.ErrorResponse
			json.Unmarshal(body, &er)
			if resp.StatusCode != tc.status || er.Error.Code != tc.code {
				t.Fatalf("POST /v1/certificates (%s) = %d %s, want %d with code %q", tc.name, resp.StatusCode, body, tc.status, tc.code)
			}
			if tc.status == 429 && resp.Header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
			if after := issued(t, tc.srv.ca); after != before {
				t.Fatalf("%s: issued records %d -> %d, want unchanged", tc.name, before, after)
			}
		})
	}
	// Wrong method.
	resp, err := ts.httpClient(t, nil).Get("https://" + ts.addr + "/v1/certificates")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /v1/certificates = %d, want 405", resp.StatusCode)
	}
}
