package catalog

import (
	"encoding/binary"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Field limits. They keep one endpoint delta inside one UDP packet
// (memberlist's 1400-byte buffer, less encryption and framing overhead).
const (
	MaxIDLen      = 128
	MaxServiceLen = 253
	MaxAddrLen    = 261 // "[" + 255 + "]:" + port
	MaxNetworkLen = 63
	MaxLabels     = 16
	MaxLabelLen   = 63
	// MaxEndpointBytes bounds one encoded endpoint.
	MaxEndpointBytes = 1000
)

// Endpoint is one workload address of a service, as the data plane dials
// it. Endpoints are values; the catalog never shares one it will modify.
type Endpoint struct {
	// Service is the service host, e.g. "reviews.default.svc.cluster.local".
	Service string `json:"service"`
	// Port is the service port the endpoint serves.
	Port uint32 `json:"port"`
	// Addr is the dialable "host:port" (IPv6 in brackets).
	Addr string `json:"addr"`
	// Network is the endpoint's network; "" means the owning node's network.
	Network string `json:"network,omitempty"`
	// Labels are the workload labels that subsets select on.
	Labels map[string]string `json:"labels,omitempty"`
	// Weight is the relative load-balancing weight; 0 means 1.
	Weight uint32 `json:"weight,omitempty"`
}

// Equal reports whether e and o are the same endpoint.
func (e Endpoint) Equal(o Endpoint) bool {
	return e.Service == o.Service && e.Port == o.Port && e.Addr == o.Addr &&
		e.Network == o.Network && e.Weight == o.Weight && maps.Equal(e.Labels, o.Labels)
}

func (e Endpoint) clone() Endpoint {
	e.Labels = maps.Clone(e.Labels)
	return e
}

// Registration is an endpoint a node owns, as registered through Register
// or the HTTP API.
type Registration struct {
	// ID names the registration uniquely on its owning node.
	ID string `json:"id"`
	Endpoint
	// TTL, if set, is a lease: the registration is removed unless it is
	// registered again (refreshed) within TTL.
	TTL time.Duration `json:"ttl,omitempty"`
	// Check, if set, makes the owner check Addr every Check.Interval (a
	// TCP dial, or an HTTP GET with Check.HTTPPath); the endpoint is
	// withdrawn from gossip while the check fails and published again
	// once it passes.
	Check *Check `json:"check,omitempty"`
}

// Check is an active health check run by the owning node against the
// endpoint's own Addr, never against another address.
type Check struct {
	Interval time.Duration `json:"interval"`
	Timeout  time.Duration `json:"timeout"`
	// Failures is how many consecutive failures withdraw the endpoint;
	// 0 means 1.
	Failures int `json:"failures,omitempty"`
	// HTTPPath, if set, makes the check an HTTP GET of
	// http://<Addr><HTTPPath> (path and optional query, starting with
	// "/"): a 2xx answer within Timeout passes, anything else (another
	// status, a redirect, a reset, a timeout) fails. "" is a TCP dial.
	HTTPPath string `json:"http_path,omitempty"`
}

// MaxHTTPPathLen bounds Check.HTTPPath.
const MaxHTTPPathLen = 1024

// Validate checks r and fills no defaults; it returns an *EndpointError.
func (r *Registration) Validate() error {
	bad := func(field, reason string) error { return &EndpointError{ID: r.ID, Field: field, Reason: reason} }
	if err := validName(r.ID, MaxIDLen); err != "" {
		return bad("id", err)
	}
	if err := r.Endpoint.validate(); err != nil {
		err.ID = r.ID
		return err
	}
	if r.TTL < 0 {
		return bad("ttl", "negative")
	}
	if r.Check != nil {
		if r.Check.Interval <= 0 {
			return bad("check.interval", "must be positive")
		}
		if r.Check.Timeout <= 0 || r.Check.Timeout > r.Check.Interval {
			return bad("check.timeout", "must be positive and at most the interval")
		}
		if r.Check.Failures < 0 {
			return bad("check.failures", "negative")
		}
		if r.Check.HTTPPath != "" {
			if reason := validHTTPPath(r.Check.HTTPPath); reason != "" {
				return bad("check.http", reason)
			}
		}
	}
	return nil
}

func (e *Endpoint) validate() *EndpointError {
	bad := func(field, reason string) *EndpointError { return &EndpointError{Field: field, Reason: reason} }
	if err := validName(e.Service, MaxServiceLen); err != "" {
		return bad("service", err)
	}
	if e.Port == 0 || e.Port > 65535 {
		return bad("port", "not in 1..65535")
	}
	if len(e.Addr) > MaxAddrLen {
		return bad("addr", "too long")
	}
	host, port, err := net.SplitHostPort(e.Addr)
	if err != nil || host == "" {
		return bad("addr", "not host:port")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return bad("addr", "bad port")
	}
	if e.Network != "" {
		if err := validName(e.Network, MaxNetworkLen); err != "" {
			return bad("network", err)
		}
	}
	if len(e.Labels) > MaxLabels {
		return bad("labels", fmt.Sprintf("more than %d", MaxLabels))
	}
	for k, v := range e.Labels {
		if err := validName(k, MaxLabelLen); err != "" {
			return bad("labels", "key "+err)
		}
		if v != "" {
			if err := validName(v, MaxLabelLen); err != "" {
				return bad("labels", "value "+err)
			}
		}
	}
	if n := len(appendEndpoint(nil, *e)); n > MaxEndpointBytes {
		return bad("endpoint", fmt.Sprintf("encodes to %d bytes, limit %d", n, MaxEndpointBytes))
	}
	return nil
}

// validHTTPPath accepts an origin-form request target: "/" then printable
// ASCII without spaces, no fragment, at most MaxHTTPPathLen bytes. It
// returns a reason, or "" when the path is fine.
func validHTTPPath(p string) string {
	if len(p) > MaxHTTPPathLen {
		return fmt.Sprintf("path longer than %d bytes", MaxHTTPPathLen)
	}
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") {
		return "path must start with a single \"/\""
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c > '~' || c == '#' {
			return fmt.Sprintf("byte 0x%02x at offset %d of the path", c, i)
		}
	}
	u, err := url.ParseRequestURI(p)
	if err != nil || u.Host != "" || u.Scheme != "" {
		return "not a path"
	}
	return ""
}

// validName accepts 1..limit bytes of printable ASCII without spaces. It
// returns a reason, or "" when the name is fine.
func validName(s string, limit int) string {
	if s == "" {
		return "empty"
	}
	if len(s) > limit {
		return fmt.Sprintf("longer than %d bytes", limit)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return fmt.Sprintf("byte 0x%02x at offset %d", c, i)
		}
	}
	return ""
}

// appendEndpoint encodes e:
//
//	service port addr network weight nlabels {key value}  (strings uvarint-length-prefixed)
//
// Labels are written in sorted key order so equal endpoints encode equally.
func appendEndpoint(b []byte, e Endpoint) []byte {
	b = appendString(b, e.Service)
	b = binary.AppendUvarint(b, uint64(e.Port))
	b = appendString(b, e.Addr)
	b = appendString(b, e.Network)
	b = binary.AppendUvarint(b, uint64(e.Weight))
	b = binary.AppendUvarint(b, uint64(len(e.Labels)))
	for _, k := range slices.Sorted(maps.Keys(e.Labels)) {
		b = appendString(b, k)
		b = appendString(b, e.Labels[k])
	}
	return b
}

func (d *decoder) endpoint() Endpoint {
	var e Endpoint
	e.Service = d.str(MaxServiceLen)
	e.Port = d.uint32()
	e.Addr = d.str(MaxAddrLen)
	e.Network = d.str(MaxNetworkLen)
	e.Weight = d.uint32()
	n := d.count(MaxLabels)
	if n > 0 {
		e.Labels = make(map[string]string, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		k := d.str(MaxLabelLen)
		e.Labels[k] = d.str(MaxLabelLen)
	}
	if d.err == nil {
		if verr := e.validate(); verr != nil {
			d.err = verr
		}
	}
	return e
}
