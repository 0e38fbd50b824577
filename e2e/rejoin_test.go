package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fleetWrite sends one admin write to fn; every admin write of the rejoin
// tests goes through it.
func fleetWrite(t *testing.T, fn *fleetNode, method, path, body string) error {
	t.Helper()
	code, resp, err := adminRequest(method, "http://"+fn.admin+path, fn.adminToken(t), "application/json", body)
	if err != nil {
		return err
	}
	if code/100 != 2 {
		return fmt.Errorf("%s %s at %s: %d %s", method, path, fn.name, code, resp)
	}
	return nil
}

func aliveCount(ms []memberRow) int {
	n := 0
	for _, m := range ms {
		if m.Status == "alive" {
			n++
		}
	}
	return n
}

// TestFleetNodesRejoinAfterKill9 kills each node of a three-node fleet in
// turn with SIGKILL (the first one, whose join list names only itself,
// included) and starts it again: it rejoins gossip by itself, reports
// ready only once it has, and the endpoints registered with it before the
// crash are routed again everywhere.
func TestFleetNodesRejoinAfterKill9(t *testing.T) {
	nodes := newFleet(t, 3)
	for _, fn := range nodes {
		fn.start(t)
	}
	waitFor(t, 60*time.Second, "three alive members and a raft leader", func() bool {
		if aliveCount(nodes[0].members(t)) != 3 {
			return false
		}
		for _, fn := range nodes {
			if fn.role(t) == "leader" {
				return true
			}
		}
		return false
	})
	for _, fn := range nodes {
		waitReady(t, fn.p, fn.admin)
	}
	port := freePort(t)
	// newFleet's resources declare the reviews ServiceEntry on every node.
	waitFor(t, 20*time.Second, "the Gateway applied", func() bool { return nodes[0].apply(t, gatewayYAML(port)) == nil })

	ca := newTestCA(t)
	backends := make([]*backend, len(nodes))
	for i, fn := range nodes {
		backends[i] = startBackend(t, ca, fmt.Sprintf("b%d", i), serviceHost)
		reg := fmt.Sprintf(`{"service":%q,"port":9080,"addr":"127.0.0.1:%d","labels":{"version":"v1"}}`, serviceHost, backends[i].port())
		waitFor(t, 20*time.Second, "endpoint registered at "+fn.name, func() bool {
			return fleetWrite(t, fn, http.MethodPut, fmt.Sprintf("/v1/endpoints/reviews-%d", i), reg) == nil
		})
	}
	holdsAll := func(fn *fleetNode) bool {
		_, body, err := httpGet("http://" + fn.admin + "/debug/endpoints")
		if err != nil {
			return false
		}
		for _, b := range backends {
			if !strings.Contains(body, fmt.Sprintf("127.0.0.1:%d", b.port())) {
				return false
			}
		}
		return true
	}
	everyNode := func(what string, cond func(*fleetNode) bool) {
		t.Helper()
		waitFor(t, 60*time.Second, what, func() bool {
			for _, fn := range nodes {
				if !cond(fn) {
					return false
				}
			}
			return true
		})
	}
	everyNode("every node holds the three endpoints", holdsAll)
	sni := "outbound_.9080_._." + serviceHost

	for i, victim := range nodes {
		if err := victim.p.stop(t, syscall.SIGKILL, 30*time.Second); err == nil {
			t.Fatalf("%s exit after SIGKILL = nil; want killed", victim.name)
		}
		var rest []*fleetNode
		for _, fn := range nodes {
			if fn != victim {
				rest = append(rest, fn)
			}
		}
		waitFor(t, 60*time.Second, "the others see "+victim.name+" failed", func() bool {
			for _, fn := range rest {
				if aliveCount(fn.members(t)) != 2 {
					return false
				}
			}
			return true
		})
		victim.start(t)
		// /readyz must not say ready before the node is back in gossip.
		waitFor(t, 60*time.Second, victim.name+" ready again", func() bool {
			code, _, err := httpGet("http://" + victim.admin + "/readyz")
			if err != nil || code != http.StatusOK {
				return false
			}
			if n := aliveCount(victim.members(t)); n < 2 {
				t.Fatalf("round %d: %s reports ready while it sees %d alive members (itself only): not joined", i, victim.name, n)
			}
			return true
		})
		everyNode("every node lists all three alive after "+victim.name+" restarted", func(fn *fleetNode) bool { return aliveCount(fn.members(t)) == 3 })
		everyNode("every node holds "+victim.name+"'s endpoint again (kept across its restart)", holdsAll)
		addr := fmt.Sprintf("%s:%d", victim.ip, port)
		waitFor(t, 20*time.Second, victim.name+" routes the service again", func() bool {
			_, err := ask(t.Context(), addr, sni, istioALPN, ca.pool, serviceHost)
			return err == nil
		})
	}
}
