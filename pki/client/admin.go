package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/api"
)

// APIError is an HTTP error reply of the certificate API.
type APIError struct {
	Status  int
	Code    string // refusal reason, e.g. "unauthenticated"
	Message string
}

// Error implements error.
func (e *APIError) Error() string {
	return fmt.Sprintf("client: HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// Admin talks to the token administration endpoints.
type Admin struct {
	// Config reaches the API (Addr, ServerName, RootCAs, Timeout).
	Config Config
	// Key is the admin key (api.Config.AdminKey), sent as a bearer token.
	Key string
	// Certificate, if set, is presented as a client certificate (an
	// identity in api.Config.AdminIdentities).
	Certificate *tls.Certificate
}

func (a Admin) do(ctx context.Context, method, path string, body, out any) error {
	cfg, err := a.Config.withDefaults()
	if err != nil {
		return err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("client: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	p, query, _ := strings.Cut(path, "?")
	u := url.URL{Scheme: "https", Host: cfg.Addr, Path: p, RawQuery: query}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.Key != "" {
		req.Header.Set("Authorization", "Bearer "+a.Key)
	}
	tlsCfg := &tls.Config{RootCAs: cfg.RootCAs, ServerName: cfg.ServerName, MinVersion: tls.VersionTLS12}
	if a.Certificate != nil {
		tlsCfg.Certificates = []tls.Certificate{*a.Certificate}
	}
	tr := &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var er api.ErrorResponse
		if json.Unmarshal(data, &er) != nil || er.Error.Code == "" {
			er.Error = api.ErrorDetail{Code: "http", Message: strings.TrimSpace(string(data))}
		}
		return &APIError{Status: resp.StatusCode, Code: er.Error.Code, Message: er.Error.Message}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%w: %v", ErrBadResponse, err)
	}
	return nil
}

// CreateToken asks the node for a token (meshgate token create). The
// returned Token's Secret is the bearer token; it is shown only once.
func (a Admin) CreateToken(ctx context.Context, namespace, serviceAccount string, ttl time.Duration, uses int) (api.Token, error) {
	req := api.TokenCreateRequest{Namespace: namespace, ServiceAccount: serviceAccount, Uses: uses}
	if ttl != 0 {
		req.TTL = ttl.String()
	}
	var out api.Token
	err := a.do(ctx, http.MethodPost, "/v1/tokens", req, &out)
	return out, err
}

// ListTokens lists the tokens (meshgate token list).
func (a Admin) ListTokens(ctx context.Context) ([]api.Token, error) {
	var out api.TokenListResponse
	err := a.do(ctx, http.MethodGet, "/v1/tokens", nil, &out)
	return out.Tokens, err
}

// RevokeToken revokes the token with this ID or unique ID prefix
// (meshgate token revoke).
func (a Admin) RevokeToken(ctx context.Context, id string) (api.Token, error) {
	var out api.Token
	err := a.do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil, &out)
	return out, err
}

// FetchRoots reads the node's trust bundle (GET /v1/roots), verifying the
// server with cfg.RootCAs.
func FetchRoots(ctx context.Context, cfg Config) ([]*x509.Certificate, error) {
	var out api.RootsResponse
	if err := (Admin{Config: cfg}).do(ctx, http.MethodGet, "/v1/roots", nil, &out); err != nil {
		return nil, err
	}
	var roots []*x509.Certificate
	for _, p := range out.RootCerts {
		certs, err := ParseCerts([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadResponse, err)
		}
		roots = append(roots, certs...)
	}
	return roots, nil
}

// WriteTokens prints tokens as a table (meshgate token list).
func WriteTokens(w io.Writer, tokens []api.Token, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tIDENTITY\tEXPIRES\tUSES\tSTATE")
	for _, t := range tokens {
		uses := fmt.Sprintf("%d/%d", t.Used, t.Uses)
		if t.Uses == 0 {
			uses = fmt.Sprintf("%d/-", t.Used)
		}
		state := "active"
		switch {
		case t.Revoked:
			state = "revoked"
		case !now.Before(t.ExpiresAt):
			state = "expired"
		case t.Uses > 0 && t.Used >= t.Uses:
			state = "used up"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Identity, t.ExpiresAt.Format(time.RFC3339), uses, state)
	}
	return tw.Flush()
}

// InitCA opens (creating if needed) the CA in st with cfg and returns its
// description (meshgate ca init). If cfg.KEKFile does not exist it is
// created first (mode 0600).
func InitCA(ctx context.Context, cfg pki.Config, st pki.Store) (pki.Info, error) {
	if cfg.KEKFile != "" {
		if err := pki.WriteKEKFile(cfg.KEKFile); err != nil && !errors.Is(err, pki.ErrKEK) {
			return pki.Info{}, err
		}
	}
	ca, err := pki.NewCA(ctx, cfg, st)
	if err != nil {
		return pki.Info{}, err
	}
	defer ca.Close()
	return ca.Info(), nil
}

// WriteCAInfo prints a CA description (meshgate ca show).
func WriteCAInfo(w io.Writer, info pki.Info) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "trust domain:\t%s\n", info.TrustDomain)
	fmt.Fprintf(tw, "source:\t%s\n", info.Source)
	fmt.Fprintf(tw, "signing:\t%s (serial %s, until %s)\n", info.Signing.Subject, info.Signing.SerialNumber.Text(16), info.Signing.NotAfter.Format(time.RFC3339))
	for i, c := range info.Chain {
		fmt.Fprintf(tw, "chain[%d]:\t%s (issuer %s)\n", i, c.Subject, c.Issuer)
	}
	for i, r := range info.Roots {
		line := fmt.Sprintf("%s (serial %s, %s key, until %s)", r.Subject, r.SerialNumber.Text(16), r.PublicKeyAlgorithm, r.NotAfter.Format(time.RFC3339))
		if i > 0 && i-1 < len(info.RetireAfter) {
			line += ", retired after " + info.RetireAfter[i-1].Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "root[%d]:\t%s\n", i, line)
	}
	return tw.Flush()
}
