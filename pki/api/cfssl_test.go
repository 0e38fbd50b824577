package api_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/api"
	"github.com/meshgate/meshgate/pki/pkitest"
)

const cfsslKeyHex = "00112233445566778899aabbccddeeff"

// cfsslServer serves the HTTP API on plain HTTP (the cfssl CLI shipped
// with Debian cannot be given a CA for https).
func cfsslServer(t *testing.T) (*testServer, *httptest.Server) {
	ts := startServer(t, nil, func(c *api.Config) { c.CFSSLAuthKey = cfsslKeyHex })
	hs := httptest.NewServer(ts.srv.Handler())
	t.Cleanup(hs.Close)
	return ts, hs
}

type envelope struct {
	Success bool            `json:"success"`
	Result  json.RawMessage `json:"result"`
	Errors  []struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"errors"`
}

func authsignBody(t *testing.T, key string, inner any) []byte {
	t.Helper()
	in, err := json.Marshal(inner)
	if err != nil {
		t.Fatal(err)
	}
	k := make([]byte, len(key)/2)
	for i := range k {
		var b byte
		for _, c := range key[2*i : 2*i+2] {
			b <<= 4
			switch {
			case c >= '0' && c <= '9':
				b |= byte(c - '0')
			default:
				b |= byte(c-'a') + 10
			}
		}
		k[i] = b
	}
	m := hmac.New(sha256.New, k)
	m.Write(in)
	return jsonBody(t, map[string]any{"token": m.Sum(nil), "request": in, "timestamp": 1})
}

func postEnvelope(t *testing.T, url string, body []byte) (int, envelope) {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatalf("POST %s: body %q is not a cfssl envelope: %v", url, b, err)
	}
	return resp.StatusCode, env
}

func TestCFSSLAuthSign(t *testing.T) {
	ts, hs := cfsslServer(t)
	csr, _ := pkitest.WorkloadCSR(t, web)
	noSAN, _ := pkitest.CSR(t, pkitest.CSROptions{})
	for _, tc := range []struct {
		name   string
		key    string
		inner  map[string]any
		status int
		code   int
	}{
		{"csr identity", cfsslKeyHex, map[string]any{"certificate_request": string(csr), "profile": "workload"}, 200, 0},
		{"default profile, hosts = identity", cfsslKeyHex, map[string]any{"certificate_request": string(csr), "hosts": []string{web.String()}}, 200, 0},
		{"hostname names identity for a bare CSR", cfsslKeyHex, map[string]any{"certificate_request": string(noSAN), "hostname": web.String()}, 200, 0},
		{"wrong key", "ffeeddccbbaa99887766554433221100", map[string]any{"certificate_request": string(csr)}, 401, 400},
		{"unknown profile", cfsslKeyHex, map[string]any{"certificate_request": string(csr), "profile": "ca"}, 400, 5400},
		{"hosts empty strips SANs", cfsslKeyHex, map[string]any{"certificate_request": string(csr), "hosts": []string{}}, 403, 5500},
		{"hosts widen", cfsslKeyHex, map[string]any{"certificate_request": string(csr), "hosts": []string{web.String(), "evil.example.com"}}, 403, 5500},
		{"hosts other identity", cfsslKeyHex, map[string]any{"certificate_request": string(csr), "hosts": []string{"spiffe://cluster.local/ns/kube-system/sa/admin"}}, 403, 5500},
		{"hostname dns", cfsslKeyHex, map[string]any{"certificate_request": string(csr), "hostname": "evil.example.com"}, 403, 5500},
		{"other trust domain", cfsslKeyHex, map[string]any{"certificate_request": string(csr), "hosts": []string{"spiffe://evil.local/ns/default/sa/web"}}, 403, 5500},
		{"bare CSR without hosts", cfsslKeyHex, map[string]any{"certificate_request": string(noSAN)}, 403, 5500},
		{"subject override", cfsslKeyHex, map[string]any{"certificate_request": string(csr), "subject": map[string]any{"CN": "admin"}}, 400, 5300},
		{"extensions", cfsslKeyHex, map[string]any{"certificate_request": string(csr), "extensions": []map[string]any{{"id": []int{2, 5, 29, 19}, "critical": true, "value": "3003010101ff"}}}, 400, 5300},
		{"serial", cfsslKeyHex, map[string]any{"certificate_request": string(csr), "serial": 1}, 400, 5300},
		{"missing csr", cfsslKeyHex, map[string]any{"profile": "workload"}, 400, 400},
		{"bad signature", cfsslKeyHex, map[string]any{"certificate_request": string(pkitest.BadSignature(t, csr))}, 400, 9300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := issued(t, ts.ca)
			status, env := postEnvelope(t, hs.URL+"/api/v1/cfssl/authsign", authsignBody(t, tc.key, tc.inner))
			if status != tc.status {
				t.Fatalf("authsign(%s) = HTTP %d %+v, want %d", tc.name, status, env, tc.status)
			}
			after := issued(t, ts.ca)
			if tc.status != 200 {
				if env.Success || len(env.Errors) != 1 || env.Errors[0].Code != tc.code {
					t.Fatalf("authsign(%s) envelope = %+v, want one error with code %d", tc.name, env, tc.code)
				}
				if after != before {
					t.Fatalf("authsign(%s) issued a certificate", tc.name)
				}
				return
			}
			var res api.CFSSLSignResponse
			if err := json.Unmarshal(env.Result, &res); err != nil || !env.Success {
				t.Fatalf("authsign(%s) result %s: %v", tc.name, env.Result, err)
			}
			leaf := pkitest.ParseChain(t, []string{res.Certificate})[0]
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != web.String() || len(leaf.DNSNames) != 0 || len(leaf.Subject.Names) != 0 {
				t.Fatalf("authsign(%s) leaf SANs %v %v subject %q, want only %s", tc.name, leaf.URIs, leaf.DNSNames, leaf.Subject, web)
			}
			if after != before+1 {
				t.Fatalf("authsign(%s): issued records %d -> %d", tc.name, before, after)
			}
		})
	}
}

func TestCFSSLSignAndInfo(t *testing.T) {
	ts, hs := cfsslServer(t)
	csr, _ := pkitest.WorkloadCSR(t, web)
	// Plain /sign has no credential over plain HTTP.
	status, env := postEnvelope(t, hs.URL+"/api/v1/cfssl/sign", jsonBody(t, map[string]any{"certificate_request": string(csr)}))
	if status == 200 || env.Success {
		t.Fatalf("/sign without credentials = %d %+v, want refusal", status, env)
	}
	for _, tc := range []struct {
		name   string
		body   string
		status int
	}{
		{"empty body", "", 200},
		{"null", "null", 200},
		{"workload", `{"profile":"workload"}`, 200},
		{"unknown profile", `{"profile":"intermediate"}`, 400},
		{"garbage", `{`, 400},
	} {
		t.Run("info "+tc.name, func(t *testing.T) {
			status, env := postEnvelope(t, hs.URL+"/api/v1/cfssl/info", []byte(tc.body))
			if status != tc.status || env.Success != (tc.status == 200) {
				t.Fatalf("/info(%s) = %d %+v, want %d", tc.name, status, env, tc.status)
			}
			if status != 200 {
				return
			}
			var info api.CFSSLInfoResponse
			json.Unmarshal(env.Result, &info)
			if c := pkitest.ParseChain(t, []string{info.Certificate}); len(c) != 1 || !c[0].Equal(ts.ca.Info().Signing) || info.Expiry != "24h0m0s" {
				t.Fatalf("/info result = %+v, want the signing certificate and 24h", info)
			}
		})
	}
}

// TestCFSSLCLI drives the real cfssl CLI against the API.
func TestCFSSLCLI(t *testing.T) {
	bin, err := exec.LookPath("cfssl")
	if err != nil {
		t.Skip("cfssl CLI not installed")
	}
	ts, hs := cfsslServer(t)
	dir := t.TempDir()
	csr, _ := pkitest.WorkloadCSR(t, web)
	noSAN, _ := pkitest.CSR(t, pkitest.CSROptions{})
	os.WriteFile(filepath.Join(dir, "wl.csr"), csr, 0o600)
	os.WriteFile(filepath.Join(dir, "bare.csr"), noSAN, 0o600)
	clientCfg := map[string]any{
		"signing": map[string]any{
			"default":  map[string]any{"auth_remote": map[string]any{"remote": "ca", "auth_key": "primary"}},
			"profiles": map[string]any{"workload": map[string]any{"auth_remote": map[string]any{"remote": "ca", "auth_key": "primary"}}},
		},
		"auth_keys": map[string]any{"primary": map[string]any{"type": "standard", "key": cfsslKeyHex}},
		"remotes":   map[string]any{"ca": hs.URL},
	}
	os.WriteFile(filepath.Join(dir, "client.json"), jsonBody(t, clientCfg), 0o600)
	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(t.Context(), bin, args...)
		cmd.Dir = dir
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		t.Logf("cfssl %s\nstdout: %s\nstderr: %s", strings.Join(args, " "), out.String(), errb.String())
		return out.String(), err
	}

	out, err := run("info", "-remote", hs.URL)
	if err != nil {
		t.Fatalf("cfssl info -remote = %v", err)
	}
	var info struct {
		Certificate string `json:"certificate"`
	}
	if json.Unmarshal([]byte(out), &info) != nil || !pkitest.ParseChain(t, []string{info.Certificate})[0].Equal(ts.ca.Info().Signing) {
		t.Fatalf("cfssl info printed %q, want the signing certificate", out)
	}

	signed := func(out string) {
		t.Helper()
		var res struct {
			Cert string `json:"cert"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.Cert == "" {
			t.Fatalf("cfssl sign printed %q, want {\"cert\": ...}", out)
		}
		leaf := pkitest.ParseChain(t, []string{res.Cert})[0]
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != web.String() || len(leaf.DNSNames) != 0 {
			t.Fatalf("cfssl sign: leaf SANs %v %v, want only %s", leaf.URIs, leaf.DNSNames, web)
		}
	}
	out, err = run("sign", "-config", "client.json", "-profile", "workload", "wl.csr")
	if err != nil {
		t.Fatalf("cfssl sign -config (authsign) = %v", err)
	}
	signed(out)
	out, err = run("sign", "-remote", hs.URL, "-config", "client.json", "-profile", "workload", "-hostname", web.String(), "bare.csr")
	if err != nil {
		t.Fatalf("cfssl sign -remote -config -hostname = %v", err)
	}
	signed(out)

	before := issued(t, ts.ca)
	for _, args := range [][]string{
		{"sign", "-remote", hs.URL, "wl.csr"},                                                                 // unauthenticated /sign
		{"sign", "-remote", hs.URL, "-config", "client.json", "-profile", "ca", "wl.csr"},                     // unknown profile
		{"sign", "-config", "client.json", "-profile", "workload", "-hostname", "evil.example.com", "wl.csr"}, // widen
		{"sign", "-config", "client.json", "-profile", "workload", "-hostname", "spiffe://cluster.local/ns/kube-system/sa/admin", "wl.csr"},
	} {
		if out, err := run(args...); err == nil && strings.Contains(out, "BEGIN CERTIFICATE") {
			t.Errorf("cfssl %s issued a certificate, want a refusal", strings.Join(args, " "))
		}
	}
	if after := issued(t, ts.ca); after != before {
		t.Fatalf("refused cfssl commands issued %d certificates", after-before)
	}
	_ = pki.ProfileWorkload
}
