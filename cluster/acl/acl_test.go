package acl

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/config"
)

const reviews = "reviews.default.svc.cluster.local"

var testResources = []byte(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: tls, protocol: TLS}]
  resolution: STATIC
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`)

type fixture struct {
	srv                        http.Handler
	op, read, ep, expired, rev string
	hits                       int
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	now := time.Now()
	clock := func() time.Time { return now }
	m := NewManager(NewFileStore(t.TempDir()), WithClock(clock))
	ctx := context.Background()
	mk := func(r Request) string {
		_, c, err := m.Create(ctx, r)
		if err != nil {
			t.Fatalf("Create(%+v) = %v", r, err)
		}
		return c.String()
	}
	f := &fixture{
		op:      mk(Request{Scopes: []Scope{ScopeOperator}}),
		read:    mk(Request{Scopes: []Scope{ScopeRead}}),
		ep:      mk(Request{Scopes: []Scope{ScopeEndpointsWrite}, Subsets: []string{reviews + "/v2"}}),
		expired: mk(Request{Scopes: []Scope{ScopeOperator}, TTL: time.Minute}),
		rev:     mk(Request{Scopes: []Scope{ScopeOperator}}),
	}
	c, _ := ParseCredential(f.rev)
	if err := m.Revoke(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	set, err := config.Parse("test.yaml", testResources)
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGuard(GuardConfig{Tokens: m, OpenReads: true, AllowedHosts: []string{"admin.internal"}, Policy: func(r *http.Request) Scope {
		if strings.HasPrefix(r.URL.Path, "/v1/endpoints/") && !isSafe(r.Method) {
			return ScopeEndpointsWrite
		}
		return DefaultPolicy(r)
	}})
	if err != nil {
		t.Fatal(err)
	}
	g.SetListener(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15000})
	scope := &RegistrationScope{Config: func() *config.Set { return set }, Guard: g}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { f.hits++ })
	mux.HandleFunc("PUT /v1/endpoints/{id}", func(w http.ResponseWriter, r *http.Request) {
		var reg catalog.Registration
		reg.ID = r.PathValue("id")
		reg.Service = r.URL.Query().Get("service")
		reg.Port = 9080
		if v := r.URL.Query().Get("version"); v != "" {
			reg.Labels = map[string]string{"version": v}
		}
		if err := scope.AllowRegistration(r, reg); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		f.hits++
	})
	f.srv = g.Wrap(mux)
	return f
}

func TestGuardHostile(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name, method, target, host, ct, tok, origin, site string
		remote                                            string
		want                                              int
		wantIn                                            string
	}{
		{name: "read open on loopback", method: "GET", target: "/debug/routes", want: 200},
		{name: "read from another address needs a token", method: "GET", target: "/debug/routes", remote: "10.0.0.9:5555", want: 401, wantIn: "scope read"},
		{name: "read token from another address", method: "GET", target: "/debug/routes", remote: "10.0.0.9:5555", tok: "read", want: 200},
		{name: "operator write", method: "POST", target: "/v1/leave", tok: "op", want: 200},
		{name: "localhost host", method: "POST", target: "/v1/leave", host: "localhost:15000", tok: "op", want: 200},
		{name: "ipv6 loopback host", method: "POST", target: "/v1/leave", host: "[::1]:15000", tok: "op", want: 200},
		{name: "allowed host name", method: "POST", target: "/v1/leave", host: "admin.internal:15000", tok: "op", want: 200},
		{name: "foreign Host", method: "POST", target: "/v1/leave", host: "attacker.example", tok: "op", want: 421, wantIn: "attacker.example"},
		{name: "missing Host", method: "GET", target: "/debug/routes", host: "-", want: 421},
		{name: "Host with other port", method: "GET", target: "/debug/routes", host: "127.0.0.1:8080", want: 421, wantIn: "127.0.0.1:8080"},
		{name: "text/plain POST", method: "POST", target: "/v1/leave", ct: "text/plain", tok: "op", want: 415, wantIn: "text/plain"},
		{name: "form POST", method: "POST", target: "/v1/leave", ct: "application/x-www-form-urlencoded", tok: "op", want: 415},
		{name: "no content type", method: "POST", target: "/v1/leave", ct: "-", tok: "op", want: 415},
		{name: "DELETE empty body with token, no content type", method: "DELETE", target: "/v1/config/x/y/z", ct: "-", tok: "op", want: 200},
		{name: "DELETE empty body without token, no content type", method: "DELETE", target: "/v1/config/x/y/z", ct: "-", want: 415},
		{name: "Origin attacker", method: "POST", target: "/v1/leave", origin: "http://attacker.example", tok: "op", want: 403, wantIn: "cross-site"},
		{name: "Origin null", method: "POST", target: "/v1/leave", origin: "null", tok: "op", want: 403},
		{name: "same Origin", method: "POST", target: "/v1/leave", origin: "http://127.0.0.1:15000", tok: "op", want: 200},
		{name: "Sec-Fetch-Site cross-site", method: "POST", target: "/v1/leave", site: "cross-site", tok: "op", want: 403, wantIn: "cross-site"},
		{name: "Sec-Fetch-Site same-site", method: "POST", target: "/v1/leave", site: "same-site", tok: "op", want: 403},
		{name: "no token", method: "POST", target: "/v1/leave", want: 401, wantIn: "scope operator"},
		{name: "wrong token", method: "POST", target: "/v1/leave", tok: "wrong", want: 401, wantIn: "unknown admin token"},
		{name: "malformed token", method: "POST", target: "/v1/leave", tok: "garbage", want: 401, wantIn: "malformed"},
		{name: "basic auth", method: "POST", target: "/v1/leave", tok: "basic", want: 401, wantIn: "Bearer"},
		{name: "revoked token", method: "POST", target: "/v1/leave", tok: "rev", want: 401, wantIn: "revoked"},
		{name: "expired token", method: "POST", target: "/v1/leave", tok: "expired", want: 401, wantIn: "expired"},
		{name: "read token on write", method: "POST", target: "/v1/leave", tok: "read", want: 403, wantIn: "needs scope operator"},
		{name: "endpoints token on config write", method: "PUT", target: "/v1/config", tok: "ep", want: 403, wantIn: "needs scope operator"},
		{name: "endpoints token registers declared service", method: "PUT", target: "/v1/endpoints/a?service=" + reviews, tok: "ep", want: 200},
		{name: "endpoints token claims allowed subset", method: "PUT", target: "/v1/endpoints/a?version=v2&service=" + reviews, tok: "ep", want: 200},
		{name: "endpoints token claims disallowed subset", method: "PUT", target: "/v1/endpoints/a?version=v1&service=" + reviews, tok: "ep", want: 403, wantIn: "subset " + reviews + "/v1"},
		{name: "undeclared service", method: "PUT", target: "/v1/endpoints/a?service=evil.example.com", tok: "ep", want: 403, wantIn: "evil.example.com"},
		{name: "operator claims any subset", method: "PUT", target: "/v1/endpoints/a?version=v1&service=" + reviews, tok: "op", want: 200},
		{name: "operator undeclared service", method: "PUT", target: "/v1/endpoints/a?service=evil.example.com", tok: "op", want: 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "http://127.0.0.1:15000"+tc.target, nil)
			r.RemoteAddr = "127.0.0.1:40000"
			if tc.remote != "" {
				r.RemoteAddr = tc.remote
			}
			switch tc.host {
			case "":
			case "-":
				r.Host = ""
			default:
				r.Host = tc.host
			}
			switch tc.ct {
			case "":
				if tc.method != "GET" {
					r.Header.Set("Content-Type", "application/json")
				}
			case "-":
			default:
				r.Header.Set("Content-Type", tc.ct)
			}
			tokens := map[string]string{"op": f.op, "read": f.read, "ep": f.ep, "expired": f.expired, "rev": f.rev,
				"wrong": "mgt.0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "garbage": "xyz"}
			switch tc.tok {
			case "":
			case "basic":
				r.Header.Set("Authorization", "Basic dXNlcjpwYXNz")
			default:
				r.Header.Set("Authorization", "Bearer "+tokens[tc.tok])
			}
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			if tc.site != "" {
				r.Header.Set("Sec-Fetch-Site", tc.site)
			}
			before := f.hits
			w := httptest.NewRecorder()
			f.srv.ServeHTTP(w, r)
			if w.Code != tc.want || !strings.Contains(w.Body.String(), tc.wantIn) {
				t.Fatalf("%s %s = %d %q; want %d containing %q", tc.method, tc.target, w.Code, w.Body.String(), tc.want, tc.wantIn)
			}
			if reached := f.hits > before; reached != (tc.want == 200) {
				t.Fatalf("%s %s reached the handler = %v; want %v", tc.method, tc.target, reached, tc.want == 200)
			}
		})
	}
}

var credentialRows = []struct {
	name string
	in   string
	want error
}{
	{"empty", "", ErrNoCredential},
	{"spaces", "   ", ErrNoCredential},
	{"short", "mgt.0123", ErrMalformed},
	{"wrong prefix", "xyz.0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ErrMalformed},
	{"upper-case id", "mgt.0123456789ABCDEF.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ErrMalformed},
	{"no dot", "mgt.0123456789abcdefxAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ErrMalformed},
	{"secret not base64url", "mgt.0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+", ErrMalformed},
	{"secret non-canonical", "mgt.0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB", ErrMalformed},
	{"oversized", "mgt." + strings.Repeat("a", 4096), ErrMalformed},
	{"ok", "mgt.0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", nil},
	{"ok with newline", "mgt.0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n", nil},
}

func TestParseCredentialHostile(t *testing.T) {
	for _, tc := range credentialRows {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseCredential(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ParseCredential(%q) = %v; want %v", tc.in, err, tc.want)
			}
			if err == nil && c.String() != strings.TrimSpace(tc.in) {
				t.Fatalf("ParseCredential(%q).String() = %q; want the input back", tc.in, c.String())
			}
		})
	}
}

func FuzzParseCredential(f *testing.F) {
	for _, tc := range credentialRows {
		f.Add(tc.in)
		f.Add("Bearer " + tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if c, err := ParseCredential(s); err == nil {
			back, err := ParseCredential(c.String())
			if err != nil || back != c || len(c.String()) != CredentialLen {
				t.Fatalf("ParseCredential(%q) accepted %q, which does not round-trip: %v", s, c.String(), err)
			}
		}
		_, _ = ParseAuthorization(s)
	})
}

const goodHash = "0000000000000000000000000000000000000000000000000000000000000000"

var recordRows = []struct {
	name string
	in   string
	want error
}{
	{"empty", ``, ErrMalformed},
	{"not an object", `[]`, ErrMalformed},
	{"truncated", `{"id":"0123456789abcdef","hash":"`, ErrMalformed},
	{"unknown field", `{"id":"0123456789abcdef","hash":"` + goodHash + `","scopes":["read"],"admin":true}`, ErrMalformed},
	{"trailing data", `{"id":"0123456789abcdef","hash":"` + goodHash + `","scopes":["read"]} {}`, ErrMalformed},
	{"bad id", `{"id":"../../etc","hash":"` + goodHash + `","scopes":["read"]}`, ErrMalformed},
	{"short hash", `{"id":"0123456789abcdef","hash":"00","scopes":["read"]}`, ErrMalformed},
	{"no scopes", `{"id":"0123456789abcdef","hash":"` + goodHash + `","scopes":[]}`, ErrInvalid},
	{"unknown scope", `{"id":"0123456789abcdef","hash":"` + goodHash + `","scopes":["root"]}`, ErrInvalid},
	{"subsets without endpoints:write", `{"id":"0123456789abcdef","hash":"` + goodHash + `","scopes":["read"],"subsets":["*"]}`, ErrInvalid},
	{"bad subset", `{"id":"0123456789abcdef","hash":"` + goodHash + `","scopes":["endpoints:write"],"subsets":["v1"]}`, ErrInvalid},
	{"oversized", `{"description":"` + strings.Repeat("x", MaxRecordBytes) + `"}`, ErrMalformed},
	{"ok", `{"id":"0123456789abcdef","hash":"` + goodHash + `","scopes":["endpoints:write"],"subsets":["reviews/v1"],"created":"2026-01-01T00:00:00Z"}`, nil},
}

func TestDecodeRecordHostile(t *testing.T) {
	for _, tc := range recordRows {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeRecord([]byte(tc.in))
			if !errors.Is(err, tc.want) {
				t.Fatalf("DecodeRecord(%.80q) = %v; want %v", tc.in, err, tc.want)
			}
		})
	}
}

func FuzzDecodeRecord(f *testing.F) {
	for _, tc := range recordRows {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := DecodeRecord(b)
		if err != nil {
			return
		}
		if err := tok.Validate(); err != nil {
			t.Fatalf("DecodeRecord accepted a record that does not validate: %v", err)
		}
		enc, err := EncodeRecord(tok)
		if err != nil {
			t.Fatalf("EncodeRecord of a decoded record: %v", err)
		}
		if _, err := DecodeRecord(enc); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"scopes":["endpoints:write"],"services":["reviews"],"subsets":["reviews/v1"],"ttl":"1h"}`))
	f.Add([]byte(`{"scopes":["operator"],"ttl":"-1h"}`))
	f.Add([]byte(`{"scopes":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ParseRequest(b)
		if err == nil && (len(req.Scopes) == 0 || req.TTL < 0) {
			t.Fatalf("ParseRequest(%q) accepted %+v", b, req)
		}
	})
}

func TestBootstrapOnce(t *testing.T) {
	dir := t.TempDir()
	m := NewManager(NewFileStore(dir))
	path := dir + "/" + OperatorTokenFile
	tok, err := m.Bootstrap(t.Context(), path)
	if err != nil || !tok.Has(ScopeOperator) {
		t.Fatalf("first Bootstrap = %+v, %v; want an operator token", tok, err)
	}
	if _, err := m.Bootstrap(t.Context(), dir+"/other.token"); !errors.Is(err, ErrBootstrapped) {
		t.Fatalf("second Bootstrap = %v; want ErrBootstrapped", err)
	}
	ts, _ := m.List(t.Context())
	if len(ts) != 1 {
		t.Fatalf("List after two Bootstraps = %d tokens; want 1", len(ts))
	}
}
