package config

import (
	"bytes"
	"fmt"
	"testing"
)

// manyResources returns one YAML file of n resources cycling through all
// five kinds, each with its own name.
func manyResources(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		if i > 0 {
			b.WriteString("---\n")
		}
		switch i % 5 {
		case 0:
			fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw-%d, namespace: ns-%d}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
  - port: {number: 443, name: tls-443, protocol: TLS}
    tls: {mode: PASSTHROUGH}
    hosts: ["*.svc-%d.example.com"]
`, i, i%7, i)
		case 1:
			fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs-%d, namespace: ns-%d}
spec:
  hosts: ["*.svc-%d.example.com"]
  gateways: [gw-%d]
  tls:
  - match:
    - sniHosts: [a.svc-%d.example.com]
      port: 443
    route:
    - destination: {host: svc-%d.ns.svc.cluster.local, subset: v1, port: {number: 8443}}
      weight: 90
    - destination: {host: svc-%d.ns.svc.cluster.local, subset: v2, port: {number: 8443}}
      weight: 10
`, i, i%7, i, i-1, i, i, i)
		case 2:
			fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr-%d, namespace: ns-%d}
spec:
  host: svc-%d.ns.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool: {tcp: {maxConnections: 100, connectTimeout: 1s}}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`, i, i%7, i)
		case 3:
			fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se-%d, namespace: ns-%d}
spec:
  hosts: [svc-%d.ns.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 8443, name: tls, protocol: TLS}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.%d.%d, labels: {app: svc, version: v1}}
  - {address: 10.1.%d.%d, labels: {app: svc, version: v2}}
`, i, i%7, i, i/250, i%250, i/250, i%250)
		case 4:
			fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: we-%d, namespace: ns-%d}
spec:
  address: 10.2.%d.%d
  ports: {tls: 8443}
  labels: {app: svc, version: v1}
  network: network-a
  serviceAccount: svc
`, i, i%7, i/250, i%250)
		}
	}
	return b.Bytes()
}

func BenchmarkParse1000(b *testing.B) {
	data := manyResources(1000)
	if _, err := Parse("bench.yaml", data); err != nil {
		b.Fatalf("Parse(1000 resources) error = %v, want nil", err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("bench.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/resource")
}
