package config

import (
	"errors"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

func drDoc(ns, name, host string) string {
	return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: " + name + ", namespace: '" + ns + "'}\nspec:\n  host: '" + host + "'\n"
}

func TestDestinationRuleFor(t *testing.T) {
	set := mustParse(t, []byte(strings.Join([]string{
		drDoc("a", "exact-a", "reviews.default.svc.cluster.local"),
		drDoc("b", "exact-b", "reviews.default.svc.cluster.local"),
		drDoc("c", "exact-c", "reviews.default.svc.cluster.local"),
		drDoc("x", "wild-long", "*.default.svc.cluster.local"),
		drDoc("y", "wild-short", "*.svc.cluster.local"),
		drDoc("z", "wild-short-z", "*.svc.cluster.local"),
		drDoc("y", "catch-all", "*"),
		drDoc("default", "short", "ratings"),
	}, "---\n")))
	for _, tc := range []struct {
		name, host, ns, want string
	}{
		{"exact in own namespace", "reviews.default.svc.cluster.local", "b", "exact-b"},
		{"exact in another namespace, first in Set order", "reviews.default.svc.cluster.local", "q", "exact-a"},
		{"exact beats wildcard", "reviews.default.svc.cluster.local", "x", "exact-a"},
		{"case-insensitive host", "REVIEWS.default.svc.cluster.local", "c", "exact-c"},
		{"longest wildcard", "details.default.svc.cluster.local", "q", "wild-long"},
		{"longest wildcard over own namespace's shorter one", "details.default.svc.cluster.local", "y", "wild-long"},
		{"equal wildcards prefer own namespace", "details.other.svc.cluster.local", "z", "wild-short-z"},
		{"equal wildcards else Set order", "details.other.svc.cluster.local", "q", "wild-short"},
		{"catch-all last", "api.example.com", "q", "catch-all"},
		{"short host resolved in rule's namespace", "ratings.default.svc.cluster.local", "q", "short"},
		{"short host does not match another namespace", "ratings.other.svc.cluster.local", "q", "wild-short"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := set.DestinationRuleFor(tc.host, tc.ns)
			if got == nil || got.Name != tc.want {
				t.Fatalf("DestinationRuleFor(%q, %q) = %v, want %s", tc.host, tc.ns, got, tc.want)
			}
		})
	}
	if got := mustParse(t, []byte(drDoc("a", "x", "a.example.com"))).DestinationRuleFor("b.example.com", "a"); got != nil {
		t.Errorf("DestinationRuleFor(no match) = %v, want nil", got)
	}
	var nilSet *Set
	if nilSet.DestinationRuleFor("a", "b") != nil || nilSet.Len() != 0 || nilSet.Gateway("a", "b") != nil {
		t.Error("methods on a nil Set must return empty results")
	}
}

func TestResolveHostAndMatching(t *testing.T) {
	for _, tc := range []struct{ host, ns, want string }{
		{"reviews", "default", "reviews.default.svc.cluster.local"},
		{"Reviews", "prod", "reviews.prod.svc.cluster.local"},
		{"reviews.prod", "default", "reviews.prod"},
		{"*", "default", "*"},
		{"*.example.com", "default", "*.example.com"},
	} {
		if got := ResolveHost(tc.host, tc.ns); got != tc.want {
			t.Errorf("ResolveHost(%q, %q) = %q, want %q", tc.host, tc.ns, got, tc.want)
		}
	}
	for _, tc := range []struct {
		ref, ns, wantNS, wantName string
		ok                        bool
	}{
		{"edge", "shop", "shop", "edge", true},
		{"istio-system/edge", "shop", "istio-system", "edge", true},
		{"mesh", "shop", "", "", false},
		{"/edge", "shop", "", "edge", false},
	} {
		ns, name, ok := GatewayRef(tc.ref, tc.ns)
		if ns != tc.wantNS || name != tc.wantName || ok != tc.ok {
			t.Errorf("GatewayRef(%q, %q) = %q, %q, %v; want %q, %q, %v", tc.ref, tc.ns, ns, name, ok, tc.wantNS, tc.wantName, tc.ok)
		}
	}
	if !LabelsMatch(nil, map[string]string{"a": "b"}) || !LabelsMatch(map[string]string{"a": "b"}, map[string]string{"a": "b", "c": "d"}) ||
		LabelsMatch(map[string]string{"a": "b"}, map[string]string{"a": "c"}) || LabelsMatch(map[string]string{"a": ""}, nil) {
		t.Error("LabelsMatch: want selector-subset semantics")
	}
	for _, tc := range []struct {
		a, b        string
		subset, ovl bool
	}{
		{"a.example.com", "*.example.com", true, true},
		{"*.a.example.com", "*.example.com", true, true},
		{"*.example.com", "a.example.com", false, true},
		{"example.com", "*.example.com", false, false},
		{"a.example.com", "*", true, true},
		{"*", "a.example.com", false, true},
		{"a.example.com", "b.example.com", false, false},
	} {
		if got := hostSubsetOf(tc.a, tc.b); got != tc.subset {
			t.Errorf("hostSubsetOf(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.subset)
		}
		if got := hostsOverlap(tc.a, tc.b); got != tc.ovl {
			t.Errorf("hostsOverlap(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.ovl)
		}
	}
}

func loadValid(t *testing.T) *Set {
	t.Helper()
	set, err := Load("testdata/valid")
	if err != nil {
		t.Fatalf("Load(testdata/valid) error:\n%v", err)
	}
	return set
}

func TestWorkloadEntriesFor(t *testing.T) {
	set := loadValid(t)
	var reviews, storefront *ServiceEntry
	for _, se := range set.ServiceEntries {
		switch se.Name {
		case "reviews":
			reviews = se
		case "storefront":
			storefront = se
		}
	}
	got := set.WorkloadEntriesFor(reviews)
	if len(got) != 1 || got[0].Name != "reviews-vm-1" {
		t.Errorf("WorkloadEntriesFor(reviews) = %v, want [reviews-vm-1]", got)
	}
	if got := set.WorkloadEntriesFor(storefront); got != nil {
		t.Errorf("WorkloadEntriesFor(ServiceEntry without selector) = %v, want nil", got)
	}
}

func TestKindsAndLen(t *testing.T) {
	set := loadValid(t)
	k := set.Kinds()
	sum := 0
	for _, kind := range Kinds {
		n, ok := k[kind]
		if !ok {
			t.Errorf("Kinds() has no entry for %s; want every kind present", kind)
		}
		sum += n
	}
	if sum != set.Len() || set.Len() != 9 {
		t.Errorf("Kinds() sums to %d, Len() = %d; want both 9", sum, set.Len())
	}
	if got := (&Set{}).Kinds()[KindGateway]; got != 0 {
		t.Errorf("empty Set Kinds()[Gateway] = %d, want 0", got)
	}
}

func TestHash(t *testing.T) {
	a := doc("WorkloadEntry", "a", "  address: 10.0.0.1\n  labels: {x: '1', y: '2'}\n")
	b := doc("WorkloadEntry", "b", "  address: 10.0.0.2\n")
	h1 := mustParse(t, []byte(a+"---\n"+b)).Hash()
	h2 := mustParse(t, []byte("# reordered, reformatted\n"+b+"---\n"+strings.Replace(a, "labels: {x: '1', y: '2'}", "labels: {y: '2', x: '1'}", 1))).Hash()
	if h1 != h2 {
		t.Errorf("Hash differs for the same resources in another order: %s vs %s", h1, h2)
	}
	if len(h1) != 64 {
		t.Errorf("Hash() = %q, want 64 hex characters", h1)
	}
	for _, changed := range []string{
		strings.Replace(a, "10.0.0.1", "10.0.0.9", 1) + "---\n" + b,
		strings.Replace(a, "x: '1'", "x: '3'", 1) + "---\n" + b,
		strings.Replace(a, "namespace: default", "namespace: other", 1) + "---\n" + b,
		a,
	} {
		if h := mustParse(t, []byte(changed)).Hash(); h == h1 {
			t.Errorf("Hash unchanged after a change:\n%s", changed)
		}
	}
	if (*Set)(nil).Hash() != (&Set{}).Hash() {
		t.Error("nil Set and empty Set hash differently")
	}
	// Labels must be length-prefixed: {"ab": ""} and {"a": "b"} differ.
	s1 := &Set{WorkloadEntries: []*WorkloadEntry{{Meta: Meta{Name: "a", Namespace: "d", Labels: map[string]string{"ab": ""}}, Spec: &networking.WorkloadEntry{Address: "10.0.0.1"}}}}
	s2 := &Set{WorkloadEntries: []*WorkloadEntry{{Meta: Meta{Name: "a", Namespace: "d", Labels: map[string]string{"a": "b"}}, Spec: &networking.WorkloadEntry{Address: "10.0.0.1"}}}}
	if s1.Hash() == s2.Hash() {
		t.Error("Hash collides for labels {ab: \"\"} and {a: b}")
	}
}

func TestYAMLRoundTrip(t *testing.T) {
	set := loadValid(t)
	y, err := set.YAML()
	if err != nil {
		t.Fatalf("YAML() error = %v", err)
	}
	back, err := Parse("roundtrip.yaml", y)
	if err != nil {
		t.Fatalf("Parse(YAML()) error:\n%v\nYAML:\n%s", err, y)
	}
	if back.Hash() != set.Hash() {
		t.Fatalf("Parse(YAML()).Hash() = %s, want %s", back.Hash(), set.Hash())
	}
	assertSameResources(t, set, back)
	if !strings.HasPrefix(string(y), "apiVersion: networking.istio.io/v1\nkind: Gateway\n") {
		t.Errorf("YAML() starts %q, want apiVersion v1 and kind Gateway first", string(y[:min(60, len(y))]))
	}
	again, err := back.YAML()
	if err != nil || string(again) != string(y) {
		t.Errorf("YAML() is not stable across a round trip (err %v)", err)
	}
	if y, err := (&Set{}).YAML(); err != nil || len(y) != 0 {
		t.Errorf("empty Set YAML() = %q, %v; want empty", y, err)
	}
}

// assertSameResources compares two Sets resource by resource (ignoring
// Source and Index).
func assertSameResources(t testing.TB, a, b *Set) {
	t.Helper()
	ea, eb := a.sorted(), b.sorted()
	if len(ea) != len(eb) {
		t.Fatalf("sets have %d and %d resources", len(ea), len(eb))
	}
	for i := range ea {
		x, y := ea[i], eb[i]
		if x.kind != y.kind || x.meta.Name != y.meta.Name || x.meta.Namespace != y.meta.Namespace ||
			len(x.meta.Labels) != len(y.meta.Labels) || !proto.Equal(x.spec, y.spec) {
			t.Fatalf("resource %d differs:\n%s %s/%s %v %v\n%s %s/%s %v %v", i,
				x.kind, x.meta.Namespace, x.meta.Name, x.meta.Labels, x.spec,
				y.kind, y.meta.Namespace, y.meta.Name, y.meta.Labels, y.spec)
		}
		for k, v := range x.meta.Labels {
			if y.meta.Labels[k] != v {
				t.Fatalf("resource %d label %q = %q, want %q", i, k, y.meta.Labels[k], v)
			}
		}
	}
}

func TestMerge(t *testing.T) {
	a := mustParse(t, []byte(doc("WorkloadEntry", "a", "  address: 10.0.0.1\n")))
	b, err := Parse("b.yaml", []byte(doc("WorkloadEntry", "b", "  address: 10.0.0.2\n")))
	if err != nil {
		t.Fatal(err)
	}
	m, err := Merge(a, nil, b)
	if err != nil || m.Len() != 2 || m.WorkloadEntries[0].Name != "a" || m.WorkloadEntries[1].Name != "b" {
		t.Fatalf("Merge(a, nil, b) = %v, %v; want a then b", m, err)
	}
	if m2, err := Merge(); err != nil || m2.Len() != 0 {
		t.Errorf("Merge() = %v, %v; want an empty Set", m2, err)
	}

	dup, err := Parse("dup.yaml", []byte(doc("WorkloadEntry", "a", "  address: 10.0.0.3\n")))
	if err != nil {
		t.Fatal(err)
	}
	m, err = Merge(a, b, dup)
	es := errorsOf(t, "Merge(a, b, dup)", err)
	if m != nil {
		t.Error("Merge with a duplicate returned a Set; want nil")
	}
	if len(es) != 1 || !errors.Is(es[0], ErrDuplicate) || es[0].File != "dup.yaml" || !strings.Contains(es[0].Msg, "t.yaml") {
		t.Errorf("Merge duplicate error = %v, want one ErrDuplicate in dup.yaml naming t.yaml", err)
	}
}

func TestValidateInMemorySet(t *testing.T) {
	good := &Set{Gateways: []*Gateway{{
		Meta: Meta{Name: "gw", Namespace: "default"},
		Spec: &networking.Gateway{Servers: []*networking.Server{{
			Port:  &networking.Port{Number: 15443, Name: "tls", Protocol: "TLS"},
			Hosts: []string{"*.local"},
			Tls:   &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_AUTO_PASSTHROUGH},
		}}},
	}}}
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate(good) = %v, want nil", err)
	}
	if err := (*Set)(nil).Validate(); err != nil {
		t.Errorf("nil Set Validate() = %v, want nil", err)
	}
	for _, tc := range []struct {
		name  string
		set   *Set
		field string
		want  error
	}{
		{"nil spec", &Set{WorkloadEntries: []*WorkloadEntry{{Meta: Meta{Name: "a", Namespace: "d"}}}}, "spec", ErrInvalid},
		{"empty name", &Set{WorkloadEntries: []*WorkloadEntry{{Meta: Meta{Namespace: "d"}, Spec: &networking.WorkloadEntry{Address: "10.0.0.1"}}}}, "metadata.name", ErrInvalid},
		{"empty namespace", &Set{WorkloadEntries: []*WorkloadEntry{{Meta: Meta{Name: "a"}, Spec: &networking.WorkloadEntry{Address: "10.0.0.1"}}}}, "metadata.namespace", ErrInvalid},
		{"unknown enum number", &Set{Gateways: []*Gateway{{Meta: Meta{Name: "gw", Namespace: "d"}, Spec: &networking.Gateway{Servers: []*networking.Server{{
			Port: &networking.Port{Number: 1, Name: "t", Protocol: "TLS"}, Hosts: []string{"*"}, Tls: &networking.ServerTLSSettings{Mode: 99},
		}}}}}}, "spec.servers[0].tls.mode", ErrInvalid},
		{"duplicate", &Set{WorkloadEntries: []*WorkloadEntry{
			{Meta: Meta{Name: "a", Namespace: "d"}, Spec: &networking.WorkloadEntry{Address: "10.0.0.1"}},
			{Meta: Meta{Name: "a", Namespace: "d"}, Spec: &networking.WorkloadEntry{Address: "10.0.0.2"}},
		}}, "metadata.name", ErrDuplicate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es := errorsOf(t, "Validate", tc.set.Validate())
			e := findField(es, tc.field)
			if e == nil || !errors.Is(e, tc.want) {
				t.Fatalf("Validate() errors:\n%v\nwant %v at %q", es, tc.want, tc.field)
			}
		})
	}
	if _, err := (&Set{WorkloadEntries: []*WorkloadEntry{{Meta: Meta{Name: "a", Namespace: "d"}}}}).YAML(); err == nil {
		t.Error("YAML() of a resource without spec = nil error, want an error")
	}
}

func TestDeployExampleParses(t *testing.T) {
	// The example shipped with the packages must stay valid.
	data, err := os.ReadFile("../deploy/examples/resources/eastwest.yaml")
	if err != nil {
		t.Skipf("deploy example not present: %v", err)
	}
	if _, err := Parse("eastwest.yaml", data); err != nil {
		t.Errorf("Parse(deploy/examples/resources/eastwest.yaml) error:\n%v", err)
	}
}

func TestExportedTo(t *testing.T) {
	for _, tc := range []struct {
		exportTo        []string
		owner, consumer string
		want            bool
	}{
		{nil, "a", "b", true},
		{[]string{}, "a", "b", true},
		{[]string{"*"}, "a", "b", true},
		{[]string{"."}, "a", "a", true},
		{[]string{"."}, "a", "b", false},
		{[]string{"."}, "", "default", true},
		{[]string{"."}, "default", "", true},
		{[]string{"~"}, "a", "a", false},
		{[]string{"~"}, "a", "b", false},
		{[]string{"b"}, "a", "b", true},
		{[]string{"b"}, "a", "a", false},
		{[]string{".", "c"}, "a", "c", true},
		{[]string{".", "c"}, "a", "b", false},
	} {
		if got := ExportedTo(tc.exportTo, tc.owner, tc.consumer); got != tc.want {
			t.Errorf("ExportedTo(%q, owner %q, consumer %q) = %v, want %v", tc.exportTo, tc.owner, tc.consumer, got, tc.want)
		}
	}
}

func TestLookupsHonourExportTo(t *testing.T) {
	set := mustParse(t, []byte(strings.Join([]string{
		strings.Replace(drDoc("a", "hidden", "reviews.default.svc.cluster.local"), "spec:\n", "spec:\n  exportTo: ['.']\n", 1),
		drDoc("b", "visible", "reviews.default.svc.cluster.local"),
		doc("Gateway", "gw", "  servers:\n  - port: {number: 1, name: t, protocol: TCP}\n    hosts: ['*']\n"),
		strings.Replace(doc("VirtualService", "seen", "  hosts: ['*']\n  gateways: [default/gw]\n  tcp:\n  - route:\n    - destination: {host: a.b}\n"), "  namespace: default", "  namespace: other", 1),
		strings.Replace(doc("VirtualService", "unseen", "  hosts: ['*']\n  exportTo: ['.']\n  gateways: [default/gw]\n  tcp:\n  - route:\n    - destination: {host: a.b}\n"), "  namespace: default", "  namespace: other", 1),
	}, "---\n")))
	if got := set.DestinationRuleFor("reviews.default.svc.cluster.local", "a"); got == nil || got.Name != "hidden" {
		t.Errorf("DestinationRuleFor from its own namespace = %v, want hidden", got)
	}
	if got := set.DestinationRuleFor("reviews.default.svc.cluster.local", "q"); got == nil || got.Name != "visible" {
		t.Errorf("DestinationRuleFor from another namespace = %v, want visible (hidden is exported to . only)", got)
	}
	vss := set.VirtualServicesFor(set.Gateway("default", "gw"))
	if len(vss) != 1 || vss[0].Name != "seen" {
		t.Fatalf("VirtualServicesFor(default/gw) = %v, want only other/seen (other/unseen is exported to . only)", vss)
	}
}
