package sni

import (
	"errors"
	"strings"
	"testing"
)

type apRow struct {
	name string
	in   string
	want AutoPassthrough
	part string // AutoPassthroughError.Part; "" = success
	not  bool   // ErrNotAutoPassthrough wanted
}

func apRows() []apRow {
	const host = "reviews.default.svc.cluster.local"
	return []apRow{
		{name: "subset", in: apSNI, want: AutoPassthrough{9080, "v1", host}},
		{name: "empty subset", in: "outbound_.9080_._." + host, want: AutoPassthrough{9080, "", host}},
		{name: "pipe subset", in: "outbound|9080|v1|" + host, want: AutoPassthrough{9080, "v1", host}},
		{name: "pipe empty subset", in: "outbound|9080||" + host, want: AutoPassthrough{9080, "", host}},
		{name: "port 1", in: "outbound_.1_._.a", want: AutoPassthrough{1, "", "a"}},
		{name: "port 65535", in: "outbound_.65535_._.a", want: AutoPassthrough{65535, "", "a"}},
		{name: "host with _.", in: "outbound_.80_.v2_.x_.y.example", want: AutoPassthrough{80, "v2", "x_.y.example"}},
		{name: "host with underscore label", in: "outbound_.80_._._.a", want: AutoPassthrough{80, "", "_.a"}},
		{name: "subset with hyphen", in: "outbound_.80_.canary-2_.a.example", want: AutoPassthrough{80, "canary-2", "a.example"}},
		{name: "upper case folded", in: "OUTBOUND_.80_.V1_.Reviews.Default", want: AutoPassthrough{80, "v1", "reviews.default"}},
		{name: "trailing dot", in: "outbound_.80_._.a.example.", want: AutoPassthrough{80, "", "a.example"}},

		{name: "plain host", in: host, not: true},
		{name: "empty", in: "", not: true},
		{name: "inbound", in: "inbound_.9080_._." + host, not: true},
		{name: "prefix without separator", in: "outbound_9080_._.a", not: true},
		{name: "prefix only", in: "outbound", not: true},
		{name: "prefix and dot", in: "outbound.9080._.a", not: true},

		{name: "nothing after prefix", in: "outbound_.", part: "port"},
		{name: "no port separator", in: "outbound_.9080", part: "port"},
		{name: "no subset separator", in: "outbound_.9080_.v1", part: "subset"},
		{name: "mixed separators", in: "outbound_.9080|v1|a", part: "port"},
		{name: "empty port", in: "outbound_._.v1_.a", part: "port"},
		{name: "port 0", in: "outbound_.0_._.a", part: "port"},
		{name: "port leading zero", in: "outbound_.080_._.a", part: "port"},
		{name: "port 65536", in: "outbound_.65536_._.a", part: "port"},
		{name: "port 99999", in: "outbound_.99999_._.a", part: "port"},
		{name: "port six digits", in: "outbound_.100000_._.a", part: "port"},
		{name: "port sign", in: "outbound_.+80_._.a", part: "port"},
		{name: "port negative", in: "outbound_.-80_._.a", part: "port"},
		{name: "port hex", in: "outbound_.0x50_._.a", part: "port"},
		{name: "port name", in: "outbound_.http_._.a", part: "port"},
		{name: "port overflow digits", in: "outbound|4294967297||a", part: "port"},
		{name: "subset underscore", in: "outbound_.80_.v_1_.a", part: "subset"},
		{name: "subset leading hyphen", in: "outbound_.80_.-v1_.a", part: "subset"},
		{name: "subset trailing hyphen", in: "outbound_.80_.v1-_.a", part: "subset"},
		{name: "subset dot", in: "outbound|80|v.1|a", part: "subset"},
		{name: "subset too long", in: "outbound_.80_." + strings.Repeat("s", 63) + "_.a", part: "subset"},
		{name: "empty host", in: "outbound_.80_._.", part: "host"},
		{name: "host IP", in: "outbound_.80_._.10.0.0.1", part: "host"},
		{name: "host non-ASCII", in: "outbound_.80_._.bücher", part: "host"},
		{name: "host with pipe", in: "outbound|80||a|b", part: "host"},
		{name: "host label too long", in: "outbound_.80_._." + strings.Repeat("h", 64), part: "host"},
		{name: "SNI too long", in: "outbound_.80_.v1_." + strings.Repeat(strings.Repeat("h", 60)+".", 4) + "x", part: "length"},
	}
}

func TestParseAutoPassthrough(t *testing.T) {
	for _, tc := range apRows() {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAutoPassthrough(tc.in)
			switch {
			case tc.not:
				if err != ErrNotAutoPassthrough {
					t.Fatalf("ParseAutoPassthrough(%q) = %+v, %v; want ErrNotAutoPassthrough", tc.in, got, err)
				}
			case tc.part != "":
				var ae *AutoPassthroughError
				if !errors.As(err, &ae) || ae.Part != tc.part || !errors.Is(err, ErrInvalidAutoPassthrough) {
					t.Fatalf("ParseAutoPassthrough(%q) = %+v, %v; want an *AutoPassthroughError for part %q", tc.in, got, err, tc.part)
				}
				if tc.part == "host" && !errors.Is(err, ErrInvalidName) {
					t.Fatalf("ParseAutoPassthrough(%q) = %v; want it to wrap the host's ErrInvalidName", tc.in, err)
				}
			default:
				if err != nil || got != tc.want {
					t.Fatalf("ParseAutoPassthrough(%q) = %+v, %v; want %+v, nil", tc.in, got, err, tc.want)
				}
				for _, s := range []string{got.String(), got.ClusterName()} {
					if again, err := ParseAutoPassthrough(s); err != nil || again != got {
						t.Fatalf("ParseAutoPassthrough(%q) = %+v, %v; want %+v again", s, again, err, got)
					}
				}
				if n, err := got.SNI(); err != nil || string(n) != got.String() {
					t.Fatalf("%+v.SNI() = %q, %v; want %q", got, n, err, got.String())
				}
			}
		})
	}
}

func TestAutoPassthroughRender(t *testing.T) {
	ap := AutoPassthrough{Port: 9080, Host: "reviews.default.svc.cluster.local"}
	if got, want := ap.String(), "outbound_.9080_._.reviews.default.svc.cluster.local"; got != want {
		t.Errorf("%+v.String() = %q, want %q", ap, got, want)
	}
	if got, want := ap.ClusterName(), "outbound|9080||reviews.default.svc.cluster.local"; got != want {
		t.Errorf("%+v.ClusterName() = %q, want %q", ap, got, want)
	}
	ap.Subset = "v1"
	if got, want := ap.String(), apSNI; got != want {
		t.Errorf("%+v.String() = %q, want %q", ap, got, want)
	}
	if got := ap.sniLen(); got != len(ap.String()) {
		t.Errorf("%+v.sniLen() = %d, want %d", ap, got, len(ap.String()))
	}
}

func TestParseAutoPassthroughAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("allocation counts differ under -cover")
	}
	for _, s := range []string{apSNI, "reviews.default.svc.cluster.local"} {
		if n := testing.AllocsPerRun(100, func() { ParseAutoPassthrough(s) }); n != 0 {
			t.Errorf("ParseAutoPassthrough(%q) allocates %v times, want 0", s, n)
		}
	}
}

func TestIsMeshALPN(t *testing.T) {
	for _, tc := range []struct {
		alpn []string
		want bool
	}{
		{nil, false},
		{[]string{}, false},
		{[]string{"h2", "http/1.1"}, false},
		{[]string{"istio"}, true},
		{[]string{"h2", "istio-peer-exchange"}, true},
		{[]string{"istio-http/1.0"}, true},
		{[]string{"istio-http/1.1"}, true},
		{[]string{"istio-h2"}, true},
		{[]string{"Istio"}, false},
		{[]string{"istio-http/2"}, false},
		{[]string{"istio "}, false},
	} {
		if got := IsMeshALPN(tc.alpn); got != tc.want {
			t.Errorf("IsMeshALPN(%q) = %v, want %v", tc.alpn, got, tc.want)
		}
	}
	all := MeshALPNProtocols()
	if len(all) != 5 || !IsMeshALPN(all[4:]) {
		t.Errorf("MeshALPNProtocols() = %q, want the 5 Istio mesh protocols", all)
	}
	all[0] = "changed"
	if MeshALPNProtocols()[0] != "istio" {
		t.Errorf("MeshALPNProtocols() shares its slice with callers")
	}
}

func TestRawHelloMeshALPNAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("allocation counts differ under -cover")
	}
	var h RawHello
	if err := ParseHello(goPQHello(t), &h); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { h.HasMeshALPN() }); n != 0 {
		t.Fatalf("RawHello.HasMeshALPN allocates %v times, want 0", n)
	}
}

func FuzzParseAutoPassthrough(f *testing.F) {
	for _, tc := range apRows() {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := ParseAutoPassthrough(s)
		var ae *AutoPassthroughError
		switch {
		case err == nil:
			if ap.Port < 1 || ap.Port > 65535 || ap.Host == "" {
				t.Fatalf("ParseAutoPassthrough(%q) = %+v: port out of range or no host", s, ap)
			}
			for _, r := range []string{ap.String(), ap.ClusterName()} {
				if again, err := ParseAutoPassthrough(r); err != nil || again != ap {
					t.Fatalf("ParseAutoPassthrough(%q) = %+v from %q, but its rendering %q gives %+v, %v", s, ap, s, r, again, err)
				}
			}
			// The SNI spelling is itself a valid host name.
			if n, err := ap.SNI(); err != nil || string(n) != ap.String() {
				t.Fatalf("%+v.SNI() = %q, %v; want %q", ap, n, err, ap.String())
			}
		case err == ErrNotAutoPassthrough:
			if len(s) >= 9 && (strings.EqualFold(s[:9], "outbound|") || len(s) >= 10 && strings.EqualFold(s[:10], "outbound_.")) {
				t.Fatalf("ParseAutoPassthrough(%q) = ErrNotAutoPassthrough for a name with the prefix", s)
			}
		case errors.As(err, &ae):
			if ae.Part == "" || ae.Reason == "" || len(ae.Name) > maxErrorName {
				t.Fatalf("ParseAutoPassthrough(%q) = %#v, want a part, a reason and a short name", s, ae)
			}
		default:
			t.Fatalf("ParseAutoPassthrough(%q) = %v (%T), not a documented error", s, err, err)
		}
	})
}

func BenchmarkParseAutoPassthrough(b *testing.B) {
	for _, in := range []string{apSNI, "outbound|9080|v1|reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local"} {
		b.Run(strings.SplitN(in, ".", 2)[0], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ParseAutoPassthrough(in)
			}
		})
	}
}
