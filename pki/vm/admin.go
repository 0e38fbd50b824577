package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/meshgate/meshgate/cluster/acl"
)

// Admin calls a gateway's admin API (plain HTTP, bearer token) for the
// two things onboarding needs: minting the bundle's endpoints token
// (operator scope) and registering the VM's endpoints (endpoints:write).
type Admin struct {
	// Addr is host:port of the admin API.
	Addr string
	// Token is sent as "Authorization: Bearer <Token>".
	Token string
	// Timeout bounds each call; default 30s.
	Timeout time.Duration
}

// AdminError is a refusal from the admin API.
type AdminError struct {
	Method, Path string
	Status       int
	// Message is the API's error text.
	Message string
}

// Error implements error.
func (e *AdminError) Error() string {
	return fmt.Sprintf("vm: %s %s: HTTP %d: %s", e.Method, e.Path, e.Status, e.Message)
}

// Retryable reports whether trying again later may succeed (the node is
// unavailable or overloaded), as opposed to a refusal of the request or
// its credential.
func (e *AdminError) Retryable() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests
}

func (a Admin) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("vm: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	timeout := a.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+a.Addr+path, rd)
	if err != nil {
		return fmt.Errorf("vm: admin address %q: %w", a.Addr, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.Token)
	}
	tr := &http.Transport{Proxy: nil, DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("vm: admin API at %s: %w", a.Addr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("vm: admin API at %s: %w", a.Addr, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var eb acl.ErrorBody
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &eb) == nil && eb.Error != "" {
			msg = eb.Error
		}
		return &AdminError{Method: method, Path: path, Status: resp.StatusCode, Message: msg}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("vm: %s %s: bad answer: %w", method, path, err)
		}
	}
	return nil
}

// CreateEndpointsToken mints an admin token with scope endpoints:write
// that may register only service (and claim the given subsets, as
// "service/subset"), via POST /v1/acl/tokens (a.Token needs operator
// scope). It returns the token's ID and secret.
func (a Admin) CreateEndpointsToken(ctx context.Context, service string, subsets []string, description string) (id, secret string, err error) {
	body := map[string]any{"scopes": []string{string(acl.ScopeEndpointsWrite)}, "services": []string{service}, "description": description}
	if len(subsets) > 0 {
		body["subsets"] = subsets
	}
	var out acl.Created
	if err := a.do(ctx, http.MethodPost, "/v1/acl/tokens", body, &out); err != nil {
		return "", "", err
	}
	return out.Token.ID, out.Secret, nil
}

// registration is the body of PUT /v1/endpoints/{id} (see
// catalog.ParseRegistration).
type registration struct {
	Service string            `json:"service"`
	Port    uint32            `json:"port"`
	Addr    string            `json:"addr"`
	Network string            `json:"network,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	TTL     string            `json:"ttl,omitempty"`
	Check   *registrationChk  `json:"check,omitempty"`
}

type registrationChk struct {
	Interval string `json:"interval"`
	Timeout  string `json:"timeout"`
	Failures int    `json:"failures,omitempty"`
	HTTP     string `json:"http,omitempty"`
}

// register PUTs one registration.
func (a Admin) register(ctx context.Context, id string, r registration) error {
	return a.do(ctx, http.MethodPut, "/v1/endpoints/"+url.PathEscape(id), r, nil)
}

// deregister DELETEs one registration; one already gone is not an error.
func (a Admin) deregister(ctx context.Context, id string) error {
	err := a.do(ctx, http.MethodDelete, "/v1/endpoints/"+url.PathEscape(id), nil, nil)
	if ae, ok := err.(*AdminError); ok && ae.Status == http.StatusNotFound {
		return nil
	}
	return err
}
