package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// bridgeNets is the bridge tests' topology: five network namespaces and no
// forwarding anywhere, so a packet only reaches an address on a link its
// namespace has.
//
//	netA (client .76.10) ─ gwA (.76.1 | .78.1) ─ wan (a bridge) ─ gwB (.78.2 .78.3 | .79.1) ─ netB (backend .79.10)
//
// The gateways are the only processes with a leg in the wan; the client in
// netA has no route to netB or to the wan.
type bridgeNets struct {
	netA, gwA, wan, gwB, netB netns
}

// Addresses of the bridge topology (10.76/16 is netA's LAN, .78 the wan,
// .79 netB's LAN).
const (
	bnClientIP  = "10.76.0.10"
	bnGwALanIP  = "10.76.0.1"
	bnGwAWanIP  = "10.78.0.1"
	bnGwB1WanIP = "10.78.0.2"
	bnGwB2WanIP = "10.78.0.3"
	bnGwBLanIP  = "10.79.0.1"
	bnBackendIP = "10.79.0.10"
)

// newBridgeNets makes the topology, or skips where the machine cannot
// (not root, no iproute2). Everything is removed when the test ends.
func newBridgeNets(t *testing.T) *bridgeNets {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2 not installed")
	}
	id := os.Getpid() % 100000
	name := func(s string) netns { return netns{name: fmt.Sprintf("mg%s-%d", s, id)} }
	n := &bridgeNets{netA: name("na"), gwA: name("ga"), wan: name("wan"), gwB: name("gb"), netB: name("nb")}
	n.netA.ip, n.gwA.ip, n.gwB.ip, n.netB.ip = bnClientIP, bnGwAWanIP, bnGwB1WanIP, bnBackendIP
	sh := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	for i, ns := range []netns{n.netA, n.gwA, n.wan, n.gwB, n.netB} {
		if err := sh("netns", "add", ns.name); err != nil {
			if i == 0 {
				t.Skipf("cannot create a network namespace here: %v", err)
			}
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sh("netns", "del", ns.name) })
		if err := sh("-n", ns.name, "link", "set", "lo", "up"); err != nil {
			t.Fatal(err)
		}
	}
	// link joins namespaces x and y with a veth pair named ifx/ify.
	link := func(x, y netns, ifx, ify string) {
		steps := [][]string{
			{"link", "add", ifx, "type", "veth", "peer", "name", ify},
			{"link", "set", ifx, "netns", x.name},
			{"link", "set", ify, "netns", y.name},
			{"-n", x.name, "link", "set", ifx, "up"},
			{"-n", y.name, "link", "set", ify, "up"},
		}
		for _, s := range steps {
			if err := sh(s...); err != nil {
				t.Fatal(err)
			}
		}
	}
	sfx := fmt.Sprint(id)
	link(n.netA, n.gwA, "mgac"+sfx, "mgag"+sfx)
	link(n.gwA, n.wan, "mgaw"+sfx, "mgwa"+sfx)
	link(n.gwB, n.wan, "mgbw"+sfx, "mgwb"+sfx)
	link(n.gwB, n.netB, "mgbl"+sfx, "mgbn"+sfx)
	for _, s := range [][]string{
		{"-n", n.wan.name, "link", "add", "br0", "type", "bridge"},
		{"-n", n.wan.name, "link", "set", "mgwa" + sfx, "master", "br0"},
		{"-n", n.wan.name, "link", "set", "mgwb" + sfx, "master", "br0"},
		{"-n", n.wan.name, "link", "set", "br0", "up"},
		{"-n", n.netA.name, "addr", "add", bnClientIP + "/24", "dev", "mgac" + sfx},
		{"-n", n.gwA.name, "addr", "add", bnGwALanIP + "/24", "dev", "mgag" + sfx},
		{"-n", n.gwA.name, "addr", "add", bnGwAWanIP + "/24", "dev", "mgaw" + sfx},
		{"-n", n.gwB.name, "addr", "add", bnGwB1WanIP + "/24", "dev", "mgbw" + sfx},
		{"-n", n.gwB.name, "addr", "add", bnGwB2WanIP + "/24", "dev", "mgbw" + sfx},
		{"-n", n.gwB.name, "addr", "add", bnGwBLanIP + "/24", "dev", "mgbl" + sfx},
		{"-n", n.netB.name, "addr", "add", bnBackendIP + "/24", "dev", "mgbn" + sfx},
	} {
		if err := sh(s...); err != nil {
			t.Fatal(err)
		}
	}
	return n
}
