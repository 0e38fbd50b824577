package sni

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshgate/meshgate/config"
)

func TestRouterZero(t *testing.T) {
	var r Router
	if r.Load() != nil {
		t.Fatalf("zero Router Load() = %p, want nil", r.Load())
	}
	_, err := r.Route(tableTestAutoKey, tableTestHello("outbound_.9080_._.reviews.default.svc.cluster.local", "istio"))
	tableTestRefusal(t, "zero Router.Route", err, ReasonNoRoute, "no route table published")
	b, _ := tableTestBuilder(t)
	tbl := tableTestBuild(t, b, tableTestMesh())
	r.Publish(tbl)
	if r.Load() != tbl {
		t.Fatalf("Load() after Publish = %p, want %p", r.Load(), tbl)
	}
	if _, err := r.Route(tableTestAutoKey, tableTestHello("outbound_.9080_._.reviews.default.svc.cluster.local", "istio")); err != nil {
		t.Fatalf("Route() after Publish error = %v", err)
	}
	r.Publish(nil)
	_, err = r.Route(tableTestAutoKey, tableTestHello("outbound_.9080_._.reviews.default.svc.cluster.local", "istio"))
	tableTestRefusal(t, "Route() after Publish(nil)", err, ReasonNoRoute, "")
}

// TestRouterConcurrent runs Route/Pick/Dialed/Release on several
// goroutines while another rebuilds and publishes; run it with -race.
func TestRouterConcurrent(t *testing.T) {
	b, _ := tableTestBuilder(t)
	tp := outlierTestPolicy(2, 50, 0)
	tp.ConnectionPool = &networking.ConnectionPoolSettings{Tcp: &networking.ConnectionPoolSettings_TCPSettings{MaxConnections: 6}}
	sets := []*config.Set{balanceTestSet([]uint32{1, 2, 3}, tp), balanceTestSet([]uint32{3, 1, 1, 1}, tp)}
	var r Router
	r.Publish(tableTestBuild(t, b, sets[0]))
	var wg sync.WaitGroup
	var picks atomic.Int64
	for w := range 4 {
		wg.Go(func() {
			var held []*Lease
			for i := range 500 {
				d, err := r.Route(tableTestAutoKey, tableTestHello(balanceTestSNI, "istio"))
				if err != nil {
					t.Errorf("Route() error = %v", err)
					return
				}
				l, err := d.Cluster.Pick(nil)
				var re *RefusedError
				switch {
				case err == nil:
					picks.Add(1)
					if (i+w)%7 == 0 {
						l.Dialed(errOutlierTest)
					} else {
						l.Dialed(nil)
					}
					held = append(held, l)
					if len(held) > 2 {
						held[0].Release()
						held = held[1:]
					}
				case errors.As(err, &re) && (re.Reason == ReasonOverloaded || re.Reason == ReasonNoEndpoint):
				default:
					t.Errorf("Pick() error = %v", err)
					return
				}
				if i%100 == 0 {
					_ = r.Load().Explain(balanceTestSNI, []string{"istio"})
				}
			}
			for _, l := range held {
				l.Release()
				l.Release()
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	// Rebuild and publish until the workers are done (at most 1000 times).
	for i := 0; i < 1000; i++ {
		select {
		case <-done:
			i = 1000
		default:
			r.Publish(tableTestBuild(t, b, sets[i%2]))
		}
	}
	<-done
	if picks.Load() == 0 {
		t.Fatalf("no Pick succeeded")
	}
	d, _ := r.Route(tableTestAutoKey, tableTestHello(balanceTestSNI, "istio"))
	if a := d.Cluster.Active(); a != 0 {
		t.Fatalf("Active() = %d after every lease was released, want 0", a)
	}
	for _, e := range r.Load().Explain(balanceTestSNI, []string{"istio"})[0].Destinations[0].Endpoints {
		if e.Active != 0 {
			t.Fatalf("endpoint %s Active = %d after every lease was released, want 0", e.Addr, e.Active)
		}
	}
}

func ExampleBuilder() {
	set := &config.Set{
		Gateways: []*config.Gateway{{
			Meta: config.Meta{Namespace: "istio-system", Name: "cross-network-gateway"},
			Spec: &networking.Gateway{Servers: []*networking.Server{{
				Port:  &networking.Port{Number: 15443, Name: "tls", Protocol: "TLS"},
				Hosts: []string{"*.local"},
				Tls:   &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_AUTO_PASSTHROUGH},
			}}},
		}},
		ServiceEntries: []*config.ServiceEntry{{
			Meta: config.Meta{Namespace: "default", Name: "reviews"},
			Spec: &networking.ServiceEntry{
				Hosts:    []string{"reviews.default.svc.cluster.local"},
				Ports:    []*networking.ServicePort{{Number: 9080, Name: "http", Protocol: "HTTP"}},
				Location: networking.ServiceEntry_MESH_INTERNAL,
				Endpoints: []*networking.WorkloadEntry{
					{Address: "10.0.0.1", Labels: map[string]string{"version": "v1"}},
				},
			},
		}},
	}
	b := NewBuilder(BuilderConfig{DefaultBind: "127.0.0.1"})
	tbl, err := b.Build(BuildInput{Config: set, Node: NodeInfo{Name: "gw-1", Network: "net-a"}})
	if err != nil {
		panic(err)
	}
	var router Router
	router.Publish(tbl)
	for _, l := range tbl.Listeners() {
		fmt.Println("listen", l.Network, l.Address)
	}
	hello := &Hello{ServerName: "outbound_.9080_._.reviews.default.svc.cluster.local", ALPN: []string{"istio"}}
	d, err := router.Route("tcp/127.0.0.1:15443", hello)
	if err != nil {
		panic(err)
	}
	lease, err := d.Cluster.Pick(nil)
	if err != nil {
		panic(err)
	}
	defer lease.Release()
	fmt.Println(d.Mode, d.Service(), "->", lease.Endpoint().Addr)
	lease.Dialed(nil)
	// Output:
	// listen tcp 127.0.0.1:15443
	// AUTO_PASSTHROUGH reviews.default.svc.cluster.local -> 10.0.0.1:9080
}
