package cluster_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/cluster"
	"github.com/meshgate/meshgate/cluster/clustertest"
	"github.com/meshgate/meshgate/config"
)

func TestApplyConfigEverywhere(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{})
	leader := c.WaitLeader(t)
	f := follower(c, leader)
	vs := `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: ["reviews.default.svc.cluster.local"]
  gateways: ["istio-system/cross-network"]
  tls:
  - match:
    - sniHosts: ["reviews.default.svc.cluster.local"]
    route:
    - destination:
        host: reviews.default.svc.cluster.local
        port:
          number: 9080
`
	if _, err := f.ApplyConfig(t.Context(), "mesh.yaml", []byte(gatewayYAML+"---\n"+vs)); err != nil {
		t.Fatalf("follower ApplyConfig(gateway + virtual service) error = %v", err)
	}
	c.WaitAll(t, "every node parses both resources", func(n *cluster.Node) bool {
		s, err := n.ConfigSet()
		return err == nil && len(s.Gateways) == 1 && len(s.VirtualServices) == 1
	})
	if _, ok := leader.Get(cluster.ConfigKey(config.KindVirtualService, "default", "reviews")); !ok {
		t.Fatalf("Get(%s) found nothing, want the stored document", cluster.ConfigKey(config.KindVirtualService, "default", "reviews"))
	}

	before := f.AppliedIndex()
	for _, tc := range []struct{ name, doc string }{
		{"bad field", strings.Replace(vs, "number: 9080", "number: 99999", 1)},
		{"unknown kind", "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: x\nspec: {}\n"},
		{"one good one bad", gatewayYAML + "---\n" + strings.Replace(vs, "number: 9080", "number: -1", 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.ApplyConfig(t.Context(), "bad.yaml", []byte(tc.doc))
			var ve *cluster.ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, cluster.ErrInvalid) {
				t.Fatalf("ApplyConfig(%s) error = %v, want a ValidationError", tc.name, err)
			}
			if !strings.Contains(err.Error(), "bad.yaml") {
				t.Fatalf("ApplyConfig(%s) error %q does not name the file", tc.name, err)
			}
		})
	}
	if f.AppliedIndex() != before {
		t.Fatalf("refused documents advanced the raft index from %d to %d; want nothing written", before, f.AppliedIndex())
	}

	if _, err := f.DeleteConfig(t.Context(), config.KindVirtualService, "default", "reviews"); err != nil {
		t.Fatalf("DeleteConfig error = %v", err)
	}
	c.WaitAll(t, "virtual service deleted everywhere", func(n *cluster.Node) bool {
		s, err := n.ConfigSet()
		return err == nil && len(s.VirtualServices) == 0 && len(s.Gateways) == 1
	})
}
