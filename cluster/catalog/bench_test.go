package catalog_test

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/cluster/clustertest"
)

// benchCluster starts n catalogs with production gossip defaults on an
// in-memory network.
func benchCluster(b *testing.B, n int) ([]*catalog.Catalog, []*clustertest.GossipTransport) {
	b.Helper()
	net := &clustertest.GossipNetwork{}
	var nodes []*catalog.Catalog
	var trs []*clustertest.GossipTransport
	for i := range n {
		cfg := catalog.DefaultConfig()
		cfg.Name = fmt.Sprintf("n%03d", i)
		cfg.Network = "net-a"
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		tr := net.NewTransport(cfg.Name)
		cfg.Transport = tr
		c, err := catalog.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		nodes = append(nodes, c)
		trs = append(trs, tr)
	}
	for i := 1; i < n; i++ {
		if _, err := nodes[i].Join(b.Context(), []string{trs[rand.IntN(i)].Addr()}); err != nil {
			b.Fatal(err)
		}
	}
	// A join storm can lose some alive broadcasts; push-pull (first one at
	// 30-60s) repairs them, so allow for that during set-up.
	waitForUpTo(b, 3*time.Minute, "full membership", func() bool {
		for _, c := range nodes {
			if a := alive(c); a != n {
				if os.Getenv("BENCH_DEBUG") != "" {
					var odd []string
					for _, m := range c.Members() {
						if m.Status != catalog.StatusAlive {
							odd = append(odd, m.Name+":"+string(m.Status))
						}
					}
					if rand.IntN(50) == 0 {
						b.Logf("%s sees %d alive of %d known, others %v", c.Name(), a, len(c.Members()), odd)
					}
				}
				return false
			}
		}
		return true
	})
	if os.Getenv("BENCH_DEBUG") != "" {
		b.Logf("membership of %d converged", n)
	}
	return nodes, trs
}

// propagate registers a new address for one endpoint on origin and
// returns how long it took until every other node's snapshot holds it.
func propagate(b *testing.B, nodes []*catalog.Catalog, origin *catalog.Catalog, iter int) time.Duration {
	addr := fmt.Sprintf("10.%d.%d.%d:80", iter>>16&255, iter>>8&255, iter&255)
	start := time.Now()
	if err := origin.Register(catalog.Registration{ID: "bench", Endpoint: catalog.Endpoint{Service: "bench.svc", Port: 80, Addr: addr}}); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, c := range nodes {
		if c == origin {
			continue
		}
		wg.Go(func() {
			deadline := time.After(60 * time.Second)
			for {
				for _, e := range c.Snapshot().Lookup("bench.svc", 80) {
					if e.Owner == origin.Name() && e.Addr == addr {
						return
					}
				}
				select {
				case <-c.Changed():
				case <-deadline:
					b.Errorf("%s never saw %s from %s (stats %+v, queued %d)", c.Name(), addr, origin.Name(), c.Stats(), c.QueuedBroadcasts())
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

// BenchmarkEndpointPropagation measures the time from Register on one node
// until every other node's snapshot holds the change, with production
// gossip timers (100ms gossip interval, fanout 4, retransmit multiplier 6)
// on an in-memory network. Five unmeasured rounds first let the join
// storm settle.
func BenchmarkEndpointPropagation(b *testing.B) {
	for _, n := range []int{10, 50, 200} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			nodes, _ := benchCluster(b, n)
			iter := 0
			for range 5 {
				iter++
				propagate(b, nodes, nodes[rand.IntN(n)], iter)
			}
			var lat []time.Duration
			for b.Loop() {
				iter++
				origin := nodes[rand.IntN(n)]
				d := propagate(b, nodes, origin, iter)
				lat = append(lat, d)
				if os.Getenv("BENCH_DEBUG") != "" {
					b.Logf("iteration %d: %v", iter, d)
				}
				origin.Deregister("bench")
			}
			reportPercentiles(b, lat)
		})
	}
}

// BenchmarkGossipBandwidth measures bytes sent per node per second in a
// quiet cluster where every node owns 100 endpoints (production timers,
// push-pull included: the window spans several push-pull intervals' worth
// of exchanges across the cluster).
func BenchmarkGossipBandwidth(b *testing.B) {
	const n, perNode = 50, 100
	nodes, trs := benchCluster(b, n)
	for i, c := range nodes {
		for j := range perNode {
			r := catalog.Registration{ID: fmt.Sprintf("e%d", j), Endpoint: catalog.Endpoint{
				Service: fmt.Sprintf("svc-%d.default.svc.cluster.local", j%20), Port: 9080,
				Addr: fmt.Sprintf("10.%d.%d.%d:9080", i/250, i%250, j), Labels: map[string]string{"version": "v1"}}}
			if err := c.Register(r); err != nil {
				b.Fatal(err)
			}
		}
	}
	waitForUpTo(b, 3*time.Minute, "all endpoints everywhere", func() bool {
		for _, c := range nodes {
			if len(c.Snapshot().Entries) != n*perNode {
				return false
			}
		}
		return true
	})
	waitForUpTo(b, 5*time.Minute, "gossip queues drained (steady state)", func() bool {
		for _, c := range nodes {
			if c.QueuedBroadcasts() > 0 {
				return false
			}
		}
		return true
	})
	for b.Loop() {
		before := uint64(0)
		for _, t := range trs {
			before += t.SentBytes.Load()
		}
		window := time.Minute // one push-pull period at N=50 (30s scaled x2)
		time.Sleep(window)    // measuring a rate over a fixed window, not synchronizing
		after := uint64(0)
		for _, t := range trs {
			after += t.SentBytes.Load()
		}
		bps := float64(after-before) / float64(n) / window.Seconds()
		b.ReportMetric(bps, "B/s/node")
		b.ReportMetric(bps*8/1000, "kbit/s/node")
	}
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	p := func(q float64) float64 {
		return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(p(0.50), "p50-ms")
	b.ReportMetric(p(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}

func waitForUpTo(b *testing.B, limit time.Duration, what string, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
