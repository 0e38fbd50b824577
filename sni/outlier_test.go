package sni

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
)

var errOutlierTest = errors.New("connect: connection refused")

func outlierTestPolicy(threshold uint32, maxPercent, minHealth int32) *networking.TrafficPolicy {
	return &networking.TrafficPolicy{OutlierDetection: &networking.OutlierDetection{
		Consecutive_5XxErrors: wrapperspb.UInt32(threshold),
		Interval:              durationpb.New(10 * time.Second),
		BaseEjectionTime:      durationpb.New(30 * time.Second),
		MaxEjectionPercent:    maxPercent,
		MinHealthPercent:      minHealth,
	}}
}

// outlierTestLease picks addr (host part) from c by marking every other
// endpoint tried.
func outlierTestLease(t *testing.T, c *Cluster, host string) *Lease {
	t.Helper()
	want := host + ":443"
	var tried []string
	for _, e := range c.Endpoints() {
		if e.Addr != want {
			tried = append(tried, e.Addr)
		}
	}
	l, err := c.Pick(tried)
	if err != nil || l.Endpoint().Addr != want {
		t.Fatalf("Pick(all but %s) = %v, %v; want a lease on %s", want, l, err, want)
	}
	return l
}

// outlierTestFail reports n failed connects to host.
func outlierTestFail(t *testing.T, c *Cluster, host string, n int) {
	t.Helper()
	for range n {
		l := outlierTestLease(t, c, host)
		l.Dialed(errOutlierTest)
		l.Release()
	}
}

// outlierTestEjected returns the ejected endpoint hosts, by picking: an
// endpoint is ejected when Pick with every other endpoint tried refuses.
func outlierTestEjected(t *testing.T, c *Cluster) []string {
	t.Helper()
	var out []string
	eps := c.Endpoints()
	for _, e := range eps {
		var tried []string
		for _, o := range eps {
			if o.Addr != e.Addr {
				tried = append(tried, o.Addr)
			}
		}
		l, err := c.Pick(tried)
		if err != nil {
			out = append(out, e.Addr[:len(e.Addr)-len(":443")])
			continue
		}
		l.Release()
	}
	return out
}

func outlierTestCounter(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather() error = %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "meshgate_sni_ejections_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("meshgate_sni_ejections_total not registered")
	return 0
}

func TestOutlierEjectAndReturn(t *testing.T) {
	reg := prometheus.NewRegistry()
	b, clk := tableTestBuilder(t, func(c *BuilderConfig) { c.Registerer = reg })
	c := balanceTestCluster(t, b, balanceTestSet([]uint32{1, 1, 1, 1}, outlierTestPolicy(3, 100, 0)))
	ejected := func(want ...string) {
		t.Helper()
		if got := outlierTestEjected(t, c); !slices.Equal(got, want) {
			t.Fatalf("ejected endpoints = %v, want %v", got, want)
		}
	}
	outlierTestFail(t, c, "10.0.0.1", 2)
	l := outlierTestLease(t, c, "10.0.0.1")
	l.Dialed(nil) // a success resets the count
	l.Release()
	outlierTestFail(t, c, "10.0.0.1", 2)
	ejected()
	outlierTestFail(t, c, "10.0.0.1", 1) // third consecutive: ejected for 30s
	ejected("10.0.0.1")
	if v := outlierTestCounter(t, reg); v != 1 {
		t.Fatalf("meshgate_sni_ejections_total = %v, want 1", v)
	}
	for i, a := range balanceTestPicks(t, c, 12) {
		if a == "10.0.0.1" {
			t.Fatalf("pick #%d went to the ejected 10.0.0.1", i)
		}
	}
	clk.Advance(29 * time.Second)
	ejected("10.0.0.1")
	clk.Advance(time.Second) // t=30s
	ejected()

	// Second ejection lasts twice as long.
	outlierTestFail(t, c, "10.0.0.1", 3)
	ejected("10.0.0.1")
	clk.Advance(59 * time.Second)
	ejected("10.0.0.1")
	clk.Advance(time.Second) // t=90s
	ejected()

	// Healthy for two intervals: the multiplier decays from 2 to 0, so
	// the next ejection is base time again.
	clk.Advance(20 * time.Second) // t=110s
	outlierTestFail(t, c, "10.0.0.1", 3)
	ejected("10.0.0.1")
	clk.Advance(30 * time.Second)
	ejected()
	if v := outlierTestCounter(t, reg); v != 3 {
		t.Fatalf("meshgate_sni_ejections_total = %v, want 3", v)
	}

	// Ejection ends are rounded up to the interval tick: ejected at
	// t=145s for 30s+... ends at the 180s tick, not at 175s.
	clk.Advance(5 * time.Second) // t=145s
	outlierTestFail(t, c, "10.0.0.2", 3)
	clk.Advance(30 * time.Second) // t=175s
	ejected("10.0.0.2")
	clk.Advance(5 * time.Second) // t=180s
	ejected()
}

func TestOutlierMaxEjectionPercent(t *testing.T) {
	for _, tc := range []struct {
		name       string
		n          int
		maxPercent int32
		want       int
	}{
		{"half of four", 4, 50, 2},
		{"default 10% of four ejects none (as Envoy)", 4, 0, 0},
		{"default 10% of ten ejects one", 10, 0, 1},
		{"all", 3, 100, 3},
		{"a third of three", 3, 34, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := tableTestBuilder(t)
			c := balanceTestCluster(t, b, balanceTestSet(make([]uint32, tc.n), outlierTestPolicy(1, tc.maxPercent, 0)))
			// Every endpoint fails once: each would be ejected.
			for i := range tc.n {
				host := fmt.Sprintf("10.0.0.%d", i+1)
				var tried []string
				for j := range tc.n {
					if j != i {
						tried = append(tried, fmt.Sprintf("10.0.0.%d:443", j+1))
					}
				}
				l, err := c.Pick(tried)
				if err != nil {
					break // host already ejected
				}
				if l.Endpoint().Addr != host+":443" {
					t.Fatalf("Pick(%v) = %s, want %s", tried, l.Endpoint().Addr, host)
				}
				l.Dialed(errOutlierTest)
				l.Release()
			}
			if got := len(outlierTestEjected(t, c)); got != tc.want {
				t.Fatalf("%d endpoints failing with maxEjectionPercent %d: %d ejected, want %d", tc.n, tc.maxPercent, got, tc.want)
			}
		})
	}
}

func TestOutlierPanicAndAllEjected(t *testing.T) {
	// Without minHealthPercent, a cluster whose endpoints are all ejected
	// refuses.
	b, _ := tableTestBuilder(t)
	set := balanceTestSet([]uint32{1, 1}, outlierTestPolicy(1, 100, 0))
	tbl := tableTestBuild(t, b, set)
	d, _ := tbl.Resolve(tableTestAutoKey, tableTestHello(balanceTestSNI, "istio"))
	outlierTestFail(t, d.Cluster, "10.0.0.1", 1)
	outlierTestFail(t, d.Cluster, "10.0.0.2", 1)
	_, err := d.Cluster.Pick(nil)
	tableTestRefusal(t, "Pick() with all endpoints ejected", err, ReasonNoEndpoint, "ejected")
	ex := tbl.Explain(balanceTestSNI, []string{"istio"})
	if len(ex) != 1 || ex[0].Reason != ReasonNoEndpoint || !ex[0].Destinations[0].Endpoints[0].Ejected || ex[0].Destinations[0].Endpoints[0].EjectedFor != "30s" {
		t.Fatalf("Explain() with all ejected = %+v, want no_endpoint and ejected endpoints for 30s", ex)
	}

	// With minHealthPercent 60 and one of two ejected (50% healthy), the
	// ejection is ignored (panic), as Envoy's panic threshold.
	b2, _ := tableTestBuilder(t)
	c := balanceTestCluster(t, b2, balanceTestSet([]uint32{1, 1}, outlierTestPolicy(1, 100, 60)))
	outlierTestFail(t, c, "10.0.0.1", 1)
	seen := map[string]bool{}
	for _, a := range balanceTestPicks(t, c, 4) {
		seen[a] = true
	}
	if !seen["10.0.0.1"] {
		t.Fatalf("picks with 50%% healthy and minHealthPercent 60 = %v, want the ejected 10.0.0.1 used again", seen)
	}
	// minHealthPercent 40: 50% healthy is enough, the ejection holds.
	b3, _ := tableTestBuilder(t)
	c3 := balanceTestCluster(t, b3, balanceTestSet([]uint32{1, 1}, outlierTestPolicy(1, 100, 40)))
	outlierTestFail(t, c3, "10.0.0.1", 1)
	for _, a := range balanceTestPicks(t, c3, 4) {
		if a == "10.0.0.1" {
			t.Fatalf("pick went to the ejected 10.0.0.1 with 50%% healthy and minHealthPercent 40")
		}
	}
}

func TestOutlierDisabled(t *testing.T) {
	b, _ := tableTestBuilder(t)
	c := balanceTestCluster(t, b, balanceTestSet([]uint32{1, 1}, nil))
	outlierTestFail(t, c, "10.0.0.1", 50)
	if got := outlierTestEjected(t, c); len(got) != 0 {
		t.Fatalf("ejected %v without outlierDetection, want none", got)
	}
}

func TestLiveStateSurvivesRebuild(t *testing.T) {
	b, _ := tableTestBuilder(t)
	set := balanceTestSet([]uint32{1, 1, 1}, outlierTestPolicy(1, 100, 0))
	router := &Router{}
	router.Publish(tableTestBuild(t, b, set))
	d, err := router.Route(tableTestAutoKey, tableTestHello(balanceTestSNI, "istio"))
	if err != nil {
		t.Fatalf("Route() error = %v", err)
	}
	old := d.Cluster
	held := outlierTestLease(t, old, "10.0.0.1")
	outlierTestFail(t, old, "10.0.0.2", 1)

	// Rebuild with one more endpoint and a connection limit.
	set2 := balanceTestSet([]uint32{1, 1, 1, 1}, outlierTestPolicy(1, 100, 0))
	set2.DestinationRules[0].Spec.TrafficPolicy.ConnectionPool = &networking.ConnectionPoolSettings{Tcp: &networking.ConnectionPoolSettings_TCPSettings{MaxConnections: 2}}
	router.Publish(tableTestBuild(t, b, set2))
	d2, err := router.Route(tableTestAutoKey, tableTestHello(balanceTestSNI, "istio"))
	if err != nil {
		t.Fatalf("Route() after rebuild error = %v", err)
	}
	c := d2.Cluster
	if c == old {
		t.Fatalf("rebuild returned the same *Cluster")
	}
	if c.Active() != 1 {
		t.Fatalf("new cluster Active() = %d, want the 1 lease held from the old table", c.Active())
	}
	if got := outlierTestEjected(t, c); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Fatalf("ejected after rebuild = %v, want [10.0.0.2] carried over", got)
	}
	ex := router.Load().Explain(balanceTestSNI, []string{"istio"})
	if ex[0].Destinations[0].Endpoints[0].Active != 1 {
		t.Fatalf("Explain() after rebuild shows %d active on 10.0.0.1, want 1", ex[0].Destinations[0].Endpoints[0].Active)
	}
	// The held lease counts against the new limit of 2.
	l, err := c.Pick(nil)
	if err != nil {
		t.Fatalf("Pick() error = %v", err)
	}
	_, err = c.Pick(nil)
	tableTestRefusal(t, "Pick() over the new limit", err, ReasonOverloaded, "")
	held.Release()
	l.Release()
	if c.Active() != 0 {
		t.Fatalf("Active() = %d after releasing the old-table lease, want 0", c.Active())
	}
	// Endpoints removed from config and idle are forgotten.
	router.Publish(tableTestBuild(t, b, balanceTestSet([]uint32{1}, nil)))
	b.mu.Lock()
	n := b.liveEndpoints()
	b.mu.Unlock()
	if n != 1 {
		t.Fatalf("builder keeps %d endpoint states after shrinking to one endpoint, want 1", n)
	}
}

// outlierTestActive returns the Active count explain shows for the
// endpoint host:443 of balanceTestSNI, or -1 when it is not listed.
func outlierTestActive(t *testing.T, tbl *Table, addr string) int64 {
	t.Helper()
	ex := tbl.Explain(balanceTestSNI, []string{"istio"})
	if len(ex) == 0 || len(ex[0].Destinations) == 0 {
		t.Fatalf("Explain(%q) = %+v, want a destination", balanceTestSNI, ex)
	}
	for _, e := range ex[0].Destinations[0].Endpoints {
		if e.Addr == addr {
			return e.Active
		}
	}
	return -1
}

// An endpoint that leaves the table while a connection still counts on
// it, and comes back two builds later, finds its live state again: the
// active count and the ejection.
func TestLiveStateSurvivesRemoval(t *testing.T) {
	b, _ := tableTestBuilder(t)
	pol := func() *networking.TrafficPolicy { return outlierTestPolicy(1, 100, 0) }
	c := balanceTestCluster(t, b, balanceTestSet([]uint32{1, 1, 1}, pol()))
	held := outlierTestLease(t, c, "10.0.0.3")
	outlierTestFail(t, c, "10.0.0.3", 1)
	for range 2 {
		tbl := tableTestBuild(t, b, balanceTestSet([]uint32{1, 1}, pol()))
		if got := outlierTestActive(t, tbl, "10.0.0.3:443"); got != -1 {
			t.Fatalf("10.0.0.3 listed (active %d) after it was removed", got)
		}
	}
	tbl := tableTestBuild(t, b, balanceTestSet([]uint32{1, 1, 1}, pol()))
	if got := outlierTestActive(t, tbl, "10.0.0.3:443"); got != 1 {
		t.Fatalf("10.0.0.3 back with active %d, want the 1 lease held since before its removal", got)
	}
	d, err := tbl.Resolve(tableTestAutoKey, tableTestHello(balanceTestSNI, "istio"))
	if err != nil {
		t.Fatalf("Resolve() error = %v", err)
	}
	if got := outlierTestEjected(t, d.Cluster); !slices.Equal(got, []string{"10.0.0.3"}) {
		t.Fatalf("ejected after coming back = %v, want [10.0.0.3]", got)
	}
	// Removed again while held, then released: the next build forgets it.
	tableTestBuild(t, b, balanceTestSet([]uint32{1, 1}, pol()))
	held.Release()
	tableTestBuild(t, b, balanceTestSet([]uint32{1, 1}, pol()))
	b.mu.Lock()
	n := b.liveEndpoints()
	b.mu.Unlock()
	if n != 2 {
		t.Fatalf("builder keeps %d endpoint states after the last lease on a removed endpoint ended, want 2", n)
	}
}

// The same through endpoint updates (UpdateServices): a catalog endpoint
// withdrawn while it carries a connection keeps its state for when it
// comes back, and the cluster's count carries over.
func TestLiveStateSurvivesWithdrawal(t *testing.T) {
	b := NewBuilder(DefaultBuilderConfig())
	in, _ := tableBenchInput3(1)
	host := tableBenchHost(0)
	sni := "outbound_.8080_._." + host
	t1, err := b.Build(in)
	if err != nil {
		t.Fatalf("Build() error = %v", err)
	}
	d, err := t1.Resolve(tableTestAutoKey, tableTestHello(sni, "istio"))
	if err != nil {
		t.Fatalf("Resolve(%q) error = %v", sni, err)
	}
	last := in.Endpoints[2].Endpoint.Addr
	held, err := d.Cluster.Pick([]string{in.Endpoints[0].Endpoint.Addr, in.Endpoints[1].Endpoint.Addr})
	if err != nil || held.Endpoint().Addr != last {
		t.Fatalf("Pick() = %v, %v; want %s", held, err, last)
	}
	t2, err := b.UpdateServices(t1, map[string][]CatalogEndpoint{host: in.Endpoints[:2]})
	if err != nil {
		t.Fatalf("UpdateServices(withdraw) error = %v", err)
	}
	t3, err := b.UpdateServices(t2, map[string][]CatalogEndpoint{host: in.Endpoints})
	if err != nil {
		t.Fatalf("UpdateServices(back) error = %v", err)
	}
	d3, err := t3.Resolve(tableTestAutoKey, tableTestHello(sni, "istio"))
	if err != nil {
		t.Fatalf("Resolve(%q) error = %v", sni, err)
	}
	if d3.Cluster == d.Cluster || d3.Cluster.Active() != 1 {
		t.Fatalf("cluster after the updates: same %v, Active() = %d; want a new cluster counting the held lease", d3.Cluster == d.Cluster, d3.Cluster.Active())
	}
	var got int64 = -1
	for _, e := range t3.Explain(sni, []string{"istio"})[0].Destinations[0].Endpoints {
		if e.Addr == last {
			got = e.Active
		}
	}
	if got != 1 {
		t.Fatalf("%s back with active %d, want 1", last, got)
	}
	held.Release()
}
