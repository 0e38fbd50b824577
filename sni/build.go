package sni

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"github.com/prometheus/client_golang/prometheus"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshgate/meshgate/config"
)

// Errors returned by Builder.Build.
var (
	// ErrNoConfig means BuildInput.Config was nil.
	ErrNoConfig = errors.New("sni: build input has no config")
	// ErrInvalidBuilderConfig means BuilderConfig.Validate failed.
	ErrInvalidBuilderConfig = errors.New("sni: invalid builder config")
)

// Connection policy defaults (Istio's, through Envoy's).
const (
	// DefaultConnectTimeout applies when connectionPool.tcp.connectTimeout
	// is not set.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultIdleTimeout applies when connectionPool.tcp.idleTimeout is not
	// set (Envoy's tcp_proxy default). An explicit "0s" disables it.
	DefaultIdleTimeout = time.Hour
)

// BuilderConfig configures a Builder.
type BuilderConfig struct {
	// Logger receives build warnings (when they change) and outlier
	// ejections. nil discards.
	Logger *slog.Logger
	// Registerer receives meshgate_sni_ejections_total. nil does not
	// register. Registering twice reuses the existing collector.
	Registerer prometheus.Registerer
	// Now is the clock for outlier detection. nil = time.Now.
	Now func() time.Time
	// Rand returns uniformly random numbers for RANDOM and LEAST_REQUEST
	// load balancing; it must be safe for concurrent use. nil =
	// math/rand/v2.Uint64.
	Rand func() uint64
	// DefaultBind is the address of listeners whose Gateway server has no
	// bind. Default "0.0.0.0"; set "127.0.0.1" to keep a node on loopback.
	DefaultBind string
}

// DefaultBuilderConfig returns the defaults: no logging, no metrics,
// time.Now, math/rand/v2 and bind 0.0.0.0.
func DefaultBuilderConfig() BuilderConfig {
	return BuilderConfig{DefaultBind: "0.0.0.0"}
}

// Validate checks the config.
func (c BuilderConfig) Validate() error {
	if c.DefaultBind != "" {
		if _, err := netip.ParseAddr(c.DefaultBind); err != nil {
			return fmt.Errorf("%w: DefaultBind %q is not an IP address", ErrInvalidBuilderConfig, c.DefaultBind)
		}
	}
	return nil
}

// Builder turns configuration and catalog endpoints into Tables. It is
// long-lived: it keeps per-endpoint live state (active connections,
// consecutive failures, ejections) and per-cluster counters across
// rebuilds, keyed by service host and endpoint address, so a rebuild never
// forgets a connection or an ejection. Build is safe for concurrent use;
// builds are serialized. Leases from old tables keep counting into the
// same live state.
type Builder struct {
	env   *tableEnv
	bind  string
	cfErr error

	// mu guards gen, last, the maps below, the gen fields of the live
	// states, and lastWarn. It is held for a whole Build and never taken
	// on the connection path.
	mu  sync.Mutex
	gen tableGen
	// last is the table of the latest build or update: the next build
	// takes its live states from it (table_live.go).
	last *Table
	// orphans are live states the last table dropped while connections
	// still counted on them, by host.
	orphans  map[string]*tableHostLive
	routes   map[string]*tableRouteLive
	lastWarn []string
	// keyWorkers fixes buildKeys' worker count (0: by table size and
	// GOMAXPROCS); tests compare one worker with several.
	keyWorkers int
}

// tableRouteLive is the weighted-split position of one route, kept across
// rebuilds so frequent rebuilds do not skew the split towards the start
// of its schedule.
type tableRouteLive struct {
	ctr atomic.Uint64
	gen tableGen // guarded by Builder.mu
}

// tableGen numbers builds, so a live state can say which build used it
// last. It is 32 bits because every endpoint's state holds one: it wraps
// after 4,294,967,296 builds, and a state left untouched for exactly that
// many builds would then count as used by the current one (kept aside as
// an orphan one build less or more; no connection is refused for it).
type tableGen uint32

// NewBuilder returns a Builder. An invalid cfg (see Validate) makes every
// Build fail with ErrInvalidBuilderConfig.
func NewBuilder(cfg BuilderConfig) *Builder {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	rnd := cfg.Rand
	if rnd == nil {
		rnd = rand.Uint64
	}
	bind := cfg.DefaultBind
	if bind == "" {
		bind = "0.0.0.0"
	}
	ej := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshgate_sni_ejections_total",
		Help: "Endpoints ejected by outlier detection (consecutive connect failures).",
	})
	return &Builder{
		env: &tableEnv{
			log:       log,
			now:       now,
			epoch:     now(),
			rand:      rnd,
			ejections: tableRegisterCounter(cfg.Registerer, ej, log),
		},
		bind:   bind,
		cfErr:  cfg.Validate(),
		routes: map[string]*tableRouteLive{},
	}
}

// Build returns a new Table for in. The result depends only on in (and,
// for live counters, on earlier builds of the same Builder). Problems in
// the configuration never fail the build: the offending piece is skipped
// and reported by Table.Warnings. Build returns an error only when in has
// no config or the builder config is invalid.
func (b *Builder) Build(in BuildInput) (*Table, error) {
	if b.cfErr != nil {
		return nil, b.cfErr
	}
	if in.Config == nil {
		return nil, ErrNoConfig
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.build(in), nil
}

// build is Build under b.mu.
func (b *Builder) build(in BuildInput) *Table {
	b.gen++
	tb := &tableBuild{
		b:         b,
		gen:       b.gen,
		in:        in,
		cfg:       in.Config,
		t:         &Table{node: in.Node, listeners: map[string]*tableListener{}, services: newTableShardMap[string, *tableService](tableCountHosts(in)), env: b.env},
		warnSet:   map[string]bool{},
		routeMemo: map[string]*tableRoute{},
		policies:  map[tablePolicyKey]*tableClusterPolicy{},
	}
	tb.prev = b.last
	tb.inc = &tableIncState{b: b, cfg: in.Config, routeHosts: map[string]struct{}{}, policies: tb.policies}
	tb.buildServices()
	tb.buildDestinationRules()
	tb.buildListeners()
	tb.buildRoutes()
	tb.buildKeys()
	tb.finish()
	tb.t.inc = tb.inc
	b.last = tb.t
	return tb.t
}

// tableCountHosts estimates the services of in, to size the service map:
// catalogs list a service's endpoints together, so it counts runs of one
// host (exact for such input), plus the ServiceEntry hosts.
func tableCountHosts(in BuildInput) int {
	n := 0
	for i := range in.Endpoints {
		if i == 0 || in.Endpoints[i].Host != in.Endpoints[i-1].Host {
			n++
		}
	}
	if in.Config != nil {
		for _, se := range in.Config.ServiceEntries {
			if se != nil && se.Spec != nil {
				n += len(se.Spec.Hosts)
			}
		}
	}
	return n
}

// tableBuild is the state of one Build.
type tableBuild struct {
	b       *Builder
	in      BuildInput
	cfg     *config.Set
	t       *Table
	warnSet map[string]bool
	order   []*tableListener
	bound   map[string][]*config.VirtualService
	// hidden are the VirtualServices naming a gateway whose namespace
	// they are not exported to, by "ns/name" of the gateway.
	hidden    map[string][]*config.VirtualService
	gen       tableGen
	routeMemo map[string]*tableRoute
	policies  map[tablePolicyKey]*tableClusterPolicy
	// Slabs: objects that live exactly as long as the table are carved
	// from chunks, which cuts allocations (and GC work) of large builds.
	clusterSlab  []Cluster
	endpointSlab []tableEndpoint
	poolSlab     []tablePool
	serviceSlab  []tableService
	portSlab     []tableServicePort
	ptrSlab      struct {
		ports    []*tableServicePort
		eps      []*tableEndpoint
		clusters []*Cluster
	}
	keySlab []tableSvcKey
	// keys collects the keys of one service (serviceKeys).
	keys []tableSvcKey
	// bridgeOrigin is the Origin of bridge decisions.
	bridgeOrigin *Origin
	// warnCalls counts warn calls (duplicates included).
	warnCalls int
	// shared guards the policy memo and the warnings while keysParallel
	// runs (nil otherwise).
	shared *sync.Mutex
	// inc is the context kept for endpoint changes; nil on an update.
	inc *tableIncState
	// prev is the table whose live states this build takes over (nil
	// for the first); oldIndex finds the endpoints of its large
	// services by address.
	prev     *Table
	oldIndex map[*tableService]map[string]*tableEndpointLive
	// seen are the endpoint addresses of the ports with many (see
	// tableSeenMin); gw indexes the split-horizon entries of a port by
	// gateway and label set (tableGatewayKey).
	seen map[*tableServicePort]map[string]struct{}
	gw   map[*tableServicePort]map[string]*tableEndpoint
	// unknown memoizes the clusters of hosts that have no service.
	unknown map[tableUnknownKey]*Cluster
	// sel and selSub memoize the label pairs of the subset last asked
	// for (selector): services of one DestinationRule come in a row.
	selSub *networking.Subset
	sel    tableSelector
}

// tableSelector is a subset's labels as pairs: matching an endpoint costs
// one map lookup per pair instead of an iteration over the subset's map,
// which a rebuild does for every endpoint of every subset cluster.
type tableSelector []struct{ k, v string }

func (s tableSelector) match(labels map[string]string) bool {
	for _, kv := range s {
		if got, ok := labels[kv.k]; !ok || got != kv.v {
			return false
		}
	}
	return true
}

// selector returns sub's labels as pairs (nil for no subset).
func (tb *tableBuild) selector(sub *networking.Subset) tableSelector {
	if sub == nil {
		return nil
	}
	if sub != tb.selSub {
		sel := make(tableSelector, 0, len(sub.Labels))
		for k, v := range sub.Labels {
			sel = append(sel, struct{ k, v string }{k, v})
		}
		tb.selSub, tb.sel = sub, sel
	}
	return tb.sel
}

const tableSlabSize = 256

// slabSize is the chunk size: small for an update, which makes the
// objects of a few services only.
func (tb *tableBuild) slabSize() int {
	if tb.inc == nil {
		return 8
	}
	return tableSlabSize
}

// slabTake returns the next zero element of *slab, carving a chunk of n
// when the slab is used up.
func slabTake[T any](slab *[]T, n int) *T {
	if len(*slab) == 0 {
		*slab = make([]T, n)
	}
	p := &(*slab)[0]
	*slab = (*slab)[1:]
	return p
}

// slabSlice returns an empty slice of capacity k carved from *slab (in
// chunks of n): a service's first few ports, endpoints and clusters
// cost no allocation of their own. An append past k moves the slice to
// an array of its own, so neighbours never overlap.
func slabSlice[T any](slab *[]T, n, k int) []T {
	if len(*slab) < k {
		*slab = make([]T, max(n, k))
	}
	out := (*slab)[:0:k]
	*slab = (*slab)[k:]
	return out
}

func (tb *tableBuild) slabCluster() *Cluster { return slabTake(&tb.clusterSlab, tb.slabSize()) }
func (tb *tableBuild) slabEndpoint() *tableEndpoint {
	return slabTake(&tb.endpointSlab, tb.slabSize())
}

// slabService returns a zero catalog service.
func (tb *tableBuild) slabService() *tableService { return slabTake(&tb.serviceSlab, tb.slabSize()) }

// slabPort returns a zero port with room for a few endpoints.
func (tb *tableBuild) slabPort() *tableServicePort {
	sp := slabTake(&tb.portSlab, tb.slabSize())
	sp.eps = slabSlice(&tb.ptrSlab.eps, 4*tb.slabSize(), 4)
	return sp
}

// slabPool returns a one-element, full-capacity slice holding p.
func (tb *tableBuild) slabPool(p tablePool) []tablePool {
	if len(tb.poolSlab) == 0 {
		tb.poolSlab = make([]tablePool, tb.slabSize())
	}
	tb.poolSlab[0] = p
	out := tb.poolSlab[0:1:1]
	tb.poolSlab = tb.poolSlab[1:]
	return out
}

// tableClusterKey identifies a cluster within its host, in one build and
// across builds: the port, subset, whether it is AUTO_PASSTHROUGH-only,
// and the DestinationRule applied ("" for none; exportTo can make it
// differ by consumer).
type tableClusterKey struct {
	port      uint32
	localOnly bool
	subset    string
	dr        tableDRName
}

// key returns c's key; the rule's name is kept in its live state.
func (c *Cluster) key() tableClusterKey {
	return tableClusterKey{port: c.port, localOnly: c.localOnly, subset: c.subset, dr: c.live.dr}
}

// tableUnknownKey is the key of a cluster of a host without a service.
type tableUnknownKey struct {
	host string
	tableClusterKey
}

type tablePolicyKey struct {
	dr     *tableDR
	subset string
	port   uint32
}

// tableService is one service host with its ports and endpoints.
type tableService struct {
	host string
	// tableServiceDef says where the service comes from; every catalog
	// service shares tableCatalogDef.
	*tableServiceDef
	ports []*tableServicePort // sorted by number
	dr    *tableDR
	// clusters are the clusters of this host.
	clusters []*Cluster
	// keys are the AUTO_PASSTHROUGH and bridge keys the host answers.
	keys []tableSvcKey
	// old is, during a build, the service of the same host in the table
	// the build follows (tableNoService: none); nil once built.
	old *tableService
	// Catalog input, for endpoint changes (Builder.UpdateEndpoints): fp
	// fingerprints the catalog endpoints of the host in input order,
	// ncat counts them, warned says one of them was skipped with a
	// warning. The scratch fields are the builder's, under Builder.mu.
	fp     uint64
	ncat   int32
	warned bool
	scr    tableServiceScratch
}

// tableServiceDef is the origin of a service.
type tableServiceDef struct {
	namespace string
	source    string // "ServiceEntry ns/name" or "catalog"
	exportTo  []string
	internal  bool
}

// tableCatalogDef is the origin of every catalog service.
var tableCatalogDef = &tableServiceDef{source: "catalog", internal: true}

// port returns the service port numbered n, or nil.
func (s *tableService) port(n uint32) *tableServicePort {
	for _, p := range s.ports {
		if p.number == n {
			return p
		}
	}
	return nil
}

// portList returns the port numbers, for messages.
func (s *tableService) portList() []uint32 {
	out := make([]uint32, len(s.ports))
	for i, p := range s.ports {
		out[i] = p.number
	}
	return out
}

type tableServicePort struct {
	number     uint32
	targetPort uint32
	remote     int32 // how many of eps are of another network
	udp        bool
	name       string
	eps        []*tableEndpoint
}

// tableDRName names a DestinationRule in the key of a cluster's live
// state: a handle of its "ns/name" (the zero handle: no rule). It is one
// word where the string is two, and every cluster's state holds one.
type tableDRName = unique.Handle[string]

// tableSeenMin is the endpoint count of a port from which a build finds
// duplicate addresses through a set (tableBuild.seen) instead of a scan.
const tableSeenMin = 16

// tableDR is a DestinationRule, indexed.
type tableDR struct {
	name        string // ns/name
	handle      tableDRName
	namespace   string
	exportTo    []string
	host        string
	rule        *networking.DestinationRule
	subsets     map[string]*networking.Subset
	subsetNames []string
}

func (tb *tableBuild) warn(format string, args ...any) {
	tb.warnCalls++
	msg := fmt.Sprintf(format, args...)
	if !tb.warnSet[msg] {
		tb.warnSet[msg] = true
		tb.t.warnings = append(tb.t.warnings, msg)
	}
}

func tableMetaName(m config.Meta) string {
	ns := m.Namespace
	if ns == "" {
		ns = config.DefaultNamespace
	}
	return ns + "/" + m.Name
}

func tableNamespace(m config.Meta) string {
	if m.Namespace == "" {
		return config.DefaultNamespace
	}
	return m.Namespace
}

// ---- services and endpoints ----

func (tb *tableBuild) buildServices() {
	// WorkloadEntries by namespace and by each "key=value" label, so a
	// workloadSelector only looks at entries sharing one of its labels.
	we := map[string]map[string][]*config.WorkloadEntry{}
	for _, w := range tb.cfg.WorkloadEntries {
		if w == nil || w.Spec == nil {
			continue
		}
		ns := tableNamespace(w.Meta)
		if we[ns] == nil {
			we[ns] = map[string][]*config.WorkloadEntry{}
		}
		for k, v := range w.Spec.Labels {
			we[ns][k+"="+v] = append(we[ns][k+"="+v], w)
		}
	}
	for _, se := range tb.cfg.ServiceEntries {
		if se == nil || se.Spec == nil {
			continue
		}
		name := tableMetaName(se.Meta)
		ns := tableNamespace(se.Meta)
		spec := se.Spec
		for _, h := range spec.Hosts {
			host := strings.ToLower(strings.TrimSpace(h))
			if host == "" {
				continue
			}
			if strings.HasPrefix(host, "*") {
				tb.warn("ServiceEntry %s: wildcard host %s cannot be routed to (no endpoints can be selected by name); skipped", name, host)
				continue
			}
			if old := tb.t.service(host); old != nil {
				tb.warn("ServiceEntry %s: host %s already defined by %s; skipped", name, host, old.source)
				continue
			}
			svc := &tableService{host: host, tableServiceDef: &tableServiceDef{
				namespace: ns, source: "ServiceEntry " + name, exportTo: spec.ExportTo,
				internal: spec.Location == networking.ServiceEntry_MESH_INTERNAL,
			}}
			for _, p := range spec.Ports {
				if p == nil || p.Number == 0 || p.Number > 65535 {
					continue
				}
				if svc.port(p.Number) != nil {
					tb.warn("ServiceEntry %s: port %d listed twice; the first wins", name, p.Number)
					continue
				}
				svc.ports = append(svc.ports, &tableServicePort{number: p.Number, name: p.Name, targetPort: p.TargetPort, udp: strings.EqualFold(p.Protocol, "UDP")})
			}
			tb.t.services.set(host, host, svc)
			wes := slices.Clone(spec.Endpoints)
			if sel := spec.GetWorkloadSelector().GetLabels(); len(sel) > 0 {
				var cand []*config.WorkloadEntry
				first := true
				for k, v := range sel {
					if c := we[ns][k+"="+v]; first || len(c) < len(cand) {
						cand, first = c, false
					}
				}
				for _, w := range cand {
					if config.LabelsMatch(sel, w.Spec.Labels) {
						wes = append(wes, w.Spec)
					}
				}
			}
			dns := spec.Resolution == networking.ServiceEntry_DNS || spec.Resolution == networking.ServiceEntry_DNS_ROUND_ROBIN
			if dns && len(wes) == 0 {
				// DNS resolution without endpoints: the host itself is the
				// endpoint, dialled by name.
				wes = append(wes, &networking.WorkloadEntry{Address: host})
			}
			for _, w := range wes {
				if w == nil {
					continue
				}
				var id string
				if w.ServiceAccount != "" {
					id = "ns/" + ns + "/sa/" + w.ServiceAccount
				}
				for _, sp := range svc.ports {
					port := sp.number
					if sp.targetPort != 0 {
						port = sp.targetPort
					}
					if v, ok := w.Ports[sp.name]; ok && sp.name != "" && v != 0 {
						port = v
					}
					tb.addEndpoint(svc, sp, Endpoint{Addr: w.Address, Labels: w.Labels, Network: w.Network, Weight: w.Weight, Identity: id}, port, name)
				}
			}
		}
	}
	// Catalogs list a service's endpoints together: the last host's
	// service is reused without a lookup.
	var lastRaw, host string
	var svc *tableService
	for i := range tb.in.Endpoints {
		ce := &tb.in.Endpoints[i]
		if svc == nil || ce.Host != lastRaw {
			lastRaw, svc = ce.Host, nil
			host = strings.ToLower(strings.TrimSpace(ce.Host))
		}
		if host == "" || ce.Port == 0 || ce.Port > 65535 {
			tb.warn("catalog endpoint %s for %q port %d: invalid service; skipped", ce.Endpoint.Addr, ce.Host, ce.Port)
			tb.inc.badFP = tableFPMix(tb.inc.badFP, tableCatalogHash(ce))
			continue
		}
		if svc == nil {
			if svc = tb.t.service(host); svc == nil {
				svc = tb.slabService()
				svc.host, svc.tableServiceDef = host, tableCatalogDef
				tb.t.services.set(host, host, svc)
			}
		}
		tb.addCatalog(svc, ce)
	}
	tb.t.services.all(func(_ string, svc *tableService) {
		if len(svc.ports) > 1 {
			slices.SortFunc(svc.ports, func(a, b *tableServicePort) int { return cmp.Compare(a.number, b.number) })
		}
	})
}

// addEndpoint places one endpoint in a service port. port != 0 joins the
// address (a bare host or IP) with it; port == 0 means ep.Addr is already
// host:port.
func (tb *tableBuild) addEndpoint(svc *tableService, sp *tableServicePort, ep Endpoint, port uint32, source string) {
	addr := strings.TrimSpace(ep.Addr)
	if strings.HasPrefix(addr, "unix://") {
		tb.warn("%s: endpoint %s of %s is a unix socket; only TCP endpoints are supported; skipped", source, addr, svc.host)
		return
	}
	if port != 0 {
		if addr == "" {
			tb.warn("%s: endpoint of %s has no address; skipped", source, svc.host)
			return
		}
		addr = net.JoinHostPort(addr, strconv.FormatUint(uint64(port), 10))
	} else if h, p, err := net.SplitHostPort(addr); err != nil || h == "" || p == "" {
		tb.warn("%s: endpoint %q of %s port %d is not host:port; skipped", source, ep.Addr, svc.host, sp.number)
		return
	}
	if ep.Gateway && ep.Network != "" && ep.Network != tb.in.Node.Network {
		tb.addGatewayEntry(svc, sp, ep, addr)
		return
	}
	ep.Gateway = false
	// The same endpoint from two sources: the first wins. Small ports are
	// searched; large ones get a set.
	var seen map[string]struct{}
	if len(sp.eps) >= tableSeenMin {
		seen = tb.seen[sp]
	}
	if seen != nil {
		if _, dup := seen[addr]; dup {
			return
		}
	} else {
		for _, e := range sp.eps {
			if e.addr == addr {
				return
			}
		}
	}
	if seen == nil && len(sp.eps) >= tableSeenMin {
		seen = make(map[string]struct{}, 2*len(sp.eps))
		for _, e := range sp.eps {
			seen[e.addr] = struct{}{}
		}
		if tb.seen == nil {
			tb.seen = map[*tableServicePort]map[string]struct{}{}
		}
		tb.seen[sp] = seen
	}
	if seen != nil {
		seen[addr] = struct{}{}
	}
	ep.Addr = addr
	if ep.Weight == 0 {
		ep.Weight = 1
	}
	local := ep.Network == "" || ep.Network == tb.in.Node.Network
	if local {
		ep.Network = ""
	}
	live := tb.endpointLive(svc, addr)
	e := tb.slabEndpoint()
	setTableEndpoint(e, ep, local, live, 0)
	sp.eps = append(sp.eps, e)
	if !local {
		sp.remote++
	}
}

// addGatewayEntry merges one split-horizon entry (a remote endpoint as
// seen through one of its network's gateways) into the port: entries of
// the same gateway with the same labels sum their weights, so a gateway
// carries one entry per label set. cluster() then merges the label sets
// that match its subset.
func (tb *tableBuild) addGatewayEntry(svc *tableService, sp *tableServicePort, ep Endpoint, addr string) {
	ep.Addr = addr
	ep.Bridge = strings.TrimSpace(ep.Bridge)
	ep.Weight = max(ep.Weight, 1)
	key := tableGatewayKey(ep)
	gw := tb.gw[sp]
	if gw == nil {
		gw = map[string]*tableEndpoint{}
		if tb.gw == nil {
			tb.gw = map[*tableServicePort]map[string]*tableEndpoint{}
		}
		tb.gw[sp] = gw
	}
	if e := gw[key]; e != nil {
		e.weight = tableAddWeight(e.weight, ep.Weight)
		return
	}
	live := tb.endpointLive(svc, addr)
	e := tb.slabEndpoint()
	setTableEndpoint(e, ep, false, live, 0)
	gw[key] = e
	sp.eps = append(sp.eps, e)
	sp.remote++
}

// tableGatewayKey identifies a gateway and one label set.
func tableGatewayKey(ep Endpoint) string {
	var b strings.Builder
	b.WriteString(ep.Network)
	b.WriteByte(0)
	b.WriteString(ep.Addr)
	b.WriteByte(0)
	b.WriteString(ep.Bridge)
	for _, k := range slices.Sorted(maps.Keys(ep.Labels)) {
		b.WriteByte(0)
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(ep.Labels[k])
	}
	return b.String()
}

// tableFilterEPs returns the endpoints of eps for which keep is true.
func tableFilterEPs(eps []*tableEndpoint, keep func(*tableEndpoint) bool) []*tableEndpoint {
	var out []*tableEndpoint
	for _, e := range eps {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

// tableAddWeight adds two weights, saturating.
func tableAddWeight(a, b uint32) uint32 {
	return uint32(min(uint64(a)+uint64(b), math.MaxUint32))
}

// tableMaxGatewayScale bounds the factor that keeps gateway shares exact
// (the lcm of the networks' gateway counts); above it shares are rounded
// up instead.
const tableMaxGatewayScale = 64

// mergeGateways turns the split-horizon entries that matched a
// cluster's subset into one endpoint per gateway, and weighs them: a
// network's weight is the summed weight of its matching endpoints (each
// is seen once through every gateway), split evenly across its gateways.
// other are the remote endpoints given by address (configuration); they
// are scaled by the same factor (the lcm of the gateway counts) so every
// ratio within the remote pool stays exact. It returns the remote pool.
// Local endpoints need no scaling: they are a pool of their own, picked
// first.
func (tb *tableBuild) mergeGateways(gws, other []*tableEndpoint) []*tableEndpoint {
	if len(gws) == 0 {
		return other
	}
	type gw struct {
		e *tableEndpoint
		w uint64
	}
	byAddr := map[string]*gw{}
	var order []*gw
	count := map[string]uint64{} // network -> gateways
	for _, e := range gws {
		g := byAddr[e.addr]
		if g == nil {
			g = &gw{e: e}
			byAddr[e.addr] = g
			order = append(order, g)
			count[e.network()]++
		}
		g.w += uint64(e.weight)
	}
	scale := uint64(1)
	for _, n := range count {
		scale = scale / tableGCD(scale, n) * n
		if scale > tableMaxGatewayScale {
			break
		}
	}
	exact := scale <= tableMaxGatewayScale
	if !exact {
		scale = 1
	}
	out := make([]*tableEndpoint, 0, len(order)+len(other))
	for _, e := range other {
		if scale == 1 {
			out = append(out, e)
			continue
		}
		c := tb.slabEndpoint()
		*c = *e
		c.weight = uint32(min(uint64(e.weight)*scale, math.MaxUint32))
		out = append(out, c)
	}
	slices.SortFunc(order, func(a, b *gw) int {
		return cmp.Or(strings.Compare(a.e.network(), b.e.network()), strings.Compare(a.e.addr, b.e.addr))
	})
	for _, g := range order {
		n := count[g.e.network()]
		// Every gateway of a network sees the same endpoints, so g.w is
		// the network's whole weight.
		share := g.w * scale / n
		if !exact {
			share = (g.w + n - 1) / n
		}
		c := tb.slabEndpoint()
		setTableEndpoint(c, Endpoint{Addr: g.e.addr, Bridge: g.e.bridge(), Network: g.e.network(), Gateway: true,
			Weight: uint32(min(max(share, 1), math.MaxUint32))}, false, g.e.live, g.w)
		out = append(out, c)
	}
	return out
}

// ---- destination rules ----

func (tb *tableBuild) buildDestinationRules() {
	ix := &tb.t.drs
	ix.exact = map[string][]*tableDR{}
	ix.wild = map[string][]*tableDR{}
	for _, d := range tb.cfg.DestinationRules {
		if d == nil || d.Spec == nil {
			continue
		}
		name := tableMetaName(d.Meta)
		host := tableQualifyHost(d.Spec.Host, tableNamespace(d.Meta), tb.t)
		tb.inc.routeHosts[strings.ToLower(strings.TrimSpace(d.Spec.Host))], tb.inc.routeHosts[host] = struct{}{}, struct{}{}
		if host == "" {
			continue
		}
		dr := &tableDR{name: name, handle: unique.Make(name), namespace: tableNamespace(d.Meta), exportTo: d.Spec.ExportTo, host: host, rule: d.Spec, subsets: map[string]*networking.Subset{}}
		if len(dr.exportTo) > 0 {
			ix.scoped = true
		}
		for _, s := range d.Spec.Subsets {
			if s == nil || s.Name == "" {
				continue
			}
			if dr.subsets[s.Name] != nil {
				tb.warn("DestinationRule %s: subset %s defined twice; the first wins", name, s.Name)
				continue
			}
			dr.subsets[s.Name] = s
			dr.subsetNames = append(dr.subsetNames, s.Name)
		}
		var list []*tableDR
		key := host
		switch {
		case host == "*":
			list = ix.any
		case strings.HasPrefix(host, "*."):
			key = host[1:]
			list = ix.wild[key]
		default:
			list = ix.exact[key]
		}
		for _, o := range list {
			if o.namespace == dr.namespace {
				tb.warn("DestinationRule %s: host %s already has DestinationRule %s in the same namespace; ignored", name, host, o.name)
				dr = nil
				break
			}
		}
		if dr == nil {
			continue
		}
		switch {
		case host == "*":
			ix.any = append(ix.any, dr)
		case strings.HasPrefix(host, "*."):
			ix.wild[key] = append(ix.wild[key], dr)
		default:
			ix.exact[key] = append(ix.exact[key], dr)
		}
	}
	tb.t.services.all(func(_ string, svc *tableService) {
		svc.dr = ix.lookup(svc.host, svc.namespace, svc.namespace)
	})
}

// tableDRIndex holds the DestinationRules by host.
type tableDRIndex struct {
	// scoped says some rule has an exportTo, so what a lookup finds
	// depends on the consumer.
	scoped bool
	exact  map[string][]*tableDR
	wild   map[string][]*tableDR // keyed by suffix with leading dot
	any    []*tableDR
}

// lookup is Istio's DestinationRule lookup (as
// config.Set.DestinationRuleFor, indexed): the exact host, then the
// longest wildcard, then "*"; at each step a rule in the service's
// namespace ns wins over the first rule of the others. Only rules
// exported to every namespace in consumers are considered (none given:
// every rule, which is how refusals find the rule exportTo hid).
func (ix *tableDRIndex) lookup(host, ns string, consumers ...string) *tableDR {
	visible := func(d *tableDR) bool {
		for _, c := range consumers {
			if !config.ExportedTo(d.exportTo, d.namespace, c) {
				return false
			}
		}
		return true
	}
	pick := func(l []*tableDR) *tableDR {
		var first *tableDR
		for _, d := range l {
			if !visible(d) {
				continue
			}
			if d.namespace == ns {
				return d
			}
			if first == nil {
				first = d
			}
		}
		return first
	}
	if d := pick(ix.exact[host]); d != nil {
		return d
	}
	for i := 0; i < len(host); i++ {
		if host[i] == '.' {
			if d := pick(ix.wild[host[i:]]); d != nil {
				return d
			}
		}
	}
	return pick(ix.any)
}

// drFor returns the DestinationRule of svc as seen from the consumer
// namespaces (see lookup). Without exportTo anywhere it is svc.dr.
func (tb *tableBuild) drFor(svc *tableService, consumers ...string) *tableDR {
	if !tb.t.drs.scoped {
		return svc.dr
	}
	return tb.t.drs.lookup(svc.host, svc.namespace, consumers...)
}

// tableQualifyHost resolves a short destination host ("reviews") in the
// rule's namespace as Istio does (config.ResolveHost), unless the short
// name is itself a service host.
func tableQualifyHost(host, ns string, known *Table) string {
	host = strings.ToLower(strings.TrimSpace(host))
	if known.service(host) != nil {
		return host
	}
	return config.ResolveHost(host, ns)
}

// ---- listeners and servers ----

func (tb *tableBuild) buildListeners() {
	for _, gw := range tb.cfg.Gateways {
		if gw == nil || gw.Spec == nil {
			continue
		}
		if !config.LabelsMatch(gw.Spec.Selector, tb.in.Node.Labels) {
			continue
		}
		gwName := tableMetaName(gw.Meta)
		requireALPN := gw.Meta.Labels[LabelRequireMeshALPN] != "false"
		for i, srv := range gw.Spec.Servers {
			if srv == nil {
				continue
			}
			sname := srv.Name
			if sname == "" {
				sname = fmt.Sprintf("servers[%d]", i)
			}
			where := fmt.Sprintf("Gateway %s server %s", gwName, sname)
			if srv.Port == nil {
				tb.warn("%s: no port; skipped", where)
				continue
			}
			mode, ok := tableServerMode(srv)
			if !ok {
				tb.warn("%s: protocol %q with tls mode %s is not routed by SNI or TCP; skipped", where, srv.Port.Protocol, srv.GetTls().GetMode())
				continue
			}
			spec, err := tb.listenerSpec(srv)
			if err != nil {
				tb.warn("%s: %v; skipped", where, err)
				continue
			}
			l := tb.t.listeners[spec.Key]
			if l == nil {
				l = &tableListener{table: tb.t, spec: spec, port: srv.Port.Number, idx: int32(len(tb.order)),
					exact: map[string]*tableSNIRoute{}, wild: map[string]*tableSNIRoute{}, owners: map[string]string{}}
				tb.t.listeners[spec.Key] = l
				tb.order = append(tb.order, l)
			}
			ts := &tableServer{gateway: gwName, gatewayNS: tableNamespace(gw.Meta), name: sname, mode: mode,
				port: srv.Port.Number, requireALPN: requireALPN, route: gwName + "#" + sname}
			switch mode {
			case ModeSimple, ModeMutual, ModeIstioMutual, ModeOptionalMutual:
				ts.tls = srv.Tls
			}
			for _, h := range srv.Hosts {
				ns, host := tableSplitServerHost(h)
				pat, err := ParsePattern(host)
				if err != nil {
					tb.warn("%s: host %q: %v; ignored", where, h, err)
					continue
				}
				host = pat.String()
				ts.hosts = append(ts.hosts, host)
				ts.rawHosts = append(ts.rawHosts, ns+"/"+host)
			}
			if len(ts.hosts) == 0 && mode != ModeTCP {
				tb.warn("%s: no hosts; nothing can match it", where)
			}
			if mode != ModeTCP {
				l.spec.NeedsHello = true
			}
			l.servers = append(l.servers, ts)
			if mode == ModeAutoPassthrough {
				l.autoServers = append(l.autoServers, ts)
			}
		}
	}
	for _, l := range tb.order {
		tb.t.specs = append(tb.t.specs, l.spec)
	}
	slices.SortFunc(tb.t.specs, func(a, b ListenerSpec) int { return strings.Compare(a.Key, b.Key) })
}

// tableServerMode classifies a server; false for servers that need HTTP.
func tableServerMode(srv *networking.Server) (string, bool) {
	proto := strings.ToUpper(srv.Port.Protocol)
	tls := srv.Tls
	switch proto {
	case "TCP", "MONGO":
		if tls == nil {
			return ModeTCP, true
		}
	case "TLS":
	case "HTTPS":
		if tls == nil {
			return "", false
		}
		switch tls.Mode {
		case networking.ServerTLSSettings_PASSTHROUGH, networking.ServerTLSSettings_AUTO_PASSTHROUGH:
		default:
			return "", false // terminated HTTPS needs HTTP routing
		}
	default:
		return "", false
	}
	switch tls.GetMode() {
	case networking.ServerTLSSettings_AUTO_PASSTHROUGH:
		return ModeAutoPassthrough, true
	case networking.ServerTLSSettings_SIMPLE:
		return ModeSimple, true
	case networking.ServerTLSSettings_MUTUAL:
		return ModeMutual, true
	case networking.ServerTLSSettings_ISTIO_MUTUAL:
		return ModeIstioMutual, true
	case networking.ServerTLSSettings_OPTIONAL_MUTUAL:
		return ModeOptionalMutual, true
	}
	return ModePassthrough, true
}

// listenerSpec derives the listener of a server from its bind and port.
func (tb *tableBuild) listenerSpec(srv *networking.Server) (ListenerSpec, error) {
	bind := strings.TrimSpace(srv.Bind)
	path, ok := strings.CutPrefix(bind, "unix://")
	if !ok && (strings.HasPrefix(bind, "/") || strings.HasPrefix(bind, "@")) {
		// The short forms validation accepts beside Istio's unix://.
		path, ok = bind, true
	}
	if ok {
		switch {
		case strings.HasPrefix(path, "@") && len(path) > 1:
		case strings.HasPrefix(path, "/") && len(path) > 1:
		default:
			return ListenerSpec{}, fmt.Errorf("bind %q: want unix:///absolute/path or unix://@abstract", bind)
		}
		return ListenerSpec{Key: "unix/" + path, Network: "unix", Address: path}, nil
	}
	if bind == "" {
		bind = tb.b.bind
	}
	ip, err := netip.ParseAddr(bind)
	if err != nil {
		return ListenerSpec{}, fmt.Errorf("bind %q: not an IP address or unix:// path", bind)
	}
	if srv.Port.Number == 0 || srv.Port.Number > 65535 {
		return ListenerSpec{}, fmt.Errorf("port %d out of range", srv.Port.Number)
	}
	addr := netip.AddrPortFrom(ip, uint16(srv.Port.Number)).String()
	return ListenerSpec{Key: "tcp/" + addr, Network: "tcp", Address: addr}, nil
}

// ---- VirtualService routes ----

// tableQualifyGateway resolves a gateway reference of a VirtualService in
// namespace ns to "ns/name"; "" for the reserved "mesh".
func tableQualifyGateway(g, ns string) string {
	gns, name, ok := config.GatewayRef(strings.TrimSpace(g), ns)
	if !ok {
		return ""
	}
	return gns + "/" + name
}

func (tb *tableBuild) buildRoutes() {
	tb.bound = map[string][]*config.VirtualService{}
	tb.hidden = map[string][]*config.VirtualService{}
	for _, vs := range tb.cfg.VirtualServices {
		if vs == nil || vs.Spec == nil {
			continue
		}
		ns := tableNamespace(vs.Meta)
		seen := map[string]bool{}
		for _, g := range vs.Spec.Gateways {
			q := tableQualifyGateway(g, ns)
			if q == "" || seen[q] {
				continue
			}
			seen[q] = true
			// exportTo: a VirtualService binds only Gateways of the
			// namespaces it is exported to.
			if gwNS := q[:strings.IndexByte(q, '/')]; !config.ExportedTo(vs.Spec.ExportTo, ns, gwNS) {
				tb.hidden[q] = append(tb.hidden[q], vs)
				continue
			}
			tb.bound[q] = append(tb.bound[q], vs)
		}
	}
	for _, l := range tb.order {
		for _, ts := range l.servers {
			tb.hiddenRoutes(l, ts)
			switch ts.mode {
			case ModeAutoPassthrough:
			case ModePassthrough:
				tb.passthroughRoutes(l, ts)
			case ModeTCP:
				r := tb.tcpRoute(l, ts)
				switch {
				case r == nil:
					tb.warn("Gateway %s server %s on %s: no VirtualService tcp route bound to it matches port %d", ts.gateway, ts.name, l.spec.Key, ts.port)
				case l.tcp != nil:
					tb.warn("Gateway %s server %s on %s: listener already routes TCP by Gateway %s server %s; ignored", ts.gateway, ts.name, l.spec.Key, l.tcpServer.gateway, l.tcpServer.name)
				default:
					l.tcp, l.tcpServer = r, ts
				}
			default: // terminating TLS: server hosts are the SNI names
				r := tb.tcpRoute(l, ts)
				if r == nil {
					tb.warn("Gateway %s server %s on %s: no VirtualService tcp route bound to it matches port %d", ts.gateway, ts.name, l.spec.Key, ts.port)
					continue
				}
				tb.addSNI(l, ts, ts.hosts, r, fmt.Sprintf("Gateway %s server %s", ts.gateway, ts.name))
			}
		}
	}
}

// vsMatchesServer is Istio's pickMatchingGatewayHosts: a VirtualService
// attaches to a server when one of its hosts matches one of the server's
// hosts whose namespace part admits the VirtualService's namespace.
func tableVSMatchesServer(vs *config.VirtualService, ts *tableServer) bool {
	vsNS := tableNamespace(vs.Meta)
	for _, vh := range vs.Spec.Hosts {
		vh = strings.ToLower(strings.TrimSpace(vh))
		for i, raw := range ts.rawHosts {
			ns := raw[:strings.IndexByte(raw, '/')]
			switch ns {
			case "*":
			case ".":
				if vsNS != ts.gatewayNS {
					continue
				}
			default:
				if ns != vsNS {
					continue
				}
			}
			if tableHostMatch(ts.hosts[i], vh) {
				return true
			}
		}
	}
	return false
}

// tableL4Match is Istio's l4SingleMatch: port 0 or the server port, and
// no gateways or the server's gateway among them; plus the source of a
// gateway-bound route, which is the gateway itself (as Istio matches a
// sidecar's routes against the sidecar's own namespace and labels):
// sourceNamespace must be the server's Gateway namespace and
// sourceLabels must be among the node's labels.
func tableL4Match(port uint32, gateways []string, sourceNS string, sourceLabels, nodeLabels map[string]string, ts *tableServer, vsNS string) bool {
	if port != 0 && port != ts.port {
		return false
	}
	if sourceNS != "" && sourceNS != ts.gatewayNS {
		return false
	}
	if len(sourceLabels) > 0 && !config.LabelsMatch(sourceLabels, nodeLabels) {
		return false
	}
	if len(gateways) == 0 {
		return true
	}
	for _, g := range gateways {
		if tableQualifyGateway(g, vsNS) == ts.gateway {
			return true
		}
	}
	return false
}

func (tb *tableBuild) passthroughRoutes(l *tableListener, ts *tableServer) {
	for _, vs := range tb.bound[ts.gateway] {
		if !tableVSMatchesServer(vs, ts) {
			continue
		}
		vsNS := tableNamespace(vs.Meta)
		vsName := tableMetaName(vs.Meta)
		for i, tr := range vs.Spec.Tls {
			if tr == nil {
				continue
			}
			for j, m := range tr.Match {
				if m == nil || !tableL4Match(m.Port, m.Gateways, m.SourceNamespace, m.SourceLabels, tb.in.Node.Labels, ts, vsNS) {
					continue
				}
				owner := fmt.Sprintf("VirtualService %s tls[%d].match[%d]", vsName, i, j)
				var hosts []string
				for _, h := range m.SniHosts {
					pat, err := ParsePattern(strings.TrimSpace(h))
					if err != nil {
						tb.warn("%s: sniHost %q: %v; ignored", owner, h, err)
						continue
					}
					hosts = append(hosts, pat.String())
				}
				var dups []string
				for _, h := range hosts {
					if o, ok := l.owners[h]; ok {
						dups = append(dups, h+" (defined by "+o+")")
					}
				}
				if len(dups) > 0 {
					tb.warn("%s on %s: duplicate SNI hosts %s; match skipped (the first definition wins)", owner, l.spec.Key, strings.Join(dups, ", "))
					continue
				}
				r := tb.route(l, ts, vs, "tls", i, tr.Route)
				if r == nil {
					continue
				}
				tb.addSNI(l, ts, hosts, r, owner)
			}
		}
	}
}

// hiddenRoutes records, for explanations, the SNI hosts and tcp routes of
// VirtualServices that name the server's gateway but are not exported to
// its namespace.
func (tb *tableBuild) hiddenRoutes(l *tableListener, ts *tableServer) {
	for _, vs := range tb.hidden[ts.gateway] {
		if !tableVSMatchesServer(vs, ts) {
			continue
		}
		why := fmt.Sprintf("VirtualService %s is not exported to namespace %s of Gateway %s (exportTo %v)", tableMetaName(vs.Meta), ts.gatewayNS, ts.gateway, vs.Spec.ExportTo)
		tb.warn("%s; it does not route on %s", why, l.spec.Key)
		for _, tr := range vs.Spec.Tls {
			for _, m := range tr.GetMatch() {
				for _, h := range m.GetSniHosts() {
					if pat, err := ParsePattern(strings.TrimSpace(h)); err == nil {
						l.hidden = append(l.hidden, tableHidden{pattern: pat.String(), why: why})
					}
				}
			}
		}
		if len(vs.Spec.Tcp) > 0 {
			l.hidden = append(l.hidden, tableHidden{why: why})
		}
	}
}

// tcpRoute is Istio's buildGatewayNetworkFiltersFromTCPRoutes: the first
// VirtualService bound to the server's gateway whose hosts match the
// server, and in it the first tcp route whose match list admits the
// server (or is empty).
func (tb *tableBuild) tcpRoute(l *tableListener, ts *tableServer) *tableRoute {
	for _, vs := range tb.bound[ts.gateway] {
		if !tableVSMatchesServer(vs, ts) {
			continue
		}
		vsNS := tableNamespace(vs.Meta)
		for i, tr := range vs.Spec.Tcp {
			if tr == nil {
				continue
			}
			ok := len(tr.Match) == 0
			for _, m := range tr.Match {
				if m != nil && tableL4Match(m.Port, m.Gateways, m.SourceNamespace, m.SourceLabels, tb.in.Node.Labels, ts, vsNS) {
					ok = true
					break
				}
			}
			if ok {
				if r := tb.route(l, ts, vs, "tcp", i, tr.Route); r != nil {
					return r
				}
			}
		}
	}
	return nil
}

// addSNI places SNI patterns on a listener.
func (tb *tableBuild) addSNI(l *tableListener, ts *tableServer, hosts []string, r *tableRoute, owner string) {
	for _, h := range hosts {
		if o, ok := l.owners[h]; ok {
			tb.warn("%s on %s: duplicate SNI host %s (defined by %s); skipped", owner, l.spec.Key, h, o)
			continue
		}
		l.owners[h] = owner
		e := &tableSNIRoute{pattern: h, server: ts, route: r}
		switch {
		case h == "*":
			l.any = e
		case strings.HasPrefix(h, "*."):
			l.wild[h[1:]] = e
		default:
			l.exact[h] = e
		}
	}
}

// route builds the weighted destinations of one VirtualService route as
// placed on one server; nil when no destination carries traffic.
func (tb *tableBuild) route(l *tableListener, ts *tableServer, vs *config.VirtualService, kind string, idx int, dests []*networking.RouteDestination) *tableRoute {
	vsName := tableMetaName(vs.Meta)
	name := fmt.Sprintf("%s#%s[%d]", vsName, kind, idx)
	memo := l.spec.Key + "|" + ts.gateway + "|" + ts.name + "|" + name
	if r, ok := tb.routeMemo[memo]; ok {
		return r
	}
	vsNS := tableNamespace(vs.Meta)
	allZero := true
	for _, d := range dests {
		if d != nil && d.Weight > 0 {
			allZero = false
		}
	}
	r := &tableRoute{name: name}
	origin := &Origin{Route: name, Mode: ts.mode, Gateway: ts.gateway, Server: ts.name, TLS: ts.tls}
	for k, d := range dests {
		if d == nil || d.Destination == nil || d.Destination.Host == "" {
			tb.warn("VirtualService %s %s[%d].route[%d]: no destination host; skipped", vsName, kind, idx, k)
			continue
		}
		w := uint64(1)
		if !allZero {
			if d.Weight <= 0 {
				continue
			}
			w = uint64(d.Weight)
		}
		raw := strings.ToLower(strings.TrimSpace(d.Destination.Host))
		host := tableQualifyHost(raw, vsNS, tb.t)
		tb.inc.routeHosts[raw], tb.inc.routeHosts[host] = struct{}{}, struct{}{}
		port := d.Destination.GetPort().GetNumber()
		if port == 0 {
			port = ts.port
			if svc := tb.t.service(host); svc != nil && svc.port(port) == nil && len(svc.ports) == 1 {
				port = svc.ports[0].number
			}
		}
		var cl *Cluster
		if svc := tb.t.service(host); svc != nil && !(config.ExportedTo(svc.exportTo, svc.namespace, ts.gatewayNS) && config.ExportedTo(svc.exportTo, svc.namespace, vsNS)) {
			cl = tb.refusedCluster(host, port, d.Destination.Subset, ReasonNotExported,
				fmt.Sprintf("service %s (%s) is not exported to namespace %s (exportTo %v); VirtualService %s and Gateway %s must both see it", host, svc.source, tableNotSeeing(svc, vsNS, ts.gatewayNS), svc.exportTo, vsName, ts.gateway))
		} else {
			var dr *tableDR
			if svc != nil {
				dr = tb.drFor(svc, ts.gatewayNS, vsNS)
			}
			cl = tb.cluster(host, port, d.Destination.Subset, false, dr)
		}
		if why, _ := cl.problem(); why != "" {
			tb.warn("VirtualService %s %s[%d].route[%d]: %s", vsName, kind, idx, k, why)
		}
		dec := &Decision{Origin: origin, Cluster: cl}
		r.decs = append(r.decs, dec)
		r.ws = append(r.ws, w)
	}
	if len(r.decs) == 0 {
		tb.warn("VirtualService %s %s[%d]: no destination carries traffic; route skipped", vsName, kind, idx)
		tb.routeMemo[memo] = nil
		return nil
	}
	r.sched = tableSchedule(r.ws)
	live := tb.b.routes[memo]
	if live == nil {
		live = &tableRouteLive{}
		tb.b.routes[memo] = live
	}
	live.gen = tb.gen
	r.ctr = &live.ctr
	tb.routeMemo[memo] = r
	return r
}

// ---- clusters ----

// tableNotSeeing names the first of the namespaces that svc is not
// exported to.
func tableNotSeeing(svc *tableService, nss ...string) string {
	for _, ns := range nss {
		if !config.ExportedTo(svc.exportTo, svc.namespace, ns) {
			return ns
		}
	}
	return nss[0]
}

// refusedCluster is a cluster that refuses every connection with reason
// and why. It
// has its own live state, shared with no other cluster.
func (tb *tableBuild) refusedCluster(host string, port uint32, subset string, reason Reason, why string) *Cluster {
	c := tb.slabCluster()
	*c = Cluster{service: host, port: port, subset: subset, live: &tableClusterLive{gen: tb.gen}, refusal: &tableRefusal{why: why, reason: reason}}
	c.pol = tb.policy(nil, nil, port)
	tb.t.clusters = append(tb.t.clusters, c)
	return c
}

// cluster returns the cluster of host:port (and subset), memoized per
// build through its live state. localOnly clusters (AUTO_PASSTHROUGH)
// hold only endpoints of the node's own network. dr is the
// DestinationRule the consumer sees (subsets and traffic policy).
func (tb *tableBuild) cluster(host string, port uint32, subset string, localOnly bool, dr *tableDR) *Cluster {
	return tb.svcCluster(tb.t.service(host), host, port, subset, localOnly, dr)
}

// svcCluster is cluster for the caller that has the service of host
// (svc, nil when there is none).
func (tb *tableBuild) svcCluster(svc *tableService, host string, port uint32, subset string, localOnly bool, dr *tableDR) *Cluster {
	var drName tableDRName
	if dr != nil {
		drName = dr.handle
	}
	var live *tableClusterLive
	key := tableClusterKey{port: port, localOnly: localOnly, subset: subset, dr: drName}
	if svc != nil {
		// One cluster per key and build.
		for _, c := range svc.clusters {
			if c.key() == key {
				return c
			}
		}
		live = tb.clusterLive(svc, key)
	} else {
		// No service, so no endpoints: the cluster refuses every
		// connection and no state of it needs to outlive the table.
		if c := tb.unknown[tableUnknownKey{host, key}]; c != nil {
			return c
		}
		live = &tableClusterLive{gen: tb.gen, dr: drName}
	}
	c := tb.slabCluster()
	*c = Cluster{service: host, port: port, subset: subset, localOnly: localOnly, live: live}
	if svc != nil {
		if svc.clusters == nil {
			svc.clusters = slabSlice(&tb.ptrSlab.clusters, 4*tb.slabSize(), 2)
		}
		svc.clusters = append(svc.clusters, c)
	} else {
		tb.t.clusters = append(tb.t.clusters, c)
		if tb.unknown == nil {
			tb.unknown = map[tableUnknownKey]*Cluster{}
		}
		tb.unknown[tableUnknownKey{host, key}] = c
	}
	var sp *tableServicePort
	var sub *networking.Subset
	if svc != nil {
		sp = svc.port(port)
	}
	switch {
	case svc == nil:
		c.refuse("", fmt.Sprintf("unknown service %s: no ServiceEntry host or catalog endpoint", host))
	case sp == nil:
		c.refuse("", fmt.Sprintf("service %s has no port %d (ports %v)", host, port, svc.portList()))
	case subset != "":
		if dr != nil {
			sub = dr.subsets[subset]
		}
		if sub == nil {
			all := tb.t.drs.lookup(host, svc.namespace)
			switch {
			case all != nil && all != dr && all.subsets[subset] != nil:
				c.refuse(ReasonNotExported, fmt.Sprintf("unknown subset %s of %s: DestinationRule %s defines it but is not exported here (exportTo %v)", subset, host, all.name, all.exportTo))
			case dr == nil:
				c.refuse("", fmt.Sprintf("unknown subset %s of %s: no DestinationRule for the host", subset, host))
			default:
				c.refuse("", fmt.Sprintf("unknown subset %s of %s: not defined in DestinationRule %s", subset, host, dr.name))
			}
		}
	}
	if c.refusal != nil {
		c.pol = tb.policy(nil, nil, port)
		return c
	}
	c.pol = tb.policy(dr, sub, port)
	var local, remote, gws []*tableEndpoint
	matched := 0
	sel := tb.selector(sub)
	allLocal := sp.remote == 0
	for i := 0; allLocal && sub != nil && i < len(sp.eps); i++ {
		allLocal = sel.match(sp.eps[i].labels)
	}
	if allLocal {
		// The common case: every endpoint local and in the subset.
		// Share the port's slice; it no longer changes.
		local, matched = sp.eps, len(sp.eps)
	}
	for _, e := range sp.eps {
		if allLocal {
			break
		}
		if sub != nil && !sel.match(e.labels) {
			continue
		}
		matched++
		switch {
		case e.local:
			local = append(local, e)
		case localOnly:
		case e.gateway:
			gws = append(gws, e)
		default:
			remote = append(remote, e)
		}
	}
	all := tb.mergeGateways(gws, remote)
	if !localOnly && slices.ContainsFunc(all, func(e *tableEndpoint) bool { return e.bridge() == "" }) {
		hasBridge := func(e *tableEndpoint) bool { return e.bridge() != "" }
		if br := tb.mergeGateways(tableFilterEPs(gws, hasBridge), tableFilterEPs(remote, hasBridge)); len(br) > 0 {
			p := tableNewPool(br)
			c.bridge = &p
		}
	}
	remote = all
	switch {
	case len(local) > 0 && len(remote) > 0:
		c.pools = []tablePool{tableNewPool(local), tableNewPool(remote)}
	case len(local) > 0:
		c.pools = tb.slabPool(tableNewPool(local))
	case len(remote) > 0:
		c.pools = tb.slabPool(tableNewPool(remote))
	}
	if len(local)+len(remote) == 0 {
		switch {
		case matched > 0:
			c.refuse("", "no endpoints in this node's network")
		case sub != nil:
			c.refuse("", fmt.Sprintf("no endpoints match the labels %s of subset %s", explainLabels(sub.Labels), subset))
		default:
			c.refuse("", "no endpoints")
		}
	}
	return c
}

// policy resolves (and memoizes per build) the DestinationRule traffic
// policy for a cluster: the subset's port-level settings, then the
// subset's policy, then the rule's port-level settings, then the rule's
// policy; each of loadBalancer, connectionPool and outlierDetection is
// taken whole from the first that sets it (as Istio merges them).
func (tb *tableBuild) policy(dr *tableDR, sub *networking.Subset, port uint32) *tableClusterPolicy {
	key := tablePolicyKey{dr: dr, port: port}
	if sub != nil {
		key.subset = sub.Name
	}
	if dr == nil {
		key.port = 0 // no rule: one default policy for every port
	}
	if tb.shared != nil {
		tb.shared.Lock()
		defer tb.shared.Unlock()
	}
	if p := tb.policies[key]; p != nil {
		return p
	}
	pol := &tableClusterPolicy{conn: ConnPolicy{ConnectTimeout: DefaultConnectTimeout, IdleTimeout: DefaultIdleTimeout}, env: tb.b.env}
	tb.policies[key] = pol
	if dr == nil {
		return pol
	}
	var chain []*networking.TrafficPolicy
	add := func(tp *networking.TrafficPolicy) {
		if tp == nil {
			return
		}
		for _, pl := range tp.PortLevelSettings {
			if pl != nil && pl.GetPort().GetNumber() == port {
				chain = append(chain, &networking.TrafficPolicy{LoadBalancer: pl.LoadBalancer, ConnectionPool: pl.ConnectionPool, OutlierDetection: pl.OutlierDetection})
			}
		}
		chain = append(chain, tp)
	}
	if sub != nil {
		add(sub.TrafficPolicy)
	}
	add(dr.rule.TrafficPolicy)
	var lb *networking.LoadBalancerSettings
	var cp *networking.ConnectionPoolSettings
	var od *networking.OutlierDetection
	for _, tp := range chain {
		if lb == nil {
			lb = tp.LoadBalancer
		}
		if cp == nil {
			cp = tp.ConnectionPool
		}
		if od == nil {
			od = tp.OutlierDetection
		}
	}
	if lb != nil {
		if lb.GetConsistentHash() != nil {
			tb.warn("DestinationRule %s: loadBalancer.consistentHash needs L7 attributes; ROUND_ROBIN is used", dr.name)
		}
		switch lb.GetSimple() {
		//lint:ignore SA1019 LEAST_CONN is still accepted by Istio as an alias of LEAST_REQUEST
		case networking.LoadBalancerSettings_LEAST_REQUEST, networking.LoadBalancerSettings_LEAST_CONN:
			pol.lb = lbLeastRequest
		case networking.LoadBalancerSettings_RANDOM:
			pol.lb = lbRandom
		case networking.LoadBalancerSettings_PASSTHROUGH:
			tb.warn("DestinationRule %s: loadBalancer.simple PASSTHROUGH would dial the client's original destination; ROUND_ROBIN is used", dr.name)
		}
	}
	if tcp := cp.GetTcp(); tcp != nil {
		if d := tcp.ConnectTimeout; d != nil && d.AsDuration() > 0 {
			pol.conn.ConnectTimeout = d.AsDuration()
		}
		if d := tcp.IdleTimeout; d != nil {
			pol.conn.IdleTimeout = max(0, d.AsDuration())
		}
		if ka := tcp.TcpKeepalive; ka != nil {
			pol.conn.KeepAliveSet = true
			if ka.Time != nil && ka.Time.AsDuration() > 0 {
				pol.conn.KeepAlive = ka.Time.AsDuration()
			}
			if ka.Interval != nil && ka.Interval.AsDuration() > 0 {
				pol.conn.KeepAliveInterval = ka.Interval.AsDuration()
			}
			if ka.Probes > 0 {
				pol.conn.KeepAliveProbes = int(min(ka.Probes, 127))
			}
		}
		if tcp.MaxConnections > 0 {
			pol.conn.MaxConnections = int(tcp.MaxConnections)
		}
		if d := tcp.MaxConnectionDuration; d != nil && d.AsDuration() > 0 {
			pol.conn.MaxConnectionDuration = d.AsDuration()
		}
	}
	pol.outlier = tableOutlierFrom(od)
	return pol
}

// ---- AUTO_PASSTHROUGH ----

// buildKeys gives every service its AUTO_PASSTHROUGH keys (autoService)
// and bridge keys (bridgeService), in one pass over the services, and
// drops the build-time indexes of their ports. A large table is keyed by
// several workers, each over its own shards (keysParallel).
func (tb *tableBuild) buildKeys() {
	var auto []*tableListener
	for _, l := range tb.order {
		if len(l.autoServers) > 0 {
			auto = append(auto, l)
		}
	}
	workers := tb.b.keyWorkers
	if workers == 0 && tb.t.services.len() >= tableParallelMin {
		workers = min(runtime.GOMAXPROCS(0), tableMaxKeyWorkers)
	}
	if workers <= 1 {
		tb.t.services.all(func(_ string, svc *tableService) { tb.serviceKeys(svc, auto) })
		return
	}
	tb.keysParallel(auto, workers)
}

// tableParallelMin is the service count from which buildKeys spreads
// its work over the cores; below it the workers cost more than they
// save. tableMaxKeyWorkers bounds them: the phase is memory-bound, and
// the collector wants a core too.
const (
	tableParallelMin   = 4096
	tableMaxKeyWorkers = 4
)

// keysParallel is buildKeys with n workers. Every service of a host sits
// in one shard, and a cluster's live state belongs to one host, so
// workers own disjoint services, clusters and live states. Each worker
// is a copy of tb with slabs and memos of its own; what stays shared is
// read-only but for the policy memo and the warnings, which policy
// guards with tb.shared. The Origins that addAuto and bridgeService
// would make on first use are made here, before the workers start.
func (tb *tableBuild) keysParallel(auto []*tableListener, n int) {
	for _, l := range auto {
		for _, srv := range l.autoServers {
			srv.autoOrigin()
		}
	}
	if tb.in.Node.Bridge {
		tb.bridgeRoute()
	}
	tb.shared = &sync.Mutex{}
	ws := make([]*tableBuild, n)
	var wg sync.WaitGroup
	for i := range ws {
		w := tb.forkWorker()
		ws[i] = w
		wg.Go(func() {
			w.t.services.allIn(i, n, func(_ string, svc *tableService) { w.serviceKeys(svc, auto) })
		})
	}
	wg.Wait()
	tb.shared = nil
	for _, w := range ws {
		tb.warnCalls += w.warnCalls
	}
}

// forkWorker returns a copy of tb for one keysParallel worker: the
// build's tables and maps are shared; slabs, the key buffer, the
// selector memo and the old-endpoint index start empty.
func (tb *tableBuild) forkWorker() *tableBuild {
	w := *tb
	w.clusterSlab, w.endpointSlab, w.poolSlab, w.serviceSlab, w.portSlab = nil, nil, nil, nil, nil
	w.ptrSlab.ports, w.ptrSlab.eps, w.ptrSlab.clusters = nil, nil, nil
	w.keySlab, w.keys = nil, nil
	w.selSub, w.sel = nil, nil
	w.oldIndex = nil
	w.warnCalls = 0
	return &w
}

// serviceKeys makes the keys of one service for the AUTO_PASSTHROUGH
// listeners auto and, on a bridge node, the bridge.
func (tb *tableBuild) serviceKeys(svc *tableService, auto []*tableListener) {
	tb.keys = tb.keys[:0]
	for _, l := range auto {
		tb.autoService(l, svc)
	}
	if tb.in.Node.Bridge {
		tb.bridgeService(svc)
	}
	if n := len(tb.keys); n > 0 {
		// Exactly sized, carved from a chunk.
		if len(tb.keySlab) < n {
			tb.keySlab = make([]tableSvcKey, max(n, 4*tb.slabSize()))
		}
		svc.keys = tb.keySlab[:n:n]
		tb.keySlab = tb.keySlab[n:]
		copy(svc.keys, tb.keys)
	}
	svc.old = nil
}

// autoService indexes, for one listener with AUTO_PASSTHROUGH servers,
// each (host, port, subset) of svc that a server exports: MESH_INTERNAL
// (or catalog) services whose host matches a server host, every non-UDP
// port, no subset and every subset of the host's DestinationRule. The
// first server that exports a host owns it. exportTo: a server exports
// only the services (and DestinationRule subsets) exported to its
// Gateway's namespace; "~" hides a service from every gateway.
func (tb *tableBuild) autoService(l *tableListener, svc *tableService) {
	if !svc.internal {
		return
	}
	host := svc.host
	var srv *tableServer
	for _, s := range l.autoServers {
		if tableHostsMatchAny(s.hosts, host) && config.ExportedTo(svc.exportTo, svc.namespace, s.gatewayNS) {
			srv = s
			break
		}
	}
	if srv == nil {
		return
	}
	dr := tb.drFor(svc, srv.gatewayNS)
	for _, sp := range svc.ports {
		if sp.udp {
			continue
		}
		tb.addAuto(l, srv, svc, sp.number, "", dr)
		if dr != nil {
			for _, s := range dr.subsetNames {
				tb.addAuto(l, srv, svc, sp.number, s, dr)
			}
		}
	}
}

func (tb *tableBuild) addAuto(l *tableListener, srv *tableServer, svc *tableService, port uint32, subset string, dr *tableDR) {
	host := svc.host
	cl := tb.svcCluster(svc, host, port, subset, true, dr)
	origin := srv.autoOrigin()
	tb.keys = append(tb.keys, tableSvcKey{li: l.idx, port: port, dec: Decision{Origin: origin, Cluster: cl}})
	if !srv.requireALPN {
		// Clients without a mesh ALPN are not Istio sidecars doing
		// split horizon: other networks' endpoints are theirs too,
		// through the bridge, after the local ones.
		ocl := tb.svcCluster(svc, host, port, subset, false, dr)
		tb.keys = append(tb.keys, tableSvcKey{li: l.idx | tableOpenKey, port: port, dec: Decision{Origin: origin, Cluster: ocl}})
	}
}

// autoOrigin returns the Origin of srv's AUTO_PASSTHROUGH decisions,
// made on first use.
func (srv *tableServer) autoOrigin() *Origin {
	if srv.auto == nil {
		srv.auto = &Origin{Route: srv.route, Mode: ModeAutoPassthrough, Gateway: srv.gateway, Server: srv.name, server: srv}
	}
	return srv.auto
}

// ---- bridge (receiving side) ----

// bridgeService adds the bridge keys of one service: what
// Server.ConnectBridge may serve is every non-UDP port of every
// MESH_INTERNAL (or catalog) service exported to the bridge namespace,
// with no subset and with each subset of the DestinationRule visible
// there. Clusters hold only this network's endpoints: the bridge never
// forwards to another gateway.
func (tb *tableBuild) bridgeService(svc *tableService) {
	ns := tb.in.Node.bridgeNamespace()
	route := tb.bridgeRoute()
	if !svc.internal || !config.ExportedTo(svc.exportTo, svc.namespace, ns) {
		return
	}
	dr := tb.drFor(svc, ns)
	for _, sp := range svc.ports {
		if sp.udp {
			continue
		}
		tb.addBridge(route, svc, sp.number, "", dr)
		if dr != nil {
			for _, s := range dr.subsetNames {
				tb.addBridge(route, svc, sp.number, s, dr)
			}
		}
	}
}

// bridgeRoute returns the Origin of bridge decisions, made on first use.
func (tb *tableBuild) bridgeRoute() *Origin {
	if tb.bridgeOrigin == nil {
		tb.bridgeOrigin = &Origin{Route: "bridge/" + tb.in.Node.bridgeNamespace(), Mode: ModeBridge}
	}
	return tb.bridgeOrigin
}

// addBridge adds one bridge key.
func (tb *tableBuild) addBridge(route *Origin, svc *tableService, port uint32, subset string, dr *tableDR) {
	host := svc.host
	cl := tb.svcCluster(svc, host, port, subset, true, dr)
	tb.keys = append(tb.keys, tableSvcKey{li: tableBridgeKey, port: port, dec: Decision{Origin: route, Cluster: cl}})
}

// ---- finish ----

// finish sorts warnings, logs them when they changed and prunes the live
// state: entries this table does not use are dropped unless they still
// count active connections.
func (tb *tableBuild) finish() {
	b := tb.b
	for _, l := range tb.order {
		l.owners = nil // build-time only
		tb.inc.order = append(tb.inc.order, l.spec.Key)
	}
	if tb.prev != nil {
		tb.prev.services.all(func(_ string, old *tableService) { tb.orphan(old) })
	}
	for host := range b.orphans {
		tb.pruneOrphans(host)
	}
	for k, v := range b.routes {
		if v.gen != tb.gen {
			delete(b.routes, k)
		}
	}
	slices.Sort(tb.t.warnings)
	if !slices.Equal(tb.t.warnings, b.lastWarn) {
		for _, w := range tb.t.warnings {
			b.env.log.Warn("sni: route table", "warning", w)
		}
		b.lastWarn = tb.t.warnings
	}
	b.env.log.Debug("sni: route table built", "node", tb.in.Node.Name, "listeners", len(tb.t.specs),
		"services", tb.t.services.len(), "clusters", tb.t.clusterCount(), "warnings", len(tb.t.warnings))
}
