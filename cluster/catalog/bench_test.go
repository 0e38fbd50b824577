package catalog_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/cluster/clustertest"
	"github.com/meshgate/meshgate/mtls"
	"github.com/meshgate/meshgate/pki"
)

// Benchmarks of the gossip catalog with production timers (DefaultConfig).
// Figures are reported as custom metrics; ns/op is meaningless here and
// reported as 0. Set BENCH_DEBUG=1 for progress logs.
//
//	go test -run '^$' -bench 'BenchmarkEndpointPropagation/net=udp' -benchtime 40x ./cluster/catalog/
//	go test -run '^$' -bench 'BenchmarkRecord' ./cluster/catalog/
//	go test -run '^$' -bench BenchmarkCrashWithdrawn -benchtime 8x -timeout 60m ./cluster/catalog/
//	go test -run '^$' -bench BenchmarkGossipBandwidth -benchtime 1x -timeout 60m ./cluster/catalog/

// benchSpec describes a benchmark cluster.
type benchSpec struct {
	n       int
	udp     bool // real UDP+TCP sockets on 127.0.0.1; false = in-memory network
	perNode int  // endpoints each owner owns, registered before it joins
	owners  int  // how many nodes (the first ones) own endpoints; 0 = all
	// modify adjusts each node's Config (nil = DefaultConfig unchanged).
	modify func(*catalog.Config)
	// signed gives every node a certificate from one CA and turns record
	// signing on (mtls.Records, as the agent does); false = Unsigned.
	signed bool
}

func (s benchSpec) netName() string {
	if s.udp {
		return "udp"
	}
	return "mem"
}

// benchCluster is a gossip cluster of catalogs in this process. Its
// methods are called from the benchmark goroutine only.
type benchCluster struct {
	b     *testing.B
	spec  benchSpec
	net   *clustertest.GossipNetwork // nil with real sockets
	tally *tally
	nodes []*catalog.Catalog // running nodes
	trs   []*clustertest.GossipTransport
	all   []*catalog.Catalog // every node ever started, for Cleanup
	// trsAll is the transport of each node in all (nil with sockets).
	trsAll []*clustertest.GossipTransport
	made   int
	ca     *clustertest.CA // signs node certificates when spec.signed
	// repairs counts set-up joins made to nodes that still missed
	// members after the join storm (see converge).
	repairs int
}

// debugf prints progress to stderr at once (b.Logf output appears only
// at the end) when BENCH_DEBUG is set.
func debugf(b *testing.B, format string, args ...any) {
	if os.Getenv("BENCH_DEBUG") != "" {
		fmt.Fprintf(os.Stderr, "%s %s: %s\n", time.Now().Format("15:04:05.000"), b.Name(), fmt.Sprintf(format, args...))
	}
}

// newBenchCluster starts spec.n catalogs, joins them and waits until every
// node sees every other alive and holds every endpoint.
func newBenchCluster(b *testing.B, spec benchSpec) *benchCluster {
	b.Helper()
	bc := &benchCluster{b: b, spec: spec, tally: newTally()}
	if !spec.udp {
		bc.net = &clustertest.GossipNetwork{}
	}
	b.Cleanup(func() {
		var wg sync.WaitGroup
		for _, c := range bc.all {
			wg.Go(func() { c.Close() })
		}
		wg.Wait()
	})
	start := time.Now()
	for range spec.n {
		bc.add()
	}
	// Every node joins through node 0, which so knows each earlier joiner
	// and hands the full list to the next; a joiner that went through a
	// random peer would miss members whose alive broadcasts died out
	// before it arrived (memberlist repairs that only at push-pull,
	// minutes away at N >= 200). Joins go in batches that settle, paced
	// by paceJoins: all N simulated nodes share this process's CPU.
	batch := max(10, spec.n/20)
	for lo := 1; lo < spec.n; lo += batch {
		hi := min(spec.n, lo+batch)
		for i := lo; i < hi; i++ {
			// Node 0 knows every earlier joiner; a converged node of an
			// earlier batch stands in if node 0 is slow to answer.
			bc.join(bc.all[i], bc.all[0], bc.all[rand.IntN(lo)])
			paceJoins(i)
		}
		bc.nodes, bc.trs = slices.Clone(bc.all[:hi]), slices.Clone(bc.trsAll[:hi])
		bc.converge(2 * time.Minute)
		debugf(b, "%d nodes joined and converged after %v; %d packets dropped by full queues; %s", hi, time.Since(start), bc.droppedPackets(), bc.tally)
	}
	debugf(b, "set-up done after %v (%d repair joins); %s", time.Since(start), bc.repairs, bc.tally)
	return bc
}

// droppedPackets sums packets lost to full receive queues on the
// in-memory network.
func (bc *benchCluster) droppedPackets() uint64 {
	var n uint64
	for _, t := range bc.trsAll {
		if t != nil {
			n += t.DroppedPackets.Load()
		}
	}
	return n
}

// paceJoins waits after the join of the k-th node: k milliseconds, and
// from k = 100 on also until the process used less than half of GOMAXPROCS
// in two 250ms windows in a row (at most 20s). At k members one join costs
// about k*RetransmitMult*ceil(log10(k)) message deliveries, all in this
// process (measured: ~1s of CPU at k = 700), and a starved process turns
// late acks into suspicions that feed on themselves.
func paceJoins(k int) {
	time.Sleep(time.Duration(k) * time.Millisecond) // pacing, not synchronization
	if k < 100 {
		return
	}
	limit := 0.5 * float64(runtime.GOMAXPROCS(0))
	calm := 0
	for deadline := time.Now().Add(20 * time.Second); calm < 2 && time.Now().Before(deadline); {
		m := startCPUMeter()
		time.Sleep(250 * time.Millisecond)
		if m.cores() < limit {
			calm++
		} else {
			calm = 0
		}
	}
}

// add starts one node with its endpoints registered; it does not join.
func (bc *benchCluster) add() *catalog.Catalog {
	b := bc.b
	name := fmt.Sprintf("n%04d", bc.made)
	bc.made++
	cfg := catalog.DefaultConfig()
	cfg.Name = name
	cfg.Network = "net-a"
	cfg.Logger = slog.New(bc.tally.handler())
	cfg.Unsigned = !bc.spec.signed
	if bc.spec.signed {
		if bc.ca == nil {
			bc.ca = clustertest.NewCA(b)
		}
		rec := benchRecords(b, bc.ca, name)
		cfg.Signer, cfg.Verifier = rec, rec
	}
	var tr *clustertest.GossipTransport
	if bc.spec.udp {
		cfg.BindAddr = "127.0.0.1:0"
	} else {
		tr = bc.net.NewTransport(name)
		cfg.Transport = tr
	}
	if bc.spec.modify != nil {
		bc.spec.modify(&cfg)
	}

	c, err := catalog.New(cfg)
	if err != nil {
		b.Fatalf("catalog.New(%s) error = %v", name, err)
	}
	bc.all = append(bc.all, c)
	for j := range bc.perNode(bc.made - 1) {
		if err := c.Register(benchEndpoint(bc.made, j)); err != nil {
			b.Fatalf("Register(%s, e%d) error = %v", name, j, err)
		}
	}
	bc.trsAll = append(bc.trsAll, tr)
	bc.nodes = append(bc.nodes, c)
	bc.trs = append(bc.trs, tr)
	return c
}

// perNode is how many endpoints the i-th node made owns.
func (bc *benchCluster) perNode(i int) int {
	if bc.spec.owners > 0 && i >= bc.spec.owners {
		return 0
	}
	return bc.spec.perNode
}

// wantEntries is how many endpoints every snapshot holds once converged.
func (bc *benchCluster) wantEntries() int {
	n := 0
	for _, c := range bc.nodes {
		n += len(c.Registrations())
	}
	return n
}

// benchEndpoint is endpoint j of node i: 20 services, ~40 bytes on the wire.
func benchEndpoint(i, j int) catalog.Registration {
	return catalog.Registration{ID: fmt.Sprintf("e%d", j), Endpoint: catalog.Endpoint{
		Service: fmt.Sprintf("svc-%d.default.svc.cluster.local", j%20), Port: 9080,
		Addr:   fmt.Sprintf("10.%d.%d.%d:9080", i/250%250, i%250, j%250),
		Labels: map[string]string{"version": "v1"}}}
}

func (bc *benchCluster) join(c *catalog.Catalog, seeds ...*catalog.Catalog) {
	var addrs []string
	for _, s := range seeds {
		if !slices.Contains(addrs, s.Addr()) {
			addrs = append(addrs, s.Addr())
		}
	}
	ctx, cancel := context.WithTimeout(bc.b.Context(), time.Minute)
	defer cancel()
	if _, err := c.Join(ctx, addrs); err != nil {
		bc.b.Fatalf("Join(%s -> %v) error = %v", c.Name(), addrs, err)
	}
}

// converge waits until every running node sees exactly the running nodes
// alive and holds all their endpoints. A join storm can lose alive
// broadcasts (memberlist repairs that at the next push-pull, minutes away
// at N >= 200), so a node that still misses members joins them
// directly after 5s, as an operator would; bc.repairs counts those joins.
func (bc *benchCluster) converge(limit time.Duration) {
	bc.b.Helper()
	if err := bc.tryConverge(limit); err != nil {
		bc.b.Fatal(err)
	}
}

// tryConverge is converge that reports failure instead of ending the
// benchmark.
func (bc *benchCluster) tryConverge(limit time.Duration) error {
	start := time.Now()
	deadline := start.Add(limit)
	// Each poll rebuilds the snapshot of every node that changed; with
	// many endpoints that alone can starve the simulated nodes.
	poll := max(50*time.Millisecond, time.Duration(len(bc.nodes))*250*time.Microsecond) * time.Duration(1+bc.spec.perNode/10)
	lastRepair := start
	for {
		names := make(map[string]bool, len(bc.nodes))
		for _, c := range bc.nodes {
			names[c.Name()] = true
		}
		var lagging []*catalog.Catalog
		endpointsOK := true
		want := bc.wantEntries()
		for _, c := range bc.nodes {
			s := c.Snapshot()
			if aliveIn(s, names) != len(names) {
				lagging = append(lagging, c)
			} else if len(s.Entries) != want {
				endpointsOK = false
			}
		}
		if len(lagging) == 0 && endpointsOK {
			return nil
		}
		if time.Now().After(deadline) {
			var short []string
			for _, c := range bc.nodes {
				if s := c.Snapshot(); len(s.Entries) != want && len(short) < 3 {
					short = append(short, fmt.Sprintf("%s holds %d of %d", c.Name(), len(s.Entries), want))
				}
			}
			return fmt.Errorf("cluster not converged after %v: %d of %d nodes miss members; short of endpoints: %v; %s",
				limit, len(lagging), len(bc.nodes), short, bc.tally)
		}
		if len(lagging) > 0 && time.Since(lastRepair) > 5*time.Second {
			lastRepair = time.Now()
			bc.repair(lagging, names)
		}
		time.Sleep(poll)
	}
}

// aliveIn counts the members of s that are alive and among names.
func aliveIn(s *catalog.Snapshot, names map[string]bool) int {
	n := 0
	for _, m := range s.Members {
		if m.Status == catalog.StatusAlive && names[m.Name] {
			n++
		}
	}
	return n
}

func (bc *benchCluster) repair(lagging []*catalog.Catalog, names map[string]bool) {
	byName := make(map[string]*catalog.Catalog, len(bc.nodes))
	for _, c := range bc.nodes {
		byName[c.Name()] = c
	}
	for _, c := range lagging {
		seen := make(map[string]bool)
		status := make(map[string]catalog.Status)
		for _, m := range c.Snapshot().Members {
			status[m.Name] = m.Status
			if m.Status == catalog.StatusAlive {
				seen[m.Name] = true
			}
		}
		var addrs, missing []string
		for name := range names {
			if !seen[name] {
				missing = append(missing, name+":"+string(status[name]))
				if len(addrs) < 3 {
					addrs = append(addrs, byName[name].Addr())
				}
			}
		}
		if len(addrs) == 0 {
			continue // caught up meanwhile
		}
		ctx, cancel := context.WithTimeout(bc.b.Context(), 5*time.Second)
		_, _ = c.Join(ctx, addrs)
		cancel()
		bc.repairs++
		debugf(bc.b, "repair: %s misses %v", c.Name(), missing)
	}
}

// waitDrained waits until no node has catalog messages queued for gossip.
func (bc *benchCluster) waitDrained(limit time.Duration) {
	waitForUpTo(bc.b, limit, "gossip queues drained", func() bool {
		for _, c := range bc.nodes {
			if c.QueuedBroadcasts() > 0 {
				return false
			}
		}
		return true
	})
}

// crash stops node i without a leave and times until no survivor's
// snapshot holds any of its endpoints: first is the first survivor,
// all the last.
func (bc *benchCluster) crash(i int) (first, all time.Duration) {
	b := bc.b
	victim := bc.nodes[i]
	bc.nodes = slices.Delete(bc.nodes, i, i+1)
	bc.trs = slices.Delete(bc.trs, i, i+1)
	gone := func(c *catalog.Catalog) bool {
		for _, e := range c.Snapshot().Entries {
			if e.Owner == victim.Name() {
				return false
			}
		}
		return true
	}
	for _, c := range bc.nodes {
		if gone(c) {
			b.Fatalf("%s holds no endpoint of %s before the crash", c.Name(), victim.Name())
		}
	}
	times := make([]time.Duration, len(bc.nodes))
	start := time.Now()
	if err := victim.Close(); err != nil {
		b.Fatalf("Close(%s) error = %v", victim.Name(), err)
	}
	var wg sync.WaitGroup
	for k, c := range bc.nodes {
		wg.Go(func() {
			deadline := time.After(2 * time.Minute)
			for !gone(c) {
				select {
				case <-c.Changed():
				case <-deadline:
					b.Errorf("%s still holds endpoints of %s 2m after the crash", c.Name(), victim.Name())
					return
				}
			}
			times[k] = time.Since(start)
		})
	}
	wg.Wait()
	return slices.Min(times), slices.Max(times)
}

// replace starts a fresh node in place of a crashed one and waits until
// the cluster has converged again.
func (bc *benchCluster) replace() error {
	c := bc.add()
	bc.join(c, bc.nodes[rand.IntN(len(bc.nodes)-1)])
	return bc.tryConverge(2 * time.Minute)
}

// propagate gives endpoint e0 of origin a new address and returns how long
// it took until every other node's snapshot holds the change.
func propagate(b *testing.B, nodes []*catalog.Catalog, origin *catalog.Catalog, iter int) time.Duration {
	r := benchEndpoint(0, 0)
	r.Addr = fmt.Sprintf("172.%d.%d.%d:9080", 16+iter>>16&15, iter>>8&255, iter&255)
	start := time.Now()
	if err := origin.Register(r); err != nil {
		b.Fatalf("Register(%s, %s) error = %v", origin.Name(), r.Addr, err)
	}
	var wg sync.WaitGroup
	for _, c := range nodes {
		if c == origin {
			continue
		}
		wg.Go(func() {
			deadline := time.After(60 * time.Second)
			for {
				for _, e := range c.Snapshot().Lookup(r.Service, r.Port) {
					if e.Owner == origin.Name() && e.Addr == r.Addr {
						return
					}
				}
				select {
				case <-c.Changed():
				case <-deadline:
					b.Errorf("%s never saw %s from %s (stats %+v, queued %d)", c.Name(), r.Addr, origin.Name(), c.Stats(), c.QueuedBroadcasts())
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

// light turns off memberlist's compression, which costs a 64 KiB
// allocation per packet sent: 1000 simulated nodes cannot afford it on a
// 2-core machine. It changes CPU, not protocol timing; bytes measured
// without it are an upper bound (memberlist sends a compressed packet
// only when it is smaller).
func light(c *catalog.Config) { c.DisableCompression = true }

// BenchmarkEndpointPropagation measures the time from an endpoint update
// (Register with a new address) on one node until every other node's
// snapshot holds it: N = 10 and 50 on real UDP+TCP sockets on 127.0.0.1,
// N = 200 and 1000 on the in-memory network, production timers. The first
// 10 nodes own one endpoint each; each update comes from one of them at
// random (the other nodes own none, which keeps the set-up's full-state
// fetches at 10*N instead of N^2). Five
// unmeasured rounds come first. false-deaths counts live members declared
// dead during the measured rounds (observer events); cpu-cores is the
// process's CPU use while measuring.
//
// signing=on gives every node a node certificate and signs and verifies
// every record (deltas verified once per node, before relaying); the
// signing=off run of the same N in the same invocation is its baseline.
func BenchmarkEndpointPropagation(b *testing.B) {
	for _, spec := range []benchSpec{
		{n: 10, udp: true, perNode: 1, owners: 10}, {n: 10, udp: true, perNode: 1, owners: 10, signed: true},
		{n: 50, udp: true, perNode: 1, owners: 10}, {n: 50, udp: true, perNode: 1, owners: 10, signed: true},
		{n: 200, perNode: 1, owners: 10}, {n: 1000, perNode: 1, owners: 10, modify: light},
	} {
		signing := map[bool]string{false: "off", true: "on"}[spec.signed]
		b.Run(fmt.Sprintf("net=%s/N=%d/signing=%s", spec.netName(), spec.n, signing), func(b *testing.B) {
			bc := newBenchCluster(b, spec)
			nodes := bc.nodes
			iter := 0
			for range 5 {
				iter++
				propagate(b, nodes, nodes[rand.IntN(spec.owners)], iter)
			}
			bc.waitDrained(time.Minute)
			bc.tally.reset()
			cpu := startCPUMeter()
			var lat []time.Duration
			for b.Loop() {
				iter++
				d := propagate(b, nodes, nodes[rand.IntN(spec.owners)], iter)
				lat = append(lat, d)
				debugf(b, "iteration %d: %v", iter, d)
			}
			b.ReportMetric(cpu.cores(), "cpu-cores")
			reportPercentiles(b, lat)
			b.ReportMetric(float64(bc.tally.falseDeaths()), "false-deaths")
			debugf(b, "%s", bc.tally)
		})
	}
}

// BenchmarkCrashWithdrawn measures, at N = 50, the time from a node's crash
// (Close: shutdown without leave) until no survivor's snapshot holds any
// of its 20 endpoints. After each trial a fresh node replaces the crashed
// one. Timers: DefaultConfig, or DefaultConfig with ProbeInterval 200ms
// and ProbeTimeout 100ms (timers=probe200ms). Load, for the whole
// measured phase and at most 15 minutes: none; busy (GOMAXPROCS spinning
// goroutines in this process); procs (a second process spinning on
// GOMAXPROCS threads, so the whole machine is saturated).
//
// Metrics: p50-ms and max-ms until every survivor withdrew the endpoints,
// first-ms (p50) until the first did; false-deaths (observer events that
// declared a live node dead), false-dead-nodes (distinct live nodes
// declared dead), false-suspicions (probes of live nodes that got no ack
// in time; each was refuted or became a false death). If the cluster
// does not converge again within 2 minutes after a trial, collapsed is 1
// and the remaining trials are skipped.
func BenchmarkCrashWithdrawn(b *testing.B) {
	for _, timers := range []struct {
		name   string
		modify func(*catalog.Config)
	}{
		{"default", nil},
		{"probe200ms", func(c *catalog.Config) {
			c.ProbeInterval, c.ProbeTimeout = 200*time.Millisecond, 100*time.Millisecond
		}},
	} {
		for _, udp := range []bool{false, true} {
			for _, load := range []string{"none", "busy", "procs"} {
				spec := benchSpec{n: 50, udp: udp, perNode: 20, modify: timers.modify}
				name := fmt.Sprintf("timers=%s/net=%s/N=%d/load=%s", timers.name, spec.netName(), spec.n, load)
				b.Run(name, func(b *testing.B) { crashTrials(b, spec, load) })
			}
		}
	}
}

func crashTrials(b *testing.B, spec benchSpec, load string) {
	bc := newBenchCluster(b, spec)
	bc.waitDrained(time.Minute)
	bc.tally.reset()
	switch load {
	case "busy":
		stop := busyLoad(runtime.GOMAXPROCS(0), 15*time.Minute)
		defer stop()
	case "procs":
		stop := procLoad(b, runtime.GOMAXPROCS(0), 15*time.Minute)
		defer stop()
	}
	cpu := startCPUMeter()
	var all, first []time.Duration
	var victims []string
	collapsed := false
	for b.Loop() {
		if collapsed {
			continue
		}
		i := rand.IntN(len(bc.nodes))
		victims = append(victims, bc.nodes[i].Name())
		f, a := bc.crash(i)
		all, first = append(all, a), append(first, f)
		debugf(b, "crash of %s: first %v, all %v", victims[len(victims)-1], f, a)
		if err := bc.replace(); err != nil {
			b.Logf("trial %d: %v", len(all), err)
			collapsed = true
		}
	}
	b.ReportMetric(cpu.cores(), "cpu-cores")
	reportPercentiles(b, all)
	slices.Sort(first)
	b.ReportMetric(ms(first[len(first)/2]), "first-ms")
	b.ReportMetric(float64(bc.tally.falseDeaths(victims...)), "false-deaths")
	b.ReportMetric(float64(bc.tally.falseDeadNodes(victims...)), "false-dead-nodes")
	b.ReportMetric(float64(bc.tally.falseSuspicions(victims...)), "false-suspicions")
	if collapsed {
		b.ReportMetric(1, "collapsed")
	}
	debugf(b, "%s", bc.tally)
}

// BenchmarkGossipBandwidth measures bytes sent per node per second in a
// quiet in-memory cluster where every node owns 100 endpoints, with
// production timers: packets (probes, acks, gossip) and streams
// (push-pull, full-state fetches) apart. Push-pull runs every
// PushPullInterval scaled by memberlist for N > 32 (x2 at 50, x4 at 200,
// x6 at 1000) and first fires up to 30s (the unscaled interval) later than
// that, so the benchmark waits one scaled interval plus 30s after set-up
// and then measures over one full scaled interval: every node's
// push-pulls fall into the window at their steady rate.
//
// N = 1000 runs with no endpoints and without compression (see light):
// 1000 full views of 100,000 endpoints do not fit in one process. Add
// BenchmarkPushPullStateSize's state-B/s/node at N = 1000 for the
// endpoints' share of push-pull.
func BenchmarkGossipBandwidth(b *testing.B) {
	for _, tc := range []struct {
		name   string
		spec   benchSpec
		period time.Duration // scaled push-pull interval at n
	}{
		{"N=50/endpoints=100", benchSpec{n: 50, perNode: 100}, time.Minute},
		{"N=200/endpoints=100", benchSpec{n: 200, perNode: 100}, 2 * time.Minute},
		{"N=1000/endpoints=0/compression=off", benchSpec{n: 1000, modify: light}, 3 * time.Minute},
	} {
		b.Run(tc.name, func(b *testing.B) {
			bc := newBenchCluster(b, tc.spec)
			bc.waitDrained(5 * time.Minute)
			debugf(b, "warming up for %v", tc.period+30*time.Second)
			time.Sleep(tc.period + 30*time.Second) // a rate over fixed windows, not synchronization
			bc.tally.reset()
			cpu := startCPUMeter()
			for b.Loop() {
				sum := func() (pkt, stream uint64) {
					for _, t := range bc.trs {
						pkt += t.SentPacketBytes.Load()
						stream += t.SentStreamBytes.Load()
					}
					return pkt, stream
				}
				p0, s0 := sum()
				start := time.Now()
				time.Sleep(tc.period)
				p1, s1 := sum()
				secs := time.Since(start).Seconds()
				per := func(v uint64) float64 { return float64(v) / float64(len(bc.trs)) / secs }
				total := per(p1-p0) + per(s1-s0)
				b.ReportMetric(total, "B/s/node")
				b.ReportMetric(total*8/1000, "kbit/s/node")
				b.ReportMetric(per(p1-p0), "packet-B/s/node")
				b.ReportMetric(per(s1-s0), "stream-B/s/node")
			}
			b.ReportMetric(cpu.cores(), "cpu-cores")
			b.ReportMetric(float64(bc.tally.falseDeaths()), "false-deaths")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	p := func(q float64) float64 { return ms(lat[min(len(lat)-1, int(q*float64(len(lat))))]) }
	b.ReportMetric(p(0.50), "p50-ms")
	b.ReportMetric(p(0.99), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
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

// busyLoad keeps n goroutines spinning until stop is called or limit
// passes, whichever is first. stop waits for them to end.
func busyLoad(n int, limit time.Duration) (stop func()) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	var wg sync.WaitGroup
	var sink atomic.Uint64
	for range n {
		wg.Go(func() {
			x := uint64(0)
			for ctx.Err() == nil {
				for i := range uint64(100_000) {
					x += i * i
				}
			}
			sink.Add(x)
		})
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// hogEnv names the environment variable that turns this test binary into
// a CPU hog (see procLoad); its value is how long to spin.
const hogEnv = "MESHGATE_BENCH_CPU_HOG"

func init() {
	if v := os.Getenv(hogEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d > time.Hour {
			d = time.Minute
		}
		stop := busyLoad(runtime.GOMAXPROCS(0), d)
		time.Sleep(d)
		stop()
		os.Exit(0)
	}
}

// procLoad starts this test binary again as a separate process that spins
// on n threads for at most limit; stop kills it and waits.
func procLoad(b *testing.B, n int, limit time.Duration) (stop func()) {
	exe, err := os.Executable()
	if err != nil {
		b.Fatalf("os.Executable() error = %v", err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), hogEnv+"="+limit.String(), fmt.Sprintf("GOMAXPROCS=%d", n))
	if err := cmd.Start(); err != nil {
		b.Fatalf("start CPU hog process error = %v", err)
	}
	return func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// tally counts membership events from the catalogs' and memberlist's logs.
type tally struct {
	mu       sync.Mutex
	failed   map[string]int // peer -> observers that saw it declared dead
	suspects map[string]int // node -> probes that found it unresponsive
	refutes  int            // suspicions a node refuted about itself
	drops    int            // memberlist handler queue overflows
}

func newTally() *tally {
	return &tally{failed: make(map[string]int), suspects: make(map[string]int)}
}

func (t *tally) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.failed)
	clear(t.suspects)
	t.refutes, t.drops = 0, 0
}

func (t *tally) handler() slog.Handler { return tallyHandler{t: t} }

// falseDeaths counts observer events declaring dead a node not in crashed.
func (t *tally) falseDeaths(crashed ...string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for peer, k := range t.failed {
		if !slices.Contains(crashed, peer) {
			n += k
		}
	}
	return n
}

func (t *tally) falseDeadNodes(crashed ...string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for peer := range t.failed {
		if !slices.Contains(crashed, peer) {
			n++
		}
	}
	return n
}

func (t *tally) falseSuspicions(crashed ...string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for node, k := range t.suspects {
		if !slices.Contains(crashed, node) {
			n += k
		}
	}
	return n
}

func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprintf("failed %v, suspected %v, refutes %d, handler queue drops %d", t.failed, t.suspects, t.refutes, t.drops)
}

type tallyHandler struct{ t *tally }

func (h tallyHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h tallyHandler) Handle(_ context.Context, r slog.Record) error {
	t := h.t
	msg := r.Message
	if r.Level >= slog.LevelError && os.Getenv("BENCH_DEBUG") != "" {
		fmt.Fprintf(os.Stderr, "%s %s\n", r.Time.Format("15:04:05.000"), msg)
	}
	switch {
	case msg == "catalog: member failed":
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "peer" {
				t.mu.Lock()
				t.failed[a.Value.String()]++
				t.mu.Unlock()
			}
			return true
		})
	case strings.HasPrefix(msg, "memberlist: Suspect ") && strings.HasSuffix(msg, " has failed, no acks received"):
		node := strings.TrimSuffix(strings.TrimPrefix(msg, "memberlist: Suspect "), " has failed, no acks received")
		t.mu.Lock()
		t.suspects[node]++
		t.mu.Unlock()
	case strings.HasPrefix(msg, "memberlist: Refuting a suspect"), strings.HasPrefix(msg, "memberlist: Refuting a dead"):
		t.mu.Lock()
		t.refutes++
		t.mu.Unlock()
	case strings.Contains(msg, "handler queue full"):
		t.mu.Lock()
		t.drops++
		t.mu.Unlock()
	}
	return nil
}

func (h tallyHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h tallyHandler) WithGroup(string) slog.Handler      { return h }

// benchRecords is a node's signer and verifier: a certificate of the
// gateway identity from ca, ca's roots, gateway identities only.
func benchRecords(b testing.TB, ca *clustertest.CA, name string) *mtls.Records {
	id, err := pki.ParseIdentity(nodeID)
	if err != nil {
		b.Fatal(err)
	}
	return mtls.NewRecords(mtls.NewSource(ca.NodeCertificate(b, name, nodeID), ca.Pool()), mtls.AuthorizeOneOf(id))
}
