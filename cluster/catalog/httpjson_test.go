package catalog_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
)

// jsonKeys walks a decoded JSON value and calls f with the path of every
// object key and every null.
func jsonWalk(path string, v any, key func(path, k string), null func(path string)) {
	switch x := v.(type) {
	case nil:
		null(path)
	case map[string]any:
		for k, e := range x {
			key(path, k)
			jsonWalk(path+"."+k, e, key, null)
		}
	case []any:
		for _, e := range x {
			jsonWalk(path+"[]", e, key, null)
		}
	}
}

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// getJSON fetches path and decodes it into a generic value and into out.
func getJSON(t *testing.T, srv *httptest.Server, path string, out any) any {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d %s, want 200", path, resp.StatusCode, b)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("GET %s: body %s is not JSON: %v", path, b, err)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("GET %s: decode %s: %v", path, b, err)
		}
	}
	return v
}

// TestHandlerJSON: the registration API answers snake_case JSON, lists as
// [] (never null), labels as {}, the TTL and its RFC 3339 expiry, and the
// last check's outcome per registration.
func TestHandlerJSON(t *testing.T) {
	tc := start(t, 2, nil)
	srv := httptest.NewServer(tc.nodes[0].Handler())
	t.Cleanup(srv.Close)
	// Before anything is registered, both lists are [].
	for _, p := range []string{"/v1/endpoints", "/v1/registrations"} {
		if v := getJSON(t, srv, p, nil); v == nil {
			t.Fatalf("GET %s = null, want []", p)
		} else if l, ok := v.([]any); !ok || len(l) != 0 {
			t.Fatalf("GET %s = %v, want []", p, v)
		}
	}

	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()

	put := func(id, body string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, srv.URL+"/v1/endpoints/"+id, strings.NewReader(body))
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("PUT %s: %v", id, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT %s %s = %d %s, want 200", id, body, resp.StatusCode, b)
		}
	}
	before := time.Now().Truncate(time.Second)
	put("lease", `{"service":"web.default.svc.cluster.local","port":80,"addr":"10.0.0.1:80","ttl":"1m"}`)
	put("checked", `{"service":"web.default.svc.cluster.local","port":80,"addr":"`+up.Addr().String()+`","labels":{"version":"v1"},"weight":3,"check":{"interval":"50ms","timeout":"40ms"}}`)
	put("down", `{"service":"web.default.svc.cluster.local","port":80,"addr":"`+deadAddr+`","check":{"interval":"50ms","timeout":"40ms","failures":2}}`)

	type regRow struct {
		ID        string            `json:"id"`
		Labels    map[string]string `json:"labels"`
		Weight    uint32            `json:"weight"`
		TTL       string            `json:"ttl"`
		Expires   string            `json:"expires"`
		Healthy   bool              `json:"healthy"`
		Check     *struct{ Failures int }
		LastCheck *struct {
			Status, Time, Error string
			Failures            int `json:"consecutive_failures"`
		} `json:"last_check"`
	}
	var rows []regRow
	waitFor(t, "both checks have run", func() bool {
		rows = nil
		getJSON(t, srv, "/v1/registrations", &rows)
		n := 0
		for _, r := range rows {
			if r.LastCheck != nil && r.LastCheck.Status != "pending" && (r.ID != "down" || r.LastCheck.Failures >= 2) {
				n++
			}
		}
		return n == 2
	})
	byID := map[string]regRow{}
	for _, r := range rows {
		byID[r.ID] = r
	}
	lease := byID["lease"]
	exp, err := time.Parse(time.RFC3339, lease.Expires)
	if lease.TTL != "1m0s" || err != nil || exp.Before(before.Add(time.Minute)) || exp.After(time.Now().Add(time.Minute)) {
		t.Errorf("lease ttl=%q expires=%q (%v), want ttl 1m0s and an RFC 3339 expiry a minute from the PUT", lease.TTL, lease.Expires, err)
	}
	if lease.LastCheck != nil || lease.Check != nil || lease.Labels == nil || len(lease.Labels) != 0 || lease.Weight != 1 || !lease.Healthy {
		t.Errorf("lease row = %+v, want no check, labels {}, weight 1, healthy", lease)
	}
	if c := byID["checked"]; c.TTL != "" || c.Expires != "" || c.LastCheck.Status != "passing" || c.LastCheck.Error != "" ||
		c.LastCheck.Time == "" || !c.Healthy || c.Labels["version"] != "v1" || c.Weight != 3 || c.Check.Failures != 1 {
		t.Errorf("checked row = %+v (last check %+v), want no lease, a passing check with a time, healthy", c, c.LastCheck)
	}
	if d := byID["down"]; d.LastCheck.Status != "failing" || d.LastCheck.Error == "" || d.Healthy || d.Check.Failures != 2 {
		t.Errorf("down row = %+v (last check %+v), want a failing check with its error, not healthy", d, d.LastCheck)
	}

	waitFor(t, "the registered endpoints reach the snapshot", func() bool {
		var eps []map[string]any
		getJSON(t, srv, "/v1/endpoints", &eps)
		return len(eps) == 2
	})
	for _, p := range []string{"/v1/endpoints", "/v1/registrations", "/v1/members"} {
		v := getJSON(t, srv, p, nil)
		jsonWalk(p, v, func(path, k string) {
			if !snakeCase.MatchString(k) {
				t.Errorf("GET %s: key %s.%s is not snake_case", p, path, k)
			}
		}, func(path string) {
			if !strings.HasSuffix(path, ".check") && !strings.HasSuffix(path, ".last_check") {
				t.Errorf("GET %s: %s is null", p, path)
			}
		})
	}
	var eps []struct {
		Owner, ID, Network string
		Labels             map[string]string
	}
	getJSON(t, srv, "/v1/endpoints", &eps)
	for _, e := range eps {
		if e.Owner != "node-0" || e.Network != "net-a" || e.Labels == nil {
			t.Errorf("endpoint row %+v, want owner node-0, network net-a, labels never null", e)
		}
	}
	var ms []struct{ Name, Status, Since string }
	getJSON(t, srv, "/v1/members", &ms)
	for _, m := range ms {
		if _, err := time.Parse(time.RFC3339, m.Since); err != nil || m.Status != "alive" {
			t.Errorf("member row %+v: since must be RFC 3339 (%v), status alive", m, err)
		}
	}
}
