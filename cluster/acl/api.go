package acl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// requestBody is the JSON of POST /v1/acl/tokens.
type requestBody struct {
	Description string   `json:"description,omitempty"`
	Scopes      []string `json:"scopes"`
	Services    []string `json:"services,omitempty"`
	Subsets     []string `json:"subsets,omitempty"`
	TTL         string   `json:"ttl,omitempty"`
}

// ParseRequest decodes and checks a token request body.
func ParseRequest(b []byte) (Request, error) {
	if len(b) > MaxRecordBytes {
		return Request{}, fmt.Errorf("%w: body is %d bytes, limit %d", ErrInvalid, len(b), MaxRecordBytes)
	}
	var rb requestBody
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rb); err != nil {
		return Request{}, fmt.Errorf("%w: body: %v", ErrInvalid, err)
	}
	if dec.More() {
		return Request{}, fmt.Errorf("%w: body: trailing data after the JSON object", ErrInvalid)
	}
	req := Request{Description: rb.Description, Services: rb.Services, Subsets: rb.Subsets}
	if len(rb.Scopes) == 0 {
		return Request{}, fmt.Errorf("%w: scopes: at least one of read, endpoints:write, operator", ErrInvalid)
	}
	for _, s := range rb.Scopes {
		sc, err := ParseScope(s)
		if err != nil {
			return Request{}, err
		}
		req.Scopes = append(req.Scopes, sc)
	}
	if rb.TTL != "" {
		d, err := time.ParseDuration(rb.TTL)
		if err != nil || d <= 0 {
			return Request{}, fmt.Errorf("%w: ttl %q is not a positive duration", ErrInvalid, rb.TTL)
		}
		req.TTL = d
	}
	// Check the restrictions with the record's own rules before minting.
	probe := Token{ID: "0000000000000000", Description: req.Description, Scopes: req.Scopes, Services: req.Services, Subsets: req.Subsets}
	probe.Hash = fmt.Sprintf("%064x", 0)
	if err := probe.Validate(); err != nil {
		return Request{}, err
	}
	return req, nil
}

// Created is the answer to POST /v1/acl/tokens: the record and the secret,
// shown only this once.
type Created struct {
	Token  Token  `json:"token"`
	Secret string `json:"secret"`
}

// Routes returns the token API for the admin listener (operator scope):
//
//	POST   /v1/acl/tokens       create ({"scopes":[...],"services":[...],"subsets":[...],"ttl":"24h","description":"..."})
//	GET    /v1/acl/tokens       list (records only, never secrets)
//	DELETE /v1/acl/tokens/{id}  revoke
func (m *Manager) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		"POST /v1/acl/tokens": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRecordBytes+1))
			if err != nil {
				WriteJSON(w, http.StatusRequestEntityTooLarge, ErrorBody{Error: err.Error(), Reason: "body"})
				return
			}
			req, err := ParseRequest(b)
			if err != nil {
				WriteJSON(w, http.StatusBadRequest, ErrorBody{Error: err.Error(), Reason: "request"})
				return
			}
			t, c, err := m.Create(r.Context(), req)
			if err != nil {
				WriteJSON(w, http.StatusInternalServerError, ErrorBody{Error: err.Error(), Reason: "store"})
				return
			}
			WriteJSON(w, http.StatusOK, Created{Token: t, Secret: c.String()})
		}),
		"GET /v1/acl/tokens": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ts, err := m.List(r.Context())
			if err != nil {
				WriteJSON(w, http.StatusInternalServerError, ErrorBody{Error: err.Error(), Reason: "store"})
				return
			}
			if ts == nil {
				ts = []Token{}
			}
			WriteJSON(w, http.StatusOK, ts)
		}),
		"DELETE /v1/acl/tokens/{id}": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			err := m.Revoke(r.Context(), r.PathValue("id"))
			switch {
			case errors.Is(err, ErrNotFound):
				WriteJSON(w, http.StatusNotFound, ErrorBody{Error: err.Error(), Reason: "not_found"})
			case err != nil:
				WriteJSON(w, http.StatusInternalServerError, ErrorBody{Error: err.Error(), Reason: "store"})
			default:
				WriteJSON(w, http.StatusOK, map[string]string{"revoked": r.PathValue("id")})
			}
		}),
	}
}
