package cluster

import (
	"errors"
	"fmt"
)

// Errors callers branch on with errors.Is.
var (
	// ErrClosed is returned by every method of a Node after Close or Leave.
	ErrClosed = errors.New("cluster: node closed")
	// ErrNoLeader means no leader is known right now (an election is running
	// or quorum is lost). Retrying later may succeed.
	ErrNoLeader = errors.New("cluster: no leader")
	// ErrNotLeader is returned by leader-only operations on a follower.
	ErrNotLeader = errors.New("cluster: not the leader")
	// ErrConflict means a Check operation in a batch did not hold; nothing
	// in the batch was written. The error is a *ConflictError.
	ErrConflict = errors.New("cluster: check failed")
	// ErrInvalidKey means a key is empty, too long or holds bytes outside
	// printable ASCII.
	ErrInvalidKey = errors.New("cluster: invalid key")
	// ErrTooLarge means a value, a batch or an encoded command exceeds its limit.
	ErrTooLarge = errors.New("cluster: too large")
	// ErrBadCommand means an encoded command could not be decoded.
	ErrBadCommand = errors.New("cluster: malformed command")
	// ErrBadSnapshot means a snapshot stream could not be decoded or its
	// checksum did not match.
	ErrBadSnapshot = errors.New("cluster: malformed snapshot")
	// ErrInvalid means a record was refused by validation before the write;
	// the error is a *ValidationError.
	ErrInvalid = errors.New("cluster: invalid record")
	// ErrForward means a write could not be carried to the leader.
	ErrForward = errors.New("cluster: forwarding to leader failed")
)

// ConflictError says which Check of a batch failed and why.
type ConflictError struct {
	Key  string
	Want uint64 // the ModIndex the check asked for (0 = absent)
	Have uint64 // the ModIndex found (0 = absent)
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("cluster: check failed for %q: want modify index %d, have %d", e.Key, e.Want, e.Have)
}

// Unwrap makes errors.Is(err, ErrConflict) hold.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// ValidationError names the record that validation refused and the reason.
type ValidationError struct {
	Key string
	Err error
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("cluster: invalid record %q: %v", e.Key, e.Err)
}

// Unwrap returns both ErrInvalid and the validator's own error, so callers
// can test for either.
func (e *ValidationError) Unwrap() []error { return []error{ErrInvalid, e.Err} }

// ForwardError is returned when a follower could not carry a write to the
// leader at Leader.
type ForwardError struct {
	Leader string
	Err    error
}

func (e *ForwardError) Error() string {
	return fmt.Sprintf("cluster: forward to leader %s: %v", e.Leader, e.Err)
}

// Unwrap returns both ErrForward and the cause.
func (e *ForwardError) Unwrap() []error { return []error{ErrForward, e.Err} }
