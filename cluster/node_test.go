package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/meshgate/meshgate/cluster"
	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/cluster/clustertest"
)

func hasValue(key, want string) func(*cluster.Node) bool {
	return func(n *cluster.Node) bool {
		r, ok := n.Get(key)
		return ok && string(r.Value) == want
	}
}

func follower(c *clustertest.Cluster, leader *cluster.Node) *cluster.Node {
	for _, n := range c.Alive() {
		if n != leader {
			return n
		}
	}
	return nil
}

func TestApplyAtFollowerReadEverywhere(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{})
	leader := c.WaitLeader(t)
	f := follower(c, leader)
	idx, err := f.Apply(t.Context(), cluster.Put("ca/root", []byte("pem")), cluster.Put("ca/serial", []byte("1")))
	if err != nil {
		t.Fatalf("follower Apply(2 puts) error = %v, want nil", err)
	}
	// Read-your-writes on the follower right away.
	if r, ok := f.Get("ca/root"); !ok || string(r.Value) != "pem" || r.ModIndex != idx {
		t.Fatalf("follower Get(ca/root) right after Apply = %+v, %v; want value pem at index %d", r, ok, idx)
	}
	c.WaitAll(t, "every node has ca/serial", hasValue("ca/serial", "1"))
	if got := leader.List("ca/"); len(got) != 2 || got[0].Key != "ca/root" || got[1].Key != "ca/serial" {
		t.Fatalf("leader List(ca/) = %+v, want ca/root and ca/serial in order", got)
	}
	if err := f.Delete(t.Context(), "ca/serial"); err != nil {
		t.Fatalf("follower Delete error = %v", err)
	}
	c.WaitAll(t, "ca/serial deleted everywhere", func(n *cluster.Node) bool { _, ok := n.Get("ca/serial"); return !ok })
}

func TestCheckConflictIsAtomic(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{})
	leader := c.WaitLeader(t)
	f := follower(c, leader)
	idx, err := f.Apply(t.Context(), cluster.Check("ca/token/abc", 0), cluster.Put("ca/token/abc", []byte("used")))
	if err != nil {
		t.Fatalf("Apply(check absent, put) error = %v", err)
	}
	for _, n := range []*cluster.Node{leader, f} {
		_, err = n.Apply(t.Context(), cluster.Check("ca/token/abc", 0), cluster.Put("ca/token/abc", []byte("again")), cluster.Put("ca/other", []byte("x")))
		var ce *cluster.ConflictError
		if !errors.As(err, &ce) || !errors.Is(err, cluster.ErrConflict) || ce.Have != idx || ce.Key != "ca/token/abc" {
			t.Fatalf("%s Apply(check absent on existing key) error = %v, want ConflictError{have %d}", n.Name(), err, idx)
		}
	}
	if _, ok := f.Get("ca/other"); ok {
		t.Fatalf("a batch with a failed check wrote ca/other; want nothing written")
	}
	if _, err := f.Apply(t.Context(), cluster.Check("ca/token/abc", idx), cluster.Put("ca/token/abc", []byte("v2"))); err != nil {
		t.Fatalf("Apply(check at current index) error = %v, want nil", err)
	}
}

func TestApplyRefusesBadOps(t *testing.T) {
	c := clustertest.New(t, 1, clustertest.Options{Bootstrap: true})
	n := c.WaitLeader(t)
	for _, tc := range []struct {
		name string
		ops  []cluster.Op
		want error
	}{
		{"empty batch", nil, cluster.ErrBadCommand},
		{"empty key", []cluster.Op{cluster.Put("", nil)}, cluster.ErrInvalidKey},
		{"space in key", []cluster.Op{cluster.Put("a b", nil)}, cluster.ErrInvalidKey},
		{"huge value", []cluster.Op{cluster.Put("k", make([]byte, cluster.MaxValueLen+1))}, cluster.ErrTooLarge},
		{"unknown op", []cluster.Op{{Type: 9, Key: "k"}}, cluster.ErrBadCommand},
		{"bad config doc", []cluster.Op{cluster.Put(cluster.ConfigPrefix+"Gateway/default/gw", []byte("kind: Nope"))}, cluster.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := n.Apply(t.Context(), tc.ops...); !errors.Is(err, tc.want) {
				t.Fatalf("Apply(%s) error = %v, want %v", tc.name, err, tc.want)
			}
		})
	}
}

func TestLeaderFailoverWritesContinue(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{})
	leader := c.WaitLeader(t)
	if err := leader.Put(t.Context(), "k", []byte("1")); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if c.Node(i) == leader {
			c.Kill(i)
		}
	}
	survivor := c.Alive()[0]
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := survivor.Put(ctx, "k", []byte("2")); err != nil {
		t.Fatalf("Put after the leader died error = %v, want the write to wait for a new leader", err)
	}
	c.WaitAll(t, "survivors read the new value", hasValue("k", "2"))
	if nl := c.WaitLeader(t); nl == leader {
		t.Fatalf("dead node still leader")
	}
}

func TestRestartKeepsState(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{DataDir: true, Modify: func(i int, cfg *cluster.Config) {
		cfg.Raft.SnapshotThreshold = 16
		cfg.Raft.TrailingLogs = 4
		cfg.Raft.SnapshotInterval = 50 * time.Millisecond
	}})
	leader := c.WaitLeader(t)
	for i := range 40 {
		if err := leader.Put(t.Context(), fmt.Sprintf("k/%02d", i), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitAll(t, "every node has 40 keys", func(n *cluster.Node) bool { return len(n.List("k/")) == 40 })
	for i := range 3 {
		c.Kill(i)
	}
	for i := range 3 {
		c.Start(i)
	}
	c.WaitAll(t, "restarted nodes have all 40 keys", func(n *cluster.Node) bool { return len(n.List("k/")) == 40 })
	leader = c.WaitLeader(t)
	if err := leader.Put(t.Context(), "k/40", []byte("after")); err != nil {
		t.Fatalf("Put after restart error = %v", err)
	}
	c.WaitAll(t, "write after restart replicated", hasValue("k/40", "after"))
}

func TestBootstrapThenAutopilotAddsAndPromotes(t *testing.T) {
	c := clustertest.New(t, 4, clustertest.Options{Bootstrap: true, Modify: func(i int, cfg *cluster.Config) { cfg.MaxVoters = 3 }})
	leader := c.WaitLeader(t)
	c.WaitAll(t, "three voters and one non-voter", func(n *cluster.Node) bool {
		s, err := n.Servers()
		if err != nil || len(s) != 4 {
			return false
		}
		v := 0
		for _, x := range s {
			if x.Voter {
				v++
			}
		}
		return v == 3
	})
	// A voter dies: the non-voter replaces it.
	servers, _ := leader.Servers()
	var nonvoter string
	for _, s := range servers {
		if !s.Voter {
			nonvoter = s.ID
		}
	}
	var victim int
	for i := range 4 {
		if n := c.Node(i); n != leader && n.Name() != nonvoter {
			victim = i
			break
		}
	}
	victimName := c.Node(victim).Name()
	c.Kill(victim)
	var last string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("killed %s, non-voter %s; last view: %s", victimName, nonvoter, last)
		}
	})
	c.WaitAll(t, "dead voter replaced by the non-voter", func(n *cluster.Node) bool {
		s, err := n.Servers()
		leaderName, _ := n.Leader()
		last = fmt.Sprintf("%s (leader %s) servers %+v err %v members %+v", n.Name(), leaderName, s, err, n.Members())
		if err != nil {
			return false
		}
		var ids []string
		for _, x := range s {
			if !x.Voter {
				return false
			}
			ids = append(ids, x.ID)
		}
		return len(ids) == 3 && !slices.Contains(ids, victimName) && slices.Contains(ids, nonvoter)
	})
	if err := c.WaitLeader(t).Put(t.Context(), "still", []byte("writable")); err != nil {
		t.Fatalf("Put after replacement error = %v", err)
	}
}

func TestLeaveRemovesFromRaftAndGossip(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{})
	leader := c.WaitLeader(t)
	var i int
	for j := range 3 {
		if c.Node(j) == leader {
			i = j // the leader leaves: it must hand off first
		}
	}
	if err := leader.Catalog().Register(catalog.Registration{ID: "r", Endpoint: catalog.Endpoint{Service: "s", Port: 1, Addr: "10.9.9.9:1"}}); err != nil {
		t.Fatal(err)
	}
	c.WaitAll(t, "endpoint known", func(n *cluster.Node) bool { return len(n.Catalog().Snapshot().Entries) == 1 })
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	name := leader.Name()
	if err := leader.Leave(ctx); err != nil {
		t.Fatalf("Leave error = %v", err)
	}
	c.Forget(i)
	c.WaitAll(t, "leaver out of raft, marked left, endpoint gone", func(n *cluster.Node) bool {
		s, err := n.Servers()
		if err != nil || len(s) != 2 || len(n.Catalog().Snapshot().Entries) != 0 {
			return false
		}
		for _, m := range n.Members() {
			if m.Name == name {
				return m.Status == catalog.StatusLeft
			}
		}
		return false
	})
	if _, err := leader.Apply(t.Context(), cluster.Put("x", nil)); !errors.Is(err, cluster.ErrClosed) {
		t.Fatalf("Apply on a node that left error = %v, want ErrClosed", err)
	}
}

func TestWatchAndSync(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{})
	leader := c.WaitLeader(t)
	f := follower(c, leader)
	ch, cancel := f.Watch("config/")
	defer cancel()
	if err := leader.Put(t.Context(), "ca/x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(t.Context()); err != nil {
		t.Fatalf("Sync error = %v", err)
	}
	if r, ok := f.Get("ca/x"); !ok || !bytes.Equal(r.Value, []byte("1")) {
		t.Fatalf("Get after Sync = %+v, %v; want the leader's write", r, ok)
	}
	select {
	case <-ch:
		t.Fatalf("Watch(config/) fired for a write to ca/x")
	default:
	}
	if _, err := leader.ApplyConfig(t.Context(), "gw.yaml", []byte(gatewayYAML)); err != nil {
		t.Fatalf("ApplyConfig error = %v", err)
	}
	if err := f.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatalf("Watch(config/) did not fire after ApplyConfig")
	}
}

const gatewayYAML = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: cross-network
  namespace: istio-system
spec:
  selector:
    istio: eastwestgateway
  servers:
  - port:
      number: 15443
      name: tls
      protocol: TLS
    tls:
      mode: AUTO_PASSTHROUGH
    hosts:
    - "*.local"
`
