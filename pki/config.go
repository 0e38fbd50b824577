package pki

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// KeyAlgorithm selects the key type of a self-signed root.
type KeyAlgorithm string

// Root key algorithms.
const (
	// ECDSAP256 is the default: about 7x cheaper to sign with than RSA-2048.
	ECDSAP256 KeyAlgorithm = "ecdsa-p256"
	// RSA2048 matches Istio's self-signed root (CITADEL_SELF_SIGNED_CA_RSA_KEY_SIZE).
	RSA2048 KeyAlgorithm = "rsa-2048"
)

// Config configures a CA. Start from DefaultConfig and change what differs.
type Config struct {
	// TrustDomain of every identity the CA issues, and the root's O=.
	// Default "cluster.local".
	TrustDomain string

	// KeyAlgorithm of a self-signed root made on first bootstrap.
	// Default ECDSAP256.
	KeyAlgorithm KeyAlgorithm
	// RootTTL is the lifetime of a self-signed root. Default 10 years.
	RootTTL time.Duration
	// Bootstrap lets NewCA create a self-signed root when the store holds
	// no CA and PluginDir is empty. Default true; false makes NewCA fail
	// with ErrNoCA instead (a node that must join an existing CA).
	Bootstrap bool
	// PluginDir, when set, is a directory with Istio's plug-in CA files
	// (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem). They are
	// imported into the store when it holds no CA, and replace the stored
	// CA when ca-cert.pem differs from it. Default "" (self-signed).
	PluginDir string

	// KEKFile is a file holding the 32-byte key-encryption key (64 hex
	// characters or standard base64) that seals the CA key in the store.
	// It must not be readable by group or others (0600). One of KEKFile
	// and KEKEnv is required: the CA key is never stored in plain text.
	KEKFile string
	// KEKEnv names an environment variable holding the key-encryption key
	// in the same encoding. Used when KEKFile is empty.
	KEKEnv string

	// DefaultTTL of a workload certificate when the request asks for none
	// (or for <= 0). Default 24h.
	DefaultTTL time.Duration
	// MaxTTL is the longest lifetime a request may ask for; longer
	// requests are refused, not shortened. Default 90 days.
	MaxTTL time.Duration
	// Backdate is subtracted from "now" for NotBefore to absorb clock
	// skew. Default 2 minutes (as Istio).
	Backdate time.Duration
	// MaxCSRBytes bounds the PEM CSR accepted. Default 16 KiB.
	MaxCSRBytes int

	// RateLimit is the sustained issuance rate in certificates per second
	// across all callers of this CA (a token bucket). Default 2000;
	// 0 disables rate limiting.
	RateLimit float64
	// RateBurst is the token bucket's size. Default 4000.
	RateBurst int

	// NodeID names this CA instance in audit records and in the per-node
	// token use counters. Default "local".
	NodeID string
	// AuditMaxBatch caps how many audit records one store write carries.
	// Default 512.
	AuditMaxBatch int
	// AuditQueue bounds the records waiting for the audit writer; when it
	// is full, issuance waits (back-pressure). Default 4096.
	AuditQueue int
	// AuditTimeout bounds one audit store write. Default 10s.
	AuditTimeout time.Duration
	// AuditLinger is how long a batch of audit records may wait for the
	// records of issuances already in progress before it is written, so
	// that a busy CA pays one store write (an fsync, a raft round) for
	// many certificates. Batches wait only while other issuances are in
	// progress, and only when store writes are slow enough for sharing
	// them to matter (the previous write took 100µs or more; an in-memory
	// store never waits). Default 1ms; 0 writes each batch as soon as a
	// record is queued.
	AuditLinger time.Duration

	// Logger receives CA events. nil discards.
	Logger *slog.Logger
	// Registerer receives the CA's metrics. nil does not register.
	Registerer prometheus.Registerer
}

// DefaultConfig returns the documented defaults. KEKFile/KEKEnv must still
// be set.
func DefaultConfig() Config {
	return Config{
		TrustDomain:   "cluster.local",
		KeyAlgorithm:  ECDSAP256,
		RootTTL:       10 * 365 * 24 * time.Hour,
		Bootstrap:     true,
		DefaultTTL:    24 * time.Hour,
		MaxTTL:        90 * 24 * time.Hour,
		Backdate:      2 * time.Minute,
		MaxCSRBytes:   16 << 10,
		RateLimit:     2000,
		RateBurst:     4000,
		NodeID:        "local",
		AuditMaxBatch: 512,
		AuditQueue:    4096,
		AuditTimeout:  10 * time.Second,
		AuditLinger:   time.Millisecond,
	}
}

// Validate checks every field and returns a *ConfigError naming the first
// bad one.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Problem: fmt.Sprintf(format, args...)}
	}
	if err := ValidateTrustDomain(c.TrustDomain); err != nil {
		return bad("TrustDomain", "%v", err)
	}
	switch c.KeyAlgorithm {
	case ECDSAP256, RSA2048:
	default:
		return bad("KeyAlgorithm", "%q is not one of %q, %q", c.KeyAlgorithm, ECDSAP256, RSA2048)
	}
	if c.RootTTL < 24*time.Hour {
		return bad("RootTTL", "%v is shorter than 24h", c.RootTTL)
	}
	if c.KEKFile == "" && c.KEKEnv == "" {
		return bad("KEKFile", "one of KEKFile and KEKEnv is required (the CA key is never stored in plain text)")
	}
	if c.DefaultTTL <= 0 {
		return bad("DefaultTTL", "%v is not positive", c.DefaultTTL)
	}
	if c.MaxTTL < c.DefaultTTL {
		return bad("MaxTTL", "%v is shorter than DefaultTTL %v", c.MaxTTL, c.DefaultTTL)
	}
	if c.Backdate < 0 || c.Backdate > time.Hour {
		return bad("Backdate", "%v is outside [0, 1h]", c.Backdate)
	}
	if c.MaxCSRBytes < 512 || c.MaxCSRBytes > 1<<20 {
		return bad("MaxCSRBytes", "%d is outside [512, 1MiB]", c.MaxCSRBytes)
	}
	if c.RateLimit < 0 {
		return bad("RateLimit", "%v is negative", c.RateLimit)
	}
	if c.RateLimit > 0 && c.RateBurst < 1 {
		return bad("RateBurst", "%d must be at least 1 when RateLimit is set", c.RateBurst)
	}
	if !isDNSName(c.NodeID, 253, true) {
		return bad("NodeID", "%q is not a DNS-1123 name", c.NodeID)
	}
	if c.AuditMaxBatch < 1 {
		return bad("AuditMaxBatch", "%d is less than 1", c.AuditMaxBatch)
	}
	if c.AuditQueue < 1 {
		return bad("AuditQueue", "%d is less than 1", c.AuditQueue)
	}
	if c.AuditTimeout <= 0 {
		return bad("AuditTimeout", "%v is not positive", c.AuditTimeout)
	}
	if c.AuditLinger < 0 || c.AuditLinger > time.Second {
		return bad("AuditLinger", "%v is outside [0, 1s]", c.AuditLinger)
	}
	return nil
}

// Option changes how NewCA builds a CA (for tests and embedding).
type Option interface{ apply(*options) }

type options struct {
	now func() time.Time
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithClock makes the CA read the time from now instead of time.Now: token
// expiry, certificate validity, audit timestamps and the rate limiter all
// use it. now must be safe for concurrent use.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(o *options) { o.now = now })
}
