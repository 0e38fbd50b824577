package sni

import (
	"errors"
	"net"
	"time"
)

// Sentinel errors returned by Peek and ParseHello. Each maps to a refusal
// reason (see Reason).
var (
	// ErrNotTLS means the first bytes are not a TLS handshake record.
	ErrNotTLS = errors.New("sni: not a TLS handshake")
	// ErrNoSNI means the ClientHello carries no server_name extension.
	ErrNoSNI = errors.New("sni: ClientHello has no server_name")
	// ErrTooLarge means the ClientHello exceeds Limits.MaxBytes.
	ErrTooLarge = errors.New("sni: ClientHello exceeds size limit")
	// ErrTimeout means the ClientHello did not arrive within Limits.Timeout.
	ErrTimeout = errors.New("sni: timed out reading ClientHello")
)

// Limits bound how much a client may make Peek read and wait.
type Limits struct {
	// MaxBytes caps the ClientHello (all records). Default 64 KiB.
	MaxBytes int
	// Timeout is the deadline for the whole hello. Default 5s.
	Timeout time.Duration
}

// DefaultLimits returns 64 KiB and 5 s.
func DefaultLimits() Limits { return Limits{MaxBytes: 64 << 10, Timeout: 5 * time.Second} }

// Hello is what routing needs from a ClientHello.
type Hello struct {
	ServerName string   // lower-cased, validated
	ALPN       []string // application_layer_protocol_negotiation, in client order
}

// Peek reads one TLS ClientHello from c without consuming it. It stops at
// lim.MaxBytes or lim.Timeout. The returned conn replays the peeked bytes
// before reading more from c.
func Peek(c net.Conn, lim Limits) (*Hello, net.Conn, error) {
	panic("sni: Peek not implemented yet")
}
