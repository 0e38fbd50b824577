package catalog_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/cluster/clustertest"
)

// fastConfig returns gossip timers fit for tests on a busy machine.
func fastConfig(t testing.TB, name, network string) catalog.Config {
	cfg := catalog.DefaultConfig()
	cfg.Name = name
	cfg.Network = network
	cfg.GossipInterval = 20 * time.Millisecond
	cfg.ProbeInterval = 200 * time.Millisecond
	cfg.ProbeTimeout = 100 * time.Millisecond
	cfg.PushPullInterval = 2 * time.Second
	cfg.TCPTimeout = 2 * time.Second
	cfg.SyncInterval = 100 * time.Millisecond
	cfg.MaintenanceInterval = 20 * time.Millisecond
	cfg.Unsigned = true // trust_test.go runs the signed protocol
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	return cfg
}

type testCluster struct {
	net   *clustertest.GossipNetwork
	nodes []*catalog.Catalog
	trs   []*clustertest.GossipTransport
}

// start creates n catalogs on an in-memory network and joins them.
func start(t *testing.T, n int, mod func(i int, c *catalog.Config)) *testCluster {
	t.Helper()
	tc := &testCluster{net: &clustertest.GossipNetwork{}}
	for i := range n {
		name := fmt.Sprintf("node-%d", i)
		cfg := fastConfig(t, name, "net-a")
		tr := tc.net.NewTransport(name)
		cfg.Transport = tr
		if mod != nil {
			mod(i, &cfg)
		}
		c, err := catalog.New(cfg)
		if err != nil {
			t.Fatalf("catalog.New(%s) error = %v", name, err)
		}
		t.Cleanup(func() { c.Close() })
		tc.nodes = append(tc.nodes, c)
		tc.trs = append(tc.trs, tr)
	}
	for i := 1; i < n; i++ {
		if _, err := tc.nodes[i].Join(t.Context(), []string{tc.trs[0].Addr()}); err != nil {
			t.Fatalf("Join(node-%d -> node-0) error = %v", i, err)
		}
	}
	waitFor(t, "every node sees every member alive", func() bool {
		for _, c := range tc.nodes {
			if alive(c) != n {
				return false
			}
		}
		return true
	})
	return tc
}

func alive(c *catalog.Catalog) int {
	n := 0
	for _, m := range c.Members() {
		if m.Status == catalog.StatusAlive {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds; the long cap only bounds a failure.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func addrsOf(c *catalog.Catalog) []string {
	var out []string
	for _, e := range c.Snapshot().Entries {
		out = append(out, e.Owner+"/"+e.Addr)
	}
	slices.Sort(out)
	return out
}

func reg(id, addr string) catalog.Registration {
	return catalog.Registration{ID: id, Endpoint: catalog.Endpoint{Service: "reviews.default.svc.cluster.local", Port: 9080, Addr: addr}}
}

func everyoneSees(tc *testCluster, want []string) func() bool {
	return func() bool {
		for _, c := range tc.nodes {
			if !slices.Equal(addrsOf(c), want) {
				return false
			}
		}
		return true
	}
}

func TestRegisterPropagatesAndWithdraws(t *testing.T) {
	tc := start(t, 5, nil)
	for i, c := range tc.nodes {
		if err := c.Register(reg("r", fmt.Sprintf("10.0.0.%d:9080", i))); err != nil {
			t.Fatalf("node-%d Register error = %v", i, err)
		}
	}
	var want []string
	for i := range tc.nodes {
		want = append(want, fmt.Sprintf("node-%d/10.0.0.%d:9080", i, i))
	}
	waitFor(t, "every node sees all 5 endpoints", everyoneSees(tc, want))

	// Changes notify, and the entries carry the owner's network.
	select {
	case <-tc.nodes[4].Changed():
	default:
		t.Fatalf("Changed() did not fire after endpoints arrived")
	}
	if e := tc.nodes[4].Snapshot().Entries[0]; e.Network != "net-a" {
		t.Fatalf("entry %+v has network %q, want the owner's network net-a", e, e.Network)
	}

	if err := tc.nodes[2].Deregister("r"); err != nil {
		t.Fatalf("Deregister error = %v", err)
	}
	want = slices.DeleteFunc(want, func(s string) bool { return s == "node-2/10.0.0.2:9080" })
	waitFor(t, "node-2's endpoint vanishes everywhere", everyoneSees(tc, want))
	if err := tc.nodes[2].Deregister("r"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("second Deregister error = %v, want ErrNotFound", err)
	}
}

// A node that registers endpoints while alone gossips no deltas (peers
// get its full state when they meet it) and gossips once it has a peer.
func TestRegisterWhileAloneSendsFullStateNotDeltas(t *testing.T) {
	net := &clustertest.GossipNetwork{}
	var nodes []*catalog.Catalog
	for _, name := range []string{"alone", "peer"} {
		cfg := fastConfig(t, name, "net-a")
		cfg.Transport = net.NewTransport(name)
		cfg.PushPullInterval = time.Hour // the join, not push-pull, must deliver
		c, err := catalog.New(cfg)
		if err != nil {
			t.Fatalf("catalog.New(%s) error = %v", name, err)
		}
		t.Cleanup(func() { c.Close() })
		nodes = append(nodes, c)
	}
	alone, peer := nodes[0], nodes[1]
	var want []string
	for i := range 30 {
		addr := fmt.Sprintf("10.0.1.%d:9080", i)
		if err := alone.Register(reg(fmt.Sprintf("r%02d", i), addr)); err != nil {
			t.Fatalf("Register(r%02d) error = %v", i, err)
		}
		want = append(want, "alone/"+addr)
	}
	if s, q := alone.Stats(), alone.QueuedBroadcasts(); s.DeltasSent != 0 || q != 0 {
		t.Fatalf("after 30 Registers alone: DeltasSent = %d, QueuedBroadcasts = %d; want 0 and 0", s.DeltasSent, q)
	}
	if _, err := peer.Join(t.Context(), []string{alone.Addr()}); err != nil {
		t.Fatalf("Join(peer -> alone) error = %v", err)
	}
	slices.Sort(want)
	waitFor(t, "peer holds the 30 endpoints registered while alone", func() bool { return slices.Equal(addrsOf(peer), want) })
	// The peer can hold the state (push-pull at join) before the joined
	// node has seen the peer alive; only then does it send deltas.
	waitFor(t, "the first node seeing its peer alive", func() bool {
		n := 0
		for _, m := range alone.Members() {
			if m.Status == catalog.StatusAlive {
				n++
			}
		}
		return n == 2
	})
	if err := alone.Register(reg("r99", "10.0.1.99:9080")); err != nil {
		t.Fatalf("Register(r99) error = %v", err)
	}
	if s := alone.Stats(); s.DeltasSent != 1 {
		t.Fatalf("Register with a peer: DeltasSent = %d, want 1", s.DeltasSent)
	}
	want = append(want, "alone/10.0.1.99:9080")
	slices.Sort(want)
	waitFor(t, "peer holds the endpoint registered after the join", func() bool { return slices.Equal(addrsOf(peer), want) })
}

// A node that registers and joins at once must still announce that it
// publishes endpoints (FlagEndpoints), or its peers never fetch them.
func TestEndpointsFlagReachesPeersWhenJoiningRightAway(t *testing.T) {
	tc := start(t, 5, func(_ int, c *catalog.Config) { c.PushPullInterval = time.Hour })
	for k := range 8 {
		name := fmt.Sprintf("newcomer-%d", k)
		cfg := fastConfig(t, name, "net-a")
		cfg.PushPullInterval = time.Hour // only the announcement may carry the flag
		cfg.Transport = tc.net.NewTransport(name)
		c, err := catalog.New(cfg)
		if err != nil {
			t.Fatalf("catalog.New(%s) error = %v", name, err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Register(reg("x", fmt.Sprintf("10.2.0.%d:9080", k))); err != nil {
			t.Fatalf("Register on %s error = %v", name, err)
		}
		if _, err := c.Join(t.Context(), []string{tc.nodes[k%5].Addr()}); err != nil {
			t.Fatalf("Join(%s) error = %v", name, err)
		}
		waitFor(t, "every node sees "+name+" with FlagEndpoints and holds its endpoint", func() bool {
			for _, n := range tc.nodes {
				flagged := false
				for _, m := range n.Members() {
					flagged = flagged || m.Name == name && m.Meta.Flags&catalog.FlagEndpoints != 0
				}
				if !flagged || len(n.Snapshot().Lookup("reviews.default.svc.cluster.local", 9080)) != k+1 {
					return false
				}
			}
			return true
		})
	}
}

func TestCrashWithdrawsEndpoints(t *testing.T) {
	tc := start(t, 4, nil)
	for i, c := range tc.nodes {
		if err := c.Register(reg("r", fmt.Sprintf("10.0.0.%d:9080", i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "all endpoints known", func() bool { return len(addrsOf(tc.nodes[0])) == 4 && len(addrsOf(tc.nodes[3])) == 4 })
	tc.nodes[3].Close() // no leave: a crash
	survivors := &testCluster{nodes: tc.nodes[:3]}
	waitFor(t, "the crashed node's endpoint is withdrawn everywhere", everyoneSees(survivors, []string{
		"node-0/10.0.0.0:9080", "node-1/10.0.0.1:9080", "node-2/10.0.0.2:9080"}))
	for _, c := range survivors.nodes {
		for _, m := range c.Members() {
			if m.Name == "node-3" && m.Status != catalog.StatusFailed {
				t.Fatalf("%s sees crashed node-3 as %s, want failed", c.Name(), m.Status)
			}
		}
	}
}

func TestLeaveIsTellableFromCrash(t *testing.T) {
	tc := start(t, 3, nil)
	if err := tc.nodes[2].Register(reg("r", "10.0.0.2:9080")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "endpoint known", func() bool { return len(addrsOf(tc.nodes[0])) == 1 })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := tc.nodes[2].Leave(ctx); err != nil {
		t.Fatalf("Leave error = %v", err)
	}
	waitFor(t, "node-2 is seen as left and its endpoint is gone", func() bool {
		for _, c := range tc.nodes[:2] {
			if len(addrsOf(c)) != 0 {
				return false
			}
			for _, m := range c.Members() {
				if m.Name == "node-2" && m.Status != catalog.StatusLeft {
					return false
				}
			}
		}
		return true
	})
	if err := tc.nodes[2].Register(reg("x", "10.0.0.9:1")); !errors.Is(err, catalog.ErrClosed) {
		t.Fatalf("Register after Leave error = %v, want ErrClosed", err)
	}
}

func TestRestartDoesNotResurrect(t *testing.T) {
	tc := start(t, 3, nil)
	c := tc.nodes[2]
	for _, id := range []string{"a", "b"} {
		if err := c.Register(reg(id, "10.0.0."+map[string]string{"a": "1", "b": "2"}[id]+":9080")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both endpoints known", func() bool { return len(addrsOf(tc.nodes[0])) == 2 })
	c.Close()
	waitFor(t, "crashed node's endpoints withdrawn", func() bool { return len(addrsOf(tc.nodes[0])) == 0 })

	// The node comes back (same name, new transport, new incarnation) and
	// registers only "b". Nobody may show "a" again.
	cfg := fastConfig(t, "node-2", "net-a")
	tr := tc.net.NewTransport("node-2")
	cfg.Transport = tr
	c2, err := catalog.New(cfg)
	if err != nil {
		t.Fatalf("restart catalog.New error = %v", err)
	}
	t.Cleanup(func() { c2.Close() })
	if err := c2.Register(reg("b", "10.0.0.2:9080")); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Join(t.Context(), []string{tc.trs[0].Addr()}); err != nil {
		t.Fatalf("rejoin error = %v", err)
	}
	tc.nodes[2] = c2
	waitFor(t, "only b is visible everywhere", everyoneSees(tc, []string{"node-2/10.0.0.2:9080"}))
}

func TestTTLExpires(t *testing.T) {
	tc := start(t, 2, nil)
	r := reg("lease", "10.0.0.5:9080")
	r.TTL = 300 * time.Millisecond
	if err := tc.nodes[0].Register(r); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "leased endpoint visible to the peer", func() bool { return len(addrsOf(tc.nodes[1])) == 1 })
	waitFor(t, "lease expires everywhere", everyoneSees(tc, nil))
	if regs := tc.nodes[0].Registrations(); len(regs) != 0 {
		t.Fatalf("Registrations() after expiry = %+v, want none", regs)
	}
}

func TestTCPCheckWithdrawsAndRestores(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	tc := start(t, 2, nil)
	r := reg("checked", addr)
	r.Check = &catalog.Check{Interval: 50 * time.Millisecond, Timeout: 50 * time.Millisecond}
	if err := tc.nodes[0].Register(r); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "checked endpoint published after its first pass", func() bool { return len(addrsOf(tc.nodes[1])) == 1 })
	ln.Close()
	waitFor(t, "failing endpoint withdrawn from the peer", func() bool { return len(addrsOf(tc.nodes[1])) == 0 })
	if regs := tc.nodes[0].Registrations(); len(regs) != 1 || regs[0].Healthy {
		t.Fatalf("Registrations() = %+v, want the registration kept and unhealthy", regs)
	}
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot reopen %s to test recovery: %v", addr, err)
	}
	defer ln2.Close()
	go func() {
		for {
			c, err := ln2.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	waitFor(t, "recovered endpoint published again", func() bool { return len(addrsOf(tc.nodes[1])) == 1 })
}

func TestKeyring(t *testing.T) {
	k1 := []byte("0123456789abcdef")
	k2 := []byte("fedcba9876543210fedcba9876543210")
	tc := start(t, 2, func(i int, c *catalog.Config) { c.Keys = [][]byte{k1} })

	// A node with the wrong key is refused, and its messages are counted.
	cfg := fastConfig(t, "intruder", "net-a")
	cfg.Keys = [][]byte{k2}
	tr := tc.net.NewTransport("intruder")
	cfg.Transport = tr
	bad, err := catalog.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bad.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	_, jerr := bad.Join(ctx, []string{tc.trs[0].Addr()})
	cancel()
	if jerr == nil {
		t.Fatalf("Join with a wrong gossip key succeeded, want it refused")
	}
	waitFor(t, "undecryptable messages counted", func() bool { return tc.nodes[0].Stats().DroppedDecrypt > 0 })

	// Plaintext gossip is dropped too.
	cfg = fastConfig(t, "plain", "net-a")
	cfg.Transport = tc.net.NewTransport("plain")
	plain, err := catalog.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { plain.Close() })
	ctx, cancel = context.WithTimeout(t.Context(), 500*time.Millisecond)
	_, jerr = plain.Join(ctx, []string{tc.trs[0].Addr()})
	cancel()
	if jerr == nil {
		t.Fatalf("Join without a gossip key succeeded, want it refused")
	}
	if s := tc.nodes[0].Stats(); s.DroppedPlaintext == 0 {
		t.Fatalf("Stats() = %+v after a plaintext join, want DroppedPlaintext > 0", s)
	}

	// Rotation: install k2 everywhere, use it, remove k1.
	for _, c := range tc.nodes {
		kr := c.Keyring()
		if err := kr.Install(k2); err != nil {
			t.Fatalf("Install error = %v", err)
		}
	}
	for _, c := range tc.nodes {
		if err := c.Keyring().Use(k2); err != nil {
			t.Fatalf("Use error = %v", err)
		}
		if err := c.Keyring().Remove(k2); !errors.Is(err, catalog.ErrKey) {
			t.Fatalf("Remove(primary) error = %v, want ErrKey", err)
		}
	}
	for _, c := range tc.nodes {
		if err := c.Keyring().Remove(k1); err != nil {
			t.Fatalf("Remove(old key) error = %v", err)
		}
		if got := c.Keyring().List(); len(got) != 1 {
			t.Fatalf("List() after rotation = %v, want only the new key", got)
		}
	}
	if err := tc.nodes[0].Register(reg("after-rotation", "10.0.0.1:9080")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "gossip flows with the rotated key", func() bool { return len(addrsOf(tc.nodes[1])) == 1 })
	if err := tc.nodes[0].Keyring().Install([]byte("short")); !errors.Is(err, catalog.ErrKey) {
		t.Fatalf("Install(5-byte key) error = %v, want ErrKey", err)
	}
}

func TestOtherClusterRefused(t *testing.T) {
	tc := start(t, 2, nil)
	cfg := fastConfig(t, "foreign", "net-a")
	cfg.ClusterID = "other"
	cfg.Transport = tc.net.NewTransport("foreign")
	c, err := catalog.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	c.Join(ctx, []string{tc.trs[0].Addr()})
	for _, m := range tc.nodes[0].Members() {
		if m.Name == "foreign" {
			t.Fatalf("node-0 lists %+v from another cluster, want it refused", m)
		}
	}
}

func TestUpdateMeta(t *testing.T) {
	tc := start(t, 2, nil)
	err := tc.nodes[0].UpdateMeta(func(m *catalog.Meta) {
		m.GatewayAddr = "192.0.2.10:15443"
		m.Flags |= catalog.FlagRaftReady
	})
	if err != nil {
		t.Fatalf("UpdateMeta error = %v", err)
	}
	waitFor(t, "peer sees the new meta", func() bool {
		for _, m := range tc.nodes[1].Members() {
			if m.Name == "node-0" {
				return m.Meta.GatewayAddr == "192.0.2.10:15443" && m.Meta.Flags&catalog.FlagRaftReady != 0
			}
		}
		return false
	})
	err = tc.nodes[0].UpdateMeta(func(m *catalog.Meta) { m.GatewayAddr = string(make([]byte, 600)) })
	if !errors.Is(err, catalog.ErrMetaTooLarge) {
		t.Fatalf("UpdateMeta(oversized) error = %v, want ErrMetaTooLarge", err)
	}
}

func TestRealSocketsEncrypted(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	var nodes []*catalog.Catalog
	for i := range 3 {
		cfg := fastConfig(t, fmt.Sprintf("real-%d", i), "net-a")
		cfg.BindAddr = "127.0.0.1:0"
		cfg.Keys = [][]byte{key}
		c, err := catalog.New(cfg)
		if err != nil {
			t.Fatalf("catalog.New on 127.0.0.1:0 error = %v", err)
		}
		t.Cleanup(func() { c.Close() })
		nodes = append(nodes, c)
	}
	for _, c := range nodes[1:] {
		if _, err := c.Join(t.Context(), []string{nodes[0].Addr()}); err != nil {
			t.Fatalf("Join(%s) error = %v", nodes[0].Addr(), err)
		}
	}
	if err := nodes[2].Register(reg("r", "10.0.0.2:9080")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "endpoint crosses real UDP/TCP", func() bool { return len(addrsOf(nodes[0])) == 1 && len(addrsOf(nodes[1])) == 1 })
	nodes[2].Close()
	waitFor(t, "crashed node's endpoint withdrawn", func() bool { return len(addrsOf(nodes[0])) == 0 && len(addrsOf(nodes[1])) == 0 })
}

func TestHandler(t *testing.T) {
	tc := start(t, 2, nil)
	srv := httptest.NewServer(tc.nodes[0].Handler())
	t.Cleanup(srv.Close)
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("%s %s error = %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, c := range []struct {
		name, method, path, body string
		want                     int
	}{
		{"register", "PUT", "/v1/endpoints/web-1", `{"service":"web.default.svc.cluster.local","port":80,"addr":"10.0.0.1:80","ttl":"1m"}`, http.StatusOK},
		{"bad body", "PUT", "/v1/endpoints/web-2", `{"service":"web","port":0,"addr":"10.0.0.1:80"}`, http.StatusBadRequest},
		{"unknown field", "PUT", "/v1/endpoints/web-2", `{"svc":"web"}`, http.StatusBadRequest},
		{"delete missing", "DELETE", "/v1/endpoints/nope", ``, http.StatusNotFound},
		{"wrong method", "POST", "/v1/endpoints/web-1", `{}`, http.StatusMethodNotAllowed},
	} {
		if got, body := do(c.method, c.path, c.body); got != c.want {
			t.Errorf("%s: %s %s = %d %s, want %d", c.name, c.method, c.path, got, body, c.want)
		}
	}
	waitFor(t, "registered endpoint reaches the peer", func() bool { return len(addrsOf(tc.nodes[1])) == 1 })
	if code, body := do("GET", "/v1/registrations", ""); code != http.StatusOK || !strings.Contains(body, `"healthy":true`) {
		t.Fatalf("GET /v1/registrations = %d %s, want the healthy registration", code, body)
	}
	if code, body := do("GET", "/v1/members", ""); code != http.StatusOK || !strings.Contains(body, "node-1") {
		t.Fatalf("GET /v1/members = %d %s, want both members", code, body)
	}
	if code, _ := do("DELETE", "/v1/endpoints/web-1", ""); code != http.StatusNoContent {
		t.Fatalf("DELETE /v1/endpoints/web-1 = %d, want 204", code)
	}
	waitFor(t, "deregistered endpoint leaves the peer", func() bool { return len(addrsOf(tc.nodes[1])) == 0 })
	if code, body := do("GET", "/v1/endpoints", ""); code != http.StatusOK || strings.TrimSpace(body) != "[]" {
		t.Fatalf("GET /v1/endpoints = %d %s, want an empty list []", code, body)
	}
}

func TestHTTPCheckWithdrawsAndRestores(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	var wrongPath atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			wrongPath.Add(1)
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	promReg := prometheus.NewRegistry()
	tc := start(t, 2, func(i int, c *catalog.Config) {
		if i == 0 {
			c.Registerer = promReg
		}
	})
	r := reg("http-checked", addr)
	r.Check = &catalog.Check{Interval: 50 * time.Millisecond, Timeout: 50 * time.Millisecond, HTTPPath: "/healthz"}
	if err := tc.nodes[0].Register(r); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "HTTP-checked endpoint published after a 200", func() bool { return len(addrsOf(tc.nodes[1])) == 1 })
	status.Store(http.StatusServiceUnavailable)
	waitFor(t, "endpoint answering 503 withdrawn from the peer", func() bool { return len(addrsOf(tc.nodes[1])) == 0 })
	regs := tc.nodes[0].Registrations()
	if len(regs) != 1 || regs[0].Healthy || !strings.Contains(regs[0].LastCheckError, "503") {
		t.Fatalf("Registrations() = %+v, want the registration kept, unhealthy, with the 503 named", regs)
	}
	status.Store(http.StatusNoContent)
	waitFor(t, "endpoint published again after a 204", func() bool { return len(addrsOf(tc.nodes[1])) == 1 })
	if n := wrongPath.Load(); n != 0 {
		t.Fatalf("%d checks asked for another path than /healthz", n)
	}
	counts := map[string]float64{}
	mfs, err := promReg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "meshgate_catalog_checks_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				key += l.GetValue() + "/"
			}
			counts[key] = m.GetCounter().GetValue()
		}
	}
	if counts["http/pass/"] < 2 || counts["http/fail/"] < 1 || counts["tcp/pass/"] != 0 {
		t.Fatalf("meshgate_catalog_checks_total = %v, want http passes and failures counted, no tcp", counts)
	}
}
