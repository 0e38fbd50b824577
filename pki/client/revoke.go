package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/meshgate/meshgate/pki/api"
)

// RevokeCertificate revokes the certificate with this serial (hex) for an
// RFC 5280 reason name ("" = unspecified) (meshgate cert revoke).
func (a Admin) RevokeCertificate(ctx context.Context, serial, reason string) (api.Revocation, error) {
	var out api.RevokeResponse
	err := a.do(ctx, http.MethodPost, "/v1/revocations", api.RevokeRequest{Serial: serial, Reason: reason}, &out)
	return out.Revocation, err
}

// RevokeTokenCertificates revokes the token with this ID (or unique
// prefix) and every certificate it produced, renewals included
// (meshgate token revoke --certs).
func (a Admin) RevokeTokenCertificates(ctx context.Context, id, reason string) (api.TokenRevokeResponse, error) {
	q := url.Values{"certs": {"true"}}
	if reason != "" {
		q.Set("reason", reason)
	}
	var out api.TokenRevokeResponse
	err := a.do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id)+"?"+q.Encode(), nil, &out)
	return out, err
}

// maxCRLBytes bounds a CRL read from the API.
const maxCRLBytes = 16 << 20

// FetchCRL reads the node's CRL (GET /v1/crl, DER), verifying the server
// with cfg.RootCAs. The caller checks its signature
// (x509.RevocationList.CheckSignatureFrom).
func FetchCRL(ctx context.Context, cfg Config) ([]byte, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	u := url.URL{Scheme: "https", Host: cfg.Addr, Path: "/v1/crl"}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cfg.RootCAs, ServerName: cfg.ServerName, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: GET /v1/crl: %w", err)
	}
	defer resp.Body.Close()
	der, err := io.ReadAll(io.LimitReader(resp.Body, maxCRLBytes+1))
	if err != nil {
		return nil, fmt.Errorf("client: GET /v1/crl: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &APIError{Status: resp.StatusCode, Code: "http", Message: string(der)}
	}
	if len(der) > maxCRLBytes {
		return nil, fmt.Errorf("%w: CRL exceeds %d bytes", ErrBadResponse, maxCRLBytes)
	}
	if ct := resp.Header.Get("Content-Type"); ct != api.CRLContentType {
		return nil, fmt.Errorf("%w: CRL Content-Type %q, want %s", ErrBadResponse, ct, api.CRLContentType)
	}
	return der, nil
}
