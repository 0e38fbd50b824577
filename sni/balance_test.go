package sni

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshgate/meshgate/config"
)

const balanceTestSNI = "outbound_.443_._.svc.test.local"

// balanceTestSet is one AUTO_PASSTHROUGH service svc.test.local:443 with
// endpoints 10.0.0.1.. of the given weights and traffic policy tp.
func balanceTestSet(weights []uint32, tp *networking.TrafficPolicy) *config.Set {
	var eps []*networking.WorkloadEntry
	for i, w := range weights {
		eps = append(eps, &networking.WorkloadEntry{Address: fmt.Sprintf("10.0.0.%d", i+1), Weight: w})
	}
	set := &config.Set{
		Gateways:       []*config.Gateway{tableTestGW("istio-system/gw", nil, tableTestServer(15443, "TLS", "AUTO_PASSTHROUGH", "*.local"))},
		ServiceEntries: []*config.ServiceEntry{tableTestSE("test/svc", true, []string{"svc.test.local"}, []*networking.ServicePort{tableTestPort(443, "tls")}, eps...)},
	}
	if tp != nil {
		set.DestinationRules = []*config.DestinationRule{tableTestDR("test/svc", "svc.test.local", tp)}
	}
	return set
}

func balanceTestCluster(t testing.TB, b *Builder, set *config.Set) *Cluster {
	t.Helper()
	tbl := tableTestBuild(t, b, set)
	d, err := tbl.Resolve(tableTestAutoKey, tableTestHello(balanceTestSNI, "istio"))
	if err != nil {
		t.Fatalf("Resolve(%q) error = %v", balanceTestSNI, err)
	}
	return d.Cluster
}

func balanceTestLB(lb networking.LoadBalancerSettings_SimpleLB) *networking.TrafficPolicy {
	return &networking.TrafficPolicy{LoadBalancer: &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: lb}}}
}

// balanceTestPicks picks n times (releasing each lease) and returns the
// endpoint addresses without port, in order.
func balanceTestPicks(t *testing.T, c *Cluster, n int) []string {
	t.Helper()
	var out []string
	for i := range n {
		l, err := c.Pick(nil)
		if err != nil {
			t.Fatalf("Pick #%d error = %v", i, err)
		}
		out = append(out, strings.TrimSuffix(l.Endpoint().Addr, ":443"))
		l.Release()
	}
	return out
}

func TestBalanceRoundRobin(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []uint32
		n       int
		want    string
	}{
		{"equal weights rotate", []uint32{1, 1, 1}, 7, "10.0.0.1 10.0.0.2 10.0.0.3 10.0.0.1 10.0.0.2 10.0.0.3 10.0.0.1"},
		{"unset weights are 1", []uint32{0, 0}, 4, "10.0.0.1 10.0.0.2 10.0.0.1 10.0.0.2"},
		{"smooth 2:1", []uint32{2, 1}, 6, "10.0.0.1 10.0.0.2 10.0.0.1 10.0.0.1 10.0.0.2 10.0.0.1"},
		{"single endpoint", []uint32{5}, 3, "10.0.0.1 10.0.0.1 10.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := tableTestBuilder(t)
			c := balanceTestCluster(t, b, balanceTestSet(tc.weights, nil))
			if c.LoadBalancer() != "ROUND_ROBIN" {
				t.Fatalf("LoadBalancer() = %s, want ROUND_ROBIN by default", c.LoadBalancer())
			}
			if got := strings.Join(balanceTestPicks(t, c, tc.n), " "); got != tc.want {
				t.Fatalf("%d picks with weights %v = %s, want %s", tc.n, tc.weights, got, tc.want)
			}
		})
	}
}

func TestBalanceWeightedCounts(t *testing.T) {
	for _, lb := range []networking.LoadBalancerSettings_SimpleLB{networking.LoadBalancerSettings_ROUND_ROBIN, networking.LoadBalancerSettings_RANDOM, networking.LoadBalancerSettings_LEAST_REQUEST} {
		t.Run(lb.String(), func(t *testing.T) {
			b, _ := tableTestBuilder(t)
			c := balanceTestCluster(t, b, balanceTestSet([]uint32{3, 1}, balanceTestLB(lb)))
			got := map[string]int{}
			const n = 4000
			for _, a := range balanceTestPicks(t, c, n) {
				got[a]++
			}
			// Expected 3000/1000. Round robin is exact; the seeded random
			// ones must land within 5%.
			if d := got["10.0.0.1"] - 3000; d < -150 || d > 150 || got["10.0.0.1"]+got["10.0.0.2"] != n {
				t.Fatalf("%s over %d picks with weights 3:1 = %v, want about 3000/1000", lb, n, got)
			}
		})
	}
}

func TestBalanceLeastRequest(t *testing.T) {
	b, _ := tableTestBuilder(t)
	c := balanceTestCluster(t, b, balanceTestSet([]uint32{1, 1}, balanceTestLB(networking.LoadBalancerSettings_LEAST_REQUEST)))
	var held []*Lease
	// Holding every lease: the two endpoints must alternate in load, so
	// after 2k picks each holds k.
	for i := range 10 {
		l, err := c.Pick(nil)
		if err != nil {
			t.Fatalf("Pick #%d error = %v", i, err)
		}
		held = append(held, l)
	}
	count := map[string]int{}
	for _, l := range held {
		count[l.Endpoint().Addr]++
	}
	if count["10.0.0.1:443"] != 5 || count["10.0.0.2:443"] != 5 {
		t.Fatalf("10 held LEAST_REQUEST picks over 2 endpoints = %v, want 5 each", count)
	}
	// Release everything on 10.0.0.2: the next pick must go there.
	for _, l := range held {
		if l.Endpoint().Addr == "10.0.0.2:443" {
			l.Release()
		}
	}
	l, err := c.Pick(nil)
	if err != nil || l.Endpoint().Addr != "10.0.0.2:443" {
		t.Fatalf("Pick() with loads 5/0 = %v, %v; want 10.0.0.2:443", l, err)
	}
	// Weighted: an endpoint of weight 4 carries 4 times the load.
	b2, _ := tableTestBuilder(t)
	//lint:ignore SA1019 the deprecated alias must keep working
	c2 := balanceTestCluster(t, b2, balanceTestSet([]uint32{4, 1}, balanceTestLB(networking.LoadBalancerSettings_LEAST_CONN)))
	count = map[string]int{}
	for range 50 {
		l, err := c2.Pick(nil)
		if err != nil {
			t.Fatalf("Pick() error = %v", err)
		}
		count[l.Endpoint().Addr]++
	}
	if d := count["10.0.0.1:443"] - 40; d < -2 || d > 2 {
		t.Fatalf("50 held LEAST_CONN picks with weights 4:1 = %v, want about 40/10", count)
	}
}

func TestBalanceTried(t *testing.T) {
	for _, lb := range []networking.LoadBalancerSettings_SimpleLB{networking.LoadBalancerSettings_ROUND_ROBIN, networking.LoadBalancerSettings_RANDOM, networking.LoadBalancerSettings_LEAST_REQUEST} {
		t.Run(lb.String(), func(t *testing.T) {
			b, _ := tableTestBuilder(t)
			c := balanceTestCluster(t, b, balanceTestSet([]uint32{1, 2, 3}, balanceTestLB(lb)))
			tried := []string{"10.0.0.1:443", "10.0.0.3:443"}
			for i := range 20 {
				l, err := c.Pick(tried)
				if err != nil || l.Endpoint().Addr != "10.0.0.2:443" {
					t.Fatalf("Pick(%v) #%d = %v, %v; want the only untried 10.0.0.2:443", tried, i, l, err)
				}
				l.Release()
			}
			_, err := c.Pick([]string{"10.0.0.1:443", "10.0.0.2:443", "10.0.0.3:443"})
			tableTestRefusal(t, "Pick(all tried)", err, ReasonNoEndpoint, "already tried")
			if a := c.Active(); a != 0 {
				t.Fatalf("Active() = %d after releasing everything, want 0", a)
			}
		})
	}
}

func TestBalanceMaxConnections(t *testing.T) {
	tp := &networking.TrafficPolicy{ConnectionPool: &networking.ConnectionPoolSettings{Tcp: &networking.ConnectionPoolSettings_TCPSettings{MaxConnections: 2}}}
	b, _ := tableTestBuilder(t)
	c := balanceTestCluster(t, b, balanceTestSet([]uint32{1, 1, 1}, tp))
	l1, err1 := c.Pick(nil)
	l2, err2 := c.Pick(nil)
	if err1 != nil || err2 != nil {
		t.Fatalf("first two Picks with maxConnections 2: %v, %v", err1, err2)
	}
	_, err := c.Pick(nil)
	tableTestRefusal(t, "third Pick with maxConnections 2", err, ReasonOverloaded, "maxConnections 2")
	l1.Release()
	l1.Release() // idempotent: must not free a second slot
	l3, err := c.Pick(nil)
	if err != nil {
		t.Fatalf("Pick after one Release error = %v, want a lease", err)
	}
	_, err = c.Pick(nil)
	tableTestRefusal(t, "Pick after double Release", err, ReasonOverloaded, "")
	l2.Release()
	l3.Release()
	if c.Active() != 0 {
		t.Fatalf("Active() = %d after releasing all leases, want 0", c.Active())
	}
	if l3.Cluster() != c {
		t.Fatalf("Lease.Cluster() = %p, want %p", l3.Cluster(), c)
	}
}

func TestBalanceConcurrentLimit(t *testing.T) {
	tp := &networking.TrafficPolicy{ConnectionPool: &networking.ConnectionPoolSettings{Tcp: &networking.ConnectionPoolSettings_TCPSettings{MaxConnections: 5}}}
	b, _ := tableTestBuilder(t)
	c := balanceTestCluster(t, b, balanceTestSet([]uint32{1, 1}, tp))
	var mu sync.Mutex
	var leases []*Lease
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				l, err := c.Pick(nil)
				var re *RefusedError
				if err != nil && (!errors.As(err, &re) || re.Reason != ReasonOverloaded) {
					t.Errorf("Pick error = %v, want nil or overloaded", err)
					return
				}
				if l != nil {
					mu.Lock()
					leases = append(leases, l)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if len(leases) != 5 || c.Active() != 5 {
		t.Fatalf("160 concurrent Picks with maxConnections 5 granted %d leases, Active() = %d; want 5 and 5", len(leases), c.Active())
	}
	for _, l := range leases {
		l.Release()
	}
}

func TestBalanceConnectTimeoutDefault(t *testing.T) {
	tp := &networking.TrafficPolicy{ConnectionPool: &networking.ConnectionPoolSettings{Tcp: &networking.ConnectionPoolSettings_TCPSettings{ConnectTimeout: durationpb.New(0)}},
		OutlierDetection: &networking.OutlierDetection{Consecutive_5XxErrors: wrapperspb.UInt32(0)}}
	b, _ := tableTestBuilder(t)
	c := balanceTestCluster(t, b, balanceTestSet([]uint32{1}, tp))
	if c.Policy().ConnectTimeout != DefaultConnectTimeout || c.pol.outlier.enabled {
		t.Fatalf("policy %+v outlier %+v; want connectTimeout 0s to keep the 10s default and consecutive5xxErrors 0 to disable ejection", c.Policy(), c.pol.outlier)
	}
}

func BenchmarkPick(b *testing.B) {
	for _, lb := range []networking.LoadBalancerSettings_SimpleLB{networking.LoadBalancerSettings_ROUND_ROBIN, networking.LoadBalancerSettings_LEAST_REQUEST, networking.LoadBalancerSettings_RANDOM} {
		for _, weighted := range []bool{false, true} {
			weights := make([]uint32, 16)
			for i := range weights {
				weights[i] = 1
				if weighted {
					weights[i] = uint32(i%4 + 1)
				}
			}
			name := lb.String()
			if weighted {
				name += "/weighted"
			}
			b.Run(name, func(b *testing.B) {
				builder := NewBuilder(DefaultBuilderConfig())
				tbl, err := builder.Build(BuildInput{Config: balanceTestSet(weights, balanceTestLB(lb)), Node: tableTestNode})
				if err != nil {
					b.Fatalf("Build() error = %v", err)
				}
				d, err := tbl.Resolve(tableTestAutoKey, tableTestHello(balanceTestSNI, "istio"))
				if err != nil {
					b.Fatalf("Resolve() error = %v", err)
				}
				c := d.Cluster
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						l, err := c.Pick(nil)
						if err != nil {
							b.Errorf("Pick() error = %v", err)
							return
						}
						l.Dialed(nil)
						l.Release()
					}
				})
			})
		}
	}
}
