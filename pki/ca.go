package pki

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// CA is the built-in certificate authority. It signs with cfssl's local
// signer and keeps all of its state in a Store. Every method is safe for
// concurrent use; Close stops the audit writer and waits for it.
type CA struct {
	cfg   Config
	store Store
	kek   *kek
	now   func() time.Time
	log   *slog.Logger
	m     *metrics

	state   atomic.Pointer[signingState]
	limiter *bucket
	// callers and failures are the per-caller and per-remote-address
	// limiters (nil: off); refusalLog samples refusal log lines.
	callers    *keyedLimiter
	failures   *keyedLimiter
	refusalLog *bucket
	audit      *auditor

	tokMu  sync.Mutex // guards tokens
	tokens map[string]*tokenState

	rotMu sync.Mutex // serializes Rotate and Reload

	life lifecycle // certificate records, revocations, CRL

	closeOnce sync.Once
	closed    atomic.Bool
}

// NewCA opens the CA kept in store, creating it on first use: from the
// Istio plug-in files in cfg.PluginDir, or, when that is empty and
// cfg.Bootstrap is set, as a self-signed root. When several nodes
// bootstrap at once, the first write wins and the others load it.
func NewCA(ctx context.Context, cfg Config, store Store, opts ...Option) (*CA, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, &ConfigError{Field: "store", Problem: "nil Store"}
	}
	o := options{now: time.Now}
	for _, opt := range opts {
		opt.apply(&o)
	}
	k, err := loadKEK(cfg)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ca := &CA{
		cfg:    cfg,
		store:  store,
		kek:    k,
		now:    o.now,
		log:    log.With("component", "pki"),
		m:      newMetrics(cfg.Registerer),
		tokens: map[string]*tokenState{},
	}
	st, err := ca.loadOrCreate(ctx)
	if err != nil {
		return nil, err
	}
	ca.state.Store(st)
	if cfg.RateLimit > 0 {
		ca.limiter = newBucket(cfg.RateLimit, cfg.RateBurst, ca.now())
	}
	ca.callers = newKeyedLimiter(cfg.CallerRateLimit, cfg.CallerRateBurst, cfg.LimiterMaxKeys)
	ca.failures = newKeyedLimiter(cfg.FailureRateLimit, cfg.FailureRateBurst, cfg.LimiterMaxKeys)
	ca.refusalLog = newBucket(float64(cfg.RefusalLogPerMinute)/60, cfg.RefusalLogPerMinute, ca.now())
	ca.audit = newAuditor(cfg, store, ca.now, ca.log, ca.m)
	ca.life.init(cfg.Registerer)
	ca.audit.extraOps = ca.batchOps
	if _, err := ca.ReloadRevocations(ctx); err != nil {
		ca.audit.close()
		return nil, err
	}
	ca.log.Info("CA ready", "source", st.source, "trust_domain", cfg.TrustDomain,
		"signing_subject", st.cert.Subject.String(), "not_after", st.cert.NotAfter, "roots", len(st.roots))
	return ca, nil
}

func (ca *CA) loadOrCreate(ctx context.Context) (*signingState, error) {
	now := ca.now()
	raw, err := ca.store.Get(ctx, keyState)
	switch {
	case err == nil:
		st, err := openState(raw, ca.kek, now)
		if err != nil {
			return nil, err
		}
		if ca.cfg.PluginDir == "" {
			return st, nil
		}
		p, err := LoadPluginCA(ca.cfg.PluginDir)
		if err != nil {
			return nil, err
		}
		if bytes.Equal(p.Cert.Raw, st.cert.Raw) && samePluginRoots(p, st) {
			return st, nil
		}
		ca.log.Warn("plug-in CA files differ from the stored CA; replacing it", "dir", ca.cfg.PluginDir)
		return ca.importPlugin(ctx, p, false)
	case !errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("pki: read CA state: %w", err)
	}
	if ca.cfg.PluginDir != "" {
		p, err := LoadPluginCA(ca.cfg.PluginDir)
		if err != nil {
			return nil, err
		}
		return ca.importPlugin(ctx, p, true)
	}
	if !ca.cfg.Bootstrap {
		return nil, ErrNoCA
	}
	key, root, err := newSelfSignedRoot(ca.cfg, now)
	if err != nil {
		return nil, err
	}
	raw, err = sealState(ca.kek, key, sourceSelfSigned, now, root, nil, root, nil)
	if err != nil {
		return nil, err
	}
	return ca.create(ctx, raw)
}

func (ca *CA) importPlugin(ctx context.Context, p *PluginCA, create bool) (*signingState, error) {
	// Other roots of root-cert.pem stay trusted for as long as they are
	// valid, or until the operator takes them out of the file.
	var others []prevRoot
	for _, r := range p.OtherRoots {
		others = append(others, prevRoot{Cert: certPEM(r), RetireAfter: r.NotAfter.UTC()})
	}
	raw, err := sealState(ca.kek, p.Key, sourcePlugin, ca.now(), p.Cert, p.Chain, p.Root, others)
	if err != nil {
		return nil, err
	}
	if create {
		return ca.create(ctx, raw)
	}
	st, err := openState(raw, ca.kek, ca.now())
	if err != nil {
		return nil, err
	}
	if err := put(ctx, ca.store, keyState, raw); err != nil {
		return nil, fmt.Errorf("pki: store CA state: %w", err)
	}
	return st, nil
}

// create writes a new CA state unless one appeared meanwhile, in which
// case that one is loaded.
func (ca *CA) create(ctx context.Context, raw []byte) (*signingState, error) {
	st, err := openState(raw, ca.kek, ca.now())
	if err != nil {
		return nil, err
	}
	err = ca.store.Apply(ctx, []Op{{Key: keyState, Value: raw, IfAbsent: true}})
	if errors.Is(err, ErrConflict) {
		raw, err := ca.store.Get(ctx, keyState)
		if err != nil {
			return nil, fmt.Errorf("pki: read CA state: %w", err)
		}
		return openState(raw, ca.kek, ca.now())
	}
	if err != nil {
		return nil, fmt.Errorf("pki: store CA state: %w", err)
	}
	ca.log.Info("CA created", "source", st.source, "subject", st.cert.Subject.String())
	return st, nil
}

// Reload re-reads the CA state from the store (after another node
// rotated the root or replaced the plug-in CA, or to retire a previous
// root whose time has come). The node calls it when the store reports a
// change under "pki/ca/" and from time to time (say hourly); Issue also
// calls it when a previous root is due to retire. It is cheap when
// nothing changed.
func (ca *CA) Reload(ctx context.Context) error {
	ca.rotMu.Lock()
	defer ca.rotMu.Unlock()
	raw, err := ca.store.Get(ctx, keyState)
	if err != nil {
		return fmt.Errorf("pki: read CA state: %w", err)
	}
	cur := ca.state.Load()
	now := ca.now()
	if bytes.Equal(raw, cur.raw) && !cur.retireDue(now) {
		return nil
	}
	st, err := openState(raw, ca.kek, now)
	if err != nil {
		return err
	}
	ca.state.Store(st)
	ca.log.Info("CA reloaded", "subject", st.cert.Subject.String(), "roots", len(st.roots))
	return nil
}

func (s *signingState) retireDue(now time.Time) bool {
	for _, t := range s.retire {
		if !now.Before(t) {
			return true
		}
	}
	return false
}

// Close stops the audit writer after committing what it holds. Issue
// calls made after Close fail with ErrClosed. Idempotent.
func (ca *CA) Close() error {
	ca.closeOnce.Do(func() {
		ca.closed.Store(true)
		ca.audit.close()
	})
	return nil
}

// TrustDomain returns the CA's trust domain.
func (ca *CA) TrustDomain() string { return ca.cfg.TrustDomain }

// Roots returns the trust bundle: the current root first, then previous
// roots that are not yet retired.
func (ca *CA) Roots() []*x509.Certificate {
	return append([]*x509.Certificate(nil), ca.state.Load().roots...)
}

// RootsPEM returns Roots as PEM, one certificate per string.
func (ca *CA) RootsPEM() []string {
	return append([]string(nil), ca.state.Load().rootsPEM...)
}

// RootPool returns a new pool holding the trust bundle.
func (ca *CA) RootPool() *x509.CertPool {
	return ca.state.Load().rootPool.Clone()
}

// Info describes the CA for display (meshgate ca show).
type Info struct {
	TrustDomain string
	// Source is "self-signed" or "plugin".
	Source    string
	CreatedAt time.Time
	// Signing is the certificate that signs leaves.
	Signing *x509.Certificate
	// Chain are the certificates between Signing and the current root.
	Chain []*x509.Certificate
	// Roots is the trust bundle, current root first.
	Roots []*x509.Certificate
	// RetireAfter gives, for Roots[1:], when each previous root leaves the
	// bundle.
	RetireAfter []time.Time
	// SigningCertPEM is Signing in PEM (what cfssl info reports).
	SigningCertPEM string
}

// Info returns a description of the current CA.
func (ca *CA) Info() Info {
	st := ca.state.Load()
	return Info{
		TrustDomain:    ca.cfg.TrustDomain,
		Source:         st.source,
		CreatedAt:      st.created,
		Signing:        st.cert,
		Chain:          append([]*x509.Certificate(nil), st.chain...),
		Roots:          append([]*x509.Certificate(nil), st.roots...),
		RetireAfter:    append([]time.Time(nil), st.retire...),
		SigningCertPEM: certPEM(st.cert),
	}
}

// Config returns the configuration the CA was built with.
func (ca *CA) Config() Config { return ca.cfg }

// samePluginRoots reports whether st already trusts exactly the roots of
// the plug-in files (a root added to or removed from root-cert.pem is a
// change, as in a plug-in root rotation).
func samePluginRoots(p *PluginCA, st *signingState) bool {
	want := append([]*x509.Certificate{p.Root}, p.OtherRoots...)
	if len(want) != len(st.roots) {
		return false
	}
	for _, r := range want {
		if !slices.ContainsFunc(st.roots, r.Equal) {
			return false
		}
	}
	return true
}
