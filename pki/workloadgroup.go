package pki

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"
)

// keyGroups + namespace + "/" + service account -> WorkloadGroup JSON:
// what a workload identity may register (kept with the CA's other state,
// so it is replicated with it and survives restarts).
const keyGroups = "pki/workload-group/"

// ErrGroupNotFound: no workload group is bound to the identity.
var ErrGroupNotFound = errors.New("pki: workload group not found")

// ErrInvalidGroup: a workload group field is not usable.
var ErrInvalidGroup = errors.New("pki: invalid workload group")

// GroupPort is one service port of a workload group.
type GroupPort struct {
	// Port is the service port.
	Port uint32 `json:"port"`
	// TargetPort is the port the workload listens on; 0 means Port.
	TargetPort uint32 `json:"targetPort,omitempty"`
}

// Target returns the port the workload listens on.
func (p GroupPort) Target() uint32 {
	if p.TargetPort == 0 {
		return p.Port
	}
	return p.TargetPort
}

// WorkloadGroup binds a workload identity (Istio's WorkloadGroup shape) to
// the endpoints it may register with its certificate: one service, its
// ports, one network, fixed labels and the DestinationRule subsets those
// labels may claim. Anything else a workload of that identity asks to
// register is refused.
type WorkloadGroup struct {
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
	// Network is the network the endpoints are in.
	Network string `json:"network"`
	// Service is the service host they register under.
	Service string `json:"service"`
	// Ports are the service ports (and target ports) they serve.
	Ports []GroupPort `json:"ports"`
	// Labels are the labels every endpoint carries (exactly these).
	Labels map[string]string `json:"labels,omitempty"`
	// Subsets are the "service/subset" names the labels may claim.
	Subsets []string `json:"subsets,omitempty"`
	// Addresses, if set, are the prefixes the endpoints' IPs must be in.
	Addresses []netip.Prefix `json:"addresses,omitempty"`
	// JoinTokenID names the bundle's join token, for revocation.
	JoinTokenID string `json:"joinTokenID,omitempty"`
	// Created is when the group was bound (set by PutWorkloadGroup).
	Created time.Time `json:"created,omitzero"`
}

// Identity returns the group's identity in trust domain td.
func (g *WorkloadGroup) Identity(td string) (Identity, error) {
	return NewIdentity(td, g.Namespace, g.ServiceAccount)
}

// Validate checks every field; the error wraps ErrInvalidGroup and names
// the field.
func (g *WorkloadGroup) Validate(td string) error {
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidGroup, field, fmt.Sprintf(format, a...))
	}
	if _, err := g.Identity(td); err != nil {
		return bad("namespace/serviceAccount", "%v", err)
	}
	if g.Namespace == "meshgate-system" {
		return bad("namespace", "meshgate-system is the gateway nodes' namespace, not a workload's")
	}
	if !PrintableName(g.Network, 63) {
		return bad("network", "%q must be 1-63 printable characters without spaces", g.Network)
	}
	if !PrintableName(g.Service, 253) || strings.ToLower(g.Service) != g.Service {
		return bad("service", "%q must be a lowercase service host of at most 253 characters", g.Service)
	}
	if len(g.Ports) == 0 || len(g.Ports) > 64 {
		return bad("ports", "%d ports, want 1-64", len(g.Ports))
	}
	for i, p := range g.Ports {
		if p.Port == 0 || p.Port > 65535 || p.TargetPort > 65535 {
			return bad(fmt.Sprintf("ports[%d]", i), "port %d:%d out of 1-65535", p.Port, p.TargetPort)
		}
	}
	if len(g.Labels) > 16 {
		return bad("labels", "%d labels, at most 16", len(g.Labels))
	}
	for k, v := range g.Labels {
		if !PrintableName(k, 63) || (v != "" && !PrintableName(v, 63)) {
			return bad("labels", "%q=%q: keys and values are at most 63 printable characters without spaces", k, v)
		}
	}
	for _, s := range g.Subsets {
		svc, sub, ok := strings.Cut(s, "/")
		if !ok || svc != g.Service || !PrintableName(sub, 63) {
			return bad("subsets", "%q is not %s/SUBSET", s, g.Service)
		}
	}
	if len(g.Addresses) > 64 {
		return bad("addresses", "%d prefixes, at most 64", len(g.Addresses))
	}
	for _, p := range g.Addresses {
		if !p.IsValid() {
			return bad("addresses", "invalid prefix")
		}
	}
	return nil
}

// PrintableName reports whether s is 1 to limit bytes of printable ASCII
// with no spaces: the form of the names and labels in a workload group
// and a VM bundle, and of a VM's health-check path.
func PrintableName(s string, limit int) bool {
	if s == "" || len(s) > limit {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

func groupKey(ns, sa string) string { return keyGroups + ns + "/" + sa }

// PutWorkloadGroup binds g (replacing the group of the same identity) and
// returns it as stored. Safe for concurrent use.
func (ca *CA) PutWorkloadGroup(ctx context.Context, g WorkloadGroup) (WorkloadGroup, error) {
	if err := g.Validate(ca.cfg.TrustDomain); err != nil {
		return WorkloadGroup{}, err
	}
	g.Created = ca.now().UTC().Truncate(time.Second)
	val, err := json.Marshal(g)
	if err != nil {
		return WorkloadGroup{}, fmt.Errorf("pki: workload group: %w", err)
	}
	if err := put(ctx, ca.store, groupKey(g.Namespace, g.ServiceAccount), val); err != nil {
		return WorkloadGroup{}, fmt.Errorf("pki: store workload group: %w", err)
	}
	return g, nil
}

// WorkloadGroup returns the group bound to id, or an error wrapping
// ErrGroupNotFound.
func (ca *CA) WorkloadGroup(ctx context.Context, id Identity) (WorkloadGroup, error) {
	if id.TrustDomain != ca.cfg.TrustDomain {
		return WorkloadGroup{}, fmt.Errorf("%w: %s is outside trust domain %s", ErrGroupNotFound, id, ca.cfg.TrustDomain)
	}
	raw, err := ca.store.Get(ctx, groupKey(id.Namespace, id.ServiceAccount))
	if errors.Is(err, ErrNotFound) {
		return WorkloadGroup{}, fmt.Errorf("%w: none is bound to %s (meshgate vm bundle binds one)", ErrGroupNotFound, id)
	}
	if err != nil {
		return WorkloadGroup{}, fmt.Errorf("pki: workload group lookup: %w", err)
	}
	var g WorkloadGroup
	if err := json.Unmarshal(raw, &g); err != nil {
		return WorkloadGroup{}, fmt.Errorf("pki: stored workload group of %s: %w", id, err)
	}
	return g, nil
}

// WorkloadGroups lists every bound group, by namespace and service
// account.
func (ca *CA) WorkloadGroups(ctx context.Context) ([]WorkloadGroup, error) {
	kvs, err := ca.store.List(ctx, keyGroups)
	if err != nil {
		return nil, fmt.Errorf("pki: list workload groups: %w", err)
	}
	out := make([]WorkloadGroup, 0, len(kvs))
	for _, kv := range kvs {
		var g WorkloadGroup
		if err := json.Unmarshal(kv.Value, &g); err != nil {
			return nil, fmt.Errorf("pki: workload group %s: %w", kv.Key, err)
		}
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool {
		return groupKey(out[i].Namespace, out[i].ServiceAccount) < groupKey(out[j].Namespace, out[j].ServiceAccount)
	})
	return out, nil
}

// DeleteWorkloadGroup unbinds the group of ns/sa: from then on no
// certificate of that identity may register (registrations already made
// end with their lease). It returns the deleted group, or an error
// wrapping ErrGroupNotFound.
func (ca *CA) DeleteWorkloadGroup(ctx context.Context, ns, sa string) (WorkloadGroup, error) {
	id, err := NewIdentity(ca.cfg.TrustDomain, ns, sa)
	if err != nil {
		return WorkloadGroup{}, fmt.Errorf("%w: %v", ErrInvalidGroup, err)
	}
	g, err := ca.WorkloadGroup(ctx, id)
	if err != nil {
		return WorkloadGroup{}, err
	}
	if err := ca.store.Apply(ctx, []Op{{Key: groupKey(ns, sa), Delete: true}}); err != nil {
		return WorkloadGroup{}, fmt.Errorf("pki: delete workload group: %w", err)
	}
	return g, nil
}
