package mtls

import (
	"errors"
	"fmt"
)

// ErrPeerRefused: the peer's certificate did not verify or its identity
// is not authorized. Every PeerError unwraps to it.
var ErrPeerRefused = errors.New("mtls: peer refused")

// PeerError says why a peer was refused: which identity (if one was read)
// and what was wrong.
type PeerError struct {
	Identity string
	Problem  string
	Err      error
}

// Error implements error.
func (e *PeerError) Error() string {
	msg := "mtls: peer"
	if e.Identity != "" {
		msg += " " + e.Identity
	}
	msg += " refused: " + e.Problem
	if e.Err != nil {
		msg = fmt.Sprintf("%s: %v", msg, e.Err)
	}
	return msg
}

// Unwrap returns ErrPeerRefused and the cause.
func (e *PeerError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrPeerRefused, e.Err}
	}
	return []error{ErrPeerRefused}
}
