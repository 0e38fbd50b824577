package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/meshgate/meshgate/pki"
)

// Workload endpoint registration by certificate:
//
//	PUT    /v1/workload/endpoints   register or refresh (lease) one endpoint; 200 {"id": ...}
//	DELETE /v1/workload/endpoints   withdraw one endpoint ({"port", "addr"}); 204
//
// The caller authenticates with its workload certificate (mTLS on this
// port); no bearer secret is involved. The certificate must chain to the
// mesh roots, not be revoked, carry one workload SPIFFE ID and no DNS or
// IP SANs (node certificates are refused), and a workload group
// (pki.WorkloadGroup) must be bound to its identity. The endpoint must be
// of the group's service, one of its ports at its target port, in its
// network, with exactly its labels, a lease (ttl) and a health check.
//
// Operators bind groups with the admin key:
//
//	PUT    /v1/workload/groups              body pki.WorkloadGroup; 200 the stored group
//	GET    /v1/workload/groups              {"groups": [...]}
//	DELETE /v1/workload/groups/{ns}/{sa}    200 the deleted group; 404 when none
const (
	// MaxWorkloadTTL bounds a registration's lease: a revoked binding or
	// certificate drops out of the catalog at most this long after.
	MaxWorkloadTTL = 5 * time.Minute
	// MinWorkloadTTL is the shortest lease accepted.
	MinWorkloadTTL = time.Second
)

// WorkloadEndpoint is one endpoint a workload registers with its
// certificate, checked against its group and ready for the catalog.
type WorkloadEndpoint struct {
	// ID is derived by the server from the identity, addr and port, so a
	// workload can only refresh or withdraw its own registrations.
	ID string
	// Identity is the certificate's.
	Identity pki.Identity
	Service  string
	Port     uint32
	Addr     string
	Network  string
	Labels   map[string]string
	TTL      time.Duration
	Check    WorkloadCheck
	// Subsets are the DestinationRule subsets ("service/subset") the
	// labels may claim (from the group); a registrar that knows the
	// DestinationRules refuses a claim of any other.
	Subsets []string
}

// WorkloadCheck is the endpoint's health check, run by the node against
// the endpoint's own addr.
type WorkloadCheck struct {
	Interval, Timeout time.Duration
	// Failures in a row that withdraw the endpoint; 0 means 1.
	Failures int
	// HTTPPath makes it an HTTP GET of that path; "" is a TCP dial.
	HTTPPath string
}

// EndpointRegistrar keeps the endpoints workloads register on this node
// (the node's catalog). The API has checked the caller and the group; the
// registrar may refuse more (an undeclared service, a subset claim): an
// error wrapping ErrForbidden is answered 403, ErrBadRequest 400, other
// errors 503. Implementations must be safe for concurrent use and must
// not block for long.
type EndpointRegistrar interface {
	RegisterWorkload(ctx context.Context, ep WorkloadEndpoint) error
	// DeregisterWorkload withdraws registration id; an unknown id is not
	// an error.
	DeregisterWorkload(ctx context.Context, id string) error
}

// WorkloadEndpointRequest is the JSON body of PUT and DELETE
// /v1/workload/endpoints (DELETE reads only port and addr).
type WorkloadEndpointRequest struct {
	Service string            `json:"service"`
	Port    uint32            `json:"port"`
	Addr    string            `json:"addr"`
	Network string            `json:"network"`
	Labels  map[string]string `json:"labels,omitempty"`
	// TTL is the lease, a Go duration in [1s, 5m].
	TTL   string                `json:"ttl"`
	Check *WorkloadCheckRequest `json:"check"`
}

// WorkloadCheckRequest is the check of a WorkloadEndpointRequest.
type WorkloadCheckRequest struct {
	Interval string `json:"interval"`
	Timeout  string `json:"timeout"`
	Failures int    `json:"failures,omitempty"`
	HTTP     string `json:"http,omitempty"`
}

// WorkloadRefusal is a refused registration: Reason is the metric label
// and the error code, Field names what was wrong.
type WorkloadRefusal struct {
	Reason string
	Field  string
	Detail string
	// Status is the HTTP status answered.
	Status int
}

// Error implements error.
func (e *WorkloadRefusal) Error() string {
	if e.Field == "" {
		return "api: workload registration refused: " + e.Detail
	}
	return fmt.Sprintf("api: workload registration refused: %s: %s", e.Field, e.Detail)
}

func forbid(reason, field, format string, a ...any) *WorkloadRefusal {
	return &WorkloadRefusal{Reason: reason, Field: field, Detail: fmt.Sprintf(format, a...), Status: http.StatusForbidden}
}

func badRequest(field, format string, a ...any) *WorkloadRefusal {
	return &WorkloadRefusal{Reason: "bad_request", Field: field, Detail: fmt.Sprintf(format, a...), Status: http.StatusBadRequest}
}

// parsedEndpoint is a decoded request, durations parsed.
type parsedEndpoint struct {
	WorkloadEndpointRequest
	ttl   time.Duration
	check WorkloadCheck
	ip    netip.Addr
	port  uint16
}

// DecodeWorkloadEndpoint decodes a PUT /v1/workload/endpoints body
// strictly (unknown fields and trailing data refused) and checks its
// syntax; withdraw reads only port and addr. Errors are *WorkloadRefusal
// naming the field.
func DecodeWorkloadEndpoint(body []byte, withdraw bool) (WorkloadEndpointRequest, error) {
	p, err := decodeWorkloadEndpoint(body, withdraw)
	return p.WorkloadEndpointRequest, err
}

func decodeWorkloadEndpoint(body []byte, withdraw bool) (parsedEndpoint, error) {
	var p parsedEndpoint
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p.WorkloadEndpointRequest); err != nil {
		return p, badRequest("body", "%v", err)
	}
	if dec.More() {
		return p, badRequest("body", "trailing data after the JSON object")
	}
	r := &p.WorkloadEndpointRequest
	if r.Port == 0 || r.Port > 65535 {
		return p, badRequest("port", "%d is not in 1-65535", r.Port)
	}
	ap, err := netip.ParseAddrPort(r.Addr)
	if err != nil || ap.Port() == 0 {
		return p, badRequest("addr", "%q is not IP:port (a literal IP; IPv6 in brackets)", r.Addr)
	}
	p.ip, p.port = ap.Addr().Unmap(), ap.Port()
	if withdraw {
		return p, nil
	}
	if r.Service == "" || len(r.Service) > 253 {
		return p, badRequest("service", "required, at most 253 bytes")
	}
	if r.Network == "" || len(r.Network) > 63 {
		return p, badRequest("network", "required, at most 63 bytes")
	}
	if len(r.Labels) > 16 {
		return p, badRequest("labels", "%d labels, at most 16", len(r.Labels))
	}
	if p.ttl, err = time.ParseDuration(r.TTL); err != nil {
		return p, badRequest("ttl", "%q: %v", r.TTL, err)
	}
	if r.Check == nil {
		return p, badRequest("check", "required: the node withdraws the endpoint while it fails")
	}
	if p.check.Interval, err = time.ParseDuration(r.Check.Interval); err != nil || p.check.Interval <= 0 {
		return p, badRequest("check.interval", "%q is not a positive duration", r.Check.Interval)
	}
	if p.check.Timeout, err = time.ParseDuration(r.Check.Timeout); err != nil || p.check.Timeout <= 0 || p.check.Timeout > p.check.Interval {
		return p, badRequest("check.timeout", "%q is not a positive duration at most the interval", r.Check.Timeout)
	}
	if r.Check.Failures < 0 || r.Check.Failures > 100 {
		return p, badRequest("check.failures", "%d is not in 0-100", r.Check.Failures)
	}
	p.check.Failures = r.Check.Failures
	if h := r.Check.HTTP; h != "" {
		if len(h) > 1024 || h[0] != '/' || !pathPrintable(h) {
			return p, badRequest("check.http", "%q must be a path starting with / of printable ASCII (at most 1024 bytes)", h)
		}
		p.check.HTTPPath = h
	}
	return p, nil
}

func pathPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' || c == '#' {
			return false
		}
	}
	return true
}

// workloadID derives the registration ID: readable prefix, then a hash of
// everything that identifies the registration.
func workloadID(id pki.Identity, addr string, port uint32) string {
	sum := sha256.Sum256([]byte(id.String() + "\x00" + addr + "\x00" + strconv.Itoa(int(port))))
	sa := id.ServiceAccount
	if len(sa) > 48 {
		sa = sa[:48]
	}
	return "wl-" + id.Namespace + "-" + sa + "-" + hex.EncodeToString(sum[:8]) + "-" + strconv.Itoa(int(port))
}

// authorizeWorkload checks the client certificate and returns its identity
// and group.
func (s *Server) authorizeWorkload(r *http.Request) (pki.Identity, pki.WorkloadGroup, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return pki.Identity{}, pki.WorkloadGroup{}, &WorkloadRefusal{Reason: "no_client_cert", Detail: "a workload certificate (mTLS) is required", Status: http.StatusUnauthorized}
	}
	id, err := s.ca.VerifyPeer(r.TLS.PeerCertificates)
	if err != nil {
		reason := "bad_client_cert"
		if errors.Is(err, pki.ErrCertRevoked) {
			reason = "cert_revoked"
		}
		return id, pki.WorkloadGroup{}, &WorkloadRefusal{Reason: reason, Detail: err.Error(), Status: http.StatusUnauthorized}
	}
	leaf := r.TLS.PeerCertificates[0]
	if len(leaf.DNSNames) > 0 || len(leaf.IPAddresses) > 0 || id.Namespace == "meshgate-system" {
		return id, pki.WorkloadGroup{}, forbid("node_cert", "certificate", "%s is a gateway node certificate; register with a workload certificate", id)
	}
	g, err := s.ca.WorkloadGroup(r.Context(), id)
	if errors.Is(err, pki.ErrGroupNotFound) {
		return id, g, forbid("no_group", "identity", "no workload group is bound to %s (meshgate vm bundle binds one; it may have been revoked)", id)
	}
	if err != nil {
		return id, g, &WorkloadRefusal{Reason: "internal", Detail: err.Error(), Status: http.StatusServiceUnavailable}
	}
	return id, g, nil
}

// checkGroup says what of p the group g does not allow.
func checkGroup(id pki.Identity, g pki.WorkloadGroup, p parsedEndpoint) *WorkloadRefusal {
	if p.Service != g.Service {
		return forbid("service", "service", "%s may register only %s, not %q", id, g.Service, p.Service)
	}
	i := slices.IndexFunc(g.Ports, func(gp pki.GroupPort) bool { return gp.Port == p.Port })
	if i < 0 {
		return forbid("port", "port", "%s may register only ports %v of %s, not %d", id, portList(g.Ports), g.Service, p.Port)
	}
	if uint32(p.port) != g.Ports[i].Target() {
		return forbid("target_port", "addr", "port %d of %s is served at target port %d, not %d", p.Port, g.Service, g.Ports[i].Target(), p.port)
	}
	if p.Network != g.Network {
		return forbid("network", "network", "%s registers in network %s, not %q", id, g.Network, p.Network)
	}
	if !maps.Equal(p.Labels, g.Labels) && !(len(p.Labels) == 0 && len(g.Labels) == 0) {
		return forbid("labels", "labels", "%s registers with labels %v exactly, not %v", id, g.Labels, p.Labels)
	}
	if !p.ip.IsGlobalUnicast() && !p.ip.IsPrivate() || p.ip.IsLoopback() || p.ip.IsLinkLocalUnicast() {
		return forbid("addr", "addr", "%s is not a unicast address the gateway may dial", p.ip)
	}
	if len(g.Addresses) > 0 && !slices.ContainsFunc(g.Addresses, func(pf netip.Prefix) bool { return pf.Contains(p.ip) }) {
		return forbid("addr", "addr", "%s is outside the addresses bound to %s (%v)", p.ip, id, g.Addresses)
	}
	if p.ttl < MinWorkloadTTL || p.ttl > MaxWorkloadTTL {
		return forbid("ttl", "ttl", "%v is outside [%v, %v]", p.ttl, MinWorkloadTTL, MaxWorkloadTTL)
	}
	return nil
}

func portList(ps []pki.GroupPort) []uint32 {
	out := make([]uint32, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Port)
	}
	return out
}

func (s *Server) workloadRoutes() {
	s.mux.HandleFunc("PUT /v1/workload/endpoints", s.handleWorkloadRegister)
	s.mux.HandleFunc("DELETE /v1/workload/endpoints", s.handleWorkloadWithdraw)
	s.mux.HandleFunc("PUT /v1/workload/groups", s.admin(s.handleGroupPut))
	s.mux.HandleFunc("GET /v1/workload/groups", s.admin(s.handleGroupList))
	s.mux.HandleFunc("DELETE /v1/workload/groups/{ns}/{sa}", s.admin(s.handleGroupDelete))
}

// refuseWorkload answers and counts a refused registration.
func (s *Server) refuseWorkload(w http.ResponseWriter, r *http.Request, id pki.Identity, err error) {
	var wr *WorkloadRefusal
	if !errors.As(err, &wr) {
		wr = &WorkloadRefusal{Reason: "policy", Detail: err.Error(), Status: http.StatusServiceUnavailable}
		switch {
		case errors.Is(err, ErrForbidden):
			wr.Status = http.StatusForbidden
		case errors.Is(err, ErrBadRequest):
			wr.Status, wr.Reason = http.StatusBadRequest, "bad_request"
		}
	}
	s.m.workloadRefused.WithLabelValues(wr.Reason).Inc()
	s.m.requests.WithLabelValues("workload", strconv.Itoa(wr.Status)).Inc()
	s.log.Warn("workload registration refused", "remote", r.RemoteAddr, "identity", id.String(), "reason", wr.Reason, "err", wr.Error())
	if wr.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `mTLS realm="meshgate"`)
	}
	writeJSON(w, wr.Status, ErrorResponse{Error: ErrorDetail{Code: wr.Reason, Message: wr.Error()}})
}

// workloadPrelude does what both routes share: the registrar, the
// caller, the body.
func (s *Server) workloadPrelude(w http.ResponseWriter, r *http.Request, withdraw bool) (pki.Identity, pki.WorkloadGroup, parsedEndpoint, bool) {
	var p parsedEndpoint
	if s.cfg.Registrar == nil {
		s.refuseWorkload(w, r, pki.Identity{}, &WorkloadRefusal{Reason: "disabled", Detail: "this node keeps no catalog", Status: http.StatusNotFound})
		return pki.Identity{}, pki.WorkloadGroup{}, p, false
	}
	id, g, err := s.authorizeWorkload(r)
	if err != nil {
		s.refuseWorkload(w, r, id, err)
		return id, g, p, false
	}
	body, err := s.readBody(w, r)
	if err == nil {
		p, err = decodeWorkloadEndpoint(body, withdraw)
	} else {
		err = badRequest("body", "%v", err)
	}
	if err != nil {
		s.refuseWorkload(w, r, id, err)
		return id, g, p, false
	}
	return id, g, p, true
}

func (s *Server) handleWorkloadRegister(w http.ResponseWriter, r *http.Request) {
	id, g, p, ok := s.workloadPrelude(w, r, false)
	if !ok {
		return
	}
	if wr := checkGroup(id, g, p); wr != nil {
		s.refuseWorkload(w, r, id, wr)
		return
	}
	addr := netip.AddrPortFrom(p.ip, p.port).String()
	ep := WorkloadEndpoint{ID: workloadID(id, addr, p.Port), Identity: id, Service: p.Service, Port: p.Port, Addr: addr,
		Network: p.Network, Labels: p.Labels, TTL: p.ttl, Check: p.check, Subsets: g.Subsets}
	if err := s.cfg.Registrar.RegisterWorkload(r.Context(), ep); err != nil {
		s.refuseWorkload(w, r, id, err)
		return
	}
	s.writeOK(w, "workload", map[string]string{"id": ep.ID})
}

func (s *Server) handleWorkloadWithdraw(w http.ResponseWriter, r *http.Request) {
	id, _, p, ok := s.workloadPrelude(w, r, true)
	if !ok {
		return
	}
	addr := net.JoinHostPort(p.ip.String(), strconv.Itoa(int(p.port)))
	if err := s.cfg.Registrar.DeregisterWorkload(r.Context(), workloadID(id, addr, p.Port)); err != nil {
		s.refuseWorkload(w, r, id, err)
		return
	}
	s.m.requests.WithLabelValues("workload", "204").Inc()
	w.WriteHeader(http.StatusNoContent)
}

// GroupListResponse is the reply of GET /v1/workload/groups.
type GroupListResponse struct {
	Groups []pki.WorkloadGroup `json:"groups"`
}

func (s *Server) handleGroupPut(w http.ResponseWriter, r *http.Request) {
	body, err := s.readBody(w, r)
	if err != nil {
		s.writeError(w, "admin", err)
		return
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var g pki.WorkloadGroup
	if err := dec.Decode(&g); err != nil {
		s.writeError(w, "admin", fmt.Errorf("%w: %v", ErrBadRequest, err))
		return
	}
	out, err := s.ca.PutWorkloadGroup(r.Context(), g)
	if errors.Is(err, pki.ErrInvalidGroup) {
		err = fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if err != nil {
		s.writeError(w, "admin", err)
		return
	}
	s.writeOK(w, "admin", out)
}

func (s *Server) handleGroupList(w http.ResponseWriter, r *http.Request) {
	gs, err := s.ca.WorkloadGroups(r.Context())
	if err != nil {
		s.writeError(w, "admin", err)
		return
	}
	s.writeOK(w, "admin", GroupListResponse{Groups: gs})
}

func (s *Server) handleGroupDelete(w http.ResponseWriter, r *http.Request) {
	g, err := s.ca.DeleteWorkloadGroup(r.Context(), r.PathValue("ns"), r.PathValue("sa"))
	switch {
	case errors.Is(err, pki.ErrGroupNotFound):
		s.m.requests.WithLabelValues("admin", "404").Inc()
		writeJSON(w, http.StatusNotFound, ErrorResponse{Error: ErrorDetail{Code: "not_found", Message: err.Error()}})
		return
	case errors.Is(err, pki.ErrInvalidGroup):
		err = fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if err != nil {
		s.writeError(w, "admin", err)
		return
	}
	s.writeOK(w, "admin", g)
}
