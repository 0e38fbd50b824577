package catalog

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

var registrationRows = []struct {
	name  string
	id    string
	body  string
	field string // "" = valid
}{
	{"minimal", "r1", `{"service":"reviews.default.svc.cluster.local","port":9080,"addr":"10.0.0.7:9080"}`, ""},
	{"full", "r2", `{"service":"s","port":80,"addr":"[2001:db8::1]:80","network":"net-b","labels":{"version":"v1"},"weight":5,"ttl":"30s","check":{"interval":"10s","timeout":"2s","failures":3}}`, ""},
	{"empty body", "r", ``, "body"},
	{"not json", "r", `service=s`, "body"},
	{"unknown field", "r", `{"service":"s","port":80,"addr":"1.2.3.4:80","prot":1}`, "body"},
	{"trailing object", "r", `{"service":"s","port":80,"addr":"1.2.3.4:80"}{}`, "body"},
	{"missing service", "r", `{"port":80,"addr":"1.2.3.4:80"}`, "service"},
	{"port zero", "r", `{"service":"s","addr":"1.2.3.4:80"}`, "port"},
	{"port too big", "r", `{"service":"s","port":70000,"addr":"1.2.3.4:80"}`, "port"},
	{"port negative", "r", `{"service":"s","port":-1,"addr":"1.2.3.4:80"}`, "body"},
	{"addr without port", "r", `{"service":"s","port":80,"addr":"1.2.3.4"}`, "addr"},
	{"addr port zero", "r", `{"service":"s","port":80,"addr":"1.2.3.4:0"}`, "addr"},
	{"bad ttl", "r", `{"service":"s","port":80,"addr":"1.2.3.4:80","ttl":"soon"}`, "ttl"},
	{"negative ttl", "r", `{"service":"s","port":80,"addr":"1.2.3.4:80","ttl":"-1s"}`, "ttl"},
	{"check timeout above interval", "r", `{"service":"s","port":80,"addr":"1.2.3.4:80","check":{"interval":"1s","timeout":"2s"}}`, "check.timeout"},
	{"check without interval", "r", `{"service":"s","port":80,"addr":"1.2.3.4:80","check":{"timeout":"2s"}}`, "check.interval"},
	{"http check url", "r", `{"service":"s","port":80,"addr":"10.0.0.5:8080","check":{"interval":"1s","timeout":"1s","http":"http://10.0.0.5:8080/healthz?full=1"}}`, ""},
	{"http check path", "r", `{"service":"s","port":80,"addr":"10.0.0.5:8080","check":{"interval":"1s","timeout":"1s","http":"/healthz"}}`, ""},
	{"http check ipv6", "r", `{"service":"s","port":80,"addr":"[2001:db8::1]:80","check":{"interval":"1s","timeout":"1s","http":"http://[2001:db8::1]:80/"}}`, ""},
	{"http check other host", "r", `{"service":"s","port":80,"addr":"10.0.0.5:8080","check":{"interval":"1s","timeout":"1s","http":"http://169.254.169.254/latest/meta-data/"}}`, "check.http"},
	{"http check other port", "r", `{"service":"s","port":80,"addr":"10.0.0.5:8080","check":{"interval":"1s","timeout":"1s","http":"http://10.0.0.5:22/"}}`, "check.http"},
	{"http check host without port", "r", `{"service":"s","port":80,"addr":"10.0.0.5:80","check":{"interval":"1s","timeout":"1s","http":"http://10.0.0.5/"}}`, "check.http"},
	{"http check userinfo smuggle", "r", `{"service":"s","port":80,"addr":"10.0.0.5:8080","check":{"interval":"1s","timeout":"1s","http":"http://10.0.0.5:8080@evil.example:80/"}}`, "check.http"},
	{"http check https", "r", `{"service":"s","port":80,"addr":"10.0.0.5:8080","check":{"interval":"1s","timeout":"1s","http":"https://10.0.0.5:8080/"}}`, "check.http"},
	{"http check file scheme", "r", `{"service":"s","port":80,"addr":"10.0.0.5:8080","check":{"interval":"1s","timeout":"1s","http":"file:///etc/passwd"}}`, "check.http"},
	{"http check scheme relative", "r", `{"service":"s","port":80,"addr":"10.0.0.5:8080","check":{"interval":"1s","timeout":"1s","http":"//evil.example/x"}}`, "check.http"},
	{"http check no slash", "r", `{"service":"s","port":80,"addr":"10.0.0.5:8080","check":{"interval":"1s","timeout":"1s","http":"healthz"}}`, "check.http"},
	{"http check crlf", "r", `{"service":"s","port":80,"addr":"10.0.0.5:8080","check":{"interval":"1s","timeout":"1s","http":"/h\r\nHost: evil"}}`, "check.http"},
	{"http check space", "r", `{"service":"s","port":80,"addr":"10.0.0.5:8080","check":{"interval":"1s","timeout":"1s","http":"/a b"}}`, "check.http"},
	{"http check fragment", "r", `{"service":"s","port":80,"addr":"10.0.0.5:8080","check":{"interval":"1s","timeout":"1s","http":"http://10.0.0.5:8080/h#x"}}`, "check.http"},
	{"http check huge path", "r", `{"service":"s","port":80,"addr":"10.0.0.5:8080","check":{"interval":"1s","timeout":"1s","http":"/` + strings.Repeat("a", MaxHTTPPathLen) + `"}}`, "check.http"},
	{"http check not string", "r", `{"service":"s","port":80,"addr":"10.0.0.5:8080","check":{"interval":"1s","timeout":"1s","http":{"url":"/"}}}`, "body"},
	{"label with space", "r", `{"service":"s","port":80,"addr":"1.2.3.4:80","labels":{"a b":"c"}}`, "labels"},
	{"too many labels", "r", `{"service":"s","port":80,"addr":"1.2.3.4:80","labels":{` + manyLabels(MaxLabels+1) + `}}`, "labels"},
	{"service with newline", "r", `{"service":"s\n","port":80,"addr":"1.2.3.4:80"}`, "service"},
	{"empty id", "", `{"service":"s","port":80,"addr":"1.2.3.4:80"}`, "id"},
	{"huge body", "r", `{"service":"` + strings.Repeat("s", maxBodyBytes) + `"}`, "body"},
}

func manyLabels(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"k` + strings.Repeat("x", i) + `":"v"`)
	}
	return b.String()
}

func TestParseRegistration(t *testing.T) {
	for _, tc := range registrationRows {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRegistration(tc.id, []byte(tc.body))
			if tc.field == "" {
				if err != nil {
					t.Fatalf("ParseRegistration(%q, %s) error = %v, want nil", tc.id, tc.body, err)
				}
				return
			}
			var ee *EndpointError
			if !errors.As(err, &ee) || !errors.Is(err, ErrInvalidEndpoint) || ee.Field != tc.field {
				t.Fatalf("ParseRegistration(%q, %.80s) = %+v, %v; want an EndpointError for field %q", tc.id, tc.body, r, err, tc.field)
			}
		})
	}
	r, err := ParseRegistration("r2", []byte(registrationRows[1].body))
	if err != nil || r.TTL != 30*time.Second || r.Check == nil || r.Check.Timeout != 2*time.Second || r.Check.Failures != 3 || r.Labels["version"] != "v1" || r.Weight != 5 {
		t.Fatalf("ParseRegistration(full) = %+v (check %+v), %v; want every field carried over", r, r.Check, err)
	}
}

func TestParseRegistrationHTTPCheck(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"service":"s","port":80,"addr":"10.0.0.5:8080","check":{"interval":"1s","timeout":"1s","http":"http://10.0.0.5:8080/healthz?full=1"}}`, "/healthz?full=1"},
		{`{"service":"s","port":80,"addr":"10.0.0.5:8080","check":{"interval":"1s","timeout":"1s","http":"HTTP://10.0.0.5:8080"}}`, "/"},
		{`{"service":"s","port":80,"addr":"10.0.0.5:8080","check":{"interval":"1s","timeout":"1s","http":"/ready"}}`, "/ready"},
		{`{"service":"s","port":80,"addr":"10.0.0.5:8080","check":{"interval":"1s","timeout":"1s"}}`, ""},
	} {
		r, err := ParseRegistration("r", []byte(tc.body))
		if err != nil || r.Check == nil || r.Check.HTTPPath != tc.want {
			t.Errorf("ParseRegistration(%s) = check %+v, %v; want HTTPPath %q", tc.body, r.Check, err, tc.want)
		}
	}
}

func FuzzParseRegistration(f *testing.F) {
	for _, tc := range registrationRows {
		if len(tc.body) < 4096 {
			f.Add(tc.id, []byte(tc.body))
		}
	}
	f.Fuzz(func(t *testing.T, id string, body []byte) {
		r, err := ParseRegistration(id, body)
		if err != nil {
			return
		}
		if verr := r.Validate(); verr != nil {
			t.Fatalf("ParseRegistration accepted %+v that fails Validate: %v", r, verr)
		}
		if r.Check != nil && r.Check.HTTPPath != "" {
			// The check may only ever reach the endpoint's own address.
			u, err := url.Parse("http://" + r.Addr + r.Check.HTTPPath)
			if err != nil {
				t.Fatalf("accepted HTTP check path %q for addr %q does not make a URL: %v", r.Check.HTTPPath, r.Addr, err)
			}
			if u.Host != r.Addr || u.User != nil || u.Path == "" {
				t.Fatalf("accepted HTTP check path %q for addr %q escapes the endpoint (host %q)", r.Check.HTTPPath, r.Addr, u.Host)
			}
		}
		// An accepted endpoint must fit a gossip delta and decode back.
		b := encodeDelta(delta{Owner: "o", Ver: version{1, 1}, ID: r.ID, Ep: r.Endpoint})
		if _, err := decodeMessage(b); err != nil {
			t.Fatalf("accepted registration %+v does not survive gossip encoding: %v", r, err)
		}
	})
}

func TestResolveAddr(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{in: "127.0.0.1:7946", want: "127.0.0.1:7946"},
		{in: "[::1]:8300", want: "[::1]:8300"},
		{in: `{{ GetAllInterfaces | include "flags" "loopback" | include "type" "IPv4" | attr "address" }}:7946`, want: "127.0.0.1:7946"},
		{in: "127.0.0.1", bad: true},
		{in: "127.0.0.1:port", bad: true},
		{in: "{{ GetPrivateIP }}", bad: true},
		{in: "{{ nonsense }}:1", bad: true},
		{in: `{{ GetAllInterfaces | include "flags" "loopback" | join "address" " " }}:1`, bad: true}, // 127.0.0.1 and ::1
	} {
		got, err := ResolveAddr(tc.in)
		if tc.bad {
			if !errors.Is(err, ErrAddr) {
				t.Errorf("ResolveAddr(%q) = %q, %v; want ErrAddr", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ResolveAddr(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
