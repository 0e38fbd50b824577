package vm

import (
	"errors"
	"strings"
	"testing"
)

const goodManifest = `kind: WorkloadBundle
trustDomain: cluster.local
namespace: shop
serviceAccount: billing
network: vm-net
ports:
- port: 9080
  targetPort: 8080
labels:
  app: billing
caAddr: 10.0.0.5:15012
adminAddr: 10.0.0.5:15000
`

var manifestRows = []struct {
	name string
	in   string
	want error  // nil: valid
	say  string // substring of the error
}{
	{"good", goodManifest, nil, ""},
	{"empty", ``, ErrBundle, "kind"},
	{"not yaml", "\t: :", ErrBundle, ""},
	{"wrong kind", strings.Replace(goodManifest, "WorkloadBundle", "WorkloadEntry", 1), ErrBundle, "kind"},
	{"unknown field", goodManifest + "tokenFile: /etc/shadow\n", ErrBundle, "tokenFile"},
	{"bad trust domain", strings.Replace(goodManifest, "cluster.local", "Cluster Local", 1), ErrInvalid, "trustDomain"},
	{"namespace with slash", strings.Replace(goodManifest, "namespace: shop", "namespace: shop/../x", 1), ErrInvalid, "namespace"},
	{"no ports", strings.Replace(goodManifest, "ports:\n- port: 9080\n  targetPort: 8080\n", "", 1), ErrInvalid, "ports"},
	{"port too big", strings.Replace(goodManifest, "port: 9080", "port: 70000", 1), ErrInvalid, "ports[0]"},
	{"negative port", strings.Replace(goodManifest, "port: 9080", "port: -1", 1), ErrBundle, ""},
	{"ca addr without port", strings.Replace(goodManifest, "10.0.0.5:15012", "10.0.0.5", 1), ErrInvalid, "caAddr"},
	{"ca addr empty", strings.Replace(goodManifest, "caAddr: 10.0.0.5:15012", "caAddr: \"\"", 1), ErrInvalid, "caAddr"},
	{"network with space", strings.Replace(goodManifest, "network: vm-net", "network: vm net", 1), ErrInvalid, "network"},
	{"label with newline", strings.Replace(goodManifest, "app: billing", "app: \"bill\\ning\"", 1), ErrInvalid, "labels"},
	{"service with space", goodManifest + "service: a b\n", ErrInvalid, "service"},
	{"anchors bomb", "kind: &a [" + strings.Repeat("*a,", 50) + "]\n", ErrBundle, ""},
	{"huge", "kind: " + strings.Repeat("x", maxBundleFile+1), ErrBundle, "larger"},
}

func TestParseManifest(t *testing.T) {
	for _, tc := range manifestRows {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseManifest([]byte(tc.in))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("ParseManifest() = %v, want nil", err)
				}
				if s.Service != "billing.shop.svc.cluster.local" || s.Ports[0].Target() != 8080 || s.ClusterID != "meshgate" {
					t.Fatalf("ParseManifest() = %+v, want defaults filled", s)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.say) {
				t.Fatalf("ParseManifest() = %v, want %v saying %q", err, tc.want, tc.say)
			}
		})
	}
}

func FuzzParseManifest(f *testing.F) {
	for _, tc := range manifestRows {
		if len(tc.in) < 4096 {
			f.Add([]byte(tc.in))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseManifest(data)
		if err != nil {
			if !errors.Is(err, ErrBundle) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseManifest error %v wraps neither ErrBundle nor ErrInvalid", err)
			}
			return
		}
		if verr := s.Validate(); verr != nil {
			t.Fatalf("ParseManifest accepted %+v that fails Validate: %v", s, verr)
		}
		if _, err := s.Identity(); err != nil {
			t.Fatalf("accepted manifest has no identity: %v", err)
		}
	})
}

func TestParsePortAndLabels(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Port
		bad  bool
	}{
		{"9080", Port{Port: 9080}, false}, {"9080:8080", Port{Port: 9080, TargetPort: 8080}, false},
		{"0", Port{}, true}, {"70000", Port{}, true}, {"80:", Port{}, true}, {"a", Port{}, true}, {"1:2:3", Port{}, true},
	} {
		p, err := ParsePort(tc.in)
		if tc.bad != (err != nil) || (!tc.bad && p != tc.want) {
			t.Errorf("ParsePort(%q) = %+v, %v", tc.in, p, err)
		}
	}
	if l, err := ParseLabels("app=x,version=v1"); err != nil || len(l) != 2 || l["version"] != "v1" {
		t.Errorf("ParseLabels = %v, %v", l, err)
	}
	if _, err := ParseLabels("app"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParseLabels(no =) = %v, want ErrInvalid", err)
	}
}
