package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestValidateNamesEveryError(t *testing.T) {
	dir := t.TempDir()
	bad := `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ok-gw}
spec:
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bad-gw}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    tls: {mode: SIMPLE}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bad-dr}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: NOT_A_POLICY}}
`
	f := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(f, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(meshgateBin(t), "validate", "-f", f).CombinedOutput()
	if err == nil {
		t.Fatalf("validate -f %s succeeded, want a non-zero exit:\n%s", f, out)
	}
	for _, want := range []string{"bad.yaml", "document 2", "bad-gw", "tls.mode", "SIMPLE", "document 3", "bad-dr", "loadBalancer"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("validate output lacks %q:\n%s", want, out)
		}
	}

	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte(strings.SplitN(bad, "---", 2)[0]), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(meshgateBin(t), "validate", "-f", good).CombinedOutput(); err != nil {
		t.Fatalf("validate -f %s = %v, want success:\n%s", good, err, out)
	}
}

// An agent whose bind_addr template renders no address refuses to start and
// names the template, instead of binding every address.
func TestAgentRefusesEmptyBindTemplate(t *testing.T) {
	dir := t.TempDir()
	tmpl := `{{ GetAllInterfaces | include "name" "no-such-interface0" | attr "address" }}`
	node := "name: gw\nnetwork: net-a\nadmin_addr: 127.0.0.1:0\ndata_dir: " + filepath.Join(dir, "data") +
		"\nbind_addr: '" + tmpl + "'\n"
	nf := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(nf, []byte(node), 0o644); err != nil {
		t.Fatal(err)
	}
	res := filepath.Join(dir, "resources")
	if err := os.MkdirAll(res, 0o755); err != nil {
		t.Fatal(err)
	}
	// Bounded: an agent that wrongly starts is killed after a minute.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, meshgateBin(t), "agent", "--config", nf, "--resources", res).CombinedOutput()
	if err == nil {
		t.Fatalf("agent with an empty bind_addr template exited 0, want a refusal:\n%s", out)
	}
	for _, want := range []string{"bind_addr", "no-such-interface0", "rendered no address"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("agent output lacks %q:\n%s", want, out)
		}
	}
}
