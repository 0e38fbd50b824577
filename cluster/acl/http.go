package acl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/internal/promreg"
)

// Resolver turns a presented credential into its token (a *Manager).
type Resolver interface {
	Resolve(ctx context.Context, c Credential) (Token, error)
}

var _ Resolver = (*Manager)(nil)

// Policy says which scope a request needs: ScopeNone (no token),
// ScopeRead, ScopeEndpointsWrite or ScopeOperator. It must not block.
type Policy func(r *http.Request) Scope

// GuardConfig configures Guard.
type GuardConfig struct {
	// Tokens resolves bearer credentials. Required.
	Tokens Resolver
	// Policy assigns the scope per request. Nil means DefaultPolicy.
	Policy Policy
	// AllowedHosts are extra Host names (with or without :port) accepted
	// besides the listener's own addresses (node.yaml admin.allowed_hosts).
	AllowedHosts []string
	// OpenReads lets requests that need only ScopeRead through without a
	// token when they come from a loopback address (node.yaml
	// admin.open_reads, default true). False makes every read need a token.
	OpenReads bool
	// Logger receives refusals at debug level; nil discards.
	Logger *slog.Logger
	// Registerer receives meshgate_acl_refused_total; nil skips metrics.
	Registerer prometheus.Registerer
}

// DefaultPolicy: GET/HEAD need ScopeRead, everything else ScopeOperator.
func DefaultPolicy(r *http.Request) Scope {
	if isSafe(r.Method) {
		return ScopeRead
	}
	return ScopeOperator
}

// Guard is the admin listener's middleware. It is safe for concurrent use.
type Guard struct {
	cfg     GuardConfig
	log     *slog.Logger
	hosts   atomic.Pointer[map[string]bool]
	refused *prometheus.CounterVec
}

// NewGuard checks cfg and returns a guard. Call SetListener before serving.
func NewGuard(cfg GuardConfig) (*Guard, error) {
	if cfg.Tokens == nil {
		return nil, fmt.Errorf("%w: guard needs a token resolver", ErrInvalid)
	}
	if cfg.Policy == nil {
		cfg.Policy = DefaultPolicy
	}
	g := &Guard{cfg: cfg, log: cfg.Logger}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	g.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshgate_acl_refused_total",
		Help: "Admin API requests refused, by reason (host, origin, content_type, no_token, bad_token, expired, scope, registration).",
	}, []string{"reason"})
	var err error
	if g.refused, err = promreg.Register(cfg.Registerer, g.refused); err != nil {
		return nil, fmt.Errorf("acl: %w", err)
	}
	empty := map[string]bool{}
	g.hosts.Store(&empty)
	return g, nil
}

// SetListener sets the addresses Host may name: the bound address, and
// for a loopback bind localhost, 127.0.0.1 and [::1] on its port; for a
// wildcard bind every address of the node's interfaces on its port.
func (g *Guard) SetListener(addr net.Addr) {
	hosts := map[string]bool{}
	for _, h := range g.cfg.AllowedHosts {
		hosts[strings.ToLower(h)] = true
	}
	tcp, ok := addr.(*net.TCPAddr)
	if ok {
		port := fmt.Sprint(tcp.Port)
		add := func(ip string) { hosts[strings.ToLower(net.JoinHostPort(ip, port))] = true }
		add(tcp.IP.String())
		if tcp.IP.IsLoopback() || tcp.IP.IsUnspecified() {
			add("localhost")
			add("127.0.0.1")
			add("::1")
		}
		if tcp.IP.IsUnspecified() {
			if addrs, err := net.InterfaceAddrs(); err == nil {
				for _, a := range addrs {
					if n, ok := a.(*net.IPNet); ok {
						add(n.IP.String())
					}
				}
			}
		}
		for _, h := range g.cfg.AllowedHosts {
			if _, _, err := net.SplitHostPort(h); err != nil {
				add(h)
			}
		}
	}
	g.hosts.Store(&hosts)
}

type ctxKey struct{}

// FromContext returns the token a guarded request presented, if any.
func FromContext(ctx context.Context) (Token, bool) {
	t, ok := ctx.Value(ctxKey{}).(Token)
	return t, ok
}

// ErrorBody is the JSON of every refusal.
type ErrorBody struct {
	// Error is one sentence saying what was refused and why.
	Error string `json:"error"`
	// Reason is the refusal's metric label.
	Reason string `json:"reason"`
	// Scope is the scope the request needed (token refusals).
	Scope Scope `json:"scope,omitempty"`
}

func (g *Guard) refuse(w http.ResponseWriter, r *http.Request, code int, reason string, scope Scope, format string, args ...any) {
	g.refused.WithLabelValues(reason).Inc()
	msg := fmt.Sprintf(format, args...)
	g.log.Debug("admin request refused", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "reason", reason, "err", msg)
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="meshgate-admin"`)
	}
	WriteJSON(w, code, ErrorBody{Error: msg, Reason: reason, Scope: scope})
}

// WriteJSON writes v as a JSON answer with status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func isSafe(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

// CredentialHint is how a CLI user supplies a token; refusals name it.
const CredentialHint = "send Authorization: Bearer <token> (meshgate CLI: --admin-token, MESHGATE_ADMIN_TOKEN, --admin-token-file or <data-dir>/operator.token)"

// Wrap returns h behind the guard: Host check, then for state-changing
// methods the Origin/Sec-Fetch-Site and Content-Type checks, then the
// bearer token and the scope Policy assigns.
//
// Both accepted content types are outside the CORS "simple" set, so a
// browser must preflight them, and this listener answers no preflight.
// A DELETE with an empty body is exempt from the Content-Type rule only
// when it carries an Authorization header: a browser cannot add that
// header to a cross-site request without a CORS preflight, which this
// listener never answers, so the exemption opens nothing to CSRF.
func (g *Guard) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := strings.ToLower(r.Host)
		if host == "" || !(*g.hosts.Load())[host] {
			g.refuse(w, r, http.StatusMisdirectedRequest, "host", ScopeNone,
				"admin: Host %q is not this admin listener's address; add the name to node.yaml admin.allowed_hosts to allow it", r.Host)
			return
		}
		need := g.cfg.Policy(r)
		if !isSafe(r.Method) {
			if o := r.Header.Get("Origin"); o != "" && o != "null" {
				u, err := url.Parse(o)
				if err != nil || !(*g.hosts.Load())[strings.ToLower(u.Host)] {
					g.refuse(w, r, http.StatusForbidden, "origin", need, "admin: cross-site %s %s refused (Origin %q)", r.Method, r.URL.Path, o)
					return
				}
			} else if o == "null" {
				g.refuse(w, r, http.StatusForbidden, "origin", need, "admin: cross-site %s %s refused (Origin null)", r.Method, r.URL.Path)
				return
			}
			if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
				g.refuse(w, r, http.StatusForbidden, "origin", need, "admin: cross-site %s %s refused (Sec-Fetch-Site %q)", r.Method, r.URL.Path, s)
				return
			}
			ct := r.Header.Get("Content-Type")
			mt, _, err := mime.ParseMediaType(ct)
			exempt := r.Method == http.MethodDelete && r.ContentLength == 0 && r.Header.Get("Authorization") != ""
			if !exempt && (err != nil || (mt != "application/json" && mt != "application/yaml")) {
				g.refuse(w, r, http.StatusUnsupportedMediaType, "content_type", need,
					"admin: %s %s needs Content-Type: application/json (or application/yaml for a YAML body; got %q)", r.Method, r.URL.Path, ct)
				return
			}
		}
		var tok Token
		var have bool
		if a := r.Header.Get("Authorization"); a != "" {
			cred, err := ParseAuthorization(a)
			if err == nil {
				tok, err = g.cfg.Tokens.Resolve(r.Context(), cred)
			}
			if err != nil {
				reason := "bad_token"
				if errors.Is(err, ErrExpired) {
					reason = "expired"
				}
				g.refuse(w, r, http.StatusUnauthorized, reason, need, "admin: %s %s: %v; %s", r.Method, r.URL.Path, err, CredentialHint)
				return
			}
			have = true
		}
		switch {
		case need == ScopeNone:
		case have && tok.Has(need):
		case need == ScopeRead && g.cfg.OpenReads && loopback(r.RemoteAddr):
		case !have:
			g.refuse(w, r, http.StatusUnauthorized, "no_token", need, "admin: %s %s needs a token with scope %s; %s", r.Method, r.URL.Path, need, CredentialHint)
			return
		default:
			g.refuse(w, r, http.StatusForbidden, "scope", need, "admin: %s %s needs scope %s; token %s has %s", r.Method, r.URL.Path, need, tok.ID, scopeList(tok.Scopes))
			return
		}
		if have {
			r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, tok))
		}
		h.ServeHTTP(w, r)
	})
}

// CountRefusal counts a refusal made after the guard (by a handler that
// applies token restrictions) under reason.
func (g *Guard) CountRefusal(reason string) { g.refused.WithLabelValues(reason).Inc() }

func scopeList(s []Scope) string {
	var out []string
	for _, x := range s {
		out = append(out, string(x))
	}
	return strings.Join(out, ",")
}

func loopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
