package pki

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers branch on these with errors.Is; refusals of an
// issuance are returned as *RefusalError, which unwraps to one of them.
var (
	// ErrUnauthenticated: the request carried no credential, or one that
	// is not valid (unknown token, client certificate not issued by this CA).
	ErrUnauthenticated = errors.New("pki: caller not authenticated")
	// ErrTokenExpired: the bearer token is past its expiry.
	ErrTokenExpired = errors.New("pki: token expired")
	// ErrTokenRevoked: the bearer token was revoked.
	ErrTokenRevoked = errors.New("pki: token revoked")
	// ErrTokenUsedUp: the bearer token has no uses left.
	ErrTokenUsedUp = errors.New("pki: token has no uses left")
	// ErrPermissionDenied: the caller may not hold the identity the CSR
	// names (a CSR naming another identity, a DNS/IP/e-mail SAN, a token
	// for another namespace).
	ErrPermissionDenied = errors.New("pki: identity not permitted for this caller")
	// ErrBadCSR: the CSR is garbage, too large, badly signed, asks for
	// CA:true or uses a key type or size the CA does not sign.
	ErrBadCSR = errors.New("pki: certificate signing request refused")
	// ErrTTLTooLong: the requested lifetime exceeds Config.MaxTTL.
	ErrTTLTooLong = errors.New("pki: requested TTL exceeds the maximum")
	// ErrRateLimited: the issuance rate limit is exhausted; retry later.
	ErrRateLimited = errors.New("pki: issuance rate limit exceeded")
	// ErrAudit: the audit record could not be made durable, so the
	// certificate was not handed out.
	ErrAudit = errors.New("pki: audit log unavailable")
	// ErrSigning: the signer failed for a reason that is not the caller's.
	ErrSigning = errors.New("pki: signing failed")
	// ErrClosed: the CA was closed.
	ErrClosed = errors.New("pki: CA closed")

	// ErrNotFound is returned by Store.Get for a missing key.
	ErrNotFound = errors.New("pki: key not found")
	// ErrConflict is returned by Store.Apply when an Op with IfAbsent
	// names a key that exists; nothing of the batch was applied.
	ErrConflict = errors.New("pki: key already exists")

	// ErrInvalidConfig: Config.Validate refused a field (see *ConfigError).
	ErrInvalidConfig = errors.New("pki: invalid config")
	// ErrKEK: the key-encryption key is missing, unreadable, too widely
	// readable, malformed, or not the one the CA key was sealed with.
	ErrKEK = errors.New("pki: key-encryption key")
	// ErrCAFiles: plug-in CA files (Istio cacerts) are missing or inconsistent.
	ErrCAFiles = errors.New("pki: plug-in CA files")
	// ErrNoCA: the store holds no CA and the config does not allow
	// creating one.
	ErrNoCA = errors.New("pki: no CA in store")
	// ErrTokenNotFound: no token has the given ID.
	ErrTokenNotFound = errors.New("pki: token not found")
	// ErrInvalidToken: a token request is malformed (bad namespace, TTL, uses,
	// or an ambiguous ID prefix).
	ErrInvalidToken = errors.New("pki: invalid token request")
	// ErrRotation: a root rotation cannot be started or finished now.
	ErrRotation = errors.New("pki: root rotation")
)

// Reason names why an issuance was refused. It is the audit record's
// reason and the value of the refused_total metric's reason label.
type Reason string

// Refusal reasons.
const (
	ReasonRateLimited      Reason = "rate_limited"
	ReasonNoCredential     Reason = "no_credential"
	ReasonBadToken         Reason = "bad_token"
	ReasonTokenExpired     Reason = "token_expired"
	ReasonTokenRevoked     Reason = "token_revoked"
	ReasonTokenUsedUp      Reason = "token_used_up"
	ReasonBadClientCert    Reason = "bad_client_cert"
	ReasonIdentityMismatch Reason = "identity_mismatch"
	ReasonExtraSAN         Reason = "extra_san"
	ReasonCSRTooLarge      Reason = "csr_too_large"
	ReasonCSRMalformed     Reason = "csr_malformed"
	ReasonCSRSignature     Reason = "csr_signature"
	ReasonCSRIsCA          Reason = "csr_is_ca"
	ReasonCSRKey           Reason = "csr_key"
	ReasonTTLTooLong       Reason = "ttl_too_long"
	ReasonSigningFailed    Reason = "signing_failed"
	ReasonAuditFailed      Reason = "audit_failed"
	ReasonClosed           Reason = "closed"
	ReasonBadRequest       Reason = "bad_request"
)

// RefusalError is returned when an issuance is refused. Err is one of the
// sentinels above; Detail is safe to show to the client.
type RefusalError struct {
	Reason Reason
	Detail string
	Err    error
}

// Error implements error.
func (e *RefusalError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("%v (%s)", e.Err, e.Reason)
	}
	return fmt.Sprintf("%v (%s): %s", e.Err, e.Reason, e.Detail)
}

// Unwrap returns the sentinel.
func (e *RefusalError) Unwrap() error { return e.Err }

func refuse(reason Reason, sentinel error, format string, args ...any) *RefusalError {
	return &RefusalError{Reason: reason, Err: sentinel, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the refusal reason carried by err, or "" when err is not
// a *RefusalError.
func ReasonOf(err error) Reason {
	var re *RefusalError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}

// IdentityError says why a SPIFFE identity was refused.
type IdentityError struct {
	Value   string
	Problem string
}

// Error implements error.
func (e *IdentityError) Error() string {
	if e.Value == "" {
		return "pki: identity: " + e.Problem
	}
	return fmt.Sprintf("pki: identity %q: %s", e.Value, e.Problem)
}

// ConfigError names the Config field that Validate refused. It unwraps to
// ErrInvalidConfig.
type ConfigError struct {
	Field   string
	Problem string
}

// Error implements error.
func (e *ConfigError) Error() string {
	return fmt.Sprintf("pki: config field %s: %s", e.Field, e.Problem)
}

// Unwrap returns ErrInvalidConfig.
func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }
