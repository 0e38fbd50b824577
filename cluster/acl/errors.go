package acl

import "errors"

// Errors callers branch on with errors.Is.
var (
	// ErrNoCredential means a request that needs a token carried none.
	ErrNoCredential = errors.New("acl: no admin token")
	// ErrMalformed means a presented credential or a stored record could
	// not be decoded; the error says which part was wrong.
	ErrMalformed = errors.New("acl: malformed admin token")
	// ErrUnknownToken means no stored token matches the presented secret:
	// it was revoked or never issued.
	ErrUnknownToken = errors.New("acl: unknown admin token (revoked or never issued)")
	// ErrExpired means the token's expiry has passed.
	ErrExpired = errors.New("acl: admin token expired")
	// ErrScope means the token lacks the scope the request needs.
	ErrScope = errors.New("acl: admin token lacks the scope")
	// ErrNotFound means no token has the given ID.
	ErrNotFound = errors.New("acl: no such token")
	// ErrInvalid means a token request (scopes, restrictions, TTL) is not
	// usable; the error names the field.
	ErrInvalid = errors.New("acl: invalid token request")
	// ErrRegistration means a registration names an undeclared service or
	// claims a subset its token does not allow.
	ErrRegistration = errors.New("acl: registration not allowed")
)
