package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// bridgeGateway is one gateway process of the bridge topology.
type bridgeGateway struct {
	name, network, ip, adminIP, bind string
	ns                               netns
	dir                              string
	p                                *proc
}

// bridgeFleet is one fleet of three gateways across the bridge topology:
// gw-a in network A (a leg in netA and one in the wan), gw-b1 and gw-b2
// in network B (the wan and netB). Their node certificates carry the
// fleet identity nodeSPIFFE from ca.
type bridgeFleet struct {
	nets         *bridgeNets
	ca           *testCA
	root, caFile string
	gws          []*bridgeGateway // gw-a, gw-b1, gw-b2
}

// startBridgeFleet makes the topology and starts the three gateways with
// resources (every gateway gets the same) at log level level.
func startBridgeFleet(t *testing.T, resources, level string) *bridgeFleet {
	t.Helper()
	f := &bridgeFleet{nets: newBridgeNets(t), ca: newTestCA(t), root: t.TempDir()}
	f.caFile = filepath.Join(f.root, "ca.pem")
	if err := os.WriteFile(f.caFile, f.ca.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	f.gws = []*bridgeGateway{
		{name: "gw-a", network: "network-a", ip: bnGwAWanIP, adminIP: bnGwALanIP, bind: "0.0.0.0", ns: f.nets.gwA},
		{name: "gw-b1", network: "network-b", ip: bnGwB1WanIP, adminIP: bnGwB1WanIP, bind: bnGwB1WanIP, ns: f.nets.gwB},
		{name: "gw-b2", network: "network-b", ip: bnGwB2WanIP, adminIP: bnGwB2WanIP, bind: bnGwB2WanIP, ns: f.nets.gwB},
	}
	var join []string
	for _, g := range f.gws {
		join = append(join, g.ip+":7946")
	}
	for _, g := range f.gws {
		g.dir = filepath.Join(f.root, g.name)
		if err := os.MkdirAll(filepath.Join(g.dir, "resources"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(g.dir, "resources", "bridge.yaml"), []byte(resources), 0o644); err != nil {
			t.Fatal(err)
		}
		cert, key := spiffeCert(t, f.ca, g.dir, "node", nodeSPIFFE, g.ip, g.adminIP)
		node := fmt.Sprintf(`name: %s
network: %s
labels: {istio: eastwestgateway}
admin_addr: %s:15000
bind_addr: %s
gateway_addr: %s:15443
bridge: {addr: "%s:15008"}
data_dir: %s
drain_timeout: 1s
log: {format: json, level: %s}
bootstrap_expect: 3
join: [%s]
gossip: {bind: %s, port: 7946}
raft: {bind: %s, port: 8300}
ca: {addr: ""}
tls: {cert_file: %s, key_file: %s, ca_file: %s, peer_identities: ["%s"]}
`, g.name, g.network, g.adminIP, g.bind, g.ip, g.ip, filepath.Join(g.dir, "data"), level, strings.Join(join, ", "), g.ip, g.ip, cert, key, f.caFile, nodeSPIFFE)
		if err := os.WriteFile(filepath.Join(g.dir, "node.yaml"), []byte(node), 0o644); err != nil {
			t.Fatal(err)
		}
		g.p = startCmd(t, g.dir, g.ns.cmd(meshgateBin(t), "agent", "--config", filepath.Join(g.dir, "node.yaml"), "--resources", filepath.Join(g.dir, "resources")))
	}
	return f
}

// token is the fleet's operator token.
func (f *bridgeFleet) token(t *testing.T) string {
	return operatorToken(t, filepath.Join(f.root, "*", "data", "operator.token"))
}

// admin runs curl against a gateway's admin API from its own namespace,
// with the operator token.
func (f *bridgeFleet) admin(t *testing.T, g *bridgeGateway, args ...string) (string, error) {
	return g.ns.run(t, "curl", append([]string{"-s", "--max-time", "5", "-H", "Authorization: Bearer " + f.token(t), "-H", "Content-Type: application/json"}, args...)...)
}

func (f *bridgeFleet) adminURL(g *bridgeGateway, path string) string {
	return "http://" + g.adminIP + ":15000" + path
}

// waitReady waits for three alive members, a raft leader and every node
// ready.
func (f *bridgeFleet) waitReady(t *testing.T) {
	t.Helper()
	waitFor(t, 90*time.Second, "three alive members, a raft leader, every node ready", func() bool {
		out, err := f.admin(t, f.gws[0], f.adminURL(f.gws[0], "/v1/members"))
		if err != nil || strings.Count(out, `"alive"`) != 3 || !strings.Contains(out, `"leader"`) {
			return false
		}
		for _, g := range f.gws {
			if _, err := f.admin(t, g, "-f", f.adminURL(g, "/readyz")); err != nil {
				return false
			}
		}
		return true
	})
}
