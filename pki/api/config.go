package api

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/pki"
)

// Config configures a Server. Start from DefaultConfig.
type Config struct {
	// NodeIdentity is the SPIFFE identity of the server certificate the
	// CA issues for this node. Default: spiffe://<td>/ns/meshgate-system/sa/meshgate
	// (filled in by NewServer from the CA's trust domain when zero).
	NodeIdentity pki.Identity
	// DNSNames of the server certificate. Default ["istiod.istio-system.svc",
	// "localhost"]: Istio agents on VMs reach the CA under istiod's name.
	DNSNames []string
	// IPAddresses of the server certificate. Default 127.0.0.1 and ::1.
	IPAddresses []net.IP
	// GetCertificate, when set, supplies the server certificate instead
	// (the node may share its own); NodeIdentity/DNSNames/IPAddresses are
	// then unused.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)

	// CFSSLAuthKey is the cfssl "standard" auth key for /api/v1/cfssl/authsign:
	// hex, "env:VAR" or "file:PATH" (as in cfssl's config). Whoever holds
	// it may obtain any identity of the trust domain. Default "": authsign
	// is disabled.
	CFSSLAuthKey string
	// AdminKey authorizes the token endpoints as "Authorization: Bearer
	// <key>" (same encodings as CFSSLAuthKey; compared in constant time).
	// Default "": only AdminIdentities may administer tokens.
	AdminKey string
	// AdminIdentities may administer tokens with their client certificate.
	// Default none.
	AdminIdentities []pki.Identity

	// MaxBodyBytes bounds a request body or gRPC message. Default 64 KiB.
	MaxBodyBytes int
	// HandshakeTimeout bounds the TLS handshake, from accept: a connection
	// that has not finished it by then (a silent socket) is closed, which
	// frees its slots. Default 5s.
	HandshakeTimeout time.Duration
	// ReadHeaderTimeout bounds reading HTTP request headers. Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle HTTP connections. Default 2m.
	IdleTimeout time.Duration
	// MaxConcurrentStreams per gRPC connection. Default 256.
	MaxConcurrentStreams uint32
	// StreamWorkers is the number of long-lived goroutines that run gRPC
	// calls. Reusing them avoids growing a fresh goroutine stack through
	// the signing code on every call (runtime.morestack), which costs as
	// much as the rest of the gRPC layer. Default 32; 0 spawns a goroutine
	// per call.
	StreamWorkers uint32
	// MaxHandshakes bounds TLS handshakes in progress; a connection
	// accepted beyond it is closed at once (handshake_limit), never queued
	// behind the others. Default 1024.
	MaxHandshakes int
	// MaxHandshakesPerRemote bounds the handshakes in progress from one
	// remote IP address, so that silent sockets from some addresses cannot
	// take the slots others need (remote_handshake_limit). Default 32;
	// 0 disables the per-address bound.
	MaxHandshakesPerRemote int
	// MaxConns bounds the open connections of the listener (handshaking
	// or served); one beyond it is closed at once (conn_limit). Keep it
	// below the process's open-file limit. Default 8192; 0 disables.
	MaxConns int
	// MaxConnsPerRemote bounds the open connections from one remote IP
	// address (remote_conn_limit), so that one address cannot take every
	// connection slot. Default 1024; 0 disables.
	MaxConnsPerRemote int
	// ShutdownTimeout bounds the graceful stop when Serve's context ends.
	// Default 5s.
	ShutdownTimeout time.Duration

	// Routes are extra HTTP handlers served on the API port, by ServeMux
	// pattern, for callers that authenticate with their TLS client
	// certificate: the server asks for one but does not verify it, so a
	// handler must check r.TLS.PeerCertificates itself. Default none.
	Routes map[string]http.Handler

	// Registrar keeps the endpoints workloads register with their own
	// certificate (PUT/DELETE /v1/workload/endpoints), each checked
	// against the workload group bound to the certificate's identity.
	// Default nil: those routes answer 404 (disabled).
	Registrar EndpointRegistrar

	// Logger receives server events. nil discards.
	Logger *slog.Logger
	// Registerer receives the server's metrics. nil does not register.
	Registerer prometheus.Registerer
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		DNSNames:               []string{"istiod.istio-system.svc", "localhost"},
		IPAddresses:            []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		MaxBodyBytes:           64 << 10,
		HandshakeTimeout:       5 * time.Second,
		ReadHeaderTimeout:      10 * time.Second,
		IdleTimeout:            2 * time.Minute,
		MaxConcurrentStreams:   256,
		StreamWorkers:          32,
		MaxHandshakes:          1024,
		MaxHandshakesPerRemote: 32,
		MaxConns:               8192,
		MaxConnsPerRemote:      1024,
		ShutdownTimeout:        5 * time.Second,
	}
}

// ConfigError names the Config field Validate refused.
type ConfigError struct {
	Field   string
	Problem string
}

// Error implements error.
func (e *ConfigError) Error() string {
	return fmt.Sprintf("api: config field %s: %s", e.Field, e.Problem)
}

// Validate checks the fields.
func (c Config) Validate() error {
	bad := func(f, format string, args ...any) error {
		return &ConfigError{Field: f, Problem: fmt.Sprintf(format, args...)}
	}
	if c.MaxBodyBytes < 4<<10 || c.MaxBodyBytes > 16<<20 {
		return bad("MaxBodyBytes", "%d is outside [4KiB, 16MiB]", c.MaxBodyBytes)
	}
	if c.HandshakeTimeout <= 0 {
		return bad("HandshakeTimeout", "%v is not positive", c.HandshakeTimeout)
	}
	if c.ReadHeaderTimeout <= 0 {
		return bad("ReadHeaderTimeout", "%v is not positive", c.ReadHeaderTimeout)
	}
	if c.IdleTimeout <= 0 {
		return bad("IdleTimeout", "%v is not positive", c.IdleTimeout)
	}
	if c.MaxConcurrentStreams == 0 {
		return bad("MaxConcurrentStreams", "must be at least 1")
	}
	if c.MaxHandshakes < 1 {
		return bad("MaxHandshakes", "must be at least 1")
	}
	if c.MaxHandshakesPerRemote < 0 {
		return bad("MaxHandshakesPerRemote", "%d is negative", c.MaxHandshakesPerRemote)
	}
	if c.MaxConns < 0 {
		return bad("MaxConns", "%d is negative", c.MaxConns)
	}
	if c.MaxConnsPerRemote < 0 {
		return bad("MaxConnsPerRemote", "%d is negative", c.MaxConnsPerRemote)
	}
	if c.ShutdownTimeout <= 0 {
		return bad("ShutdownTimeout", "%v is not positive", c.ShutdownTimeout)
	}
	if c.GetCertificate == nil && len(c.DNSNames) == 0 && len(c.IPAddresses) == 0 {
		return bad("DNSNames", "the server certificate needs a DNS name or an IP address (or set GetCertificate)")
	}
	return nil
}
