package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
