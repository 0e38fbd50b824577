package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	cfapi "github.com/cloudflare/cfssl/api"
	"github.com/cloudflare/cfssl/auth"

	"github.com/meshgate/meshgate/pki"
)

// cfssl numeric error codes used in the response envelope (category +
// reason, as cfssl's errors package builds them).
const (
	cfsslCSRDecode      = 9002
	cfsslCSRParse       = 9003
	cfsslCSRSignature   = 9300
	cfsslInvalidRequest = 5300
	cfsslUnknownProfile = 5400
	cfsslWhitelist      = 5500
)

// CFSSLInfoRequest is the body of /api/v1/cfssl/info.
type CFSSLInfoRequest struct {
	Label   string `json:"label"`
	Profile string `json:"profile"`
}

// CFSSLInfoResponse is the result of /api/v1/cfssl/info.
type CFSSLInfoResponse struct {
	Certificate string   `json:"certificate"`
	Usages      []string `json:"usages"`
	Expiry      string   `json:"expiry"`
}

// CFSSLSignRequest is cfssl's sign request as the cfssl CLI sends it (the
// inner request of authsign). Fields that could change what is issued
// are only accepted when they cannot: hosts/hostname must be absent or
// exactly the SPIFFE ID, and subject, serial, extensions and
// crl_override must be absent.
type CFSSLSignRequest struct {
	Hosts       []string        `json:"hosts"`
	Hostname    string          `json:"hostname"`
	Request     string          `json:"certificate_request"`
	Subject     json.RawMessage `json:"subject,omitempty"`
	Profile     string          `json:"profile"`
	Label       string          `json:"label"`
	Serial      json.RawMessage `json:"serial,omitempty"`
	Extensions  json.RawMessage `json:"extensions,omitempty"`
	CRLOverride string          `json:"crl_override"`
	Bundle      bool            `json:"bundle"`
}

// CFSSLSignResponse is the result of sign and authsign: the leaf only, as
// cfssl returns it.
type CFSSLSignResponse struct {
	Certificate string `json:"certificate"`
}

// cfsslError is an error with the cfssl envelope code to report.
type cfsslError struct {
	code int
	err  error
}

func (e *cfsslError) Error() string { return e.err.Error() }
func (e *cfsslError) Unwrap() error { return e.err }

func withCode(code int, err error) error { return &cfsslError{code: code, err: err} }

// envelopeCode is the cfssl code reported for err.
func envelopeCode(err error) int {
	var ce *cfsslError
	if errors.As(err, &ce) {
		return ce.code
	}
	switch pki.ReasonOf(err) {
	case pki.ReasonCSRSignature:
		return cfsslCSRSignature
	case pki.ReasonCSRMalformed, pki.ReasonCSRTooLarge, pki.ReasonCSRKey:
		return cfsslCSRParse
	case pki.ReasonCSRIsCA, pki.ReasonTTLTooLong, pki.ReasonBadRequest:
		return cfsslInvalidRequest
	case pki.ReasonIdentityMismatch, pki.ReasonExtraSAN:
		return cfsslWhitelist
	}
	return statusOf(err)
}

func (s *Server) writeCFSSLError(w http.ResponseWriter, err error) {
	st := statusOf(err)
	if st == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	s.m.requests.WithLabelValues("cfssl", strconv.Itoa(st)).Inc()
	s.m.refusal(err)
	writeJSON(w, st, cfapi.NewErrorResponse(publicMessage(err), envelopeCode(err)))
}

func (s *Server) writeCFSSL(w http.ResponseWriter, result any) {
	s.writeOK(w, "cfssl", cfapi.NewSuccessResponse(result))
}

// checkProfile refuses every profile but the workload one ("" means it).
func checkProfile(p string) error {
	if p == "" || p == pki.ProfileWorkload {
		return nil
	}
	return withCode(cfsslUnknownProfile, fmt.Errorf("%w: %q (this CA has only %q)", ErrUnknownProfile, p, pki.ProfileWorkload))
}

func (s *Server) handleCFSSLInfo(w http.ResponseWriter, r *http.Request) {
	body, err := s.readBody(w, r)
	if err != nil {
		s.writeCFSSLError(w, err)
		return
	}
	var req CFSSLInfoRequest
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			s.writeCFSSLError(w, fmt.Errorf("%w: %v", ErrBadRequest, err))
			return
		}
	}
	if err := checkProfile(req.Profile); err != nil {
		s.writeCFSSLError(w, err)
		return
	}
	info := s.ca.Info()
	s.writeCFSSL(w, CFSSLInfoResponse{
		Certificate: strings.TrimSpace(info.SigningCertPEM),
		Usages:      []string{"digital signature", "key encipherment", "server auth", "client auth"},
		Expiry:      s.ca.Config().DefaultTTL.String(),
	})
}

// decodeAuthSign checks the HMAC of an authsign body with p and returns
// the inner sign request.
func decodeAuthSign(body []byte, p *auth.Standard) (*CFSSLSignRequest, error) {
	var ar auth.AuthenticatedRequest
	if err := json.Unmarshal(body, &ar); err != nil {
		return nil, withCode(http.StatusBadRequest, fmt.Errorf("%w: unable to parse authenticated sign request: %v", ErrBadRequest, err))
	}
	if !p.Verify(&ar) {
		return nil, withCode(http.StatusBadRequest, fmt.Errorf("%w: invalid token", pki.ErrUnauthenticated))
	}
	return decodeSignRequest(ar.Request)
}

// decodeSignRequest parses a cfssl sign request and refuses the fields
// that would widen, strip or reshape what is issued.
func decodeSignRequest(b []byte) (*CFSSLSignRequest, error) {
	var req CFSSLSignRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, withCode(http.StatusBadRequest, fmt.Errorf("%w: unable to parse sign request: %v", ErrBadRequest, err))
	}
	if req.Request == "" {
		return nil, withCode(http.StatusBadRequest, fmt.Errorf("%w: missing parameter 'certificate_request'", ErrBadRequest))
	}
	if err := checkProfile(req.Profile); err != nil {
		return nil, err
	}
	invalid := func(what string) error {
		return withCode(cfsslInvalidRequest, fmt.Errorf("%w: %s is not accepted: the CA sets it", ErrBadRequest, what))
	}
	if !isJSONEmpty(req.Subject) {
		return nil, invalid("subject")
	}
	if !isJSONEmpty(req.Serial) {
		return nil, invalid("serial")
	}
	if !isJSONEmpty(req.Extensions) {
		return nil, invalid("extensions")
	}
	if req.CRLOverride != "" {
		return nil, invalid("crl_override")
	}
	return &req, nil
}

func isJSONEmpty(raw json.RawMessage) bool {
	switch string(bytes.TrimSpace(raw)) {
	case "", "null", "{}", "[]", "0":
		return true
	}
	return false
}

// requestedIdentity reads hosts/hostname: absent means "the CSR's
// identity"; otherwise it must be exactly one SPIFFE ID. An empty list
// (which cfssl would turn into a certificate without SANs) is refused.
func (req *CFSSLSignRequest) requestedIdentity() (pki.Identity, error) {
	hosts := req.Hosts
	if req.Hostname != "" {
		hosts = strings.Split(req.Hostname, ",")
	}
	if hosts == nil {
		return pki.Identity{}, nil
	}
	if len(hosts) != 1 {
		return pki.Identity{}, withCode(cfsslWhitelist, fmt.Errorf("%w: hosts must be exactly the SPIFFE ID (got %d entries)", pki.ErrPermissionDenied, len(hosts)))
	}
	id, err := pki.ParseIdentity(strings.TrimSpace(hosts[0]))
	if err != nil {
		return pki.Identity{}, withCode(cfsslWhitelist, fmt.Errorf("%w: hosts: %v", pki.ErrPermissionDenied, err))
	}
	return id, nil
}

func (s *Server) handleCFSSLAuthSign(w http.ResponseWriter, r *http.Request) {
	base := pki.Request{Credential: pki.Operator{Name: "cfssl"}, Remote: r.RemoteAddr}
	if s.cfsslAuth == nil {
		s.writeCFSSLError(w, withCode(http.StatusNotFound, fmt.Errorf("%w: authsign has no auth key configured", ErrDisabled)))
		return
	}
	body, err := s.readBody(w, r)
	var req *CFSSLSignRequest
	if err == nil {
		req, err = decodeAuthSign(body, s.cfsslAuth)
	}
	s.cfsslSign(w, r, base, req, err)
}

// handleCFSSLSign serves the unauthenticated cfssl endpoint: only a TLS
// client certificate (renewal of the same identity) is accepted.
func (s *Server) handleCFSSLSign(w http.ResponseWriter, r *http.Request) {
	var peer pki.PeerCertificates
	if r.TLS != nil {
		peer = r.TLS.PeerCertificates
	}
	base := pki.Request{Credential: peer, Remote: r.RemoteAddr}
	body, err := s.readBody(w, r)
	var req *CFSSLSignRequest
	if err == nil && len(peer) == 0 {
		err = withCode(http.StatusBadRequest, fmt.Errorf("%w: authentication required: use /api/v1/cfssl/authsign or a client certificate", pki.ErrUnauthenticated))
	}
	if err == nil {
		req, err = decodeSignRequest(body)
	}
	s.cfsslSign(w, r, base, req, err)
}

func (s *Server) cfsslSign(w http.ResponseWriter, r *http.Request, base pki.Request, req *CFSSLSignRequest, err error) {
	var id pki.Identity
	if err == nil {
		id, err = req.requestedIdentity()
	}
	if err != nil {
		reason := pki.ReasonBadRequest
		switch {
		case errors.Is(err, pki.ErrUnauthenticated):
			reason = pki.ReasonBadToken
			if _, ok := base.Credential.(pki.PeerCertificates); ok {
				reason = pki.ReasonNoCredential
			}
		case errors.Is(err, pki.ErrPermissionDenied):
			reason = pki.ReasonIdentityMismatch
		}
		s.ca.Refuse(r.Context(), base, reason, err, "")
		s.writeCFSSLError(w, err)
		return
	}
	base.CSR, base.Identity = []byte(req.Request), id
	cert, err := s.ca.Issue(r.Context(), base)
	if err != nil {
		s.writeCFSSLError(w, err)
		return
	}
	s.writeCFSSL(w, CFSSLSignResponse{Certificate: cert.LeafPEM})
}
