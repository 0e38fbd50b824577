package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// localKeys is the gossip keyring a node is running with.
func localKeys(t testing.TB, fn *fleetNode) []string {
	_, body, err := adminRequest(http.MethodGet, "http://"+fn.admin+"/v1/keyring", fn.adminToken(t), "", "")
	if err != nil {
		return nil
	}
	var res struct {
		Local []string `json:"local"`
	}
	if json.Unmarshal([]byte(body), &res) != nil {
		return nil
	}
	return res.Local
}

// TestFleetKeyringRotation rotates the gossip key of a whole fleet with
// three commands at different nodes (install, use, remove), as an operator
// of Consul would, and checks that every node follows each step. A node
// that was down during the rotation starts with only the retired key in
// its keyring file, catches up over raft (mutual TLS, no gossip key
// needed) and gossips again.
func TestFleetKeyringRotation(t *testing.T) {
	nodes := newFleet(t, 3)
	oldKey := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x11}, 32))
	newKey := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x22}, 32))
	gossipLine := regexp.MustCompile(`gossip: \{bind: ([^,]+), port: ([0-9]+)\}`)
	for _, fn := range nodes {
		kf := filepath.Join(fn.dir, "gossip.keys")
		if err := os.WriteFile(kf, []byte(oldKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(fn.nodeFile)
		if err != nil {
			t.Fatal(err)
		}
		patched := gossipLine.ReplaceAllString(string(b), `gossip: {bind: $1, port: $2, keyring_file: `+kf+`}`)
		if patched == string(b) {
			t.Fatal("node.yaml has no gossip line to add the keyring file to")
		}
		if err := os.WriteFile(fn.nodeFile, []byte(patched), 0o644); err != nil {
			t.Fatal(err)
		}
		fn.start(t)
	}
	allAlive := func(from *fleetNode) bool {
		ms := from.members(t)
		alive := 0
		for _, m := range ms {
			if m.Status == "alive" {
				alive++
			}
		}
		return alive == len(nodes)
	}
	waitFor(t, 60*time.Second, "three alive members and a raft leader", func() bool {
		return allAlive(nodes[0]) && slices.ContainsFunc(nodes, func(fn *fleetNode) bool { return fn.role(t) == "leader" })
	})
	for _, fn := range nodes {
		// A node serves its admin API once its replicated store synced.
		waitReady(t, fn.p, fn.admin)
	}
	keyring := func(at *fleetNode, args ...string) {
		t.Helper()
		out, err := exec.Command(meshgateBin(t), append([]string{"keyring"}, append(args, "--admin", at.admin, "--admin-token", at.adminToken(t))...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("meshgate keyring %v at %s: %v\n%s", args, at.name, err, out)
		}
	}
	everywhere := func(what string, nodes []*fleetNode, want []string) {
		t.Helper()
		waitFor(t, 30*time.Second, what, func() bool {
			for _, fn := range nodes {
				if !slices.Equal(localKeys(t, fn), want) {
					return false
				}
			}
			return true
		})
	}

	keyring(nodes[1], "install", newKey)
	everywhere("the new key installed on every node", nodes, []string{oldKey, newKey})
	keyring(nodes[2], "use", newKey)
	everywhere("the new key primary on every node", nodes, []string{newKey, oldKey})

	// gw-1 crashes (so it stays a raft voter); the old key is retired
	// while it is away. (A node that left gracefully is out of raft too
	// and, like a Consul agent, needs its keyring file updated.)
	if err := nodes[0].p.stop(t, syscall.SIGKILL, 30*time.Second); err == nil {
		t.Fatal("gw-1 exit after SIGKILL = nil; want killed")
	}
	keyring(nodes[1], "remove", oldKey)
	everywhere("the old key removed on the running nodes", nodes[1:], []string{newKey})
	out, err := exec.Command(meshgateBin(t), "keyring", "remove", newKey, "--admin", nodes[1].admin, "--admin-token", nodes[1].adminToken(t)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "primary") {
		t.Fatalf("keyring remove of the primary: %v\n%s; want a refusal naming the primary key", err, out)
	}

	nodes[0].start(t)
	everywhere("gw-1 catching up on the keyring over raft", nodes[:1], []string{newKey})
	waitFor(t, 60*time.Second, "gw-1 alive in gossip again, seen from gw-2", func() bool { return allAlive(nodes[1]) })
}
