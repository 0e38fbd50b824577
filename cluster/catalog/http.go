package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxBodyBytes bounds a registration request body.
const maxBodyBytes = 64 << 10

// registrationBody is the JSON body of PUT /v1/endpoints/{id}; its fields
// are documented on ParseRegistration.
type registrationBody struct {
	Service string            `json:"service"`
	Port    uint32            `json:"port"`
	Addr    string            `json:"addr"`
	Network string            `json:"network,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Weight  uint32            `json:"weight,omitempty"`
	TTL     string            `json:"ttl,omitempty"`
	Check   *struct {
		Interval string `json:"interval"`
		Timeout  string `json:"timeout"`
		Failures int    `json:"failures,omitempty"`
		HTTP     string `json:"http,omitempty"`
	} `json:"check,omitempty"`
}

// EndpointJSON is one element of GET /v1/endpoints: a live endpoint of
// the catalog snapshot. Lists are never null and labels never null.
type EndpointJSON struct {
	// Owner is the node that registered the endpoint.
	Owner string `json:"owner"`
	// ID is the registration ID, unique per owner.
	ID      string `json:"id"`
	Service string `json:"service"`
	Port    uint32 `json:"port"`
	Addr    string `json:"addr"`
	// Network is always set: an endpoint registered without one carries
	// its owner's network.
	Network string            `json:"network"`
	Labels  map[string]string `json:"labels"`
	// Weight is the effective weight: 1 when registered without one.
	Weight uint32 `json:"weight"`
}

// CheckJSON is a registration's check, durations as Go strings.
type CheckJSON struct {
	Interval string `json:"interval"`
	Timeout  string `json:"timeout"`
	// Failures is how many consecutive failures withdraw the endpoint.
	Failures int `json:"failures"`
	// HTTPPath is the path an HTTP check GETs from addr; "" for a TCP
	// check.
	HTTPPath string `json:"http_path"`
}

// CheckStatusJSON is the outcome of a registration's last check.
type CheckStatusJSON struct {
	// Status is "pending" (not run yet), "passing" or "failing" (the last
	// dial or request failed; the endpoint is withdrawn once ConsecutiveFailures
	// reaches the check's failures).
	Status string `json:"status"`
	// Time is when the last check ended (RFC 3339, UTC); "" while pending.
	Time string `json:"time"`
	// Error is the last failure; "" unless failing.
	Error               string `json:"error"`
	ConsecutiveFailures int    `json:"consecutive_failures"`
}

// RegistrationJSON is one element of GET /v1/registrations: one of this
// node's registrations as registered, with its lease and health.
type RegistrationJSON struct {
	ID      string `json:"id"`
	Service string `json:"service"`
	Port    uint32 `json:"port"`
	Addr    string `json:"addr"`
	// Network is as registered; "" means this node's network.
	Network string            `json:"network"`
	Labels  map[string]string `json:"labels"`
	Weight  uint32            `json:"weight"`
	// TTL is the lease as a Go duration ("30s"); "" without one.
	TTL string `json:"ttl"`
	// Expires is when the lease ends unless the registration is PUT again
	// (RFC 3339, UTC); "" without a TTL.
	Expires string `json:"expires"`
	// Check is the health check; null without one.
	Check *CheckJSON `json:"check"`
	// Healthy says the endpoint is published to the fleet.
	Healthy bool `json:"healthy"`
	// LastCheck is the last check's outcome; null without a check.
	LastCheck *CheckStatusJSON `json:"last_check"`
}

// MemberJSON is one element of the catalog's GET /v1/members.
type MemberJSON struct {
	Name   string `json:"name"`
	Addr   string `json:"addr"`
	Status string `json:"status"`
	// Since is when this node last saw Status change (RFC 3339, UTC).
	Since       string `json:"since"`
	Network     string `json:"network"`
	GatewayAddr string `json:"gateway_addr"`
	Trusted     bool   `json:"trusted"`
	TrustReason string `json:"trust_reason"`
}

// jsonTime formats t as RFC 3339 in UTC, "" for the zero time.
func jsonTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// jsonLabels returns labels, or an empty map for nil, so JSON shows {}.
func jsonLabels(labels map[string]string) map[string]string {
	if labels == nil {
		return map[string]string{}
	}
	return labels
}

// EndpointsJSON converts snapshot entries for GET /v1/endpoints.
func EndpointsJSON(entries []Entry) []EndpointJSON {
	out := make([]EndpointJSON, 0, len(entries))
	for _, e := range entries {
		out = append(out, EndpointJSON{Owner: e.Owner, ID: e.ID, Service: e.Service, Port: e.Port, Addr: e.Addr,
			Network: e.Network, Labels: jsonLabels(e.Labels), Weight: max(e.Weight, 1)})
	}
	return out
}

// RegistrationsJSON converts registrations for GET /v1/registrations.
func RegistrationsJSON(regs []RegistrationStatus) []RegistrationJSON {
	out := make([]RegistrationJSON, 0, len(regs))
	for _, r := range regs {
		v := RegistrationJSON{ID: r.ID, Service: r.Service, Port: r.Port, Addr: r.Addr, Network: r.Network,
			Labels: jsonLabels(r.Labels), Weight: max(r.Weight, 1), Expires: jsonTime(r.Expires), Healthy: r.Healthy}
		if r.TTL > 0 {
			v.TTL = r.TTL.String()
		}
		if r.Check != nil {
			v.Check = &CheckJSON{Interval: r.Check.Interval.String(), Timeout: r.Check.Timeout.String(), Failures: max(r.Check.Failures, 1), HTTPPath: r.Check.HTTPPath}
			st := &CheckStatusJSON{Status: "pending", Time: jsonTime(r.LastCheck), Error: r.LastCheckError, ConsecutiveFailures: r.CheckFailures}
			switch {
			case r.LastCheck.IsZero():
			case r.LastCheckError != "":
				st.Status = "failing"
			default:
				st.Status = "passing"
			}
			v.LastCheck = st
		}
		out = append(out, v)
	}
	return out
}

// MembersJSON converts members for the catalog's GET /v1/members.
func MembersJSON(ms []Member) []MemberJSON {
	out := make([]MemberJSON, 0, len(ms))
	for _, m := range ms {
		out = append(out, MemberJSON{Name: m.Name, Addr: m.Addr, Status: string(m.Status), Since: jsonTime(m.Since),
			Network: m.Meta.Network, GatewayAddr: m.Meta.GatewayAddr, Trusted: m.Trusted, TrustReason: m.TrustReason})
	}
	return out
}

// ParseRegistration decodes a registration request body (PUT
// /v1/endpoints/{id}) for id and validates it. Unknown fields, trailing
// data and bodies over 64 KiB are refused so typos do not pass silently;
// the error is an *EndpointError naming the field. The body is a JSON
// object with snake_case fields; durations are Go duration strings ("30s",
// "1m30s"):
//
//	service   string  required  service host, e.g. "reviews.default.svc.cluster.local"
//	port      number  required  service port the endpoint serves (1-65535)
//	addr      string  required  dialable "host:port" (IPv6 in brackets)
//	network   string  optional  the endpoint's network; default this node's
//	labels    object  optional  workload labels subsets select on ({"version":"v1"})
//	weight    number  optional  relative load-balancing weight; default 1
//	ttl       string  optional  lease: removed unless PUT again within ttl; default none
//	check     object  optional  health check run by this node against addr:
//	  interval  string  required  time between checks
//	  timeout   string  required  dial (TCP) or whole-request (HTTP) timeout
//	  failures  number  optional  consecutive failures that withdraw it; default 1
//	  http      string  optional  make it an HTTP GET: "http://<addr>/path" (Consul's
//	                              shape; the host:port must be addr itself) or just
//	                              "/path"; 2xx passes. Default: a TCP dial
//
// A check only ever reaches the endpoint's own addr: an http URL naming any
// other host is refused (check.http), so a registration cannot make the
// node fetch an arbitrary URL.
func ParseRegistration(id string, body []byte) (Registration, error) {
	if len(body) > maxBodyBytes {
		return Registration{}, &EndpointError{ID: id, Field: "body", Reason: fmt.Sprintf("larger than %d bytes", maxBodyBytes)}
	}
	var b registrationBody
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return Registration{}, &EndpointError{ID: id, Field: "body", Reason: err.Error()}
	}
	if dec.More() {
		return Registration{}, &EndpointError{ID: id, Field: "body", Reason: "trailing data after the JSON object"}
	}
	r := Registration{ID: id, Endpoint: Endpoint{
		Service: b.Service, Port: b.Port, Addr: b.Addr, Network: b.Network, Labels: b.Labels, Weight: b.Weight,
	}}
	dur := func(field, s string) (time.Duration, error) {
		if s == "" {
			return 0, nil
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, &EndpointError{ID: id, Field: field, Reason: err.Error()}
		}
		return d, nil
	}
	var err error
	if r.TTL, err = dur("ttl", b.TTL); err != nil {
		return Registration{}, err
	}
	if b.Check != nil {
		r.Check = &Check{Failures: b.Check.Failures}
		if r.Check.Interval, err = dur("check.interval", b.Check.Interval); err != nil {
			return Registration{}, err
		}
		if r.Check.Timeout, err = dur("check.timeout", b.Check.Timeout); err != nil {
			return Registration{}, err
		}
		if b.Check.HTTP != "" {
			p, reason := checkPath(b.Check.HTTP, b.Addr)
			if reason != "" {
				return Registration{}, &EndpointError{ID: id, Field: "check.http", Reason: reason}
			}
			r.Check.HTTPPath = p
		}
	}
	if err := r.Validate(); err != nil {
		return Registration{}, err
	}
	return r, nil
}

// checkPath turns a registration's check.http into the path to GET from
// addr: "/path" as is, or "http://<addr>/path" when its host:port is addr
// (case-insensitively). It returns a reason when v is refused.
func checkPath(v, addr string) (string, string) {
	if len(v) > MaxAddrLen+MaxHTTPPathLen+len("http://") {
		return "", "too long"
	}
	if strings.HasPrefix(v, "/") {
		return v, validHTTPPath(v)
	}
	u, err := url.Parse(v)
	if err != nil {
		return "", "not a URL or path: " + err.Error()
	}
	switch {
	case u.Scheme != "http":
		return "", fmt.Sprintf("scheme %q: only http is checked (use a TCP check for TLS ports)", u.Scheme)
	case u.Opaque != "" || u.User != nil:
		return "", "URL has user info or no host"
	case u.Fragment != "" || strings.Contains(v, "#"):
		return "", "URL has a fragment"
	case !strings.EqualFold(u.Host, addr):
		return "", fmt.Sprintf("URL host %q is not the endpoint's addr %q: only the endpoint's own address is checked", u.Host, addr)
	}
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	if u.RawQuery != "" || u.ForceQuery {
		p += "?" + u.RawQuery
	}
	return p, validHTTPPath(p)
}

// Handler returns the registration API for the admin listener:
//
//	PUT    /v1/endpoints/{id}   register or refresh (JSON body, see ParseRegistration); answers {"id": ...}
//	DELETE /v1/endpoints/{id}   deregister; 204
//	GET    /v1/endpoints        the catalog snapshot (every live endpoint): []EndpointJSON
//	GET    /v1/registrations    this node's registrations, lease and health: []RegistrationJSON
//	GET    /v1/members          gossip members: []MemberJSON
//
// JSON field names are snake_case, lists are [] when empty, times are
// RFC 3339 and durations Go strings. Errors are {"error": "..."}.
//
// The handler does no authentication: serve it only where the admin API
// is protected.
func (c *Catalog) Handler() http.Handler { return c.HandlerWith(nil) }

// RegistrationPolicy decides whether the caller of a PUT /v1/endpoints/{id}
// may make that registration (declared services, allowed subsets). A
// refusal is answered 403 with the error's text. It must not block.
type RegistrationPolicy interface {
	AllowRegistration(r *http.Request, reg Registration) error
}

// HandlerWith is Handler with registrations checked by p first (nil: no
// check).
func (c *Catalog) HandlerWith(p RegistrationPolicy) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/endpoints/{id}", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, err)
			return
		}
		reg, err := ParseRegistration(r.PathValue("id"), body)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		if p != nil {
			if err := p.AllowRegistration(r, reg); err != nil {
				writeError(w, http.StatusForbidden, err)
				return
			}
		}
		if err := c.Register(reg); err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"id": reg.ID})
	})
	mux.HandleFunc("DELETE /v1/endpoints/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := c.Deregister(r.PathValue("id")); err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /v1/endpoints", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, EndpointsJSON(c.Snapshot().Entries))
	})
	mux.HandleFunc("GET /v1/registrations", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, RegistrationsJSON(c.Registrations()))
	})
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, MembersJSON(c.Members()))
	})
	return mux
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrInvalidEndpoint):
		return http.StatusBadRequest
	case errors.Is(err, ErrTooMany):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrClosed):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}
