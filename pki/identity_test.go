package pki_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/pki"
)

var identityRows = []struct {
	name string
	in   string
	ok   bool
}{
	{"istio", "spiffe://cluster.local/ns/default/sa/web", true},
	{"dotted sa", "spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway.v1", true},
	{"underscore td", "spiffe://my_td.example/ns/a/sa/b", true},
	{"empty", "", false},
	{"http", "http://cluster.local/ns/a/sa/b", false},
	{"no path", "spiffe://cluster.local", false},
	{"missing sa", "spiffe://cluster.local/ns/a", false},
	{"swapped", "spiffe://cluster.local/sa/a/ns/b", false},
	{"trailing slash", "spiffe://cluster.local/ns/a/sa/b/", false},
	{"extra segment", "spiffe://cluster.local/ns/a/sa/b/c", false},
	{"upper ns", "spiffe://cluster.local/ns/A/sa/b", false},
	{"port", "spiffe://cluster.local:80/ns/a/sa/b", false},
	{"userinfo", "spiffe://u@cluster.local/ns/a/sa/b", false},
	{"query", "spiffe://cluster.local/ns/a/sa/b?x=1", false},
	{"fragment", "spiffe://cluster.local/ns/a/sa/b#f", false},
	{"percent", "spiffe://cluster.local/ns/a/sa/b%2e", false},
	{"dot dot", "spiffe://cluster.local/ns/../sa/b", false},
	{"empty ns", "spiffe://cluster.local/ns//sa/b", false},
	{"dash edge", "spiffe://cluster.local/ns/-a/sa/b", false},
	{"ns with dot", "spiffe://cluster.local/ns/a.b/sa/c", false},
	{"sa empty label", "spiffe://cluster.local/ns/a/sa/b..c", false},
	{"long ns", "spiffe://cluster.local/ns/" + strings.Repeat("a", 64) + "/sa/b", false},
	{"upper td", "spiffe://Cluster.local/ns/a/sa/b", false},
	{"nul", "spiffe://cluster.local/ns/a\x00/sa/b", false},
}

func TestParseIdentity(t *testing.T) {
	for _, tc := range identityRows {
		t.Run(tc.name, func(t *testing.T) {
			id, err := pki.ParseIdentity(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("ParseIdentity(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			}
			if err != nil {
				return
			}
			if got := id.String(); got != tc.in {
				t.Fatalf("ParseIdentity(%q).String() = %q, want the input back", tc.in, got)
			}
			u, err := url.Parse(tc.in)
			if err != nil {
				t.Fatalf("url.Parse(%q) = %v", tc.in, err)
			}
			id2, err := pki.IdentityFromURL(u)
			if err != nil || id2 != id {
				t.Fatalf("IdentityFromURL(%q) = %v, %v; want %v, nil", tc.in, id2, err, id)
			}
			if got := id.URL().String(); got != tc.in {
				t.Fatalf("Identity.URL() = %q, want %q", got, tc.in)
			}
		})
	}
}

func FuzzParseIdentity(f *testing.F) {
	for _, tc := range identityRows {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := pki.ParseIdentity(s)
		if err != nil {
			return
		}
		if id.String() != s {
			t.Fatalf("ParseIdentity(%q) accepted a non-canonical form (String() = %q)", s, id.String())
		}
		if _, err := pki.NewIdentity(id.TrustDomain, id.Namespace, id.ServiceAccount); err != nil {
			t.Fatalf("ParseIdentity(%q) accepted parts that NewIdentity refuses: %v", s, err)
		}
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("ParseIdentity(%q) accepted what url.Parse refuses: %v", s, err)
		}
		if id2, err := pki.IdentityFromURL(u); err != nil || id2 != id {
			t.Fatalf("IdentityFromURL(url.Parse(%q)) = %v, %v; want %v", s, id2, err, id)
		}
	})
}
