package cluster_test

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/cluster"
	"github.com/meshgate/meshgate/cluster/clustertest"
)

// TestFleetKeyringSeededKeptAndFollowed: the first node starts with a key
// it made (SeedKeyring) and publishes it as the fleet keyring; the others
// start with the key as a joining node receives it. A keyring change at
// one node reaches every node and every node's kept file (0600), and a
// node restarted with no key given reads its kept file and gossips again.
func TestFleetKeyringSeededKeptAndFollowed(t *testing.T) {
	k1 := bytes.Repeat([]byte{0x31}, 32)
	k2 := bytes.Repeat([]byte{0x32}, 32)
	s1, s2 := base64.StdEncoding.EncodeToString(k1), base64.StdEncoding.EncodeToString(k2)
	kept := t.TempDir()
	restarting := false
	c := clustertest.New(t, 3, clustertest.Options{Bootstrap: true, DataDir: true, Modify: func(i int, cfg *cluster.Config) {
		cfg.KeyringFile = filepath.Join(kept, cfg.NodeName, "gossip.keyring")
		if !restarting {
			cfg.Gossip.Keys = [][]byte{k1}
			cfg.SeedKeyring = i == 0
		}
	}})
	c.WaitLeader(t)
	c.WaitAll(t, "the first node's key stored as the fleet keyring", func(n *cluster.Node) bool {
		fk, idx, err := n.FleetKeys()
		return err == nil && idx != 0 && slices.Equal(fk.Keys, []string{s1})
	})
	if _, err := c.Node(1).ChangeKeyring(t.Context(), cluster.KeyringInstall, k2); err != nil {
		t.Fatalf("ChangeKeyring(install) at node-1 = %v", err)
	}
	want := []string{s1, s2}
	c.WaitAll(t, "every node running both keys and keeping them", func(n *cluster.Node) bool {
		b, err := os.ReadFile(filepath.Join(kept, n.Name(), "gossip.keyring"))
		return err == nil && slices.Equal(n.LocalKeys(), want) && strings.Fields(string(b))[0] == s1 && len(strings.Fields(string(b))) == 2
	})
	for i := range 3 {
		st, err := os.Stat(filepath.Join(kept, c.Node(i).Name(), "gossip.keyring"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("node-%d kept keyring: %v, mode %v; want 0600", i, err, st.Mode().Perm())
		}
	}

	c.Kill(2)
	restarting = true
	n2 := c.Start(2)
	if got := n2.LocalKeys(); !slices.Equal(got, want) {
		t.Fatalf("node-2 restarted without keys given runs %q; want the kept %q", got, want)
	}
	clustertest.WaitFor(t, "node-2 alive in gossip at node-0", func() bool {
		for _, m := range c.Node(0).Catalog().Members() {
			if m.Name == "node-2" && m.Status == "alive" {
				return true
			}
		}
		return false
	})
}

// TestSeedKeyringDoesNotOverwrite: a node with SeedKeyring joining a
// fleet that already stores a keyring leaves it alone.
func TestSeedKeyringDoesNotOverwrite(t *testing.T) {
	k1 := bytes.Repeat([]byte{0x41}, 16)
	c := clustertest.New(t, 1, clustertest.Options{Bootstrap: true, Modify: func(i int, cfg *cluster.Config) {
		cfg.Gossip.Keys = [][]byte{k1}
		cfg.SeedKeyring = true
	}})
	n := c.WaitLeader(t)
	c.WaitAll(t, "the keyring seeded", func(n *cluster.Node) bool { _, idx, _ := n.FleetKeys(); return idx != 0 })
	k2 := bytes.Repeat([]byte{0x42}, 16)
	if _, err := n.ChangeKeyring(t.Context(), cluster.KeyringInstall, k2); err != nil {
		t.Fatal(err)
	}
	if _, err := n.ChangeKeyring(t.Context(), cluster.KeyringUse, k2); err != nil {
		t.Fatal(err)
	}
	fk, _, err := n.FleetKeys()
	want := []string{base64.StdEncoding.EncodeToString(k2), base64.StdEncoding.EncodeToString(k1)}
	if err != nil || !slices.Equal(fk.Keys, want) {
		t.Fatalf("FleetKeys after install+use = %q, %v; want %q (the seed never rewrites it)", fk.Keys, err, want)
	}
}
