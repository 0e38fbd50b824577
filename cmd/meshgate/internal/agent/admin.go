package agent

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"
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
//	/debug/pprof/          Go runtime profiles
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
	// Go runtime profiles, for diagnosing the node itself. The admin
	// listener is loopback-only by default.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	for _, c := range a.cfg.Components {
		if r, ok := c.(AdminRouter); ok {
			for pattern, h := range r.AdminRoutes() {
				mux.Handle(pattern, h)
			}
		}
	}
	mux.HandleFunc("GET /debug/endpoints", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, a.endpoints())
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
	return mux
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
