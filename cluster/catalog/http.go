package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// maxBodyBytes bounds a registration request body.
const maxBodyBytes = 64 << 10

// registrationBody is the JSON body of PUT /v1/endpoints/{id}. Durations
// are Go duration strings ("30s").
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
	} `json:"check,omitempty"`
}

// ParseRegistration decodes a registration request body for id and
// validates it. Unknown fields are refused so typos do not pass silently.
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
		r.Check = &TCPCheck{Failures: b.Check.Failures}
		if r.Check.Interval, err = dur("check.interval", b.Check.Interval); err != nil {
			return Registration{}, err
		}
		if r.Check.Timeout, err = dur("check.timeout", b.Check.Timeout); err != nil {
			return Registration{}, err
		}
	}
	if err := r.Validate(); err != nil {
		return Registration{}, err
	}
	return r, nil
}

// Handler returns the registration API for the admin listener:
//
//	PUT    /v1/endpoints/{id}   register or refresh (JSON body, see ParseRegistration)
//	DELETE /v1/endpoints/{id}   deregister
//	GET    /v1/endpoints        the catalog snapshot (every live endpoint)
//	GET    /v1/registrations    this node's registrations and their health
//	GET    /v1/members          gossip members
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
		writeJSON(w, http.StatusOK, c.Snapshot().Entries)
	})
	mux.HandleFunc("GET /v1/registrations", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, c.Registrations())
	})
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, c.Members())
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
