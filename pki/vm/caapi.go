package vm

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/api"
	"github.com/meshgate/meshgate/pki/client"
)

// APIError is a refusal from the certificate API.
type APIError struct {
	Method, Path string
	Status       int
	// Code is the API's reason ("no_group", "service", ...).
	Code string
	// Message is the API's error text.
	Message string
}

// Error implements error.
func (e *APIError) Error() string {
	return fmt.Sprintf("vm: %s %s: HTTP %d %s: %s", e.Method, e.Path, e.Status, e.Code, e.Message)
}

// Retryable reports whether trying again later may succeed (the node is
// unavailable or overloaded), as opposed to a refusal.
func (e *APIError) Retryable() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests
}

// call sends one JSON request to the certificate API over TLS verified
// with cfg, with a client certificate and/or a bearer key.
func call(ctx context.Context, cfg client.Config, cert *tls.Certificate, key, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("vm: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := url.URL{Scheme: "https", Host: cfg.Addr, Path: path}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return fmt.Errorf("vm: CA address %q: %w", cfg.Addr, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	tc := &tls.Config{RootCAs: cfg.RootCAs, ServerName: cfg.ServerName, MinVersion: tls.VersionTLS12}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{Proxy: nil, TLSClientConfig: tc, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("vm: certificate API at %s: %w", cfg.Addr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("vm: certificate API at %s: %w", cfg.Addr, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var er api.ErrorResponse
		msg, code := strings.TrimSpace(string(data)), "http"
		if json.Unmarshal(data, &er) == nil && er.Error.Message != "" {
			msg, code = er.Error.Message, er.Error.Code
		}
		return &APIError{Method: method, Path: path, Status: resp.StatusCode, Code: code, Message: msg}
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("vm: %s %s: bad answer: %w", method, path, err)
		}
	}
	return nil
}

// Groups binds and unbinds workload groups on the certificate API with
// its admin key (the node's DATA_DIR/admin.key).
type Groups struct {
	// Config reaches the API.
	Config client.Config
	// Key is the admin key.
	Key string
}

// Put binds g (PUT /v1/workload/groups) and returns it as stored.
func (g Groups) Put(ctx context.Context, wg pki.WorkloadGroup) (pki.WorkloadGroup, error) {
	var out pki.WorkloadGroup
	err := call(ctx, g.Config, nil, g.Key, http.MethodPut, "/v1/workload/groups", wg, &out)
	return out, err
}

// Delete unbinds the group of ns/sa and returns it.
func (g Groups) Delete(ctx context.Context, ns, sa string) (pki.WorkloadGroup, error) {
	var out pki.WorkloadGroup
	err := call(ctx, g.Config, nil, g.Key, http.MethodDelete, "/v1/workload/groups/"+url.PathEscape(ns)+"/"+url.PathEscape(sa), nil, &out)
	return out, err
}

// List returns every bound group.
func (g Groups) List(ctx context.Context) ([]pki.WorkloadGroup, error) {
	var out api.GroupListResponse
	err := call(ctx, g.Config, nil, g.Key, http.MethodGet, "/v1/workload/groups", nil, &out)
	return out.Groups, err
}
