package sni

import (
	"encoding/json"
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
)

func TestExplainLabels(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   map[string]string
		want string
	}{
		{"nil", nil, ""},
		{"empty", map[string]string{}, ""},
		{"one", map[string]string{"version": "v1"}, "version=v1"},
		{"sorted", map[string]string{"zone": "b", "app": "web", "version": "v2"}, "app=web,version=v2,zone=b"},
		{"empty value", map[string]string{"canary": ""}, "canary="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := explainLabels(tc.in); got != tc.want {
				t.Fatalf("explainLabels(%#v) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestExplainNoGoMapSyntax: a subset whose labels match no endpoint is
// explained with its labels as k=v pairs, and an empty endpoint list is
// [] in JSON, not null.
func TestExplainNoGoMapSyntax(t *testing.T) {
	set := tableTestMesh()
	set.DestinationRules[0].Spec.Subsets = append(set.DestinationRules[0].Spec.Subsets,
		&networking.Subset{Name: "v9", Labels: map[string]string{"version": "v9", "track": "canary"}})
	b, _ := tableTestBuilder(t)
	tbl := tableTestBuild(t, b, set)
	ex := tbl.Explain("outbound_.9080_.v9_.reviews.default.svc.cluster.local", []string{"istio"})
	raw, err := json.Marshal(ex)
	if err != nil {
		t.Fatalf("json.Marshal(Explain) error = %v", err)
	}
	out := string(raw)
	if strings.Contains(out, "map[") {
		t.Fatalf("Explain(v9) = %s; it prints Go map syntax", out)
	}
	if !strings.Contains(out, "track=canary,version=v9") {
		t.Fatalf("Explain(v9) = %s; want the subset labels as track=canary,version=v9", out)
	}
	if !strings.Contains(out, `"endpoints":[]`) || strings.Contains(out, `"endpoints":null`) {
		t.Fatalf("Explain(v9) = %s; want \"endpoints\":[] for a destination without endpoints", out)
	}
}
