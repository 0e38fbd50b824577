package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/meshgate/meshgate/pki"
)

// CertificateRequest is the body of POST /v1/certificates.
type CertificateRequest struct {
	// CSR is the PEM certificate signing request.
	CSR string `json:"csr"`
	// TTL is a Go duration ("24h") or a number of seconds; absent or 0
	// means the CA's default.
	TTL json.RawMessage `json:"ttl,omitempty"`
}

// CertificateResponse is the reply of POST /v1/certificates.
type CertificateResponse struct {
	// CertChain is leaf, intermediates, then the current root.
	CertChain []string `json:"certChain"`
	// RootCerts is the trust bundle (more than one root during a rotation).
	RootCerts []string `json:"rootCerts"`
}

// RootsResponse is the reply of GET /v1/roots.
type RootsResponse struct {
	RootCerts []string `json:"rootCerts"`
}

// ErrorResponse is the body of every HTTP JSON error.
type ErrorResponse struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says what went wrong: Code is a refusal reason such as
// "ttl_too_long", Message a sentence for people.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// TokenCreateRequest is the body of POST /v1/tokens.
type TokenCreateRequest struct {
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
	// TTL is a Go duration; "" means the CA's default (1h).
	TTL  string `json:"ttl,omitempty"`
	Uses int    `json:"uses,omitempty"`
}

// Token describes a token in the admin API; Secret is only set in the
// reply to its creation.
type Token struct {
	Secret    string    `json:"token,omitempty"`
	ID        string    `json:"id"`
	Identity  string    `json:"identity"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt"`
	Uses      int       `json:"uses"`
	Used      int       `json:"used"`
	Revoked   bool      `json:"revoked"`
}

// TokenListResponse is the reply of GET /v1/tokens.
type TokenListResponse struct {
	Tokens []Token `json:"tokens"`
}

func tokenJSON(ti pki.TokenInfo) Token {
	return Token{
		ID: ti.ID, Identity: ti.Identity.String(), CreatedAt: ti.CreatedAt, ExpiresAt: ti.ExpiresAt,
		Uses: ti.Uses, Used: ti.Used, Revoked: ti.Revoked,
	}
}

func (s *Server) routes() {
	s.mux.HandleFunc("POST /v1/certificates", s.handleCertificates)
	s.mux.HandleFunc("GET /v1/roots", s.handleRoots)
	s.mux.HandleFunc("POST /v1/tokens", s.admin(s.handleTokenCreate))
	s.mux.HandleFunc("GET /v1/tokens", s.admin(s.handleTokenList))
	s.mux.HandleFunc("DELETE /v1/tokens/{id}", s.admin(s.handleTokenRevoke))
	s.mux.HandleFunc("POST /api/v1/cfssl/info", s.handleCFSSLInfo)
	s.mux.HandleFunc("POST /api/v1/cfssl/authsign", s.handleCFSSLAuthSign)
	s.mux.HandleFunc("POST /api/v1/cfssl/sign", s.handleCFSSLSign)
	s.revokeRoutes()
	s.workloadRoutes()
	for pattern, h := range s.cfg.Routes {
		s.mux.Handle(pattern, h)
	}
}

// readBody reads at most MaxBodyBytes.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(s.cfg.MaxBodyBytes)))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fmt.Errorf("%w: body exceeds %d bytes", ErrBadRequest, s.cfg.MaxBodyBytes)
		}
		return nil, fmt.Errorf("%w: reading body: %v", ErrBadRequest, err)
	}
	return b, nil
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeOK counts a 200 answer of api and writes v as JSON.
func (s *Server) writeOK(w http.ResponseWriter, api string, v any) {
	s.m.requests.WithLabelValues(api, "200").Inc()
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) writeError(w http.ResponseWriter, api string, err error) {
	st := statusOf(err)
	if errors.Is(err, pki.ErrTokenNotFound) {
		st = http.StatusNotFound
	} else if errors.Is(err, pki.ErrInvalidToken) {
		st = http.StatusBadRequest
	}
	if st == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	if st == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="meshgate"`)
	}
	msg := publicMessage(err)
	if st == http.StatusNotFound || st == http.StatusBadRequest {
		msg = err.Error()
	}
	s.m.requests.WithLabelValues(api, strconv.Itoa(st)).Inc()
	s.m.refusal(err)
	writeJSON(w, st, ErrorResponse{Error: ErrorDetail{Code: reasonCode(err), Message: msg}})
}

// decodeCertificateRequest parses a POST /v1/certificates body strictly:
// unknown fields, trailing data, a missing CSR or a bad TTL are errors.
func decodeCertificateRequest(body []byte) (pki.Request, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var cr CertificateRequest
	if err := dec.Decode(&cr); err != nil {
		return pki.Request{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if dec.More() {
		return pki.Request{}, fmt.Errorf("%w: trailing data after the JSON object", ErrBadRequest)
	}
	if cr.CSR == "" {
		return pki.Request{}, fmt.Errorf("%w: csr is empty", ErrBadRequest)
	}
	ttl, err := parseTTL(cr.TTL)
	if err != nil {
		return pki.Request{}, err
	}
	return pki.Request{CSR: []byte(cr.CSR), TTL: ttl}, nil
}

// parseTTL accepts a JSON string Go duration or a JSON number of whole
// seconds; null or absent is 0. Negative values are refused.
func parseTTL(raw json.RawMessage) (time.Duration, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var d time.Duration
	if raw[0] == '"' {
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return 0, fmt.Errorf("%w: ttl: %v", ErrBadRequest, err)
		}
		v, err := time.ParseDuration(str)
		if err != nil {
			return 0, fmt.Errorf("%w: ttl: %v", ErrBadRequest, err)
		}
		d = v
	} else {
		n, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: ttl must be a duration string or whole seconds", ErrBadRequest)
		}
		d = secondsTTL(n)
		if n < 0 {
			d = -1
		}
	}
	if d < 0 {
		return 0, fmt.Errorf("%w: ttl is negative", ErrBadRequest)
	}
	return d, nil
}

// httpCredentials collects a bearer token and a TLS client certificate.
func httpCredentials(r *http.Request) pki.Credentials {
	var c pki.Credentials
	c.Token = bearer(r.Header.Values("Authorization"))
	if r.TLS != nil {
		c.Peer = r.TLS.PeerCertificates
	}
	return c
}

func (s *Server) handleCertificates(w http.ResponseWriter, r *http.Request) {
	base := pki.Request{Credential: httpCredentials(r), Remote: r.RemoteAddr}
	body, err := s.readBody(w, r)
	var req pki.Request
	if err == nil {
		req, err = decodeCertificateRequest(body)
	}
	if err != nil {
		s.writeError(w, "http", s.ca.Refuse(r.Context(), base, pki.ReasonBadRequest, err, ""))
		return
	}
	req.Credential, req.Remote = base.Credential, base.Remote
	cert, err := s.ca.Issue(r.Context(), req)
	if err != nil {
		s.writeError(w, "http", err)
		return
	}
	s.writeOK(w, "http", CertificateResponse{CertChain: cert.ChainPEM(), RootCerts: cert.RootsPEM})
}

func (s *Server) handleRoots(w http.ResponseWriter, r *http.Request) {
	s.writeOK(w, "http", RootsResponse{RootCerts: s.ca.RootsPEM()})
}

// admin wraps a token administration handler with its authorization: the
// admin key as a bearer token, or a client certificate of an identity in
// AdminIdentities.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.adminHash == nil && len(s.cfg.AdminIdentities) == 0 {
			s.writeError(w, "admin", fmt.Errorf("%w: token administration is not configured (AdminKey, AdminIdentities)", ErrDisabled))
			return
		}
		who := ""
		if tok := bearer(r.Header.Values("Authorization")); tok != "" && s.adminKeyOK(string(tok)) {
			who = "admin-key"
		} else if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && len(s.cfg.AdminIdentities) > 0 {
			if id, err := s.ca.VerifyPeer(r.TLS.PeerCertificates); err == nil && slices.Contains(s.cfg.AdminIdentities, id) {
				who = id.String()
			}
		}
		if who == "" {
			s.log.Warn("token administration refused", "remote", r.RemoteAddr, "path", r.URL.Path)
			s.writeError(w, "admin", fmt.Errorf("%w: %w: admin key or admin client certificate required", pki.ErrUnauthenticated, ErrForbidden))
			return
		}
		s.log.Info("token administration", "remote", r.RemoteAddr, "admin", who, "method", r.Method, "path", r.URL.Path)
		h(w, r)
	}
}

func (s *Server) handleTokenCreate(w http.ResponseWriter, r *http.Request) {
	body, err := s.readBody(w, r)
	if err != nil {
		s.writeError(w, "admin", err)
		return
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var tr TokenCreateRequest
	if err := dec.Decode(&tr); err != nil {
		s.writeError(w, "admin", fmt.Errorf("%w: %v", ErrBadRequest, err))
		return
	}
	var ttl time.Duration
	if tr.TTL != "" {
		if ttl, err = time.ParseDuration(tr.TTL); err != nil {
			s.writeError(w, "admin", fmt.Errorf("%w: ttl: %v", ErrBadRequest, err))
			return
		}
	}
	secret, info, err := s.ca.CreateToken(r.Context(), pki.TokenRequest{Namespace: tr.Namespace, ServiceAccount: tr.ServiceAccount, TTL: ttl, Uses: tr.Uses})
	if err != nil {
		s.writeError(w, "admin", err)
		return
	}
	out := tokenJSON(info)
	out.Secret = secret
	s.writeOK(w, "admin", out)
}

func (s *Server) handleTokenList(w http.ResponseWriter, r *http.Request) {
	infos, err := s.ca.Tokens(r.Context())
	if err != nil {
		s.writeError(w, "admin", err)
		return
	}
	out := TokenListResponse{Tokens: make([]Token, 0, len(infos))}
	for _, ti := range infos {
		out.Tokens = append(out.Tokens, tokenJSON(ti))
	}
	s.writeOK(w, "admin", out)
}
