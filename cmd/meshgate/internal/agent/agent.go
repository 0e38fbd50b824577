package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshgate/meshgate/cluster/acl"
	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/sni"
	"github.com/meshgate/meshgate/sni/hbone"
)

// Config is everything one node needs. Build it with DefaultConfig and
// change what differs.
type Config struct {
	// Node is this node's identity in the mesh: name, network and the labels
	// Gateway selectors match.
	Node sni.NodeInfo
	// ResourcesPath is a YAML file or a folder of them holding the Istio
	// resources. It is re-read on Reload and whenever a file in it changes.
	// Empty means no resources (nothing is routed).
	ResourcesPath string
	// AdminAddr is the admin listener (/healthz, /readyz, /metrics,
	// /debug/routes, /debug/explain). Default 127.0.0.1:15000; empty
	// disables it.
	AdminAddr string
	// DefaultBind is the address Gateway servers without `bind` listen on.
	// Default 0.0.0.0.
	DefaultBind string
	// Limits bound the ClientHello peek (default 64 KiB, 5 s).
	Limits sni.Limits
	// DrainTimeout is how long shutdown waits for connections in flight.
	// Default 30 s.
	DrainTimeout time.Duration
	// Logger receives operational logs; nil discards them.
	Logger *slog.Logger
	// AccessLog receives one line per connection; nil means Logger.
	AccessLog *slog.Logger
	// Reload, when not nil, triggers a re-read of ResourcesPath on every
	// receive (the command wires SIGHUP to it).
	Reload <-chan struct{}
	// WatchFiles re-reads ResourcesPath when its files change. Default true.
	WatchFiles bool
	// Sources add resources (e.g. the replicated store) to the local files.
	Sources []ConfigSource
	// Endpoints add endpoints (e.g. the gossiped catalog).
	Endpoints []EndpointSource
	// Registry is the Prometheus registry /metrics serves; nil makes one
	// (with the Go and process collectors). Pass one in to share it with
	// components.
	Registry *prometheus.Registry
	// Components start after the routes are applied and close, in reverse
	// order, after the data plane has drained.
	Components []Component
	// Reserved, if set, is kept up to date with the admin listener
	// ("admin") and every data-plane listener ("proxy"), so the catalog
	// refuses endpoints that point at them.
	Reserved *catalog.Listeners
	// AdminTokens resolves admin API tokens and serves /v1/acl/tokens. Nil
	// means no token is valid: every write is refused.
	AdminTokens *acl.Manager
	// AdminAllowedHosts are extra Host names the admin listener answers
	// (node.yaml admin.allowed_hosts).
	AdminAllowedHosts []string
	// AdminOpenReads lets loopback clients read without a token. Default
	// true (node.yaml admin.open_reads).
	AdminOpenReads bool
	// Pprof serves /debug/pprof/ to operator tokens. Default false.
	Pprof bool
	// Bridge, when set, runs the cross-network HBONE bridge.
	Bridge *BridgeConfig
	// MeshIdentity terminates Gateway servers with tls.mode ISTIO_MUTUAL.
	// nil = their connections are refused.
	MeshIdentity sni.MeshIdentity
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Node:         sni.NodeInfo{Name: "meshgate", Network: "default"},
		AdminAddr:    "127.0.0.1:15000",
		DefaultBind:  "0.0.0.0",
		Limits:       sni.DefaultLimits(),
		DrainTimeout: 30 * time.Second,
		WatchFiles:   true,

		AdminOpenReads: true,
	}
}

// Validate reports the first field that cannot work.
func (c Config) Validate() error {
	if c.Node.Name == "" {
		return errors.New("agent: node name is empty")
	}
	if c.DrainTimeout < 0 {
		return errors.New("agent: drain timeout is negative")
	}
	if c.DefaultBind != "" {
		if _, err := netip.ParseAddr(c.DefaultBind); err != nil {
			return fmt.Errorf("agent: default bind %q: %w", c.DefaultBind, err)
		}
	}
	return nil
}

// Agent is one running node. It is built by New and runs once.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	registry *prometheus.Registry
	builder  *sni.Builder
	router   *sni.Router
	server   *sni.Server

	bridge *bridge // nil without a bridge

	ready    atomic.Bool
	draining atomic.Bool
	admin    net.Listener
	guard    *acl.Guard

	reloadMu sync.Mutex // serializes Reload (file watch, sources, SIGHUP) and endpoint updates
	// epCursor is the position in the endpoint change source's changes
	// that the published table reflects; guarded by reloadMu.
	epCursor uint64

	// mu guards current (the last config that loaded cleanly) and table
	// (the last route table built from it).
	mu      sync.Mutex
	current *config.Set
	table   *sni.Table

	reloads        *prometheus.CounterVec
	configResource *prometheus.GaugeVec
}

// New builds an agent; nothing listens until Run.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := cfg.Registry
	if reg == nil {
		reg = NewRegistry()
	}
	a := &Agent{cfg: cfg, log: log, registry: reg, router: &sni.Router{}}
	a.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshgate_config_reloads_total",
		Help: "Resource reloads by result (ok, error, unchanged).",
	}, []string{"result"})
	a.configResource = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshgate_config_resources",
		Help: "Istio resources in the running configuration, by kind.",
	}, []string{"kind"})
	reg.MustRegister(a.reloads, a.configResource)

	bind := cfg.DefaultBind
	if bind == "" {
		bind = "0.0.0.0"
	}
	a.builder = sni.NewBuilder(sni.BuilderConfig{Logger: log, Registerer: reg, DefaultBind: bind})
	scfg := sni.DefaultServerConfig()
	scfg.Logger = log
	scfg.AccessLog = cfg.AccessLog
	scfg.Registerer = reg
	if cfg.Limits.MaxBytes > 0 {
		scfg.Limits = cfg.Limits
	}
	if cfg.DrainTimeout > 0 {
		scfg.DrainTimeout = cfg.DrainTimeout
	}
	scfg.MeshIdentity = cfg.MeshIdentity
	var pool *hbone.Pool
	if b := cfg.Bridge; b != nil {
		p, err := hbone.NewPool(b.Pool)
		if err != nil {
			return nil, fmt.Errorf("agent: bridge: %w", err)
		}
		pool = p
		scfg.Bridge = p
		a.cfg.Node.Bridge = true
		a.cfg.Node.BridgeNamespace = b.Namespace
	}
	srv, err := sni.NewServer(scfg, a.router)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.server = srv
	if b := cfg.Bridge; b != nil {
		hc := b.Server
		hc.Connector = srv
		hs, err := hbone.NewServer(hc)
		if err != nil {
			_ = pool.Close()
			return nil, fmt.Errorf("agent: bridge: %w", err)
		}
		a.bridge = &bridge{addr: b.Addr, pool: pool, srv: hs, drain: cfg.DrainTimeout, reserved: cfg.Reserved}
		a.cfg.Components = append([]Component{a.bridge}, a.cfg.Components...)
	}
	var tokens acl.Resolver = noTokens{}
	if cfg.AdminTokens != nil {
		tokens = cfg.AdminTokens
	}
	g, err := acl.NewGuard(acl.GuardConfig{
		Tokens: tokens, Policy: adminPolicy, AllowedHosts: cfg.AdminAllowedHosts,
		OpenReads: cfg.AdminOpenReads, Logger: log, Registerer: reg,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.guard = g
	return a, nil
}

// NewRegistry returns a registry with the Go runtime and process
// collectors, as /metrics serves it.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Registry is the Prometheus registry /metrics serves.
func (a *Agent) Registry() *prometheus.Registry { return a.registry }

// BridgeAddr is the bound bridge listener, nil without a bridge or before
// Start.
func (a *Agent) BridgeAddr() net.Addr {
	if a.bridge == nil {
		return nil
	}
	return a.bridge.Addr()
}

// Listeners returns the bound proxy listeners by key. Valid after Start.
func (a *Agent) Listeners() map[string]net.Addr { return a.server.Addrs() }

// AdminAddr is the bound admin address, or nil when disabled or not started.
func (a *Agent) AdminAddr() net.Addr {
	if a.admin == nil {
		return nil
	}
	return a.admin.Addr()
}

// Start loads the resources, binds every listener and the admin endpoint.
// A bad initial configuration is an error: the node does not start half
// configured.
func (a *Agent) Start(ctx context.Context) error {
	set, err := a.load()
	if err != nil {
		return err
	}
	if err := a.apply(ctx, set, false); err != nil {
		return err
	}
	if a.cfg.AdminAddr != "" {
		ln, err := net.Listen("tcp", a.cfg.AdminAddr)
		if err != nil {
			a.server.Close()
			return fmt.Errorf("agent: admin listener %s: %w", a.cfg.AdminAddr, err)
		}
		a.admin = ln
		if a.cfg.Reserved != nil {
			a.cfg.Reserved.Set("admin", ln.Addr())
		}
		a.guard.SetListener(ln.Addr())
	}
	for i, c := range a.cfg.Components {
		if err := c.Start(ctx); err != nil {
			for j := i - 1; j >= 0; j-- {
				_ = a.cfg.Components[j].Close()
			}
			a.server.Close()
			if a.admin != nil {
				a.admin.Close()
			}
			return fmt.Errorf("agent: %w", err)
		}
	}
	a.ready.Store(true)
	return nil
}

// Run starts the node (unless Start already ran), serves until ctx is done,
// then drains: readiness turns false, listeners stop accepting, and
// connections in flight get up to DrainTimeout to finish.
func (a *Agent) Run(ctx context.Context) error {
	if !a.ready.Load() {
		if err := a.Start(ctx); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if a.admin != nil {
		hs := &http.Server{Handler: a.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() {
			if err := hs.Serve(a.admin); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("admin listener stopped", "err", err)
			}
		})
		defer func() {
			sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
			defer c()
			_ = hs.Shutdown(sctx)
			wg.Wait()
		}()
	}
	wg.Go(func() { a.watch(runCtx) })

	<-ctx.Done()
	a.log.Info("draining", "timeout", a.cfg.DrainTimeout)
	a.draining.Store(true)
	a.ready.Store(false)
	cancel()
	dctx, dcancel := context.WithTimeout(context.Background(), a.cfg.DrainTimeout+time.Second)
	defer dcancel()
	err := a.server.Shutdown(dctx)
	for i := len(a.cfg.Components) - 1; i >= 0; i-- {
		if cerr := a.cfg.Components[i].Close(); cerr != nil {
			a.log.Warn("component close", "err", cerr)
		}
	}
	if err != nil {
		a.log.Warn("stopped; the drain did not finish", "err", err)
	} else {
		a.log.Info("stopped")
	}
	return nil
}

// Reload re-reads the resources and applies them. A bad file is refused
// whole and the running configuration stays; the error says why. Calls
// are serialized.
func (a *Agent) Reload(ctx context.Context) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	set, err := a.load()
	if err != nil {
		a.reloads.WithLabelValues("error").Inc()
		a.log.Error("reload refused; running configuration kept", "err", err)
		return err
	}
	a.mu.Lock()
	prev := ""
	if a.current != nil {
		prev = a.current.Hash()
	}
	a.mu.Unlock()
	hash := set.Hash()
	same := prev == hash && len(a.cfg.Endpoints) == 0
	if same {
		a.reloads.WithLabelValues("unchanged").Inc()
		return nil
	}
	if err := a.apply(ctx, set, prev == hash); err != nil {
		a.reloads.WithLabelValues("error").Inc()
		a.log.Error("reload applied with errors", "err", err)
		return err
	}
	a.reloads.WithLabelValues("ok").Inc()
	if prev == hash {
		// Same resources, new endpoints (catalog or store change).
		a.log.Debug("routes updated", "hash", hash[:12])
	} else {
		a.log.Info("configuration reloaded", "hash", hash[:12])
	}
	return nil
}

// Config returns the running configuration (files and sources merged),
// or an empty set before the first load.
func (a *Agent) Config() *config.Set {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.current == nil {
		return &config.Set{}
	}
	return a.current
}

// Guard is the admin listener's access control (for registration checks).
func (a *Agent) Guard() *acl.Guard { return a.guard }

func (a *Agent) load() (*config.Set, error) {
	set := &config.Set{}
	if a.cfg.ResourcesPath != "" {
		var err error
		if set, err = config.Load(a.cfg.ResourcesPath); err != nil {
			return nil, err
		}
	}
	if len(a.cfg.Sources) == 0 {
		return set, nil
	}
	sets := []*config.Set{set}
	for _, src := range a.cfg.Sources {
		s, err := src.Resources(context.Background())
		if err != nil {
			return nil, fmt.Errorf("agent: resource source: %w", err)
		}
		sets = append(sets, s)
	}
	return config.Merge(sets...)
}

// changeSource returns the endpoint source whose changes the agent
// applies one service at a time: the only endpoint source, when it
// reports changes. nil otherwise.
func (a *Agent) changeSource() EndpointChangeSource {
	if len(a.cfg.Endpoints) != 1 {
		return nil
	}
	src, _ := a.cfg.Endpoints[0].(EndpointChangeSource)
	return src
}

// updateEndpoints applies the endpoint changes of the change source to
// the running table (updateTable) and publishes the result. Without a
// table or a change source it reloads.
func (a *Agent) updateEndpoints(ctx context.Context) error {
	src := a.changeSource()
	a.reloadMu.Lock()
	a.mu.Lock()
	prev := a.table
	a.mu.Unlock()
	if src == nil || prev == nil {
		a.reloadMu.Unlock()
		return a.Reload(ctx)
	}
	defer a.reloadMu.Unlock()
	t, cursor, err := updateTable(a.builder, prev, src, a.epCursor)
	if err != nil {
		a.reloads.WithLabelValues("error").Inc()
		a.log.Error("endpoint update failed", "err", err)
		return fmt.Errorf("agent: updating routes: %w", err)
	}
	a.epCursor = cursor
	if t == prev {
		return nil
	}
	a.mu.Lock()
	a.table = t
	a.mu.Unlock()
	if err := a.server.Apply(ctx, t); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

// updateTable derives the table for the endpoint changes src reports
// after cursor from prev, and returns it with the cursor it reflects.
// Changes known service by service go to UpdateServices (work in
// proportion to the change); the rest, and changes UpdateServices
// refuses (sni.ErrNeedsRebuild), go to UpdateEndpoints with the whole
// list. It returns prev itself when nothing changed.
func updateTable(b *sni.Builder, prev *sni.Table, src EndpointChangeSource, cursor uint64) (*sni.Table, uint64, error) {
	d := src.EndpointChanges(cursor)
	if !d.Full {
		if len(d.Services) == 0 {
			return prev, d.Cursor, nil
		}
		t, err := b.UpdateServices(prev, d.Services)
		if err == nil {
			return t, d.Cursor, nil
		}
		if !errors.Is(err, sni.ErrNeedsRebuild) {
			return nil, cursor, err
		}
	}
	// Endpoints is read after the cursor was taken, so it is at least
	// as new as the cursor says.
	t, err := b.UpdateEndpoints(prev, src.Endpoints())
	if err != nil {
		return nil, cursor, err
	}
	return t, d.Cursor, nil
}

func (a *Agent) endpoints() []sni.CatalogEndpoint {
	var eps []sni.CatalogEndpoint
	for _, src := range a.cfg.Endpoints {
		eps = append(eps, src.Endpoints()...)
	}
	return eps
}

// apply builds the routes for set and publishes them. sameConfig says set
// has the resources of the running table: only endpoints changed, and the
// table is updated for the services whose endpoints changed instead of
// rebuilt.
func (a *Agent) apply(ctx context.Context, set *config.Set, sameConfig bool) error {
	// The change cursor is taken before the endpoints are read: the
	// table then holds every change up to it (called under reloadMu).
	if src := a.changeSource(); src != nil {
		a.epCursor = src.EndpointChanges(0).Cursor
	}
	eps := a.endpoints()
	a.mu.Lock()
	prev := a.table
	a.mu.Unlock()
	var t *sni.Table
	var err error
	if sameConfig && prev != nil {
		t, err = a.builder.UpdateEndpoints(prev, eps)
	} else {
		t, err = a.builder.Build(sni.BuildInput{Config: set, Node: a.cfg.Node, Endpoints: eps})
	}
	if err != nil {
		return fmt.Errorf("agent: building routes: %w", err)
	}
	a.mu.Lock()
	a.current, a.table = set, t
	a.mu.Unlock()
	for kind, n := range map[config.Kind]int{
		config.KindGateway:         len(set.Gateways),
		config.KindVirtualService:  len(set.VirtualServices),
		config.KindDestinationRule: len(set.DestinationRules),
		config.KindServiceEntry:    len(set.ServiceEntries),
		config.KindWorkloadEntry:   len(set.WorkloadEntries),
	} {
		a.configResource.WithLabelValues(string(kind)).Set(float64(n))
	}
	err = a.server.Apply(ctx, t)
	if a.cfg.Reserved != nil {
		var addrs []any
		for _, ad := range a.server.Addrs() {
			addrs = append(addrs, ad)
		}
		a.cfg.Reserved.Set("proxy", addrs...)
	}
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}
