package acl

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/meshgate/meshgate/cluster/catalog"
	"github.com/meshgate/meshgate/config"
)

// RegistrationScope is the catalog.RegistrationPolicy of the admin API: a
// registration may name only a service host and port a ServiceEntry
// declares (unless AllowUndeclared), its token must allow the service, and
// its labels may claim only DestinationRule subsets the token allows
// (operator tokens: all).
type RegistrationScope struct {
	// Config returns the running configuration (files and store merged).
	// Required; it must not block.
	Config func() *config.Set
	// AllowUndeclared accepts services no ServiceEntry declares
	// (node.yaml catalog.allow_undeclared_services).
	AllowUndeclared bool
	// Guard, when set, counts refusals under reason "registration".
	Guard *Guard
}

var _ catalog.RegistrationPolicy = (*RegistrationScope)(nil)

// AllowRegistration implements catalog.RegistrationPolicy. A request
// without a token (a guard with ScopeNone policy) is treated as operator.
func (s *RegistrationScope) AllowRegistration(r *http.Request, reg catalog.Registration) error {
	tok, ok := FromContext(r.Context())
	if !ok {
		tok = Token{Scopes: []Scope{ScopeOperator}}
	}
	err := s.Check(tok, reg)
	if err != nil && s.Guard != nil {
		s.Guard.CountRefusal("registration")
	}
	return err
}

// Check applies the rules to a registration made with tok.
func (s *RegistrationScope) Check(tok Token, reg catalog.Registration) error {
	var set *config.Set
	if s.Config != nil {
		set = s.Config()
	}
	if set == nil {
		set = &config.Set{}
	}
	svc := strings.ToLower(reg.Service)
	if !s.AllowUndeclared && !declared(set, svc, reg.Port) {
		return fmt.Errorf("%w: service %s port %d is not declared by any ServiceEntry (node.yaml catalog.allow_undeclared_services allows ad-hoc services)", ErrRegistration, reg.Service, reg.Port)
	}
	if !tok.AllowsService(svc) {
		return fmt.Errorf("%w: token %s may not register service %s (it allows %s)", ErrRegistration, tok.ID, reg.Service, strings.Join(tok.Services, ","))
	}
	for _, sub := range claimedSubsets(set, svc, reg.Labels) {
		if !tok.AllowsSubset(svc, sub) {
			return fmt.Errorf("%w: labels of %s claim subset %s/%s, which token %s does not allow (acl token create --subset %s/%s)", ErrRegistration, reg.ID, reg.Service, sub, tok.ID, reg.Service, sub)
		}
	}
	return nil
}

// declared reports whether a ServiceEntry names host svc with port.
func declared(set *config.Set, svc string, port uint32) bool {
	for _, se := range set.ServiceEntries {
		hostOK := false
		for _, h := range se.Spec.GetHosts() {
			h = config.ResolveHost(h, se.Namespace)
			if h == svc || (strings.HasPrefix(h, "*.") && strings.HasSuffix(svc, h[1:])) {
				hostOK = true
			}
		}
		if !hostOK {
			continue
		}
		for _, p := range se.Spec.GetPorts() {
			if p.GetNumber() == port {
				return true
			}
		}
	}
	return false
}

// claimedSubsets lists the DestinationRule subsets of svc whose labels
// all appear in labels (a subset without labels selects everything and is
// not a claim).
func claimedSubsets(set *config.Set, svc string, labels map[string]string) []string {
	var out []string
	for _, dr := range set.DestinationRules {
		if config.ResolveHost(dr.Spec.GetHost(), dr.Namespace) != svc {
			continue
		}
		for _, sub := range dr.Spec.GetSubsets() {
			sl := sub.GetLabels()
			if len(sl) == 0 {
				continue
			}
			match := true
			for k, v := range sl {
				if labels[k] != v {
					match = false
				}
			}
			if match && !slices.Contains(out, sub.GetName()) {
				out = append(out, sub.GetName())
			}
		}
	}
	return out
}
