package catalog

import (
	"errors"
	"fmt"
)

// Errors callers branch on with errors.Is.
var (
	// ErrClosed is returned after Close or Leave.
	ErrClosed = errors.New("catalog: closed")
	// ErrInvalidEndpoint means a registration failed validation; the error
	// is an *EndpointError naming the field.
	ErrInvalidEndpoint = errors.New("catalog: invalid endpoint")
	// ErrNotFound means no registration has the given ID.
	ErrNotFound = errors.New("catalog: no such endpoint")
	// ErrTooMany means the node already owns MaxEndpoints registrations.
	ErrTooMany = errors.New("catalog: too many endpoints")
	// ErrBadMessage means a gossip message or node meta could not be decoded.
	ErrBadMessage = errors.New("catalog: malformed message")
	// ErrMetaTooLarge means the node meta exceeds memberlist's 512 bytes.
	ErrMetaTooLarge = errors.New("catalog: node meta too large")
	// ErrJoin means no peer could be joined before the context ended.
	ErrJoin = errors.New("catalog: join failed")
	// ErrKey means a gossip key is not 16, 24 or 32 bytes, or a keyring
	// operation is not allowed (removing the primary key).
	ErrKey = errors.New("catalog: bad gossip key")
	// ErrAddr means a bind or advertise address (or its template) is bad.
	ErrAddr = errors.New("catalog: bad address")
	// ErrSign means the Signer failed or returned something unusable.
	ErrSign = errors.New("catalog: cannot sign record")
	// ErrReserved means a registration points at one of this node's own
	// listeners; the error is an *EndpointError naming the listener.
	ErrReserved = errors.New("catalog: address is one of this node's listeners")
)

// EndpointError says which field of a registration was refused.
type EndpointError struct {
	ID     string
	Field  string
	Reason string

	reserved bool
}

func (e *EndpointError) Error() string {
	return fmt.Sprintf("catalog: endpoint %q: %s: %s", e.ID, e.Field, e.Reason)
}

// Unwrap makes errors.Is(err, ErrInvalidEndpoint) hold, and
// errors.Is(err, ErrReserved) for an address of this node's listeners.
func (e *EndpointError) Unwrap() []error {
	if e.reserved {
		return []error{ErrInvalidEndpoint, ErrReserved}
	}
	return []error{ErrInvalidEndpoint}
}
