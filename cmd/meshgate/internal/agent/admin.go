package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshgate/meshgate/cluster/acl"
	"github.com/meshgate/meshgate/sni"
)

// adminHandler serves the node's operational endpoints:
//
//	/healthz               200 while the process serves
//	/readyz                200 once routes are applied, 503 while draining
//	/metrics               Prometheus exposition
//	/debug/routes          the route table as JSON
//	/debug/endpoints       the catalog endpoints the table is built from, as
//	                       this node sees them (split horizon: a remote
//	                       network's endpoints through its gateways)
//	/debug/explain?sni=N   which listener/server/route/endpoints N takes, or
//	                       exactly why it is refused (&alpn=a,b to test ALPN)
//	/debug/pprof/          Go runtime profiles (only with Config.Pprof; operator scope)
//	/v1/acl/tokens         admin token API (operator scope)
//
// Every request passes the acl.Guard: Host check, CSRF checks on writes,
// bearer token and the scope adminPolicy assigns.
func (a *Agent) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch why := a.notReady(); {
		case a.draining.Load():
			http.Error(w, "draining", http.StatusServiceUnavailable)
		case !a.ready.Load():
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		case why != "":
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
		default:
			w.Write([]byte("ready\n"))
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{Registry: a.registry}))
	// Go runtime profiles, for diagnosing the node itself: off unless
	// node.yaml admin.pprof is true, and then for operator tokens only.
	if a.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if a.cfg.AdminTokens != nil {
		for pattern, h := range a.cfg.AdminTokens.Routes() {
			mux.Handle(pattern, h)
		}
	}
	for _, c := range a.cfg.Components {
		if r, ok := c.(AdminRouter); ok {
			for pattern, h := range r.AdminRoutes() {
				mux.Handle(pattern, h)
			}
		}
	}
	mux.HandleFunc("GET /debug/endpoints", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, debugEndpoints(a.endpoints()))
	})
	mux.HandleFunc("GET /debug/routes", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, a.router.Load().Dump())
	})
	mux.HandleFunc("GET /debug/explain", func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("sni")
		if name == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "query parameter sni is required"})
			return
		}
		var alpn []string
		if v := r.URL.Query().Get("alpn"); v != "" {
			alpn = strings.Split(v, ",")
		}
		writeJSON(w, http.StatusOK, a.router.Load().Explain(name, alpn))
	})
	return a.guard.Wrap(mux)
}

// DebugEndpoint is one row of GET /debug/endpoints (snake_case, as the
// rest of the admin API; labels {} when none).
type DebugEndpoint struct {
	Service string            `json:"service"`
	Port    uint32            `json:"port"`
	Addr    string            `json:"addr"`
	Network string            `json:"network"` // "" = this node's network
	Labels  map[string]string `json:"labels"`
	Weight  uint32            `json:"weight"` // effective: 1 when unset
	// Identity is the workload identity ("ns/NS/sa/SA"), "" when unknown.
	Identity string `json:"identity"`
	// Gateway is true for an endpoint of another network reached through
	// that network's gateway at Addr (its gateway_addr); Bridge is that
	// gateway's bridge address ("" when it publishes none).
	Gateway bool   `json:"gateway"`
	Bridge  string `json:"bridge"`
}

// debugEndpoints converts catalog endpoints for GET /debug/endpoints; an
// empty list is [], never null.
func debugEndpoints(eps []sni.CatalogEndpoint) []DebugEndpoint {
	out := make([]DebugEndpoint, 0, len(eps))
	for _, e := range eps {
		labels := e.Endpoint.Labels
		if labels == nil {
			labels = map[string]string{}
		}
		out = append(out, DebugEndpoint{Service: e.Host, Port: e.Port, Addr: e.Endpoint.Addr, Network: e.Endpoint.Network,
			Labels: labels, Weight: max(e.Endpoint.Weight, 1), Identity: e.Endpoint.Identity,
			Gateway: e.Endpoint.Gateway, Bridge: e.Endpoint.Bridge})
	}
	return out
}

// adminPolicy assigns the scope each admin request needs: probes none;
// endpoint writes endpoints:write; token admin, profiles and the gossip
// keys (secrets) operator; cfssl's info is a read and its authsign carries
// its own HMAC credential (cfssl-auth.key); other reads read; every other
// write operator.
func adminPolicy(r *http.Request) acl.Scope {
	p := r.URL.Path
	safe := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch {
	case safe && (p == "/healthz" || p == "/readyz"):
		return acl.ScopeNone
	case strings.HasPrefix(p, "/debug/pprof/"), strings.HasPrefix(p, "/v1/acl/"), p == "/v1/keyring":
		return acl.ScopeOperator
	case strings.HasPrefix(p, "/v1/endpoints/") && (r.Method == http.MethodPut || r.Method == http.MethodDelete):
		return acl.ScopeEndpointsWrite
	case p == "/api/v1/cfssl/info":
		return acl.ScopeRead
	case p == "/api/v1/cfssl/authsign":
		return acl.ScopeNone
	case safe:
		return acl.ScopeRead
	}
	return acl.ScopeOperator
}

// noTokens resolves nothing: without a token store every write is refused.
type noTokens struct{}

func (noTokens) Resolve(context.Context, acl.Credential) (acl.Token, error) {
	return acl.Token{}, acl.ErrUnknownToken
}

// notReady returns what the first waiting component waits for, or "".
func (a *Agent) notReady() string {
	for _, c := range a.cfg.Components {
		if r, ok := c.(Readiness); ok {
			if why := r.NotReady(); why != "" {
				return why
			}
		}
	}
	return ""
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
