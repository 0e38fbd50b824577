package config

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"
)

// doc builds one resource document of kind with the given metadata name
// and spec body (already indented by two spaces per level under spec:).
func doc(kind, name, spec string) string {
	return "apiVersion: networking.istio.io/v1\nkind: " + kind + "\nmetadata:\n  name: " + name + "\n  namespace: default\nspec:\n" + spec
}

// errorsOf asserts err is a non-empty Errors and returns it.
func errorsOf(t *testing.T, call string, err error) Errors {
	t.Helper()
	if err == nil {
		t.Fatalf("%s error = nil, want problems", call)
	}
	var es Errors
	if !errors.As(err, &es) || len(es) == 0 {
		t.Fatalf("%s error = %T %v, want a non-empty config.Errors", call, err, err)
	}
	return es
}

// findField returns the first problem whose Field is field, or nil.
func findField(es Errors, field string) *Error {
	for _, e := range es {
		if e.Field == field {
			return e
		}
	}
	return nil
}

// wantProblem checks that Parse refused data whole and reported a
// problem at field (with "" meaning a problem not tied to a field) of
// category sentinel.
func wantProblem(t *testing.T, data, field string, sentinel error) *Error {
	t.Helper()
	set, err := Parse("in.yaml", []byte(data))
	es := errorsOf(t, "Parse", err)
	if set != nil {
		t.Errorf("Parse returned a Set with %d resources alongside errors; want nil (refused whole)", set.Len())
	}
	e := findField(es, field)
	if e == nil {
		t.Fatalf("Parse errors:\n%v\nwant a problem at field %q", es, field)
	}
	if !errors.Is(e, sentinel) {
		t.Errorf("problem at %q = %v, want it to wrap %v", field, e, sentinel)
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("errors.Is(Parse error, %v) = false, want true", sentinel)
	}
	return e
}

func TestLoadValidFixtures(t *testing.T) {
	set, err := Load("testdata/valid")
	if err != nil {
		t.Fatalf("Load(testdata/valid) error:\n%v\nwant nil", err)
	}
	wantKinds := map[Kind]int{KindGateway: 2, KindVirtualService: 2, KindDestinationRule: 1, KindServiceEntry: 3, KindWorkloadEntry: 1}
	for k, n := range wantKinds {
		if got := set.Kinds()[k]; got != n {
			t.Errorf("Load(testdata/valid).Kinds()[%s] = %d, want %d", k, got, n)
		}
	}

	gw := set.Gateway("istio-system", "cross-network-gateway")
	if gw == nil {
		t.Fatal("Gateway(istio-system, cross-network-gateway) = nil, want the expose-services gateway")
	}
	s := gw.Spec.GetServers()[0]
	if s.GetPort().GetNumber() != 15443 || s.GetTls().GetMode() != networking.ServerTLSSettings_AUTO_PASSTHROUGH || s.GetHosts()[0] != "*.local" {
		t.Errorf("cross-network-gateway server = %v, want 15443 AUTO_PASSTHROUGH *.local", s)
	}
	if gw.Source != filepath.Join("testdata/valid", "01-expose-services.yaml") || gw.Index != 0 {
		t.Errorf("cross-network-gateway Source, Index = %q, %d; want 01-expose-services.yaml, 0", gw.Source, gw.Index)
	}

	vs := set.VirtualServicesFor(set.Gateway("shop", "edge"))
	if len(vs) != 2 {
		t.Fatalf("VirtualServicesFor(shop/edge) = %d services, want 2", len(vs))
	}
	var weights []int32
	for _, r := range vs[0].Spec.GetTls()[0].GetRoute() {
		weights = append(weights, r.GetWeight())
	}
	if len(weights) != 2 || weights[0] != 90 || weights[1] != 10 {
		t.Errorf("storefront tls route weights = %v, want [90 10]", weights)
	}
	if vs[0].Index != 1 {
		t.Errorf("storefront Meta.Index = %d, want 1 (second document)", vs[0].Index)
	}

	dr := set.DestinationRuleFor("storefront.shop.svc.cluster.local", "shop")
	if dr == nil {
		t.Fatal("DestinationRuleFor(storefront...) = nil")
	}
	tcp := dr.Spec.GetTrafficPolicy().GetConnectionPool().GetTcp()
	if got := tcp.GetConnectTimeout().AsDuration(); got != 250*time.Millisecond {
		t.Errorf("connectTimeout = %v, want 250ms", got)
	}
	if got := tcp.GetIdleTimeout().AsDuration(); got != time.Hour {
		t.Errorf("idleTimeout (written 1h) = %v, want 1h", got)
	}
	if dr.Subset("v2") == nil || dr.Subset("v3") != nil {
		t.Errorf("Subset(v2), Subset(v3) = %v, %v; want found, nil", dr.Subset("v2"), dr.Subset("v3"))
	}
	if err := set.Validate(); err != nil {
		t.Errorf("Validate() of a loaded Set = %v, want nil", err)
	}
}

// fixtureWant reads the "# want-...:" header of an invalid fixture.
func fixtureWant(t *testing.T, path string) (index int, field string, sentinel error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sentinels := map[string]error{"invalid": ErrInvalid, "unsupported": ErrUnsupported, "syntax": ErrSyntax, "toolarge": ErrTooLarge, "duplicate": ErrDuplicate}
	sc := bufio.NewScanner(f)
	seen := 0
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "# "), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "want-document":
			index, err = strconv.Atoi(v)
			if err != nil {
				t.Fatalf("%s: bad want-document %q", path, v)
			}
			seen++
		case "want-field":
			field = v
			seen++
		case "want-error":
			sentinel = sentinels[v]
			seen++
		}
	}
	if seen != 3 || sentinel == nil {
		t.Fatalf("%s: header must have want-document, want-field and want-error (one of %v)", path, sentinels)
	}
	return index, field, sentinel
}

func TestLoadInvalidFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("Glob(testdata/invalid/*.yaml) = %v, %v; want fixtures", files, err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			index, field, sentinel := fixtureWant(t, path)
			set, err := Load(path)
			es := errorsOf(t, "Load("+path+")", err)
			if set != nil {
				t.Errorf("Load(%s) returned a Set with errors; want nil", path)
			}
			for _, e := range es {
				if e.Field == field && e.Index == index && errors.Is(e, sentinel) && e.File == path {
					return
				}
			}
			t.Errorf("Load(%s) errors:\n%v\nwant one in document %d at field %q wrapping %v", path, es, index, field, sentinel)
		})
	}
}

func TestErrorFormat(t *testing.T) {
	data := "# comment before the first document\n---\n" +
		doc("WorkloadEntry", "vm-1", "  address: 10.0.0.1\n") + "---\n" +
		doc("Gateway", "eastwest", `  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*.local"]
    tls: {mode: SIMPLE}
`)
	_, err := Parse("resources/gw.yaml", []byte(data))
	es := errorsOf(t, "Parse", err)
	want := "resources/gw.yaml: document 2 (Gateway default/eastwest): spec.servers[0].tls.mode: mode SIMPLE is not supported yet (supported: PASSTHROUGH, AUTO_PASSTHROUGH, ISTIO_MUTUAL)"
	if len(es) != 1 || es[0].Error() != want {
		t.Fatalf("Parse error = %q, want exactly %q", err, want)
	}
	if es[0].Index != 2 || es[0].Kind != KindGateway || es[0].Name != "default/eastwest" || es[0].File != "resources/gw.yaml" {
		t.Errorf("Error fields = %+v, want Index 2, Kind Gateway, Name default/eastwest", *es[0])
	}
	noFile := (&Error{Field: "gossip.port", Msg: "bad", Err: ErrInvalid}).Error()
	if noFile != "config: gossip.port: bad" {
		t.Errorf("Error without file = %q, want %q", noFile, "config: gossip.port: bad")
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	data := doc("WorkloadEntry", "vm-1", "  address: 10.0.0.1\n  ports: {http: 0}\n") + "---\n" +
		doc("WorkloadEntry", "vm-2", "  address: 10.0.0.2\n") + "---\n" +
		doc("WorkloadEntry", "Bad_Name", "  address: ''\n  weight: -1\n")
	_, err := Parse("many.yaml", []byte(data))
	es := errorsOf(t, "Parse", err)
	type loc struct {
		index int
		field string
	}
	want := []loc{{1, "spec.ports.http"}, {3, "metadata.name"}, {3, "spec.weight"}, {3, "spec.address"}}
	for _, w := range want {
		found := false
		for _, e := range es {
			if e.Index == w.index && e.Field == w.field {
				found = true
			}
		}
		if !found {
			t.Errorf("Parse errors:\n%v\nwant one in document %d at %q", es, w.index, w.field)
		}
	}
	if strings.Count(err.Error(), "\n") != len(es)-1 {
		t.Errorf("Errors.Error() has %d lines, want one per problem (%d)", strings.Count(err.Error(), "\n")+1, len(es))
	}
}

func TestParseEmptyAndNumbering(t *testing.T) {
	for _, tc := range []struct {
		name      string
		in        string
		wantLen   int
		wantIndex int // Meta.Index of the last resource
	}{
		{"empty input", "", 0, -1},
		{"only comments", "# nothing\n# here\n", 0, -1},
		{"only separators", "---\n---\n...\n---\n", 0, -1},
		{"leading separator", "---\n" + doc("WorkloadEntry", "a", "  address: 10.0.0.1\n"), 1, 0},
		{"comment header then separator", "# header\n---\n" + doc("WorkloadEntry", "a", "  address: 10.0.0.1\n"), 1, 0},
		{"empty document in the middle counts", doc("WorkloadEntry", "a", "  address: 10.0.0.1\n") + "---\n---\n" + doc("WorkloadEntry", "b", "  address: 10.0.0.2\n"), 2, 2},
		{"trailing separator", doc("WorkloadEntry", "a", "  address: 10.0.0.1\n") + "---\n", 1, 0},
		{"null document", "null\n---\n~\n", 0, -1},
		{"CRLF line ends", strings.ReplaceAll("---\n"+doc("WorkloadEntry", "a", "  address: 10.0.0.1\n"), "\n", "\r\n"), 1, 0},
		{"byte order mark", "\xef\xbb\xbf" + doc("WorkloadEntry", "a", "  address: 10.0.0.1\n"), 1, 0},
		{"separator with comment", doc("WorkloadEntry", "a", "  address: 10.0.0.1\n") + "--- # next\n" + doc("WorkloadEntry", "b", "  address: 10.0.0.2\n"), 2, 1},
		{"JSON document", `{"apiVersion":"networking.istio.io/v1","kind":"WorkloadEntry","metadata":{"name":"a"},"spec":{"address":"10.0.0.1"}}`, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set, err := Parse("x.yaml", []byte(tc.in))
			if err != nil {
				t.Fatalf("Parse(%q) error = %v, want nil", tc.in, err)
			}
			if set.Len() != tc.wantLen {
				t.Fatalf("Parse(%q).Len() = %d, want %d", tc.in, set.Len(), tc.wantLen)
			}
			if tc.wantLen > 0 {
				last := set.WorkloadEntries[len(set.WorkloadEntries)-1]
				if last.Index != tc.wantIndex {
					t.Errorf("last resource Meta.Index = %d, want %d", last.Index, tc.wantIndex)
				}
				if last.Namespace != DefaultNamespace {
					t.Errorf("Namespace = %q, want default %q", last.Namespace, DefaultNamespace)
				}
			}
		})
	}
}

// bigAliasBomb is small but expands past MaxExpandedBytes: one 64 KiB
// string referenced 600 times (below the YAML library's own alias limit).
func bigAliasBomb() string {
	var b strings.Builder
	b.WriteString("a: &big \"" + strings.Repeat("x", 64<<10) + "\"\nb: [")
	for i := range 600 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("*big")
	}
	b.WriteString("]\n")
	return b.String()
}

func nested(depth int) string {
	return "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: x}\nspec: {selector: " +
		strings.Repeat("[", depth) + strings.Repeat("]", depth) + "}\n"
}

// hostileCase is input Parse must refuse, and where it must say so.
type hostileCase struct {
	name     string
	in       string
	field    string
	sentinel error
}

// hostileParseCases are shared by TestParseHostileInput and FuzzParse.
func hostileParseCases() []hostileCase {
	we := func(spec string) string { return doc("WorkloadEntry", "vm-1", spec) }
	return []hostileCase{
		{"billion laughs", "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n", "", ErrTooLarge},
		{"one big string aliased 600 times", bigAliasBomb(), "", ErrTooLarge},
		{"nested 65 levels", nested(65), "", ErrTooLarge},
		{"nested 20000 levels", nested(20000), "", ErrTooLarge},
		{"not UTF-8", "kind: \xc3\x28\n", "", ErrSyntax},
		{"NUL byte", "kind: Gateway\x00\n", "", ErrSyntax},
		{"tab indentation", "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n\tname: x\n", "", ErrSyntax},
		{"duplicate key", we("  address: 10.0.0.1\n  address: 10.0.0.2\n"), "", ErrSyntax},
		{"duplicate top-level key", "kind: Gateway\nkind: Gateway\n", "", ErrSyntax},
		{"unclosed flow", "kind: [Gateway\n", "", ErrSyntax},
		{"undefined alias", "kind: *nope\n", "", ErrSyntax},
		{"document is a list", "- a\n- b\n", "", ErrInvalid},
		{"document is a scalar", "hello\n", "", ErrInvalid},
		{"unknown top-level key", we("  address: 10.0.0.1\n") + "extra: 1\n", "extra", ErrInvalid},
		{"missing kind", "apiVersion: networking.istio.io/v1\nmetadata: {name: a}\nspec: {}\n", "kind", ErrInvalid},
		{"unknown kind", strings.Replace(we("  address: 10.0.0.1\n"), "WorkloadEntry", "Pod", 1), "kind", ErrInvalid},
		{"kind not a string", "apiVersion: networking.istio.io/v1\nkind: [Gateway]\nmetadata: {name: a}\nspec: {}\n", "kind", ErrInvalid},
		{"unsupported Istio kind", strings.Replace(we("  address: 10.0.0.1\n"), "WorkloadEntry", "EnvoyFilter", 1), "kind", ErrUnsupported},
		{"wrong apiVersion", strings.Replace(we("  address: 10.0.0.1\n"), "networking.istio.io/v1", "v1", 1), "apiVersion", ErrInvalid},
		{"missing apiVersion", "kind: WorkloadEntry\nmetadata: {name: a}\nspec: {address: 10.0.0.1}\n", "apiVersion", ErrInvalid},
		{"missing metadata", "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nspec: {address: 10.0.0.1}\n", "metadata", ErrInvalid},
		{"metadata is a list", "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: [a]\nspec: {address: 10.0.0.1}\n", "metadata", ErrInvalid},
		{"missing name", "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {namespace: a}\nspec: {address: 10.0.0.1}\n", "metadata.name", ErrInvalid},
		{"name is a number", "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: 12}\nspec: {address: 10.0.0.1}\n", "metadata.name", ErrInvalid},
		{"name upper case", strings.Replace(we("  address: 10.0.0.1\n"), "vm-1", "VM-1", 1), "metadata.name", ErrInvalid},
		{"gateway name with dot", doc("Gateway", "a.b", "  servers:\n  - port: {number: 1, name: t, protocol: TCP}\n    hosts: ['*']\n"), "metadata.name", ErrInvalid},
		{"namespace with dot", strings.Replace(we("  address: 10.0.0.1\n"), "namespace: default", "namespace: a.b", 1), "metadata.namespace", ErrInvalid},
		{"unknown metadata field", strings.Replace(we("  address: 10.0.0.1\n"), "  namespace: default", "  namespace: default\n  lables: {a: b}", 1), "metadata.lables", ErrInvalid},
		{"label value is a boolean", strings.Replace(we("  address: 10.0.0.1\n"), "  namespace: default", "  namespace: default\n  labels: {canary: yes}", 1), "metadata.labels.canary", ErrInvalid},
		{"label value too long", strings.Replace(we("  address: 10.0.0.1\n"), "  namespace: default", "  namespace: default\n  labels: {a: "+strings.Repeat("x", 64)+"}", 1), "metadata.labels.a", ErrInvalid},
		{"bad label key", strings.Replace(we("  address: 10.0.0.1\n"), "  namespace: default", "  namespace: default\n  labels: {'-a': b}", 1), `metadata.labels["-a"]`, ErrInvalid},
		{"missing spec", "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a}\n", "spec", ErrInvalid},
		{"spec is a list", "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a}\nspec: [a]\n", "spec", ErrInvalid},
		{"unknown spec field", we("  address: 10.0.0.1\n  adress: x\n"), "spec.adress", ErrInvalid},
		{"port eighty", doc("Gateway", "gw", "  servers:\n  - port: {number: eighty, name: t, protocol: TCP}\n    hosts: ['*']\n"), "spec.servers[0].port.number", ErrInvalid},
		{"port negative", doc("Gateway", "gw", "  servers:\n  - port: {number: -1, name: t, protocol: TCP}\n    hosts: ['*']\n"), "spec.servers[0].port.number", ErrInvalid},
		{"port fractional", doc("Gateway", "gw", "  servers:\n  - port: {number: 80.5, name: t, protocol: TCP}\n    hosts: ['*']\n"), "spec.servers[0].port.number", ErrInvalid},
		{"port too big for uint32", doc("Gateway", "gw", "  servers:\n  - port: {number: 99999999999, name: t, protocol: TCP}\n    hosts: ['*']\n"), "spec.servers[0].port.number", ErrInvalid},
		{"hosts not a list", doc("Gateway", "gw", "  servers:\n  - port: {number: 1, name: t, protocol: TCP}\n    hosts: '*'\n"), "spec.servers[0].hosts", ErrInvalid},
		{"host is a number", doc("Gateway", "gw", "  servers:\n  - port: {number: 1, name: t, protocol: TCP}\n    hosts: [1]\n"), "spec.servers[0].hosts[0]", ErrInvalid},
		{"null list item", doc("Gateway", "gw", "  servers:\n  - null\n"), "spec.servers[0]", ErrInvalid},
		{"server is a string", doc("Gateway", "gw", "  servers: [a]\n"), "spec.servers[0]", ErrInvalid},
		{"enum lower case", doc("Gateway", "gw", "  servers:\n  - port: {number: 1, name: t, protocol: TLS}\n    hosts: ['*']\n    tls: {mode: passthrough}\n"), "spec.servers[0].tls.mode", ErrInvalid},
		{"enum unknown number", doc("Gateway", "gw", "  servers:\n  - port: {number: 1, name: t, protocol: TLS}\n    hosts: ['*']\n    tls: {mode: 42}\n"), "spec.servers[0].tls.mode", ErrInvalid},
		{"bool as string", doc("Gateway", "gw", "  servers:\n  - port: {number: 1, name: t, protocol: TLS}\n    hosts: ['*']\n    tls: {httpsRedirect: 'true'}\n"), "spec.servers[0].tls.httpsRedirect", ErrInvalid},
		{"map value not a string", doc("Gateway", "gw", "  selector: {istio: 1}\n  servers:\n  - port: {number: 1, name: t, protocol: TCP}\n    hosts: ['*']\n"), "spec.selector.istio", ErrInvalid},
		{"duration without unit", doc("DestinationRule", "dr", "  host: a.b\n  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 10}}}\n"), "spec.trafficPolicy.connectionPool.tcp.connectTimeout", ErrInvalid},
		{"duration garbage", doc("DestinationRule", "dr", "  host: a.b\n  trafficPolicy: {connectionPool: {tcp: {connectTimeout: soon}}}\n"), "spec.trafficPolicy.connectionPool.tcp.connectTimeout", ErrInvalid},
		{"wrapper type wrong", doc("DestinationRule", "dr", "  host: a.b\n  trafficPolicy: {outlierDetection: {consecutive5xxErrors: many}}\n"), "spec.trafficPolicy.outlierDetection.consecutive5xxErrors", ErrInvalid},
		{"two oneof members", doc("DestinationRule", "dr", "  host: a.b\n  trafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}\n"), "spec.trafficPolicy.loadBalancer.simple", ErrInvalid},
		{"exportTo is a map", doc("ServiceEntry", "se", "  hosts: [a.b]\n  resolution: STATIC\n  exportTo: {a: b}\n"), "spec.exportTo", ErrInvalid},
		{"exportTo item is a list", doc("ServiceEntry", "se", "  hosts: [a.b]\n  resolution: STATIC\n  exportTo: [[a]]\n"), "spec.exportTo[0]", ErrInvalid},
		{"exportTo item null", doc("DestinationRule", "dr", "  host: a.b\n  exportTo: [null]\n"), "spec.exportTo[0]", ErrInvalid},
		{"sourceLabels is a list", doc("VirtualService", "vs", "  hosts: ['*']\n  gateways: [gw]\n  tcp:\n  - match:\n    - sourceLabels: [a]\n    route:\n    - destination: {host: a.b}\n"), "spec.tcp[0].match[0].sourceLabels", ErrInvalid},
		{"sourceNamespace is a number", doc("VirtualService", "vs", "  hosts: ['*']\n  gateways: [gw]\n  tcp:\n  - match:\n    - sourceNamespace: 7\n    route:\n    - destination: {host: a.b}\n"), "spec.tcp[0].match[0].sourceNamespace", ErrInvalid},
		{"keepalive probes a word", doc("DestinationRule", "dr", "  host: a.b\n  trafficPolicy: {connectionPool: {tcp: {tcpKeepalive: {probes: many}}}}\n"), "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.probes", ErrInvalid},
		{"keepalive probes beyond uint32", doc("DestinationRule", "dr", "  host: a.b\n  trafficPolicy: {connectionPool: {tcp: {tcpKeepalive: {probes: 4294967296}}}}\n"), "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.probes", ErrInvalid},
		{"subjectAltNames a string", doc("ServiceEntry", "se", "  hosts: [a.b]\n  resolution: STATIC\n  subjectAltNames: spiffe://x\n"), "spec.subjectAltNames", ErrInvalid},
		{"duplicate resource", we("  address: 10.0.0.1\n") + "---\n" + we("  address: 10.0.0.2\n"), "metadata.name", ErrDuplicate},
		{"too many documents", strings.Repeat("---\n", MaxDocuments+1), "", ErrTooLarge},
		{"too large", strings.Repeat("#", MaxFileBytes+1), "", ErrTooLarge},
	}
}

func TestParseHostileInput(t *testing.T) {
	for _, tc := range hostileParseCases() {
		t.Run(tc.name, func(t *testing.T) {
			wantProblem(t, tc.in, tc.field, tc.sentinel)
		})
	}
}

func TestParseYAMLErrorLineNumbers(t *testing.T) {
	data := doc("WorkloadEntry", "vm-1", "  address: 10.0.0.1\n") + "---\n" +
		"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n\tname: x\n"
	_, err := Parse("lines.yaml", []byte(data))
	es := errorsOf(t, "Parse", err)
	// The tab is on line 12 of the file (line 4 of document 2).
	if len(es) != 1 || es[0].Index != 2 || !strings.Contains(es[0].Msg, "line 12") || !strings.Contains(es[0].Msg, "tabs") {
		t.Fatalf("Parse error = %v, want one problem in document 2 naming line 12 and tabs", err)
	}
}

func TestParseDropsBadValuesButKeepsValidating(t *testing.T) {
	// A schema error (port eighty) must not hide the unsupported mode of
	// the same server, nor cause a bogus "port number 0" complaint.
	data := doc("Gateway", "gw", "  servers:\n  - port: {number: eighty, name: t, protocol: TLS}\n    hosts: ['*.a.b']\n    tls: {mode: MUTUAL}\n")
	_, err := Parse("x.yaml", []byte(data))
	es := errorsOf(t, "Parse", err)
	if findField(es, "spec.servers[0].port.number") == nil || findField(es, "spec.servers[0].tls.mode") == nil || len(es) != 2 {
		t.Fatalf("Parse errors:\n%v\nwant exactly: port.number (not an integer) and tls.mode (unsupported)", es)
	}
}

func TestLoadFolder(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("b.yml", doc("WorkloadEntry", "b", "  address: 10.0.0.2\n"))
	write("a.yaml", doc("WorkloadEntry", "a", "  address: 10.0.0.1\n"))
	write(".hidden.yaml", "garbage: [")
	write("notes.txt", "garbage: [")
	write("README.md", "garbage: [")
	if err := os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub.yaml", "c.yaml"), []byte("garbage: ["), 0o600); err != nil {
		t.Fatal(err)
	}

	set, err := Load(dir)
	if err != nil {
		t.Fatalf("Load(folder) error = %v, want nil (hidden, non-YAML and nested files skipped)", err)
	}
	if set.Len() != 2 || set.WorkloadEntries[0].Name != "a" || set.WorkloadEntries[1].Name != "b" {
		t.Fatalf("Load(folder) = %d resources, want a then b (name order)", set.Len())
	}

	empty := t.TempDir()
	if set, err := Load(empty); err != nil || set.Len() != 0 {
		t.Errorf("Load(empty folder) = %v, %v; want an empty Set", set, err)
	}

	// A duplicate in another file refuses the whole folder, and names both.
	write("c.yaml", doc("WorkloadEntry", "a", "  address: 10.0.0.3\n"))
	write("d.yaml", doc("WorkloadEntry", "d", "  address: nope!\n"))
	set, err = Load(dir)
	es := errorsOf(t, "Load(folder with duplicate)", err)
	if set != nil {
		t.Error("Load(folder with a bad file) returned a Set; want nil")
	}
	dup := findField(es, "metadata.name")
	if dup == nil || !errors.Is(dup, ErrDuplicate) || dup.File != filepath.Join(dir, "c.yaml") || !strings.Contains(dup.Msg, "a.yaml") {
		t.Errorf("duplicate problem = %v, want one in c.yaml naming a.yaml", dup)
	}
	if e := findField(es, "spec.address"); e == nil || e.File != filepath.Join(dir, "d.yaml") {
		t.Errorf("Load errors:\n%v\nwant the bad address of d.yaml too", es)
	}
}

func TestLoadFileErrors(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"))
	errorsOf(t, "Load(missing)", err)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) error = %v, want errors.Is(err, fs.ErrNotExist)", err)
	}

	big := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(big, bytes.Repeat([]byte("#"), MaxFileBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(big)
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("Load(%d-byte file) error = %v, want ErrTooLarge", MaxFileBytes+1, err)
	}

	// A single file is read whatever its name.
	odd := filepath.Join(t.TempDir(), "resources.conf")
	if err := os.WriteFile(odd, []byte(doc("WorkloadEntry", "a", "  address: 10.0.0.1\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if set, err := Load(odd); err != nil || set.Len() != 1 {
		t.Errorf("Load(resources.conf) = %v, %v; want 1 resource", set, err)
	}
}

func TestParseConcurrent(t *testing.T) {
	data, err := os.ReadFile("testdata/valid/02-passthrough.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := mustParse(t, data).Hash()
	done := make(chan string, 8)
	for range 8 {
		go func() {
			s, err := Parse("p.yaml", data)
			if err != nil {
				done <- err.Error()
				return
			}
			done <- s.Hash()
		}()
	}
	for range 8 {
		if got := <-done; got != want {
			t.Errorf("concurrent Parse gave %q, want hash %q", got, want)
		}
	}
}

func mustParse(t testing.TB, data []byte) *Set {
	t.Helper()
	s, err := Parse("t.yaml", data)
	if err != nil {
		t.Fatalf("Parse error:\n%v\nwant nil", err)
	}
	return s
}

func TestMayHaveAlias(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{`hosts: ["*.local"]`, false},
		{`hosts: ['*']`, false},
		{"sniHosts: [\"*.example.com\", 'a*b']", false},
		{"plain: a*b", false},
		{"a: *x", true},
		{"*x", true},
		{"a: [1,*x]", true},
		{`a: {"k":*x}`, true},
		{"<<: *base", true},
		{"a:\n\t*x", true},
	} {
		if got := mayHaveAlias([]byte(tc.in)); got != tc.want {
			t.Errorf("mayHaveAlias(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	// An alias right after ':' in a JSON-style flow map must still be
	// measured.
	var b strings.Builder
	b.WriteString("a: &big \"" + strings.Repeat("x", 64<<10) + "\"\nb: {")
	for i := range 600 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"k` + strconv.Itoa(i) + `":*big`)
	}
	b.WriteString("}\n")
	wantProblem(t, b.String(), "", ErrTooLarge)
}
