package sni

import (
	"errors"
	"strings"
	"testing"
)

type nameRow struct {
	name   string
	in     string
	want   Name // on success
	off    int  // *NameError.Offset on failure
	reason string
}

func nameRows() []nameRow {
	l63 := strings.Repeat("a", 63)
	n253 := l63 + "." + l63 + "." + l63 + "." + strings.Repeat("d", 61)
	return []nameRow{
		{name: "simple", in: "reviews.default.svc.cluster.local", want: "reviews.default.svc.cluster.local"},
		{name: "single label", in: "localhost", want: "localhost"},
		{name: "one letter", in: "x", want: "x"},
		{name: "upper case folded", in: "Reviews.DEFAULT.Svc", want: "reviews.default.svc"},
		{name: "trailing dot dropped", in: "a.example.", want: "a.example"},
		{name: "istio auto passthrough", in: apSNI, want: apSNI},
		{name: "istio empty subset", in: "outbound_.9080_._.reviews.default.svc.cluster.local", want: "outbound_.9080_._.reviews.default.svc.cluster.local"},
		{name: "istio cluster-name form", in: "Outbound|9080|v1|reviews.default.svc.cluster.local", want: "outbound|9080|v1|reviews.default.svc.cluster.local"},
		{name: "digits inside", in: "3com.example", want: "3com.example"},
		{name: "hyphen inside", in: "a-b.example", want: "a-b.example"},
		{name: "punycode", in: "xn--bcher-kva.example", want: "xn--bcher-kva.example"},
		{name: "63-byte label", in: l63 + ".example", want: Name(l63 + ".example")},
		{name: "253 bytes", in: n253, want: Name(n253)},
		{name: "253 bytes and a dot", in: n253 + ".", want: Name(n253)},
		{name: "numeric label not last", in: "1.example", want: "1.example"},
		{name: "hex-looking last label", in: "a.0xzz", want: "a.0xzz"},

		{name: "empty", in: "", reason: "empty name"},
		{name: "only a dot", in: ".", reason: "empty name"},
		{name: "two trailing dots", in: "a..", off: 2, reason: "empty label"},
		{name: "leading dot", in: ".a", off: 0, reason: "empty label"},
		{name: "empty label", in: "a..b", off: 2, reason: "empty label"},
		{name: "254 bytes", in: n253 + "d", off: 253, reason: "longer than 253 bytes"},
		{name: "64-byte label", in: "a." + l63 + "b", off: 65, reason: "label longer than 63 bytes"},
		{name: "leading hyphen", in: "-a.example", off: 0, reason: "label starts with a hyphen"},
		{name: "trailing hyphen", in: "a-.example", off: 1, reason: "label ends with a hyphen"},
		{name: "space", in: "a b", off: 1, reason: "invalid character"},
		{name: "pipe outside cluster-name form", in: "a|b.example", off: 1, reason: "invalid character"},
		{name: "pipe after other prefix", in: "inbound|9080||x.local", off: 7, reason: "invalid character"},
		{name: "NUL", in: "a\x00b", off: 1, reason: "invalid character"},
		{name: "slash", in: "a/b", off: 1, reason: "invalid character"},
		{name: "colon port", in: "a.example:443", off: 9, reason: "invalid character"},
		{name: "wildcard", in: "*.example", off: 0, reason: "invalid character"},
		{name: "non-ASCII", in: "bücher.example", off: 1, reason: "non-ASCII byte"},
		{name: "invalid UTF-8", in: "a\xff", off: 1, reason: "non-ASCII byte"},
		{name: "IPv4", in: "10.1.2.3", off: 7, reason: "IP address literal"},
		{name: "IPv4 trailing dot", in: "10.1.2.3.", off: 7, reason: "IP address literal"},
		{name: "IPv4 short form", in: "127.1", off: 4, reason: "IP address literal"},
		{name: "IPv4 integer", in: "2130706433", off: 0, reason: "IP address literal"},
		{name: "IPv4 hex", in: "0x7f000001", off: 0, reason: "IP address literal"},
		{name: "IPv4 hex upper", in: "a.0X7F", off: 2, reason: "IP address literal"},
		{name: "numeric last label", in: "a.example.123", off: 10, reason: "IP address literal"},
		{name: "IPv6", in: "::1", off: 0, reason: "invalid character"},
		{name: "IPv6 brackets", in: "[::1]", off: 0, reason: "invalid character"},
	}
}

func TestParseName(t *testing.T) {
	for _, tc := range nameRows() {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseName(tc.in)
			if tc.reason == "" {
				if err != nil || got != tc.want {
					t.Fatalf("ParseName(%q) = %q, %v; want %q, nil", tc.in, got, err, tc.want)
				}
				return
			}
			var ne *NameError
			if !errors.As(err, &ne) || !errors.Is(err, ErrInvalidName) {
				t.Fatalf("ParseName(%q) = %q, %v; want a *NameError wrapping ErrInvalidName", tc.in, got, err)
			}
			if ne.Reason != tc.reason || ne.Offset != tc.off {
				t.Fatalf("ParseName(%q) = %v; want %q at offset %d", tc.in, err, tc.reason, tc.off)
			}
		})
	}
}

func TestNameErrorCapsInput(t *testing.T) {
	_, err := ParseName(strings.Repeat("a", 100000))
	var ne *NameError
	if !errors.As(err, &ne) || len(ne.Name) != maxErrorName {
		t.Fatalf("ParseName(100000 bytes) error keeps %d bytes of input, want %d", len(ne.Name), maxErrorName)
	}
}

func TestParseNameAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("allocation counts differ under -cover")
	}
	if n := testing.AllocsPerRun(100, func() { ParseName(apSNI) }); n != 0 {
		t.Fatalf("ParseName(lower-case name) allocates %v times, want 0", n)
	}
}

func TestNameParsePattern(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     string
		kind   PatternKind
		str    string // String() wanted
		reason string // NameError.Reason wanted on failure
		off    int
	}{
		{name: "any", in: "*", kind: PatternAny, str: "*"},
		{name: "exact", in: "a.example", kind: PatternExact, str: "a.example"},
		{name: "exact folded", in: "A.Example.", kind: PatternExact, str: "a.example"},
		{name: "wildcard", in: "*.example", kind: PatternWildcard, str: "*.example"},
		{name: "wildcard folded", in: "*.Cluster.Local", kind: PatternWildcard, str: "*.cluster.local"},
		{name: "wildcard istio local", in: "*.local", kind: PatternWildcard, str: "*.local"},
		{name: "empty", in: "", reason: "empty name"},
		{name: "star dot", in: "*.", reason: "empty name", off: 2},
		{name: "partial wildcard", in: "*a.example", reason: "wildcard must be the whole left-most label", off: 0},
		{name: "inner wildcard", in: "a.*.example", reason: "wildcard must be the whole left-most label", off: 2},
		{name: "double wildcard", in: "*.*.example", reason: "invalid character", off: 2},
		{name: "trailing wildcard", in: "a.*", reason: "wildcard must be the whole left-most label", off: 2},
		{name: "wildcard IP", in: "*.1.2.3", reason: "IP address literal", off: 6},
		{name: "wildcard bad suffix", in: "*.a..b", reason: "empty label", off: 4},
		{name: "namespace prefix", in: "ns/a.example", reason: "invalid character", off: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePattern(tc.in)
			if tc.reason == "" {
				if err != nil || p.Kind() != tc.kind || p.String() != tc.str {
					t.Fatalf("ParsePattern(%q) = (%v %q), %v; want (%v %q), nil", tc.in, p.Kind(), p, err, tc.kind, tc.str)
				}
				if q, err := ParsePattern(p.String()); err != nil || q != p {
					t.Fatalf("ParsePattern(%q) = %v, %v; want %v again", p.String(), q, err, p)
				}
				return
			}
			var ne *NameError
			if !errors.As(err, &ne) || ne.Reason != tc.reason || ne.Offset != tc.off || ne.Name != tc.in {
				t.Fatalf("ParsePattern(%q) = %v; want *NameError{%q, %q at %d}", tc.in, err, tc.in, tc.reason, tc.off)
			}
		})
	}
}

func mustPattern(t testing.TB, s string) Pattern {
	t.Helper()
	p, err := ParsePattern(s)
	if err != nil {
		t.Fatalf("ParsePattern(%q) = %v", s, err)
	}
	return p
}

func TestNamePatternMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		name    Name
		want    bool
	}{
		{"*", "a.example", true},
		{"*", "", true},
		{"a.example", "a.example", true},
		{"a.example", "b.example", false},
		{"a.example", "x.a.example", false},
		{"a.example", "", false},
		{"*.example", "a.example", true},
		{"*.example", "a.b.example", true},
		{"*.example", "example", false},
		{"*.example", "aexample", false},
		{"*.example", "a.example.com", false},
		{"*.example", "", false},
		{"*.local", apSNI, true},
		{"*.svc.cluster.local", "reviews.default.svc.cluster.local", true},
		{"*.default.svc.cluster.local", "reviews.other.svc.cluster.local", false},
	} {
		if got := mustPattern(t, tc.pattern).Match(tc.name); got != tc.want {
			t.Errorf("ParsePattern(%q).Match(%q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
	if (Pattern{}).Match("a.example") || (Pattern{}).Match("") {
		t.Errorf("zero Pattern matched, want it to match nothing")
	}
}

func TestNameBestMatch(t *testing.T) {
	var ps []Pattern
	for _, s := range []string{"*", "*.local", "*.cluster.local", "reviews.default.svc.cluster.local", "*.svc.cluster.local", "*.example"} {
		ps = append(ps, mustPattern(t, s))
	}
	for _, tc := range []struct {
		name Name
		want string // "" = no match
	}{
		{"reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local"},
		{"ratings.default.svc.cluster.local", "*.svc.cluster.local"},
		{"a.cluster.local", "*.cluster.local"},
		{"x.local", "*.local"},
		{"a.example", "*.example"},
		{"other.test", "*"},
		{"", "*"},
	} {
		i := BestMatch(tc.name, ps)
		if i < 0 || ps[i].String() != tc.want {
			t.Errorf("BestMatch(%q) = %d, want the index of %q", tc.name, i, tc.want)
		}
	}
	if i := BestMatch("a.test", ps[1:]); i != -1 {
		t.Errorf("BestMatch(%q, without \"*\") = %d, want -1", "a.test", i)
	}
	// Order does not matter: exact beats wildcard even when listed last.
	rev := []Pattern{mustPattern(t, "*.example"), mustPattern(t, "a.example")}
	if i := BestMatch("a.example", rev); i != 1 {
		t.Errorf("BestMatch(a.example, [*.example a.example]) = %d, want 1", i)
	}
	if mustPattern(t, "a.b").Specificity() <= mustPattern(t, "*."+strings.Repeat("a", 63)+"."+strings.Repeat("b", 63)).Specificity() {
		t.Errorf("an exact pattern ranks below a long wildcard")
	}
}

func FuzzParseName(f *testing.F) {
	for _, tc := range nameRows() {
		f.Add(tc.in)
		f.Add("*." + tc.in)
	}
	f.Add("*")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseName(s)
		if err == nil {
			if len(n) == 0 || len(n) > maxNameLen || strings.ToLower(string(n)) != string(n) || strings.HasSuffix(string(n), ".") {
				t.Fatalf("ParseName(%q) = %q: empty, too long, upper case or dotted", s, n)
			}
			if n2, err := ParseName(string(n)); err != nil || n2 != n {
				t.Fatalf("ParseName(ParseName(%q)) = %q, %v; want %q", s, n2, err, n)
			}
			// The byte-slice check used on ClientHellos agrees.
			if keep, _, _, reason := checkName([]byte(s)); reason != "" || !strings.EqualFold(s[:keep], string(n)) {
				t.Fatalf("checkName([]byte(%q)) = %d, %q; ParseName accepted %q", s, keep, reason, n)
			}
			if !mustPattern(t, string(n)).Match(n) || !mustPattern(t, "*").Match(n) {
				t.Fatalf("exact and any patterns do not match %q", n)
			}
		} else {
			var ne *NameError
			if !errors.As(err, &ne) || ne.Offset < 0 || ne.Offset > len(s) || ne.Reason == "" {
				t.Fatalf("ParseName(%q) = %#v, want a *NameError with an offset in [0, %d]", s, err, len(s))
			}
		}
		p, err := ParsePattern(s)
		if err != nil {
			return
		}
		if q, err := ParsePattern(p.String()); err != nil || q != p {
			t.Fatalf("ParsePattern(%q) = %v, but its String %q re-parses to %v, %v", s, p, p.String(), q, err)
		}
		if p.Kind() == PatternWildcard {
			suffix := Name(strings.TrimPrefix(p.String(), "*."))
			if p.Match(suffix) || !p.Match("a."+suffix) {
				t.Fatalf("%v.Match: suffix %q itself matched, or a.%s did not", p, suffix, suffix)
			}
		}
	})
}
