package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/api"
	"github.com/meshgate/meshgate/pki/store"
)

// Files the CA keeps in the node's data dir. The CLI on the same machine
// reads admin.key and root-cert.pem to talk to the certificate API.
const (
	CAStateFile    = "ca-state.journal" // CA state journal (CA key sealed with the KEK)
	KEKFile        = "kek"              // key-encryption key, 0600
	AdminKeyFile   = "admin.key"        // bearer key for the token endpoints, 0600
	CFSSLKeyFile   = "cfssl-auth.key"   // cfssl authsign HMAC key, 0600
	RootCertFile   = "root-cert.pem"    // the mesh root bundle, 0644
	DefaultCAPort  = 15012
	caStateDirMode = 0o700

	caOpenRetries = 40
	caOpenBackoff = 250 * time.Millisecond
)

// CAConfig places the built-in CA of a node.
type CAConfig struct {
	// DataDir holds the CA state, the KEK and the operator keys.
	DataDir string
	// Addr is the certificate API listener (gRPC + HTTP on one TLS port).
	Addr string
	// TrustDomain of issued identities. Default cluster.local.
	TrustDomain string
	// NodeName names this CA instance in the audit log.
	NodeName string
	// PluginDir holds Istio plug-in CA files (ca-cert.pem, ca-key.pem,
	// root-cert.pem, cert-chain.pem); empty makes a self-signed root on
	// first start.
	PluginDir string
	// DNSNames and IPs of the API's server certificate, besides the
	// defaults (istiod.istio-system.svc, localhost, loopback).
	DNSNames []string
	IPs      []net.IP
	// Store replaces the local journal (the replicated store). Optional.
	Store pki.Store
	// Routes are extra handlers on the certificate API port (the gossip
	// keyring for fleet nodes); see api.Config.Routes.
	Routes map[string]http.Handler
	// Workloads, when set, serves workload endpoint registration by
	// certificate on the API port (PUT/DELETE /v1/workload/endpoints) into
	// the node's catalog. Optional: nil answers those routes 404.
	Workloads *WorkloadRegistrar
	// Logger and Registerer as everywhere.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// CA is the node's certificate authority and its API, run as a Component.
type CA struct {
	cfg    CAConfig
	ca     *pki.CA
	srv    *api.Server
	ln     net.Listener
	closer interface{ Close() error }
	wg     sync.WaitGroup
	cancel context.CancelFunc

	closeOnce sync.Once
}

var (
	_ Component   = (*CA)(nil)
	_ AdminRouter = (*CA)(nil)
)

// AdminRoutes serves cfssl's remote-signer API (/api/v1/cfssl/info and
// /api/v1/cfssl/authsign, HMAC-authenticated) on the admin listener too, so
// the cfssl CLI, which cannot be told to trust the mesh root for https,
// can use `cfssl ... -remote ADMIN_ADDR`.
//
// GET /v1/crl serves the CRL, as on the certificate API.
//
// POST /v1/ca/rotate starts a root rotation (meshgate ca rotate): a new
// root, cross-signed by the current one; the trust bundle serves both until
// every leaf of the old root has expired.
func (c *CA) AdminRoutes() map[string]http.Handler {
	return map[string]http.Handler{
		"/api/v1/cfssl/": c.srv.Handler(),
		"GET /v1/crl":    c.srv.CRLHandler(),
		"POST /v1/ca/rotate": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := c.ca.Rotate(r.Context()); err != nil {
				writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
				return
			}
			_ = c.writeRoot()
			var roots []string
			for _, rc := range c.ca.Info().Roots {
				roots = append(roots, fmt.Sprintf("%s serial %s until %s", rc.Subject, rc.SerialNumber.Text(16), rc.NotAfter.Format(time.RFC3339)))
			}
			writeJSON(w, http.StatusOK, map[string]any{"roots": roots})
		}),
	}
}

// writeRoot refreshes DATA_DIR/root-cert.pem with the current bundle.
func (c *CA) writeRoot() error {
	return writeFileAtomic(filepath.Join(c.cfg.DataDir, RootCertFile), []byte(strings.Join(c.ca.RootsPEM(), "")), 0o644)
}

// NewCA opens (or creates) the CA state in cfg.DataDir. Nothing listens
// until Start.
func NewCA(ctx context.Context, cfg CAConfig) (*CA, error) {
	if err := os.MkdirAll(cfg.DataDir, caStateDirMode); err != nil {
		return nil, fmt.Errorf("agent: ca: %w", err)
	}
	kek := filepath.Join(cfg.DataDir, KEKFile)
	if _, err := os.Stat(kek); errors.Is(err, fs.ErrNotExist) {
		if err := pki.WriteKEKFile(kek); err != nil {
			return nil, fmt.Errorf("agent: ca: %w", err)
		}
	}
	adminKey, err := ensureSecret(filepath.Join(cfg.DataDir, AdminKeyFile))
	if err != nil {
		return nil, err
	}
	cfsslKey, err := ensureSecret(filepath.Join(cfg.DataDir, CFSSLKeyFile))
	if err != nil {
		return nil, err
	}
	pcfg := pki.DefaultConfig()
	if cfg.TrustDomain != "" {
		pcfg.TrustDomain = cfg.TrustDomain
	}
	pcfg.KEKFile = kek
	pcfg.PluginDir = cfg.PluginDir
	if cfg.NodeName != "" {
		pcfg.NodeID = cfg.NodeName
	}
	pcfg.Logger = cfg.Logger
	pcfg.Registerer = cfg.Registerer
	st := cfg.Store
	var closer interface{ Close() error }
	if st == nil {
		f, err := store.OpenFile(filepath.Join(cfg.DataDir, CAStateFile))
		if err != nil {
			return nil, fmt.Errorf("agent: ca: %w", err)
		}
		st, closer = f, f
	}
	ca, err := pki.NewCA(ctx, pcfg, st)
	// With the replicated store, several nodes of a new fleet race to
	// create the CA; the losers find it committed but maybe not yet in
	// their own replica. Retry briefly (bounded) before giving up.
	for attempt := 0; err != nil && cfg.Store != nil && attempt < caOpenRetries && ctx.Err() == nil; attempt++ {
		if cfg.Logger != nil {
			cfg.Logger.Info("CA not readable yet; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(caOpenBackoff):
		}
		ca, err = pki.NewCA(ctx, pcfg, st)
	}
	if err != nil {
		if closer != nil {
			closer.Close()
		}
		return nil, fmt.Errorf("agent: ca: %w", err)
	}
	acfg := api.DefaultConfig()
	acfg.DNSNames = append(acfg.DNSNames, cfg.DNSNames...)
	acfg.IPAddresses = append(acfg.IPAddresses, cfg.IPs...)
	acfg.AdminKey = adminKey
	acfg.CFSSLAuthKey = cfsslKey
	acfg.Routes = cfg.Routes
	if cfg.Workloads != nil {
		acfg.Registrar = cfg.Workloads
	}
	acfg.Logger = cfg.Logger
	acfg.Registerer = cfg.Registerer
	srv, err := api.NewServer(acfg, ca)
	if err != nil {
		ca.Close()
		if closer != nil {
			closer.Close()
		}
		return nil, fmt.Errorf("agent: ca: %w", err)
	}
	root := strings.Join(ca.RootsPEM(), "")
	if err := writeFileAtomic(filepath.Join(cfg.DataDir, RootCertFile), []byte(root), 0o644); err != nil {
		ca.Close()
		if closer != nil {
			closer.Close()
		}
		return nil, err
	}
	return &CA{cfg: cfg, ca: ca, srv: srv, closer: closer}, nil
}

// Workloads is the registrar of workload endpoints (nil without one).
func (c *CA) Workloads() *WorkloadRegistrar { return c.cfg.Workloads }

// Authority is the CA itself.
func (c *CA) Authority() *pki.CA { return c.ca }

// Addr is the bound API address (after Start).
func (c *CA) Addr() net.Addr {
	if c.ln == nil {
		return nil
	}
	return c.ln.Addr()
}

// Start binds the API listener and serves it.
func (c *CA) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", c.cfg.Addr)
	if err != nil {
		return fmt.Errorf("certificate API listener %s: %w", c.cfg.Addr, err)
	}
	c.ln = ln
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	c.wg.Go(func() {
		if err := c.srv.Serve(sctx, ln); err != nil && c.cfg.Logger != nil {
			c.cfg.Logger.Error("certificate API stopped", "err", err)
		}
	})
	return nil
}

// Close stops the API, then the CA (flushing its audit log), then the
// store. Idempotent.
func (c *CA) Close() error {
	var err error
	c.closeOnce.Do(func() {
		if c.cancel != nil {
			c.cancel()
		}
		err = errors.Join(c.srv.Close())
		c.wg.Wait()
		err = errors.Join(err, c.ca.Close())
		if c.closer != nil {
			err = errors.Join(err, c.closer.Close())
		}
	})
	return err
}

// HasKEK reports whether dataDir holds a key-encryption key.
func HasKEK(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, KEKFile))
	return err == nil
}

// ensureSecret returns "file:PATH" for a random 32-byte hex key kept at
// path (created 0600 on first use).
func ensureSecret(path string) (string, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return "", fmt.Errorf("agent: ca: %w", err)
		}
		if err := writeFileAtomic(path, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", fmt.Errorf("agent: ca: %w", err)
	}
	return "file:" + path, nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}
