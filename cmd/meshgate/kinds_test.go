package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/meshgate/meshgate/config"
)

var kindRows = []struct {
	name string
	in   string
	want config.Kind // "" means refused
}{
	{"short gw", "gw", config.KindGateway},
	{"short vs", "vs", config.KindVirtualService},
	{"short dr", "dr", config.KindDestinationRule},
	{"short se", "se", config.KindServiceEntry},
	{"short we", "we", config.KindWorkloadEntry},
	{"short upper", "DR", config.KindDestinationRule},
	{"kind", "DestinationRule", config.KindDestinationRule},
	{"kind lower", "destinationrule", config.KindDestinationRule},
	{"kind upper", "VIRTUALSERVICE", config.KindVirtualService},
	{"plural", "destinationrules", config.KindDestinationRule},
	{"plural kind case", "DestinationRules", config.KindDestinationRule},
	{"plural ies", "serviceentries", config.KindServiceEntry},
	{"plural ies workload", "WorkloadEntries", config.KindWorkloadEntry},
	{"plural gateways", "gateways", config.KindGateway},
	{"with group", "destinationrules.networking.istio.io", config.KindDestinationRule},
	{"singular with group", "Gateway.networking.istio.io", config.KindGateway},
	{"surrounding space", " vs ", config.KindVirtualService},

	{"unknown", "Foo", ""},
	{"empty", "", ""},
	{"space", " ", ""},
	{"plural of short", "drs", ""},
	{"wrong plural", "serviceentrys", ""},
	{"other istio kind", "WorkloadGroup", ""},
	{"other istio short", "wg", ""},
	{"kubernetes kind", "Service", ""},
	{"other group", "destinationrules.security.istio.io", ""},
	{"trailing dot", "dr.", ""},
	{"inner space", "destination rule", ""},
	{"fullwidth", "ＤＲ", ""},
	{"nul", "dr\x00", ""},
	{"long", strings.Repeat("dr", 4096), ""},
}

func TestParseKind(t *testing.T) {
	for _, tc := range kindRows {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseKind(tc.in)
			if tc.want != "" {
				if err != nil || got != tc.want {
					t.Fatalf("parseKind(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("parseKind(%q) = %q, want an error", tc.in, got)
			}
			if !errors.Is(err, errUnknownKind) {
				t.Errorf("parseKind(%q) error %v does not wrap errUnknownKind", tc.in, err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, fmt.Sprintf("unknown kind %q: ", tc.in)) {
				t.Errorf("parseKind(%q) error %q does not name the kind", tc.in, msg)
			}
			for _, k := range config.Kinds {
				if !strings.Contains(msg, string(k)+" ("+kindShortNames[k]+")") {
					t.Errorf("parseKind(%q) error %q does not list %s with its short name", tc.in, msg, k)
				}
			}
			if strings.Count(msg, "\n") > 0 {
				t.Errorf("parseKind(%q) error %q is more than one line", tc.in, msg)
			}
		})
	}
}

// TestParseKindNamesTheInput: the message quotes exactly what was typed.
func TestParseKindNamesTheInput(t *testing.T) {
	_, err := parseKind("Foo")
	if err == nil || !strings.HasPrefix(err.Error(), `unknown kind "Foo": want one of Gateway (gw)`) {
		t.Fatalf("parseKind(Foo) error = %v, want it to start with unknown kind \"Foo\": want one of Gateway (gw)", err)
	}
}

func FuzzParseKind(f *testing.F) {
	for _, tc := range kindRows {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := parseKind(s)
		if err != nil {
			if k != "" {
				t.Fatalf("parseKind(%q) = %q with error %v", s, k, err)
			}
			return
		}
		if !slices.Contains(config.Kinds, k) {
			t.Fatalf("parseKind(%q) = %q, not a kind meshgate reads", s, k)
		}
		// Every accepted name names its kind: the kind itself, its short
		// name, or starts with the kind's lower-case name.
		low := strings.ToLower(strings.TrimSpace(s))
		if low != kindShortNames[k] && !strings.HasPrefix(low, strings.ToLower(string(k))[:len(k)-1]) {
			t.Fatalf("parseKind(%q) = %q, a name that does not spell the kind", s, k)
		}
		if again, err := parseKind(string(k)); err != nil || again != k {
			t.Fatalf("parseKind(%q) = %q, %v; want the kind back", k, again, err)
		}
	})
}

// fakeAdmin is an admin API that records the requests it gets and answers
// GET /v1/config with body.
type fakeAdmin struct {
	mu   sync.Mutex
	reqs []*http.Request
	body string
}

func newFakeAdmin(t *testing.T, body string) (*fakeAdmin, string) {
	t.Helper()
	f := &fakeAdmin{body: body}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Clone(r.Context()))
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write([]byte(f.body))
	}))
	t.Cleanup(srv.Close)
	return f, strings.TrimPrefix(srv.URL, "http://")
}

func (f *fakeAdmin) requests() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

// TestGetSendsTheKind: every spelling of a kind asks the node for that
// kind and prints what it answers; an unknown kind asks nothing.
func TestGetSendsTheKind(t *testing.T) {
	const dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\n"
	for _, tc := range []struct {
		arg      string
		wantKind string
		wantErr  string
	}{
		{"dr", "DestinationRule", ""},
		{"DestinationRules", "DestinationRule", ""},
		{"se", "ServiceEntry", ""},
		{"Foo", "", `unknown kind "Foo"`},
	} {
		t.Run(tc.arg, func(t *testing.T) {
			fa, addr := newFakeAdmin(t, dr)
			out, errOut, err := runCLI(t, noNodeDefaults(t), "get", tc.arg, "--admin", addr, "--admin-token", "x")
			reqs := fa.requests()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("get %s error = %v, want %q", tc.arg, err, tc.wantErr)
				}
				if len(reqs) != 0 || out != "" {
					t.Fatalf("get %s sent %d requests and printed %q; want nothing", tc.arg, len(reqs), out)
				}
				return
			}
			if err != nil {
				t.Fatalf("get %s: %v (stderr %q)", tc.arg, err, errOut)
			}
			if len(reqs) != 1 || reqs[0].URL.Query().Get("kind") != tc.wantKind {
				t.Fatalf("get %s sent %v, want one request with kind=%s", tc.arg, reqs, tc.wantKind)
			}
			if out != dr {
				t.Fatalf("get %s printed %q, want the node's answer %q", tc.arg, out, dr)
			}
		})
	}
}

// TestGetSaysWhenNothingFound: an empty answer is said on stderr, with
// the kind, and stdout stays empty.
func TestGetSaysWhenNothingFound(t *testing.T) {
	_, addr := newFakeAdmin(t, "")
	out, errOut, err := runCLI(t, noNodeDefaults(t), "get", "we", "--admin", addr, "--admin-token", "x")
	if err != nil || out != "" || errOut != "no WorkloadEntry found\n" {
		t.Fatalf("get we = (%q, %q, %v), want nothing on stdout and \"no WorkloadEntry found\" on stderr", out, errOut, err)
	}
}

// TestDeleteSendsTheKind: delete takes the same names as get.
func TestDeleteSendsTheKind(t *testing.T) {
	fa, addr := newFakeAdmin(t, `{"index": 7}`)
	out, _, err := runCLI(t, noNodeDefaults(t), "delete", "vs", "reviews", "--admin", addr, "--admin-token", "x")
	if err != nil {
		t.Fatalf("delete vs reviews: %v", err)
	}
	reqs := fa.requests()
	if len(reqs) != 1 || reqs[0].Method != http.MethodDelete || reqs[0].URL.Path != "/v1/config/VirtualService/default/reviews" {
		t.Fatalf("delete vs reviews sent %v, want DELETE /v1/config/VirtualService/default/reviews", reqs)
	}
	if out != "VirtualService default/reviews deleted\n" {
		t.Fatalf("delete printed %q", out)
	}
	if _, _, err := runCLI(t, noNodeDefaults(t), "delete", "Foo", "reviews", "--admin", addr, "--admin-token", "x"); err == nil || len(fa.requests()) != 1 {
		t.Fatalf("delete Foo = %v after %d requests; want an error and no request", err, len(fa.requests()))
	}
}
