package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCAServerCertificateNamesTheNode: a standalone node (no fleet) whose
// certificate API listens on 127.0.0.2, not 127.0.0.1, serves a
// certificate naming that address and node.yaml's ca.server_names, so
// `meshgate token create --ca-addr 127.0.0.2:PORT` (a client that dials
// the node by an address other than 127.0.0.1, as one on another host
// does) verifies it; names the node was not given still fail.
func TestCAServerCertificateNamesTheNode(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	nodeFile := filepath.Join(root, "node.yaml")
	if err := os.WriteFile(nodeFile, []byte(`name: standalone
network: network-a
admin_addr: ""
data_dir: `+data+`
log: {format: json, level: info}
ca: {addr: "127.0.0.2:0", server_names: [ca.meshgate.test, 127.0.0.3]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, root, "agent", "--config", nodeFile)
	caAddr := readyAddr(t, agentReadyLine(t, p, 60*time.Second), "ca")
	if !strings.HasPrefix(caAddr, "127.0.0.2:") {
		t.Fatalf("the certificate API listens on %s; want 127.0.0.2", caAddr)
	}

	tokFile := filepath.Join(root, "web.token")
	if out, err := cliCmd(t, nil, "token", "create", "--namespace", "default", "--service-account", "web",
		"--ca-addr", caAddr, "--data-dir", data, "--out", tokFile).CombinedOutput(); err != nil {
		t.Fatalf("meshgate token create --ca-addr %s: %v\n%s", caAddr, err, out)
	}
	if fi, err := os.Stat(tokFile); err != nil || fi.Size() == 0 {
		t.Fatalf("token file %s: %v", tokFile, err)
	}

	roots := loadRoots(t, filepath.Join(data, "root-cert.pem"))
	verify := func(name string) error {
		c, err := tls.Dial("tcp", caAddr, &tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS12})
		if err == nil {
			c.Close()
		}
		return err
	}
	for _, name := range []string{"127.0.0.2", "ca.meshgate.test", "127.0.0.3", "istiod.istio-system.svc", "127.0.0.1", "localhost"} {
		if err := verify(name); err != nil {
			t.Errorf("the certificate API's certificate does not verify for %s: %v", name, err)
		}
	}
	for _, name := range []string{"other.meshgate.test", "127.0.0.4", "meshgate.test"} {
		var he x509.HostnameError
		if err := verify(name); !errors.As(err, &he) {
			t.Errorf("verify the certificate API for %s, a name the node was not given = %v; want a hostname error", name, err)
		}
	}
}
