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
	// across all callers of this CA (a token bucket). Only requests whose
	// caller authenticated spend it, after the caller's own limit
	// (CallerRateLimit), so that a flood of bad credentials cannot use it
	// up. Default 2000; 0 disables rate limiting.
	RateLimit float64
	// RateBurst is the token bucket's size. Default 4000.
	RateBurst int
	// CallerRateLimit is each authenticated caller's sustained rate of
	// requests per second: one bucket per token ID, per client-certificate
	// identity (renewals) and per operator. It is spent by every request
	// that authenticated, refused or not, before the global RateLimit.
	// Default 50; 0 disables per-caller limits.
	CallerRateLimit float64
	// CallerRateBurst is the size of each caller's bucket. Default 100.
	CallerRateBurst int
	// FailureRateLimit is how many refused requests per second one remote
	// address (IP, without the port) may make: every refusal (bad or
	// unknown token, bad client certificate, malformed body or CSR, ...)
	// spends its bucket, and while the bucket is empty that address's
	// requests are refused before authentication (rate_limited), so a
	// flood from some addresses costs the CA little and never touches the
	// budget of callers elsewhere. Default 20; 0 disables.
	FailureRateLimit float64
	// FailureRateBurst is the size of each address's failure bucket.
	// Default 100.
	FailureRateBurst int
	// LimiterMaxKeys bounds each limiter table (callers, addresses); the
	// least recently seen key is forgotten when it is full. Default 65536
	// (about 10 MiB per table at most).
	LimiterMaxKeys int
	// RefusalLogPerMinute is how many refusals of unauthenticated requests
	// are logged per minute (Warn); the others are only counted
	// (meshgate_pki_refused_total). Such refusals are never written to the
	// replicated audit log. Default 10; 0 logs none.
	RefusalLogPerMinute int

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
	// AuditMaxRecords is how many audit records this node keeps in the
	// store (its own records; each node prunes only its own). The oldest
	// batches are deleted from the store, in the same write as a new one,
	// once there are more; a raft snapshot then no longer holds them.
	// Default 100000; 0 keeps every record.
	AuditMaxRecords int
	// AuditMaxAge is how long this node's audit records are kept; older
	// batches are deleted with the next audit write. Default 30 days;
	// 0 keeps records of any age.
	AuditMaxAge time.Duration

	// Logger receives CA events. nil discards.
	Logger *slog.Logger
	// Registerer receives the CA's metrics. nil does not register.
	Registerer prometheus.Registerer
}

// DefaultConfig returns the documented defaults. KEKFile/KEKEnv must still
// be set.
func DefaultConfig() Config {
	return Config{
		TrustDomain:  "cluster.local",
		KeyAlgorithm: ECDSAP256,
		RootTTL:      10 * 365 * 24 * time.Hour,
		Bootstrap:    true,
		DefaultTTL:   24 * time.Hour,
		MaxTTL:       90 * 24 * time.Hour,
		Backdate:     2 * time.Minute,
		MaxCSRBytes:  16 << 10,
		RateLimit:    2000,
		RateBurst:    4000,

		CallerRateLimit:     50,
		CallerRateBurst:     100,
		FailureRateLimit:    20,
		FailureRateBurst:    100,
		LimiterMaxKeys:      65536,
		RefusalLogPerMinute: 10,
		AuditMaxRecords:     100000,
		AuditMaxAge:         30 * 24 * time.Hour,

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
	if c.CallerRateLimit < 0 {
		return bad("CallerRateLimit", "%v is negative", c.CallerRateLimit)
	}
	if c.CallerRateLimit > 0 && c.CallerRateBurst < 1 {
		return bad("CallerRateBurst", "%d must be at least 1 when CallerRateLimit is set", c.CallerRateBurst)
	}
	if c.FailureRateLimit < 0 {
		return bad("FailureRateLimit", "%v is negative", c.FailureRateLimit)
	}
	if c.FailureRateLimit > 0 && c.FailureRateBurst < 1 {
		return bad("FailureRateBurst", "%d must be at least 1 when FailureRateLimit is set", c.FailureRateBurst)
	}
	if (c.CallerRateLimit > 0 || c.FailureRateLimit > 0) && c.LimiterMaxKeys < limiterShards {
		return bad("LimiterMaxKeys", "%d is less than %d", c.LimiterMaxKeys, limiterShards)
	}
	if c.RefusalLogPerMinute < 0 {
		return bad("RefusalLogPerMinute", "%d is negative", c.RefusalLogPerMinute)
	}
	if c.AuditMaxRecords < 0 {
		return bad("AuditMaxRecords", "%d is negative", c.AuditMaxRecords)
	}
	if c.AuditMaxAge < 0 {
		return bad("AuditMaxAge", "%v is negative", c.AuditMaxAge)
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
