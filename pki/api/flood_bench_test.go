package api_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/api"
	"github.com/meshgate/meshgate/pki/pkitest"
)

// BenchmarkIssuanceUnderFlood measures the legitimate issuance rate (8
// gRPC callers from 127.0.0.1, one token, wall clock) without and with a
// flood (4 keep-alive HTTP clients from 127.0.0.100-103 sending bogus
// tokens as fast as they can, plus 3,000 silent sockets from
// 127.0.0.10-19), in alternating phases of the same run, and reports the
// ratio. The flood runs on the same cores as the CA, so the ratio also
// shows what the flood's CPU costs the CA. b.N is not used: the phases
// are fixed (run with -benchtime=1x).
func BenchmarkIssuanceUnderFlood(b *testing.B) {
	fs := startFloodServer(b, func(c *pki.Config) {
		c.Logger = nil
		c.CallerRateLimit = 0 // one token stands for many callers here
	}, func(c *api.Config) { c.Logger = nil })
	fs.settle(b)
	tok := fs.token(b, "default", "web", 0)
	csr, _ := pkitest.WorkloadCSR(b, web)
	client := fs.grpcFrom(b, "127.0.0.1", nil)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
	const n = 1500
	phase := func() float64 {
		var next, failed atomic.Int64
		start := time.Now()
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for next.Add(1) <= n {
					if _, err := client.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: string(csr)}); err != nil {
						failed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if f := failed.Load(); f > 0 {
			b.Fatalf("%d of %d legitimate issuances failed", f, n)
		}
		return n / time.Since(start).Seconds()
	}
	body := jsonBody(b, map[string]any{"csr": string(csr)})
	var quiet, flooded, ratios, floodRates []float64
	for range 3 {
		q := phase()
		f := startFlood(b, fs.testServer, 3000, 10, 4, 10_000_000, body)
		time.Sleep(200 * time.Millisecond) // let the flood reach its pace (load shaping, not synchronization)
		sent0, t0 := f.sent.Load(), time.Now()
		fl := phase()
		floodRates = append(floodRates, float64(f.sent.Load()-sent0)/time.Since(t0).Seconds())
		f.close()
		quiet, flooded, ratios = append(quiet, q), append(flooded, fl), append(ratios, fl/q)
	}
	b.ReportMetric(median(quiet), "certs/s-quiet")
	b.ReportMetric(median(flooded), "certs/s-flood")
	b.ReportMetric(median(ratios), "flood/quiet")
	b.ReportMetric(median(floodRates), "bogus-req/s")
	b.Logf("phases: quiet %s, flood %s, bogus req/s %s",
		fmt.Sprintf("%.0f", quiet), fmt.Sprintf("%.0f", flooded), fmt.Sprintf("%.0f", floodRates))
}
