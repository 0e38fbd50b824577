package hbone_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/sni/hbone"
)

func TestParseAuthority(t *testing.T) {
	good := []struct {
		in   string
		want hbone.Target
	}{
		{"web.default.svc.cluster.local:8080", hbone.Target{Service: "web.default.svc.cluster.local", Port: 8080}},
		{"Web.Default.SVC.cluster.local.:443", hbone.Target{Service: "web.default.svc.cluster.local", Port: 443}},
		{"a:1", hbone.Target{Service: "a", Port: 1}},
		{"x-1.y2:65535", hbone.Target{Service: "x-1.y2", Port: 65535}},
	}
	for _, c := range good {
		got, err := hbone.ParseAuthority(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseAuthority(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	bad := []struct{ in, why string }{
		{"", "empty"},
		{"web.default", "no port"},
		{"web:", "empty port"},
		{"web:0", "not in 1-65535"},
		{"web:70000", "not in 1-65535"},
		{"web:080", "leading zero"},
		{"web:+80", "not a decimal"},
		{"web:8a", "not a decimal"},
		{"10.0.0.1:80", "IP address"},
		{"127.0.0.1:15000", "IP address"},
		{"[::1]:80", "IPv6"},
		{"::1:80", "IPv6"},
		{"localhost:80", "loopback name"},
		{"LOCALHOST.:80", "loopback name"},
		{"evil.localhost:80", "loopback name"},
		{"10.1:80", "all-numeric"},
		{"user@web:80", "not allowed"},
		{"web/path:80", "not allowed"},
		{"web%2e:80", "not allowed"},
		{"web?x:80", "not allowed"},
		{"-web:80", "hyphen"},
		{"web-.x:80", "hyphen"},
		{"a..b:80", "empty label"},
		{".:80", "empty"},
		{"web_svc:80", "not allowed"},
		{"wéb:80", "not allowed"},
		{strings.Repeat("a", 64) + ".x:80", "longer than 63"},
		{strings.Repeat("a.", 130) + "x:80", "longer than"},
		{"web:80\x00", "not a decimal"},
		{"web\r\n:80", "not allowed"},
	}
	for _, c := range bad {
		_, err := hbone.ParseAuthority(c.in)
		if err == nil || !errors.Is(err, hbone.ErrBadAuthority) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("ParseAuthority(%q) = %v; want ErrBadAuthority saying %q", c.in, err, c.why)
		}
	}
}

func TestParseSubset(t *testing.T) {
	for _, ok := range []string{"", "v1", "canary-2"} {
		if got, err := hbone.ParseSubset(ok); err != nil || got != ok {
			t.Errorf("ParseSubset(%q) = %q, %v", ok, got, err)
		}
	}
	for _, bad := range []string{"V1", "v_1", "-v1", "v1-", strings.Repeat("a", 64), "a.b", "v1 ", "v1\n"} {
		if _, err := hbone.ParseSubset(bad); !errors.Is(err, hbone.ErrBadSubset) {
			t.Errorf("ParseSubset(%q) = %v; want ErrBadSubset", bad, err)
		}
	}
}

// FuzzAuthority checks that the decoder never panics, that what it accepts
// formats back to an authority it accepts again unchanged, and that an
// accepted host is never an address or a loopback name.
func FuzzAuthority(f *testing.F) {
	for _, s := range []string{"web.default.svc.cluster.local:8080", "a:1", "10.0.0.1:80", "[::1]:80", "localhost:80",
		"web:0", "web:70000", "user@web:80", "web%2e:80", "Web.X.:443", "10.1:80", "a..b:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := hbone.ParseAuthority(s)
		if err != nil {
			if !errors.Is(err, hbone.ErrBadAuthority) {
				t.Fatalf("ParseAuthority(%q) error %v does not wrap ErrBadAuthority", s, err)
			}
			return
		}
		again, err := hbone.ParseAuthority(got.String())
		if err != nil || again != got {
			t.Fatalf("ParseAuthority(%q) = %+v, but its String %q parses to %+v, %v", s, got, got.String(), again, err)
		}
		if got.Port == 0 || got.Port > 65535 || got.Service == "localhost" || strings.ContainsAny(got.Service, ":[]@/%") {
			t.Fatalf("ParseAuthority(%q) accepted %+v", s, got)
		}
	})
}
