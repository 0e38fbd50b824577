package catalog

import (
	"errors"
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
