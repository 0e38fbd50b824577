package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshgate/meshgate/pki"
)

// RevokeRequest is the body of POST /v1/revocations (admin).
type RevokeRequest struct {
	// Serial is the certificate serial in hex (as meshgate prints it, or
	// openssl's colon-separated form).
	Serial string `json:"serial"`
	// Reason is an RFC 5280 reason name ("keyCompromise"); "" means
	// unspecified.
	Reason string `json:"reason,omitempty"`
}

// Revocation describes one revoked certificate in the admin API.
type Revocation struct {
	Serial    string    `json:"serial"`
	Identity  string    `json:"identity,omitempty"`
	TokenID   string    `json:"tokenId,omitempty"`
	Reason    string    `json:"reason"`
	RevokedAt time.Time `json:"revokedAt"`
	NotAfter  time.Time `json:"notAfter"`
	// Recorded is false for a serial the CA had no record of (kept for
	// the CA's maximum TTL).
	Recorded bool `json:"recorded"`
}

// RevokeResponse is the reply of POST /v1/revocations.
type RevokeResponse struct {
	Revocation Revocation `json:"revocation"`
}

// TokenRevokeResponse is the reply of DELETE /v1/tokens/{id}: the token,
// and with ?certs=true the certificates revoked with it.
type TokenRevokeResponse struct {
	Token
	RevokedCertificates []Revocation `json:"revokedCertificates,omitempty"`
}

// CRLContentType is the media type of GET /v1/crl (RFC 2585).
const CRLContentType = "application/pkix-crl"

func revocationJSON(r pki.Revocation) Revocation {
	return Revocation{
		Serial: r.Serial.Text(16), Identity: r.Identity, TokenID: r.TokenID, Reason: r.Reason.String(),
		RevokedAt: r.RevokedAt, NotAfter: r.NotAfter, Recorded: r.Recorded,
	}
}

// revokeRoutes registers the revocation endpoints.
func (s *Server) revokeRoutes() {
	s.mux.HandleFunc("GET /v1/crl", s.handleCRL)
	s.mux.HandleFunc("POST /v1/revocations", s.admin(s.handleRevoke))
}

// CRLHandler serves GET /v1/crl, for another listener (the node's admin
// listener) to mount.
func (s *Server) CRLHandler() http.Handler { return http.HandlerFunc(s.handleCRL) }

// decodeRevokeRequest parses a POST /v1/revocations body strictly: unknown
// fields, trailing data, a bad serial or reason are errors wrapping
// ErrBadRequest.
func decodeRevokeRequest(body []byte) (RevokeRequest, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var rr RevokeRequest
	if err := dec.Decode(&rr); err != nil {
		return RevokeRequest{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if dec.More() {
		return RevokeRequest{}, fmt.Errorf("%w: trailing data after the JSON object", ErrBadRequest)
	}
	if _, err := pki.ParseSerial(rr.Serial); err != nil {
		return RevokeRequest{}, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if _, err := pki.ParseRevocationReason(rr.Reason); err != nil {
		return RevokeRequest{}, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return rr, nil
}

func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	body, err := s.readBody(w, r)
	if err != nil {
		s.writeError(w, "admin", err)
		return
	}
	rr, err := decodeRevokeRequest(body)
	if err != nil {
		s.writeError(w, "admin", err)
		return
	}
	serial, _ := pki.ParseSerial(rr.Serial)
	reason, _ := pki.ParseRevocationReason(rr.Reason)
	rev, err := s.ca.RevokeCertificate(r.Context(), serial, reason)
	if err != nil {
		s.writeError(w, "admin", badInput(err))
		return
	}
	s.writeOK(w, "admin", RevokeResponse{Revocation: revocationJSON(rev)})
}

// handleTokenRevoke revokes a token; ?certs=true (and optionally
// &reason=NAME) revokes every certificate it produced as well.
func (s *Server) handleTokenRevoke(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimSpace(r.PathValue("id"))
	certs, reason, err := tokenRevokeQuery(r.URL.Query())
	if err != nil {
		s.writeError(w, "admin", err)
		return
	}
	var out TokenRevokeResponse
	if certs {
		info, revs, err := s.ca.RevokeTokenCertificates(r.Context(), id, reason)
		if err != nil {
			s.writeError(w, "admin", badInput(err))
			return
		}
		out.Token = tokenJSON(info)
		out.RevokedCertificates = make([]Revocation, 0, len(revs))
		for _, rv := range revs {
			out.RevokedCertificates = append(out.RevokedCertificates, revocationJSON(rv))
		}
	} else {
		info, err := s.ca.RevokeToken(r.Context(), id)
		if err != nil {
			s.writeError(w, "admin", err)
			return
		}
		out.Token = tokenJSON(info)
	}
	s.writeOK(w, "admin", out)
}

// tokenRevokeQuery reads ?certs=BOOL&reason=NAME of a token revocation.
func tokenRevokeQuery(q map[string][]string) (bool, pki.RevocationReason, error) {
	for k, v := range q {
		if k != "certs" && k != "reason" {
			return false, 0, fmt.Errorf("%w: unknown query parameter %q", ErrBadRequest, k)
		}
		if len(v) != 1 {
			return false, 0, fmt.Errorf("%w: query parameter %q given %d times", ErrBadRequest, k, len(v))
		}
	}
	certs := false
	if v, ok := q["certs"]; ok {
		b, err := strconv.ParseBool(v[0])
		if err != nil {
			return false, 0, fmt.Errorf("%w: certs=%q is not a boolean", ErrBadRequest, v[0])
		}
		certs = b
	}
	var reason pki.RevocationReason
	if v, ok := q["reason"]; ok {
		if !certs {
			return false, 0, fmt.Errorf("%w: reason is only meaningful with certs=true", ErrBadRequest)
		}
		rr, err := pki.ParseRevocationReason(v[0])
		if err != nil {
			return false, 0, fmt.Errorf("%w: %w", ErrBadRequest, err)
		}
		reason = rr
	}
	return certs, reason, nil
}

// badInput marks the CA's input errors as bad requests.
func badInput(err error) error {
	if errors.Is(err, pki.ErrInvalidSerial) || errors.Is(err, pki.ErrInvalidRevocation) {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return err
}

func (s *Server) handleCRL(w http.ResponseWriter, r *http.Request) {
	der, err := s.ca.CRL(r.Context())
	if err != nil {
		if errors.Is(err, pki.ErrNoCRL) {
			err = fmt.Errorf("%w: %w", ErrDisabled, err)
		}
		s.writeError(w, "http", err)
		return
	}
	s.m.requests.WithLabelValues("http", "200").Inc()
	w.Header().Set("Content-Type", CRLContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(der)))
	// Rebuilt on every revocation: caches must ask again.
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(der)
	}
}
