// Package pki is meshgate's built-in certificate authority: it issues
// Istio ISTIO_MUTUAL workload certificates, signing with cloudflare/cfssl's
// local signer, and keeps its whole state in a replicated Store.
//
// What it issues is Istio's workload leaf, whatever the request says: URI
// SAN spiffe://<td>/ns/<ns>/sa/<sa> (critical, the only SAN), empty
// subject, KeyUsage digitalSignature+keyEncipherment, ExtKeyUsage
// serverAuth+clientAuth, CA=false, NotBefore = now-2m, 24h by default,
// at most 90 days (a longer request is refused), never past the signing
// certificate. The identity comes from the caller, never from the CSR: a
// bearer token (CreateToken; only its hash is stored), a client certificate
// of the same identity (renewal), or an operator credential checked by the
// API layer. A CSR whose SANs name anything else is refused. A token's
// use cap is exact however many CA instances share the store: each use is
// claimed with a conditional store write before the certificate is signed.
//
// The root is self-signed on first bootstrap (ECDSA P-256 by default, RSA
// 2048 on request, 10 years, O = trust domain) or imported from Istio's
// plug-in files (LoadPluginCA). The CA key is sealed with AES-256-GCM under
// a key-encryption key read from a 0600 file or the environment; the store
// never sees it in clear. Every issuance and refusal is audited; audit
// records are made durable in batches (one Store.Apply for everything
// queued), and a certificate is only handed out once its record is.
//
//	ca, err := pki.NewCA(ctx, cfg, st) // cfg := pki.DefaultConfig(); cfg.KEKFile = ...
//	if err != nil { ... }
//	defer ca.Close()
//	secret, _, err := ca.CreateToken(ctx, pki.TokenRequest{Namespace: "default", ServiceAccount: "web"})
//	cert, err := ca.Issue(ctx, pki.Request{CSR: csrPEM, Credential: pki.BearerToken(secret)})
//	// cert.ChainPEM(): leaf, intermediates..., root
//
// The wire APIs (gRPC IstioCertificateService, HTTP JSON, cfssl-compatible
// endpoints) are in pki/api; client helpers for the CLI in pki/client;
// Store implementations for tests and single nodes in pki/store; test
// helpers in pki/pkitest.
package pki
