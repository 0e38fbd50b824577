package vm

import "errors"

// Errors callers branch on. Each is wrapped with the file or address it
// concerns and what to do.
var (
	// ErrBundle: the bundle directory is missing a file or holds one that
	// does not parse.
	ErrBundle = errors.New("vm: bad bundle")
	// ErrTrustDomain: the bundle, or the certificate in the cert dir, is
	// for another trust domain than the gateway's.
	ErrTrustDomain = errors.New("vm: trust domain mismatch")
	// ErrRootMismatch: the bundle's root-cert.pem does not verify the
	// gateway's certificate API.
	ErrRootMismatch = errors.New("vm: bundle root does not match the gateway")
	// ErrTokenSpent: there is no usable certificate yet and the CA refused
	// the join token (spent, expired or revoked: the CA does not say which).
	ErrTokenSpent = errors.New("vm: token spent or expired")
	// ErrCertDir: the cert dir cannot be read or written.
	ErrCertDir = errors.New("vm: cert dir unusable")
	// ErrRegister: the gateway refused a registration (credential or
	// content); retrying will not help.
	ErrRegister = errors.New("vm: registration refused")
	// ErrInvalid: a request or configuration field is not usable.
	ErrInvalid = errors.New("vm: invalid")
)
