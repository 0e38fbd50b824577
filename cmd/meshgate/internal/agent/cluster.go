package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/meshgate/meshgate/cluster"
	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/config"
	"github.com/meshgate/meshgate/sni"
)

// Cluster runs the node's membership (gossip endpoint catalog) and its
// raft-replicated store, and feeds both into the data plane: the store's
// resources as a ConfigSource, the catalog as an EndpointSource.
type Cluster struct {
	node    *cluster.Node
	network string

	regPolicy catalog.RegistrationPolicy

	eps catalogEndpoints

	changed   chan struct{} // resources or members changed
	epChanged chan struct{} // catalog endpoints changed
	stop      chan struct{}
	wg        sync.WaitGroup
	once      sync.Once
}

var (
	_ Component            = (*Cluster)(nil)
	_ ConfigSource         = (*Cluster)(nil)
	_ EndpointSource       = (*Cluster)(nil)
	_ EndpointChangeSource = (*Cluster)(nil)
	_ AdminRouter          = (*Cluster)(nil)
)

// leaveTimeout bounds the graceful departure at shutdown.
const leaveTimeout = 5 * time.Second

// NewCluster starts gossip and raft (cluster.New) so the replicated
// resources are readable before the data plane is configured.
func NewCluster(ctx context.Context, cfg cluster.Config) (*Cluster, error) {
	n, err := cluster.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	c := &Cluster{node: n, network: cfg.Network, eps: catalogEndpoints{cat: n.Catalog(), network: cfg.Network},
		changed: make(chan struct{}, 1), epChanged: make(chan struct{}, 1), stop: make(chan struct{})}
	cfgCh, cancel := n.Watch("config/")
	c.wg.Go(func() {
		defer cancel()
		for {
			out := c.changed
			select {
			case <-c.stop:
				return
			case <-cfgCh:
			case <-n.Catalog().Changed():
				out = c.epChanged
			case <-n.Catalog().MembersChanged():
			}
			select {
			case out <- struct{}{}:
			default:
			}
		}
	})
	return c, nil
}

// SetRegistrationPolicy makes PUT /v1/endpoints/{id} check p first
// (declared services, allowed subsets). Call before the agent runs.
func (c *Cluster) SetRegistrationPolicy(p catalog.RegistrationPolicy) { c.regPolicy = p }

// Node is the cluster node.
func (c *Cluster) Node() *cluster.Node { return c.node }

// NotReady implements Readiness: a node that has fleet peers is not ready
// until it has met one in gossip (it would serve no other node's
// endpoints).
func (c *Cluster) NotReady() string { return c.node.JoinPending() }

var _ Readiness = (*Cluster)(nil)

// Start implements Component; the node already runs.
func (c *Cluster) Start(context.Context) error { return nil }

// Close leaves gossip and raft gracefully (so peers can tell a departure
// from a crash), then stops. Idempotent.
func (c *Cluster) Close() error {
	var err error
	c.once.Do(func() {
		close(c.stop)
		c.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
		defer cancel()
		if lerr := c.node.Leave(ctx); lerr != nil {
			err = lerr
		}
		err = errors.Join(err, c.node.Close())
	})
	return err
}

// Resources implements ConfigSource: the replicated resources.
func (c *Cluster) Resources(context.Context) (*config.Set, error) { return c.node.ConfigSet() }

// Changed implements ConfigSource and EndpointSource: the replicated
// resources or the members (gateways) changed. Endpoint changes are
// signalled by EndpointsChanged.
func (c *Cluster) Changed() <-chan struct{} { return c.changed }

// EndpointsChanged implements EndpointChangeSource.
func (c *Cluster) EndpointsChanged() <-chan struct{} { return c.epChanged }

// EndpointChanges implements EndpointChangeSource from the catalog's
// change log (catalog.Catalog.Changes), with the split horizon of
// Endpoints.
func (c *Cluster) EndpointChanges(cursor uint64) EndpointChanges { return c.eps.changes(cursor) }

// Endpoints implements EndpointSource with Istio's split horizon: this
// network's endpoints are dialled directly; an endpoint of a remote
// network is emitted once per gateway of its network (catalog.Gateways:
// alive, trusted members publishing a gateway address) as a gateway entry
// carrying the gateway's 15443 and bridge addresses, the endpoint's
// labels (so subsets still select it) and its full weight. The route
// table merges the entries of each gateway and splits the network's
// weight across its gateways (sni.Endpoint.Gateway). Endpoints of a
// network with no known gateway are left out.
func (c *Cluster) Endpoints() []sni.CatalogEndpoint { return c.eps.endpoints() }

// AdminRoutes serves the cluster API on the admin listener.
//
//	PUT    /v1/config?file=NAME          apply a multi-document YAML body (validated first; all or nothing)
//	GET    /v1/config?kind=K&name=N       the replicated resources as YAML (filters optional)
//	DELETE /v1/config/{kind}/{ns}/{name}  delete one resource
//	GET    /v1/members                    gossip members with their raft roles
//	POST   /v1/join                       {"addrs": ["host:port", ...]}
//	POST   /v1/leave                      leave gossip and raft gracefully
//	GET    /v1/keyring                    installed gossip keys (base64)
//	POST   /v1/keyring/{install|use|remove}  {"key": "<base64>"}
//	PUT/DELETE /v1/endpoints/{id}, GET /v1/endpoints, GET /v1/registrations  the catalog's registration API
func (c *Cluster) AdminRoutes() map[string]http.Handler {
	cat := c.node.Catalog().HandlerWith(c.regPolicy)
	return map[string]http.Handler{
		"/v1/endpoints":                        cat,
		"/v1/endpoints/":                       cat,
		"/v1/registrations":                    cat,
		"PUT /v1/config":                       http.HandlerFunc(c.putConfig),
		"GET /v1/config":                       http.HandlerFunc(c.getConfig),
		"DELETE /v1/config/{kind}/{ns}/{name}": http.HandlerFunc(c.deleteConfig),
		"GET /v1/members":                      http.HandlerFunc(c.members),
		"POST /v1/join":                        http.HandlerFunc(c.join),
		"POST /v1/leave":                       http.HandlerFunc(c.leave),
		"GET /v1/keyring":                      http.HandlerFunc(c.keyringList),
		"POST /v1/keyring/{op}":                http.HandlerFunc(c.keyringOp),
	}
}

// maxConfigBody bounds one apply; config.Parse has its own limits too.
const maxConfigBody = 8 << 20

func (c *Cluster) putConfig(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxConfigBody))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": err.Error()})
		return
	}
	file := r.URL.Query().Get("file")
	if file == "" {
		file = "request"
	}
	idx, err := c.node.ApplyConfig(r.Context(), file, body)
	if err != nil {
		code := http.StatusInternalServerError
		var cerrs config.Errors
		var cerr *config.Error
		if errors.As(err, &cerrs) || errors.As(err, &cerr) {
			code = http.StatusBadRequest
		}
		writeJSON(w, code, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"index": idx})
}

func (c *Cluster) getConfig(w http.ResponseWriter, r *http.Request) {
	set, err := c.node.ConfigSet()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	kind, ns, name := r.URL.Query().Get("kind"), r.URL.Query().Get("namespace"), r.URL.Query().Get("name")
	set = filterSet(set, kind, ns, name)
	b, err := set.YAML()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	w.Write(b)
}

// filterSet keeps the resources of kind (case-insensitive, "" = any) whose
// namespace and name match ("" = any).
func filterSet(s *config.Set, kind, ns, name string) *config.Set {
	ok := func(k config.Kind, m config.Meta) bool {
		return (kind == "" || strings.EqualFold(kind, string(k))) && (ns == "" || ns == m.Namespace) && (name == "" || name == m.Name)
	}
	out := &config.Set{}
	for _, x := range s.Gateways {
		if ok(config.KindGateway, x.Meta) {
			out.Gateways = append(out.Gateways, x)
		}
	}
	for _, x := range s.VirtualServices {
		if ok(config.KindVirtualService, x.Meta) {
			out.VirtualServices = append(out.VirtualServices, x)
		}
	}
	for _, x := range s.DestinationRules {
		if ok(config.KindDestinationRule, x.Meta) {
			out.DestinationRules = append(out.DestinationRules, x)
		}
	}
	for _, x := range s.ServiceEntries {
		if ok(config.KindServiceEntry, x.Meta) {
			out.ServiceEntries = append(out.ServiceEntries, x)
		}
	}
	for _, x := range s.WorkloadEntries {
		if ok(config.KindWorkloadEntry, x.Meta) {
			out.WorkloadEntries = append(out.WorkloadEntries, x)
		}
	}
	return out
}

func (c *Cluster) deleteConfig(w http.ResponseWriter, r *http.Request) {
	kind := config.Kind(r.PathValue("kind"))
	for _, k := range []config.Kind{config.KindGateway, config.KindVirtualService, config.KindDestinationRule, config.KindServiceEntry, config.KindWorkloadEntry} {
		if strings.EqualFold(string(k), string(kind)) {
			kind = k
		}
	}
	idx, err := c.node.DeleteConfig(r.Context(), kind, r.PathValue("ns"), r.PathValue("name"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"index": idx})
}

// MemberView is one row of GET /v1/members and `meshgate members`.
type MemberView struct {
	Name     string `json:"name"`
	Network  string `json:"network"`
	Addr     string `json:"addr"`
	Status   string `json:"status"`
	RaftRole string `json:"raft_role"`
	Gateway  string `json:"gateway,omitempty"`
	Version  string `json:"version,omitempty"`
	// Trusted says the member proved a fleet node identity (signed
	// records verified against the mesh roots and peer identities);
	// TrustReason says why not.
	Trusted     bool   `json:"trusted"`
	TrustReason string `json:"trust_reason,omitempty"`
}

func (c *Cluster) members(w http.ResponseWriter, _ *http.Request) {
	out := []MemberView{}
	for _, m := range c.node.Members() {
		out = append(out, MemberView{
			Name: m.Name, Network: m.Meta.Network, Addr: m.Addr, Status: string(m.Status),
			RaftRole: m.RaftRole, Gateway: m.Meta.GatewayAddr, Version: fmt.Sprint(m.Meta.ProtocolVersion),
			Trusted: m.Trusted, TrustReason: m.TrustReason,
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func (c *Cluster) join(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Addrs []string `json:"addrs"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil || len(req.Addrs) == 0 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body must be {\"addrs\": [\"host:port\", ...]}"})
		return
	}
	n, err := c.node.Join(r.Context(), req.Addrs)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]any{"joined": n, "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"joined": n})
}

func (c *Cluster) leave(w http.ResponseWriter, r *http.Request) {
	if err := c.node.Leave(r.Context()); err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"left": c.node.Name()})
}
