package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// enrolledNode is one node of a fleet whose certificates come from the
// built-in CA: no certificate files, only a join token.
type enrolledNode struct {
	name, ip, dir, data, admin, gossip, caAddr, nodeFile string
	p                                                    *proc
}

func newEnrolledNode(t *testing.T, root, name, ip string) *enrolledNode {
	t.Helper()
	n := &enrolledNode{name: name, ip: ip, dir: filepath.Join(root, name)}
	n.data = filepath.Join(n.dir, "data")
	if err := os.MkdirAll(n.data, 0o700); err != nil {
		t.Fatal(err)
	}
	n.admin = fmt.Sprintf("%s:%d", ip, freePort(t))
	n.gossip = fmt.Sprintf("%s:%d", ip, freePort(t))
	n.caAddr = fmt.Sprintf("%s:%d", ip, freePort(t))
	n.nodeFile = filepath.Join(n.dir, "node.yaml")
	return n
}

// write writes node.yaml with the given fleet and tls lines.
func (n *enrolledNode) write(t *testing.T, fleet, tls string) {
	t.Helper()
	_, gport, _ := strings.Cut(n.gossip, ":")
	yaml := fmt.Sprintf(`name: %s
network: network-a
admin_addr: %s
bind_addr: %s
data_dir: %s
drain_timeout: 2s
log: {format: json, level: info}
%s
gossip: {bind: %s, port: %s}
raft: {bind: %s, port: %d}
ca: {addr: %s}
%s
`, n.name, n.admin, n.ip, n.data, fleet, n.ip, gport, n.ip, freePort(t), n.caAddr, tls)
	if err := os.WriteFile(n.nodeFile, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (n *enrolledNode) start(t *testing.T) {
	t.Helper()
	n.p = start(t, n.dir, "agent", "--config", n.nodeFile)
}

func (n *enrolledNode) fleet() *fleetNode {
	return &fleetNode{name: n.name, admin: n.admin, dir: n.dir}
}

// nodeLeafURI reads the URI SAN of the node certificate kept in data_dir.
func nodeLeafURI(t *testing.T, data string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(data, "node", "cert-chain.pem"))
	if err != nil {
		t.Fatalf("node certificate: %v", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("node certificate %s holds no PEM", filepath.Join(data, "node", "cert-chain.pem"))
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil || len(c.URIs) != 1 {
		t.Fatalf("node certificate: %v, %d URI SANs; want one", err, len(c.URIs))
	}
	return c.URIs[0].String()
}

// TestFleetNodesEnrollWithTokens starts a fleet whose only certificate
// files are the ones meshgate makes: the first node issues its own node
// identity from its CA; two more join with one-use tokens (one of them
// given the KEK by hand, the other asks the fleet for it); raft between
// them runs on those identities. A node holding a valid mesh certificate of
// another identity (a workload's) never gets into raft, and a token for
// the wrong identity is refused at start with a clear error.
func TestFleetNodesEnrollWithTokens(t *testing.T) {
	root := t.TempDir()
	gw1 := newEnrolledNode(t, root, "gw-1", "127.0.0.1")
	gw2 := newEnrolledNode(t, root, "gw-2", "127.0.0.2")
	gw3 := newEnrolledNode(t, root, "gw-3", "127.0.0.3")
	rogue := newEnrolledNode(t, root, "rogue", "127.0.0.4")
	const gatewayID = "spiffe://cluster.local/ns/meshgate-system/sa/meshgate"

	gw1.write(t, "bootstrap: true", "")
	gw1.start(t)
	waitReady(t, gw1.p, gw1.admin)
	if got := nodeLeafURI(t, gw1.data); got != gatewayID {
		t.Fatalf("first node's own certificate identity = %q; want %q", got, gatewayID)
	}
	rootCert := filepath.Join(gw1.data, "root-cert.pem")
	out, err := exec.Command("openssl", "verify", "-CAfile", rootCert, filepath.Join(gw1.data, "node", "cert-chain.pem")).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl verify of the first node's certificate: %v\n%s", err, out)
	}

	bin := meshgateBin(t)
	token := func(ns, sa string) string {
		t.Helper()
		cmd := exec.Command(bin, "token", "create", "--namespace", ns, "--service-account", sa, "--uses", "1",
			"--ca-addr", gw1.caAddr, "--data-dir", gw1.data)
		cmd.Stderr = io.Discard
		o, err := cmd.Output()
		if err != nil {
			t.Fatalf("token create %s/%s: %v", ns, sa, err)
		}
		f := filepath.Join(root, ns+"-"+sa+fmt.Sprint(time.Now().UnixNano())+".token")
		if err := os.WriteFile(f, o, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	join := fmt.Sprintf("join: [%s]", gw1.gossip)
	enroll := func(tokFile string) string {
		return fmt.Sprintf("tls: {token_file: %s, ca_addr: %s, ca_file: %s}", tokFile, gw1.caAddr, rootCert)
	}

	// A token for a workload identity cannot make a gateway node.
	bad := newEnrolledNode(t, root, "bad", "127.0.0.5")
	bad.write(t, join, enroll(token("default", "web")))
	bad.start(t)
	select {
	case <-bad.p.done:
	case <-time.After(60 * time.Second):
		t.Fatal("a node enrolling with a token for another identity kept running; want it to exit")
	}
	if bad.p.err == nil || !strings.Contains(bad.p.out.String(), "meshgate-system") {
		t.Fatalf("node with a token for default/web: exit %v; want a failure naming the identity asked for\n%s", bad.p.err, bad.p.out.String())
	}

	kek, err := os.ReadFile(filepath.Join(gw1.data, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gw2.data, "kek"), kek, 0o600); err != nil {
		t.Fatal(err)
	}
	gw2.write(t, join, enroll(token("meshgate-system", "meshgate")))
	gw3.write(t, join, enroll(token("meshgate-system", "meshgate")))
	gw2.start(t)
	gw3.start(t)
	waitReady(t, gw2.p, gw2.admin)
	waitReady(t, gw3.p, gw3.admin)
	for _, n := range []*enrolledNode{gw2, gw3} {
		if got := nodeLeafURI(t, n.data); got != gatewayID {
			t.Fatalf("%s enrolled as %q; want %q", n.name, got, gatewayID)
		}
	}
	waitFor(t, 60*time.Second, "three raft members", func() bool {
		roles := 0
		for _, m := range gw1.fleet().members(t) {
			if m.RaftRole != "" && m.RaftRole != "-" && m.RaftRole != "none" {
				roles++
			}
		}
		return roles == 3
	})
	// A write at the node without a CA is forwarded over raft's mTLS to
	// the leader and reaches every node.
	port := freePort(t)
	waitFor(t, 30*time.Second, "apply at gw-3 accepted", func() bool { return gw3.fleet().apply(t, gatewayYAML(port)) == nil })
	for _, n := range []*enrolledNode{gw1, gw2, gw3} {
		waitFor(t, 20*time.Second, n.name+" has the Gateway", func() bool { return n.fleet().has(t, "Gateway", "eastwest") })
	}
	// gw-2 was given the KEK; gw-3 asked the fleet for it (sealed to its
	// node certificate through the replicated store). Both run the CA.
	kek3, err := os.ReadFile(filepath.Join(gw3.data, "kek"))
	if err != nil || string(kek3) != string(kek) {
		t.Fatalf("gw-3's KEK = %v (same as gw-1's: %v); want the fleet's KEK granted to it", err, string(kek3) == string(kek))
	}
	for _, n := range []*enrolledNode{gw2, gw3} {
		if o, err := exec.Command("openssl", "s_client", "-connect", n.caAddr, "-CAfile", rootCert, "-verify_return_error", "-brief").CombinedOutput(); err != nil {
			t.Fatalf("%s's certificate API does not verify against the mesh root: %v\n%s", n.name, err, o)
		}
	}

	// A node with a valid mesh certificate of a workload identity joins
	// gossip but is refused by raft on both sides.
	// It is handed the fleet's gossip key out of band (the certificate API
	// refuses it the key, see TestGossipKeyDeliveredOverMTLS), so it does
	// get into gossip and raft's own check is what stops it.
	rogue.write(t, join, enroll(token("default", "web"))+"\n# identity of a workload, not a gateway")
	rogueYAML := strings.Replace(readFile(t, rogue.nodeFile), "tls: {", "tls: {identity: spiffe://cluster.local/ns/default/sa/web, ", 1)
	rogueYAML = strings.Replace(rogueYAML, "gossip: {", "gossip: {keyring_file: "+filepath.Join(gw1.data, "gossip.keyring")+", ", 1)
	if err := os.WriteFile(rogue.nodeFile, []byte(rogueYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	rogue.start(t)
	waitFor(t, 30*time.Second, "the raft leader refusing to add the workload identity", func() bool {
		for _, n := range []*enrolledNode{gw1, gw2, gw3} {
			out := n.p.out.String()
			if strings.Contains(out, "not adding a member") && strings.Contains(out, "spiffe://cluster.local/ns/default/sa/web refused") {
				return true
			}
		}
		return false
	})
	// Its store never syncs, so it serves its admin API only after the
	// bounded wait for raft.
	waitFor(t, 60*time.Second, "the rogue node's admin API", func() bool {
		code, _, err := httpGet("http://" + rogue.admin + "/healthz")
		return err == nil && code == 200
	})
	rogueGW := strings.Replace(gatewayYAML(freePort(t)), "name: eastwest", "name: from-rogue", 1)
	if err := rogue.fleet().apply(t, rogueGW); err == nil {
		t.Fatal("apply at the node with a workload identity succeeded; want it refused (no raft, forwarding refused)")
	}
	if gw1.fleet().has(t, "Gateway", "from-rogue") {
		t.Fatal("a write made at the node with a workload identity reached the fleet")
	}
	if _, err := os.Stat(filepath.Join(rogue.data, "kek")); err == nil {
		t.Fatal("the node with a workload identity obtained the fleet's KEK")
	}
	for _, m := range gw1.fleet().members(t) {
		if m.Name == "rogue" && m.RaftRole != "" && m.RaftRole != "-" && m.RaftRole != "none" {
			t.Fatalf("node with a workload identity has raft role %q; want none", m.RaftRole)
		}
	}

	// gw-3 restarts from its kept certificate; its one-use token is spent.
	if err := gw3.p.stop(t, syscall.SIGTERM, 30*time.Second); err != nil {
		t.Fatalf("gw-3 exit after SIGTERM = %v, want 0", err)
	}
	gw3.start(t)
	waitReady(t, gw3.p, gw3.admin)
	if !strings.Contains(gw3.p.out.String(), "node certificate loaded") {
		t.Fatalf("restarted gw-3 did not load its kept certificate:\n%s", gw3.p.out.String())
	}
	waitFor(t, 30*time.Second, "apply at restarted gw-3 accepted", func() bool { return gw3.fleet().apply(t, gatewayYAML(port)) == nil })
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
