package api

import (
	"errors"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshgate/meshgate/pki"
)

// Sentinel errors of the API layer.
var (
	// ErrBadRequest: a request body or message could not be decoded.
	ErrBadRequest = errors.New("api: bad request")
	// ErrUnknownProfile: a cfssl request named a profile the CA does not have.
	ErrUnknownProfile = errors.New("api: unknown profile")
	// ErrForbidden: the caller may not use this endpoint.
	ErrForbidden = errors.New("api: forbidden")
	// ErrAlreadyServing: Serve was called twice on one Server.
	ErrAlreadyServing = errors.New("api: server already serving")
	// ErrDisabled: the endpoint is not configured.
	ErrDisabled = errors.New("api: endpoint disabled")
)

// codeOf maps a CA error to a gRPC code.
func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, pki.ErrUnauthenticated), errors.Is(err, pki.ErrTokenExpired), errors.Is(err, pki.ErrTokenRevoked):
		return codes.Unauthenticated
	case errors.Is(err, pki.ErrTokenUsedUp), errors.Is(err, pki.ErrPermissionDenied), errors.Is(err, ErrForbidden):
		return codes.PermissionDenied
	case errors.Is(err, pki.ErrBadCSR), errors.Is(err, pki.ErrTTLTooLong), errors.Is(err, ErrBadRequest), errors.Is(err, ErrUnknownProfile):
		return codes.InvalidArgument
	case errors.Is(err, pki.ErrRateLimited):
		return codes.ResourceExhausted
	case errors.Is(err, pki.ErrAudit), errors.Is(err, pki.ErrClosed):
		return codes.Unavailable
	case errors.Is(err, ErrDisabled):
		return codes.Unimplemented
	}
	return codes.Internal
}

// statusOf maps a CA error to an HTTP status.
func statusOf(err error) int {
	switch codeOf(err) {
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.Unimplemented:
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

// grpcError converts err for a gRPC reply. Internal errors get a generic
// message; refusals keep theirs, which is safe to show the client.
func grpcError(err error) error {
	c := codeOf(err)
	if c == codes.Internal {
		return status.Error(c, "internal error")
	}
	return status.Error(c, err.Error())
}

// publicMessage is what an HTTP client sees for err.
func publicMessage(err error) string {
	if codeOf(err) == codes.Internal {
		return "internal error"
	}
	return err.Error()
}

// reasonCode is the short machine-readable reason of an HTTP error.
func reasonCode(err error) string {
	if r := pki.ReasonOf(err); r != "" {
		return string(r)
	}
	switch {
	case errors.Is(err, ErrBadRequest):
		return "bad_request"
	case errors.Is(err, ErrUnknownProfile):
		return "unknown_profile"
	case errors.Is(err, ErrForbidden):
		return "forbidden"
	case errors.Is(err, ErrDisabled):
		return "disabled"
	case errors.Is(err, pki.ErrUnauthenticated):
		return "unauthenticated"
	case errors.Is(err, pki.ErrTokenNotFound):
		return "not_found"
	case errors.Is(err, pki.ErrInvalidToken):
		return "bad_request"
	}
	return "internal"
}
