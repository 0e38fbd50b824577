package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshgate/meshgate/cluster"
)

// benchLoop starts a 3-node cluster on real TLS sockets on 127.0.0.1 with
// raft state on disk (bbolt, fsync on) and the FastConfig timers.
func benchLoop(b *testing.B) (*loopCluster, *cluster.Node) {
	lc := newLoopClusterTB(b, 3)
	for i := range 3 {
		lc.start(i)
	}
	_, leader := lc.leader()
	lc.waitAll("all nodes agree on the leader", func(n *cluster.Node) bool {
		name, _ := n.Leader()
		return name == leader.Name()
	})
	return lc, leader
}

// BenchmarkApplyVisibleAll measures one write at the leader until it is
// applied on all three nodes (TLS over loopback, bbolt log with fsync).
func BenchmarkApplyVisibleAll(b *testing.B) {
	lc, leader := benchLoop(b)
	nodes := lc.alive()
	var lat []time.Duration
	i := 0
	for b.Loop() {
		i++
		start := time.Now()
		idx, err := leader.Apply(b.Context(), cluster.Put("bench/k", []byte(fmt.Sprint(i))))
		if err != nil {
			b.Fatal(err)
		}
		for _, n := range nodes {
			for n.AppliedIndex() < idx {
				// Busy-wait: the quantity measured is sub-millisecond.
			}
		}
		lat = append(lat, time.Since(start))
	}
	reportPercentiles(b, lat)
}

// BenchmarkApplyFollower measures a write forwarded by a follower until it
// is applied on the follower (read-your-writes).
func BenchmarkApplyFollower(b *testing.B) {
	lc, leader := benchLoop(b)
	var f *cluster.Node
	for _, n := range lc.alive() {
		if n != leader {
			f = n
		}
	}
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := f.Apply(b.Context(), cluster.Put("bench/f", []byte("v"))); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	reportPercentiles(b, lat)
}

// BenchmarkApplyThroughput measures writes per second from 32 concurrent
// writers at the leader; raft batches them into shared log appends.
func BenchmarkApplyThroughput(b *testing.B) {
	_, leader := benchLoop(b)
	const writers = 32
	var done atomic.Int64
	for b.Loop() {
		var wg sync.WaitGroup
		start := time.Now()
		ctx, cancel := context.WithTimeout(b.Context(), 2*time.Second)
		for w := range writers {
			wg.Go(func() {
				for ctx.Err() == nil {
					if _, err := leader.Apply(context.Background(), cluster.Put(fmt.Sprintf("bench/t/%d", w), []byte("v"))); err != nil {
						return
					}
					done.Add(1)
				}
			})
		}
		wg.Wait()
		cancel()
		b.ReportMetric(float64(done.Swap(0))/time.Since(start).Seconds(), "applies/s")
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkLeaderFailover kills the leader of a 3-node cluster (TLS on
// loopback, bbolt log with fsync) without a leave and measures the time
// until a surviving node is leader (elect-p50-ms, elect-max-ms) and until
// a write through the new leader is committed and applied there (p50-ms,
// max-ms: the failover time). Between trials the killed node is restarted
// on its old ports and catches up. raft=default uses DefaultConfig's raft
// timers (heartbeat and election timeout 1s), raft=fast those of
// clustertest.FastConfig (300ms).
func BenchmarkLeaderFailover(b *testing.B) {
	for _, tc := range []struct {
		name   string
		modify func(*cluster.Config)
	}{
		{"raft=default", func(c *cluster.Config) { c.Raft = cluster.DefaultConfig().Raft }},
		{"raft=fast", nil},
	} {
		b.Run(tc.name, func(b *testing.B) {
			lc := newLoopClusterTB(b, 3)
			lc.modify = tc.modify
			for i := range 3 {
				lc.start(i)
			}
			var elect, write []time.Duration
			trial := 0
			for b.Loop() {
				trial++
				li, _ := lc.leader()
				lc.waitAll("every node agrees on the leader", func(n *cluster.Node) bool {
					name, _ := n.Leader()
					return name == lc.nodes[li].Name()
				})
				survivors := slices.DeleteFunc(lc.alive(), func(n *cluster.Node) bool { return n == lc.nodes[li] })
				start := time.Now()
				lc.kill(li)
				var nl *cluster.Node
				for nl == nil {
					for _, n := range survivors {
						if n.IsLeader() {
							nl = n
						}
					}
					if time.Since(start) > time.Minute {
						b.Fatalf("no new leader among %d survivors 1m after killing the leader", len(survivors))
					}
					time.Sleep(time.Millisecond) // polls IsLeader; the resolution is 1ms
				}
				elect = append(elect, time.Since(start))
				ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
				idx, err := nl.Apply(ctx, cluster.Put("bench/failover", []byte(fmt.Sprint(trial))))
				cancel()
				if err != nil {
					b.Fatalf("Apply at the new leader %s error = %v", nl.Name(), err)
				}
				write = append(write, time.Since(start))
				lc.start(li)
				lc.waitAll("the restarted node caught up", func(n *cluster.Node) bool { return n.AppliedIndex() >= idx })
			}
			reportPercentiles(b, write)
			slices.Sort(elect)
			b.ReportMetric(ms(elect[len(elect)/2]), "elect-p50-ms")
			b.ReportMetric(ms(elect[len(elect)-1]), "elect-max-ms")
			b.ReportMetric(ms(write[len(write)-1]), "max-ms")
		})
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

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
