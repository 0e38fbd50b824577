package catalog

import (
	"bytes"
	"compress/lzw"
	"fmt"
	"testing"
	"time"
)

// BenchmarkPushPullStateSize reports the size of the catalog's part of one
// push-pull message (LocalState: the sender's own 100 endpoints plus a
// digest row for every owner) in a fleet of N nodes that all own 100
// endpoints, raw and LZW-compressed as memberlist sends it. state-B/s is
// what that part costs each node in steady state: it sends two such
// messages per push-pull period (one exchange it starts, one it answers
// on average), and memberlist scales the 30s PushPullInterval to 60s at
// N = 50, 120s at 200 and 180s at 1000. The benchmark runs no gossip; it
// sizes the message that a 1000-node, 100-endpoint fleet would exchange,
// which does not fit in one test process.
func BenchmarkPushPullStateSize(b *testing.B) {
	for _, tc := range []struct {
		n      int
		period time.Duration
	}{{50, time.Minute}, {200, 2 * time.Minute}, {1000, 3 * time.Minute}} {
		b.Run(fmt.Sprintf("N=%d/endpoints=100", tc.n), func(b *testing.B) {
			inc := uint64(time.Now().UnixNano())
			s := state{Owner: "n0000", Ver: version{Inc: inc, Ctr: 100}, Eps: make(map[string]Endpoint)}
			for j := range 100 {
				s.Eps[fmt.Sprintf("e%d", j)] = Endpoint{
					Service: fmt.Sprintf("svc-%d.default.svc.cluster.local", j%20), Port: 9080,
					Addr: fmt.Sprintf("10.0.0.%d:9080", j), Labels: map[string]string{"version": "v1"}}
			}
			for i := 1; i < tc.n; i++ {
				s.Digest = append(s.Digest, digestRow{Owner: fmt.Sprintf("n%04d", i), Ver: version{Inc: inc + uint64(i)*7919, Ctr: 100}})
			}
			var raw, packed int
			for b.Loop() {
				msg := encodeState(s)
				var buf bytes.Buffer
				w := lzw.NewWriter(&buf, lzw.LSB, 8) // memberlist's compressPayload settings
				if _, err := w.Write(msg); err != nil {
					b.Fatal(err)
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
				raw, packed = len(msg), buf.Len()
			}
			b.ReportMetric(float64(raw), "state-B")
			b.ReportMetric(float64(packed), "state-lzw-B")
			b.ReportMetric(2*float64(raw)/tc.period.Seconds(), "state-B/s/node")
			b.ReportMetric(2*float64(packed)/tc.period.Seconds(), "state-lzw-B/s/node")
		})
	}
}
