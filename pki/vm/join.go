package vm

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/api"
	"github.com/meshgate/meshgate/pki/client"
)

// DefaultCertDir is where Istio's VM agent reads its certificates
// (PROV_CERT=OUTPUT_CERTS=/etc/certs): cert-chain.pem, key.pem and
// root-cert.pem.
const DefaultCertDir = "/etc/certs"

// Check is the health check each registration carries; the gateway runs
// it against the VM's advertised address and withdraws the endpoint while
// it fails.
type Check struct {
	// HTTPPath, if set, makes it an HTTP GET of that path on the
	// endpoint (2xx passes); "" is a TCP dial.
	HTTPPath string
	// Interval between checks; default 5s.
	Interval time.Duration
	// Timeout of one check; default 2s, at most Interval.
	Timeout time.Duration
	// Failures in a row that withdraw the endpoint; default 1.
	Failures int
}

// JoinConfig configures Join.
type JoinConfig struct {
	// BundleDir is the directory "meshgate vm bundle" wrote. Required.
	BundleDir string
	// CertDir receives cert-chain.pem, key.pem (0600) and root-cert.pem.
	// Default DefaultCertDir.
	CertDir string
	// Advertise is the VM's address as the gateway dials it: an IP, or a
	// go-sockaddr template that renders exactly one, e.g.
	// `{{ GetPrivateInterfaces | include "network" "10.0.0.0/8" | attr "address" }}`.
	// Required; never guessed.
	Advertise string
	// Check is the registrations' health check.
	Check Check
	// TTL is the registrations' lease, refreshed every TTL/3: a VM that
	// dies without withdrawing drops out after TTL. Default 30s.
	TTL time.Duration
	// CertTTL is the certificate lifetime asked for; 0 lets the CA choose.
	CertTTL time.Duration
	// RenewFraction of a certificate's lifetime after which it is renewed
	// (Istio's SECRET_GRACE_PERIOD_RATIO); default 0.5.
	RenewFraction float64
	// RetryInterval is the first wait after a failed renewal or
	// registration; it doubles up to 12 times. Default 2s.
	RetryInterval time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

// DefaultJoinConfig returns the defaults (BundleDir and Advertise unset).
func DefaultJoinConfig() JoinConfig {
	return JoinConfig{CertDir: DefaultCertDir, Check: Check{Interval: 5 * time.Second, Timeout: 2 * time.Second, Failures: 1},
		TTL: 30 * time.Second, RenewFraction: 0.5, RetryInterval: 2 * time.Second}
}

// Validate checks c after defaults are applied; the error names the field.
func (c *JoinConfig) Validate() error {
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalid, field, fmt.Sprintf(format, a...))
	}
	switch {
	case c.BundleDir == "":
		return bad("bundle dir", "required")
	case c.Advertise == "":
		return bad("advertise", "required: an IP or a go-sockaddr template the gateway can dial")
	case c.Check.Interval <= 0:
		return bad("check interval", "must be positive")
	case c.Check.Timeout <= 0 || c.Check.Timeout > c.Check.Interval:
		return bad("check timeout", "must be positive and at most the interval")
	case c.Check.Failures < 0:
		return bad("check failures", "negative")
	case c.Check.HTTPPath != "" && (c.Check.HTTPPath[0] != '/' || !pki.PrintableName(c.Check.HTTPPath, 1024)):
		return bad("check http path", "%q must start with / and be printable ASCII without spaces", c.Check.HTTPPath)
	case c.TTL < time.Second:
		return bad("ttl", "%v is shorter than 1s", c.TTL)
	case c.RenewFraction <= 0 || c.RenewFraction >= 1:
		return bad("renew fraction", "%v must be in (0, 1)", c.RenewFraction)
	case c.RetryInterval <= 0:
		return bad("retry interval", "must be positive")
	case c.CertTTL < 0:
		return bad("cert ttl", "negative")
	}
	return nil
}

func (c JoinConfig) withDefaults() JoinConfig {
	d := DefaultJoinConfig()
	if c.CertDir == "" {
		c.CertDir = d.CertDir
	}
	if c.Check.Interval == 0 {
		c.Check.Interval = d.Check.Interval
	}
	if c.Check.Timeout == 0 {
		c.Check.Timeout = min(d.Check.Timeout, c.Check.Interval)
	}
	if c.TTL == 0 {
		c.TTL = d.TTL
	}
	if c.RenewFraction == 0 {
		c.RenewFraction = d.RenewFraction
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = d.RetryInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// Workload is a joined VM: its certificate and its registrations.
type Workload struct {
	cfg    JoinConfig
	log    *slog.Logger
	bundle *Bundle
	id     pki.Identity
	ip     string
	regs   []api.WorkloadEndpointRequest // one per bundle port
	// serverName verifies the CA (the bundle's caServerName, or the name
	// Join found to verify it).
	serverName string

	mu       sync.Mutex        // guards cur, obtained, source and ids
	ids      map[uint32]string // service port -> registration ID the gateway gave
	cur      *client.Bundle
	obtained time.Time // when cur was obtained (renewal is timed from it)
	source   string    // "cert-dir", "token" or "renewal"

	noCert string // why the cert dir's certificate was not used, for errors
}

// Join prepares a VM from a bundle: it loads the bundle, resolves the
// advertised address, checks the gateway (its certificate must verify
// with the bundle's root and carry the bundle's trust domain), keeps the
// certificate in CertDir when it is valid for the bundle's identity, or
// else spends the join token for one, writes Istio's certificate files and
// registers the endpoints once. Call Run to keep them up.
//
// Errors name the file and what to do: ErrBundle, ErrTrustDomain,
// ErrRootMismatch, ErrTokenSpent, ErrCertDir, ErrRegister, ErrInvalid.
func Join(ctx context.Context, cfg JoinConfig) (*Workload, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b, err := LoadBundle(cfg.BundleDir)
	if err != nil {
		return nil, err
	}
	id, _ := b.Identity()
	ip, err := config.ResolveBindIP("advertise", cfg.Advertise)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if a, _ := netip.ParseAddr(ip); a.IsUnspecified() {
		return nil, fmt.Errorf("%w: advertise %q is the unspecified address %s: give the one address the gateway dials", ErrInvalid, cfg.Advertise, ip)
	}
	w := &Workload{cfg: cfg, log: cfg.Logger.With("identity", id.String()), bundle: b, id: id, ip: ip,
		serverName: b.CAServerName, ids: map[uint32]string{}}
	w.buildRegistrations()

	cur, err := w.loadCertDir()
	if err != nil {
		return nil, err
	}
	// The gateway must be this bundle's: its root verifies it and its
	// identity has the bundle's trust domain. With a valid certificate an
	// unreachable gateway is not fatal (Run retries); without one it is.
	pool := w.caRoots(cur)
	var td string
	var perr error
	if b.CAServerName != "" {
		td, perr = ServerTrustDomain(ctx, b.CAAddr, b.CAServerName, pool)
	} else if sn, t, err := ServerIdentity(ctx, b.CAAddr, pool); err == nil {
		td, w.serverName = t, sn
	} else {
		perr = err
	}
	switch {
	case errors.Is(perr, ErrRootMismatch):
		rootFile := filepath.Join(cfg.BundleDir, FileRootCert)
		if cur != nil {
			rootFile = filepath.Join(cfg.CertDir, client.FileRootCert) + " and " + rootFile
		}
		return nil, fmt.Errorf("%w: %s does not verify the certificate API at %s (%v): the bundle was made for another mesh, or the mesh root was replaced; make a new bundle on a node of this mesh (meshgate vm bundle)", ErrRootMismatch, rootFile, b.CAAddr, perr)
	case perr == nil && td != b.TrustDomain:
		return nil, fmt.Errorf("%w: %s is for trust domain %q but the gateway at %s serves %q: make the bundle on a node of this mesh (meshgate vm bundle)", ErrTrustDomain, filepath.Join(cfg.BundleDir, FileManifest), b.TrustDomain, b.CAAddr, td)
	case perr != nil && cur == nil:
		return nil, fmt.Errorf("vm: no certificate in %s yet and the certificate API is unreachable: %w", cfg.CertDir, perr)
	case perr != nil:
		w.log.Warn("vm: certificate API unreachable; keeping the certificate in the cert dir", "err", perr)
	}
	if cur == nil {
		if cur, err = w.firstCertificate(ctx, pool); err != nil {
			return nil, err
		}
		w.set(cur, "token")
	}
	if err := w.registerAll(ctx); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && !ae.Retryable() {
			return nil, fmt.Errorf("%w: the gateway at %s refused the registration made with the certificate in %s (%v): make a new bundle (meshgate vm bundle binds what %s may register), or check the service with meshgate get serviceentries", ErrRegister, b.CAAddr, cfg.CertDir, err, id)
		}
		w.log.Warn("vm: registration failed; retrying", "err", err)
	}
	return w, nil
}

// loadCertDir returns the certificate in the cert dir when it is valid for
// the bundle's identity, nil when there is none (or only an expired or
// broken one), and ErrCertDir/ErrTrustDomain when the dir cannot be used.
func (w *Workload) loadCertDir() (*client.Bundle, error) {
	dir := w.cfg.CertDir
	if _, err := os.ReadDir(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: %s: %v: run the join as a user that may read and write it, or choose another with --cert-dir", ErrCertDir, dir, err)
	}
	for _, name := range []string{client.FileCertChain, client.FileKey, client.FileRootCert} {
		p := filepath.Join(dir, name)
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v: run the join as a user that may read and write it, or choose another with --cert-dir", ErrCertDir, p, err)
		}
		f.Close()
	}
	cur, err := client.LoadBundle(dir)
	if err != nil {
		w.log.Warn("vm: the certificate in the cert dir is unusable; a new one is needed", "dir", dir, "err", err)
		w.noCert = fmt.Sprintf(" (the one there is unusable: %v)", err)
		return nil, nil
	}
	chain := filepath.Join(dir, client.FileCertChain)
	if cur.Identity.TrustDomain != w.id.TrustDomain {
		return nil, fmt.Errorf("%w: %s is for %s but %s is for trust domain %q: remove the old certificate files or use another --cert-dir", ErrTrustDomain, chain, cur.Identity, filepath.Join(w.cfg.BundleDir, FileManifest), w.id.TrustDomain)
	}
	if cur.Identity != w.id {
		return nil, fmt.Errorf("%w: %s is for %s but the bundle is for %s: remove the old certificate files or use another --cert-dir", ErrCertDir, chain, cur.Identity, w.id)
	}
	if !time.Now().Before(cur.Chain[0].NotAfter) {
		w.log.Warn("vm: the certificate in the cert dir has expired; a new one is needed", "dir", dir, "not_after", cur.Chain[0].NotAfter)
		w.noCert = " (the one there expired at " + cur.Chain[0].NotAfter.Format(time.RFC3339) + ")"
		return nil, nil
	}
	w.set(cur, "cert-dir")
	w.mu.Lock()
	w.obtained = cur.Chain[0].NotBefore
	w.mu.Unlock()
	return cur, nil
}

// caRoots is the pool that verifies the CA: the bundle's roots plus those
// of the current certificate (fresher after a root rotation).
func (w *Workload) caRoots(cur *client.Bundle) *x509.CertPool {
	p := w.bundle.RootPool()
	if cur != nil {
		for _, r := range cur.Roots {
			p.AddCert(r)
		}
	}
	return p
}

// firstCertificate spends the join token; the cert dir is checked for
// writing first, so a token is never spent on a certificate that cannot
// be kept.
func (w *Workload) firstCertificate(ctx context.Context, pool *x509.CertPool) (cur *client.Bundle, err error) {
	dir := w.cfg.CertDir
	tokFile := filepath.Join(w.cfg.BundleDir, FileJoinToken)
	if w.bundle.JoinToken == "" {
		return nil, fmt.Errorf("%w: make a new bundle (meshgate vm bundle): no usable certificate in %s%s and no %s", ErrTokenSpent, dir, w.noCert, tokFile)
	}
	if exp := w.bundle.JoinTokenExpires; !exp.IsZero() && !time.Now().Before(exp) {
		return nil, fmt.Errorf("%w: make a new bundle (meshgate vm bundle): no usable certificate in %s%s and %s expired at %s", ErrTokenSpent, dir, w.noCert, tokFile, exp.Format(time.RFC3339))
	}
	if _, serr := os.Stat(dir); os.IsNotExist(serr) {
		// A cert dir this join creates is removed again if it stays
		// empty, so a failed first join leaves nothing behind.
		defer func() {
			if err != nil {
				os.Remove(dir)
			}
		}()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: %v: run the join as a user that may create it, or choose another with --cert-dir", ErrCertDir, err)
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not writable (%v): run the join as a user that may write it, or choose another with --cert-dir", ErrCertDir, dir, err)
	}
	f.Close()
	os.Remove(f.Name())
	cur, err = client.Issue(ctx, w.caConfig(pool), client.IssueRequest{TrustDomain: w.id.TrustDomain, Namespace: w.id.Namespace,
		ServiceAccount: w.id.ServiceAccount, Token: w.bundle.JoinToken, TTL: w.cfg.CertTTL})
	if err != nil {
		if c := status.Code(err); c == codes.PermissionDenied || c == codes.Unauthenticated {
			return nil, fmt.Errorf("%w: make a new bundle (meshgate vm bundle): no usable certificate in %s%s and the CA refused %s (%s)", ErrTokenSpent, dir, w.noCert, tokFile, status.Convert(err).Message())
		}
		return nil, fmt.Errorf("vm: first certificate from %s: %w", w.bundle.CAAddr, err)
	}
	if err := client.WriteBundle(dir, cur); err != nil {
		return nil, fmt.Errorf("%w: the token was spent but the certificate could not be written (%v): fix %s and make a new bundle", ErrCertDir, err, dir)
	}
	w.log.Info("vm: first certificate obtained with the join token", "dir", dir, "serial", pki.SerialOf(cur.Chain[0]), "not_after", cur.Chain[0].NotAfter)
	return cur, nil
}

func (w *Workload) caConfig(pool *x509.CertPool) client.Config {
	return client.Config{Addr: w.bundle.CAAddr, ServerName: w.serverName, RootCAs: pool}
}

func (w *Workload) set(cur *client.Bundle, source string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cur, w.obtained, w.source = cur, time.Now(), source
}

// Certificate returns the current certificate and where it came from:
// "cert-dir" (kept from an earlier run), "token" (the join token was
// spent) or "renewal".
func (w *Workload) Certificate() (*client.Bundle, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur, w.source
}

// Addr returns the advertised IP.
func (w *Workload) Addr() string { return w.ip }

// EndpointIDs returns the registration IDs the gateway gave, one per
// port registered so far.
func (w *Workload) EndpointIDs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.ids))
	for _, r := range w.regs {
		if id := w.ids[r.Port]; id != "" {
			out = append(out, id)
		}
	}
	return out
}

func (w *Workload) buildRegistrations() {
	c := w.cfg.Check
	for _, p := range w.bundle.Ports {
		w.regs = append(w.regs, api.WorkloadEndpointRequest{
			Service: w.bundle.Service, Port: p.Port, Addr: net.JoinHostPort(w.ip, strconv.Itoa(int(p.Target()))),
			Network: w.bundle.Network, Labels: w.bundle.Labels, TTL: w.cfg.TTL.String(),
			Check: &api.WorkloadCheckRequest{Interval: c.Interval.String(), Timeout: c.Timeout.String(), Failures: c.Failures, HTTP: c.HTTPPath},
		})
	}
}

// apiCall sends one registration call with the current certificate.
func (w *Workload) apiCall(ctx context.Context, method string, body, out any) error {
	cur, _ := w.Certificate()
	cert := cur.TLSCertificate()
	return call(ctx, w.caConfig(w.caRoots(cur)), &cert, "", method, "/v1/workload/endpoints", body, out)
}

func (w *Workload) registerAll(ctx context.Context) error {
	var errs []error
	for _, r := range w.regs {
		var out struct {
			ID string `json:"id"`
		}
		if err := w.apiCall(ctx, http.MethodPut, r, &out); err != nil {
			errs = append(errs, err)
			continue
		}
		w.mu.Lock()
		w.ids[r.Port] = out.ID
		w.mu.Unlock()
	}
	return errors.Join(errs...)
}

// withdrawTimeout bounds the deregistration at stop.
const withdrawTimeout = 10 * time.Second

// Run keeps the workload up until ctx ends: it renews the certificate
// with itself (mTLS) once RenewFraction of its lifetime has passed and
// refreshes the registrations every TTL/3, retrying failures with
// backoff. When ctx ends it withdraws the registrations and returns the
// withdrawal's error (nil when every endpoint was removed).
func (w *Workload) Run(ctx context.Context) error {
	refresh := time.Now().Add(w.cfg.TTL / 3)
	renewAt := w.renewAt()
	renewFails, regFails := 0, 0
	for {
		next := refresh
		if renewAt.Before(next) {
			next = renewAt
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return w.withdraw()
		case <-t.C:
		}
		now := time.Now()
		if !now.Before(renewAt) {
			if err := w.renew(ctx); err != nil {
				renewFails++
				w.log.Warn("vm: certificate renewal failed; retrying", "err", err, "attempt", renewFails)
				renewAt = now.Add(backoff(w.cfg.RetryInterval, renewFails))
			} else {
				renewFails = 0
				renewAt = w.renewAt()
			}
		}
		if !now.Before(refresh) {
			if err := w.registerAll(ctx); err != nil && ctx.Err() == nil {
				regFails++
				w.log.Warn("vm: registration refresh failed; retrying", "err", err, "attempt", regFails)
				refresh = now.Add(min(backoff(w.cfg.RetryInterval, regFails), w.cfg.TTL/3))
			} else {
				regFails = 0
				refresh = now.Add(w.cfg.TTL / 3)
			}
		}
	}
}

func backoff(base time.Duration, n int) time.Duration { return base << min(n-1, 12) }

// renewAt is when the current certificate is due for renewal.
func (w *Workload) renewAt() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	end := w.cur.Chain[0].NotAfter
	from := w.obtained
	if from.After(end) {
		from = end
	}
	return from.Add(time.Duration(float64(end.Sub(from)) * w.cfg.RenewFraction))
}

func (w *Workload) renew(ctx context.Context) error {
	cur, _ := w.Certificate()
	if w.serverName == "" {
		// The CA was unreachable at Join: find the name its certificate
		// answers to now (Run's goroutine is the only one using it).
		if sn, _, err := ServerIdentity(ctx, w.bundle.CAAddr, w.caRoots(cur)); err == nil {
			w.serverName = sn
		}
	}
	nb, err := client.Renew(ctx, w.caConfig(w.caRoots(cur)), cur, w.cfg.CertTTL)
	if err != nil {
		if !time.Now().Before(cur.Chain[0].NotAfter) {
			return fmt.Errorf("%w (the certificate in %s expired at %s: a new one needs a new bundle)", err, w.cfg.CertDir, cur.Chain[0].NotAfter.Format(time.RFC3339))
		}
		return err
	}
	if err := client.WriteBundle(w.cfg.CertDir, nb); err != nil {
		return fmt.Errorf("%w: %v", ErrCertDir, err)
	}
	w.set(nb, "renewal")
	w.log.Info("vm: certificate renewed", "serial", pki.SerialOf(nb.Chain[0]), "not_after", nb.Chain[0].NotAfter)
	return nil
}

func (w *Workload) withdraw() error {
	ctx, cancel := context.WithTimeout(context.Background(), withdrawTimeout)
	defer cancel()
	var errs []error
	for _, r := range w.regs {
		if err := w.apiCall(ctx, http.MethodDelete, map[string]any{"port": r.Port, "addr": r.Addr}, nil); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("vm: withdraw from %s: %w", w.bundle.CAAddr, err)
	}
	w.log.Info("vm: endpoints withdrawn", "endpoints", len(w.regs))
	return nil
}
