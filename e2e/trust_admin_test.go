package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAdminAttacksRefused runs the admin API attacks of issue 9 against
// `meshgate dev` from the built binary: each is refused, and nothing
// changed (no endpoint, no listener, membership the same); then the same
// write with a proper token succeeds.
func TestAdminAttacksRefused(t *testing.T) {
	dir := t.TempDir()
	auto, pass, admin, caPort := freePort(t), freePort(t), freePort(t), freePort(t)
	p := start(t, dir, "dev", "--ca-port", strconv.Itoa(caPort),
		"--auto-passthrough-port", strconv.Itoa(auto), "--passthrough-port", strconv.Itoa(pass),
		"--tcp-port", "0", "--admin-port", strconv.Itoa(admin), "--drain-timeout", "1s")
	adminAddr := fmt.Sprintf("127.0.0.1:%d", admin)
	base := "http://" + adminAddr
	waitReady(t, p, adminAddr)
	tokFile := filepath.Join(dir, ".meshgate", "operator.token")
	fi, err := os.Stat(tokFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stat %s = %v, %v; want a 0600 operator token written at first start", tokFile, fi, err)
	}
	op := operatorToken(t, tokFile)
	ca := newTestCA(t)
	be := startBackend(t, ca, "evil", serviceHost)

	// Tokens the rows use: read-only, and endpoints:write without subsets.
	mint := func(args ...string) string {
		out, err := exec.Command(meshgateBin(t), append([]string{"acl", "token", "create", "--admin", adminAddr, "--admin-token", op}, args...)...).Output()
		if err != nil {
			t.Fatalf("acl token create %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	readTok := mint("--scope", "read")
	epTok := mint("--scope", "endpoints:write", "--service", serviceHost)

	state := func() (eps, routes, members string) {
		_, eps, _ = adminRequest(http.MethodGet, base+"/debug/endpoints", "", "", "")
		_, routes, _ = adminRequest(http.MethodGet, base+"/debug/routes", "", "", "")
		_, members, _ = adminRequest(http.MethodGet, base+"/v1/members", "", "", "")
		return
	}
	eps0, routes0, members0 := state()
	if strings.Contains(eps0, "evil") {
		t.Fatalf("endpoints hold evil before any attack:\n%s", eps0)
	}
	newPort := freePort(t)
	evilReg := fmt.Sprintf(`{"service":%q,"port":9080,"addr":"127.0.0.1:%d","weight":1000,"ttl":"60s"}`, serviceHost, be.port())
	adminReg := fmt.Sprintf(`{"service":%q,"port":9080,"addr":"127.0.0.1:%d","ttl":"60s"}`, serviceHost, admin)
	subsetReg := fmt.Sprintf(`{"service":%q,"port":9080,"addr":"127.0.0.1:%d","labels":{"version":"v1"},"ttl":"60s"}`, serviceHost, be.port())
	undeclared := fmt.Sprintf(`{"service":"evil.example.com","port":443,"addr":"127.0.0.1:%d","ttl":"60s"}`, be.port())
	listenerYAML := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: evil, namespace: default}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: %d, name: tls-evil, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
`, newPort)

	for _, tc := range []struct {
		name                        string
		method, path, host, ct, tok string
		origin, fetchSite, body     string
		want                        int
		wantIn                      string // text the refusal must contain
	}{
		{name: "PUT /v1/endpoints/evil weight 1000, no token", method: "PUT", path: "/v1/endpoints/evil", body: evilReg, want: 401, wantIn: "endpoints:write"},
		{name: "PUT /v1/endpoints/evil as text/plain", method: "PUT", path: "/v1/endpoints/evil", ct: "text/plain", body: evilReg, want: 415},
		{name: "PUT /v1/endpoints/evil with a read token", method: "PUT", path: "/v1/endpoints/evil", tok: readTok, body: evilReg, want: 403, wantIn: "needs scope endpoints:write"},
		{name: "registration pointing at the admin port, no token", method: "PUT", path: "/v1/endpoints/admin", body: adminReg, want: 401},
		{name: "registration of an undeclared service", method: "PUT", path: "/v1/endpoints/undeclared", tok: epTok, body: undeclared, want: 403, wantIn: "evil.example.com"},
		{name: "registration claiming subset v1 without it allowed", method: "PUT", path: "/v1/endpoints/v1", tok: epTok, body: subsetReg, want: 403, wantIn: "subset " + serviceHost + "/v1"},
		{name: "PUT /v1/config opening a listener, no token", method: "PUT", path: "/v1/config?file=evil.yaml", ct: "application/yaml", body: listenerYAML, want: 401, wantIn: "operator"},
		{name: "PUT /v1/config with an endpoints token", method: "PUT", path: "/v1/config?file=evil.yaml", ct: "application/yaml", tok: epTok, body: listenerYAML, want: 403, wantIn: "needs scope operator"},
		{name: "POST /v1/leave Host attacker.example text/plain", method: "POST", path: "/v1/leave", host: "attacker.example", ct: "text/plain", want: 421, wantIn: "attacker.example"},
		{name: "POST /v1/leave text/plain with the operator token", method: "POST", path: "/v1/leave", ct: "text/plain", tok: op, want: 415},
		{name: "POST /v1/leave Origin http://attacker.example", method: "POST", path: "/v1/leave", origin: "http://attacker.example", tok: op, want: 403, wantIn: "cross-site"},
		{name: "POST /v1/leave Sec-Fetch-Site cross-site", method: "POST", path: "/v1/leave", fetchSite: "cross-site", tok: op, want: 403},
		{name: "POST /v1/leave no token", method: "POST", path: "/v1/leave", want: 401},
		{name: "pprof without a token", method: "GET", path: "/debug/pprof/", want: 401},
		{name: "pprof with the operator token (off by default)", method: "GET", path: "/debug/pprof/", tok: op, want: 404},
		{name: "GET /v1/keyring without a token", method: "GET", path: "/v1/keyring", want: 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
			if tc.host != "" {
				req.Host = tc.host
			}
			ct := tc.ct
			if ct == "" && tc.method != "GET" {
				ct = "application/json"
			}
			if ct != "" {
				req.Header.Set("Content-Type", ct)
			}
			if tc.tok != "" {
				req.Header.Set("Authorization", "Bearer "+tc.tok)
			}
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			if tc.fetchSite != "" {
				req.Header.Set("Sec-Fetch-Site", tc.fetchSite)
			}
			resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tc.method, tc.path, err)
			}
			var body strings.Builder
			buf := make([]byte, 4096)
			n, _ := resp.Body.Read(buf)
			body.Write(buf[:n])
			resp.Body.Close()
			if resp.StatusCode != tc.want || !strings.Contains(body.String(), tc.wantIn) {
				t.Fatalf("%s %s = %d %s; want %d naming %q", tc.method, tc.path, resp.StatusCode, body.String(), tc.want, tc.wantIn)
			}
			t.Logf("refused: %d %s", resp.StatusCode, strings.TrimSpace(body.String()))
		})
	}

	// Nothing changed.
	eps1, routes1, members1 := state()
	if eps1 != eps0 {
		t.Errorf("endpoints changed after the refused attacks:\nbefore %s\nafter %s", eps0, eps1)
	}
	if routes1 != routes0 || strings.Contains(routes1, strconv.Itoa(newPort)) {
		t.Errorf("routes changed after the refused attacks (new listener :%d?):\n%s", newPort, routes1)
	}
	if members1 != members0 {
		t.Errorf("membership changed after the refused attacks:\nbefore %s\nafter %s", members0, members1)
	}

	// The same writes with proper tokens succeed.
	if code, body, err := adminRequest(http.MethodPut, base+"/v1/endpoints/evil", op, "", evilReg); err != nil || code != 200 {
		t.Fatalf("PUT /v1/endpoints/evil with the operator token = %d %s %v; want 200", code, body, err)
	}
	waitFor(t, 10*time.Second, "the operator's registration in /debug/endpoints", func() bool {
		_, eps, _ := adminRequest(http.MethodGet, base+"/debug/endpoints", "", "", "")
		return strings.Contains(eps, fmt.Sprintf("127.0.0.1:%d", be.port()))
	})
	if code, body, err := adminRequest(http.MethodDelete, base+"/v1/endpoints/evil", op, "-", ""); err != nil || code/100 != 2 {
		t.Fatalf("DELETE /v1/endpoints/evil (empty body, token, no Content-Type) = %d %s %v; want 2xx", code, body, err)
	}
	subTok := mint("--scope", "endpoints:write", "--subset", serviceHost+"/v1")
	if code, body, err := adminRequest(http.MethodPut, base+"/v1/endpoints/v1", subTok, "", subsetReg); err != nil || code != 200 {
		t.Fatalf("PUT /v1/endpoints/v1 with a token allowing subset v1 = %d %s %v; want 200", code, body, err)
	}
	if code, body, err := adminRequest(http.MethodPut, base+"/v1/config?file=evil.yaml", op, "application/yaml", listenerYAML); err != nil || code != 200 {
		t.Fatalf("PUT /v1/config with the operator token = %d %s %v; want 200", code, body, err)
	}
	waitFor(t, 10*time.Second, "the applied listener in /debug/routes", func() bool {
		_, routes, _ := adminRequest(http.MethodGet, base+"/debug/routes", "", "", "")
		return strings.Contains(routes, ":"+strconv.Itoa(newPort))
	})
	// A revoked token stops working at once.
	var ts []struct{ ID string }
	_, body, _ := adminRequest(http.MethodGet, base+"/v1/acl/tokens", op, "", "")
	if err := json.Unmarshal([]byte(body), &ts); err != nil || len(ts) != 4 {
		t.Fatalf("GET /v1/acl/tokens = %s (%v); want the bootstrap token and three minted", body, err)
	}
	subID := strings.Split(strings.TrimPrefix(subTok, "mgt."), ".")[0]
	if out, err := exec.Command(meshgateBin(t), "acl", "token", "revoke", subID, "--admin", adminAddr, "--admin-token", op).CombinedOutput(); err != nil {
		t.Fatalf("acl token revoke: %v\n%s", err, out)
	}
	if code, body, _ := adminRequest(http.MethodPut, base+"/v1/endpoints/v1", subTok, "", subsetReg); code != 401 {
		t.Fatalf("PUT with a revoked token = %d %s; want 401", code, body)
	}
	// The CLI names the missing credential in one sentence.
	cmd := exec.Command(meshgateBin(t), "leave", "--admin", adminAddr, "--data-dir", t.TempDir())
	cmd.Env = append(os.Environ(), "MESHGATE_ADMIN_TOKEN=", "MESHGATE_ADMIN_TOKEN_FILE=")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--admin-token") || !strings.Contains(string(out), "operator") {
		t.Fatalf("meshgate leave without a token = %v\n%s\nwant a refusal naming the operator scope and --admin-token", err, out)
	}
	// Last, leave with the operator token is accepted.
	if code, body, err := adminRequest(http.MethodPost, base+"/v1/leave", op, "", ""); err != nil || code != 200 {
		t.Fatalf("POST /v1/leave with the operator token = %d %s %v; want 200", code, body, err)
	}
}
