package config

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	"sigs.k8s.io/yaml"
)

// ClusterDomain is the DNS suffix Istio gives Kubernetes services; short
// host names ("reviews") are read as <name>.<namespace>.svc.<ClusterDomain>.
const ClusterDomain = "cluster.local"

// ResolveHost expands a short host name (no dots, not a wildcard) the way
// Istio does, relative to the namespace of the resource that names it:
// ResolveHost("reviews", "default") == "reviews.default.svc.cluster.local".
// Other hosts are returned lower-cased and otherwise unchanged.
func ResolveHost(host, namespace string) string {
	host = strings.ToLower(host)
	if host == "" || host == "*" || strings.Contains(host, ".") {
		return host
	}
	return host + "." + namespace + ".svc." + ClusterDomain
}

// add appends a resource of kind with meta and spec to s.
func (s *Set) add(kind Kind, m Meta, spec proto.Message) {
	switch t := spec.(type) {
	case *networking.Gateway:
		s.Gateways = append(s.Gateways, &Gateway{Meta: m, Spec: t})
	case *networking.VirtualService:
		s.VirtualServices = append(s.VirtualServices, &VirtualService{Meta: m, Spec: t})
	case *networking.DestinationRule:
		s.DestinationRules = append(s.DestinationRules, &DestinationRule{Meta: m, Spec: t})
	case *networking.ServiceEntry:
		s.ServiceEntries = append(s.ServiceEntries, &ServiceEntry{Meta: m, Spec: t})
	case *networking.WorkloadEntry:
		s.WorkloadEntries = append(s.WorkloadEntries, &WorkloadEntry{Meta: m, Spec: t})
	default:
		panic(fmt.Sprintf("config: no kind %s for spec %T", kind, spec))
	}
}

// each calls f for every resource, kind by kind in the order of Kinds and
// in Set order within a kind. A nil Spec is passed as a typed nil.
func (s *Set) each(f func(Kind, *Meta, proto.Message)) {
	if s == nil {
		return
	}
	for _, r := range s.Gateways {
		f(KindGateway, &r.Meta, r.Spec)
	}
	for _, r := range s.VirtualServices {
		f(KindVirtualService, &r.Meta, r.Spec)
	}
	for _, r := range s.DestinationRules {
		f(KindDestinationRule, &r.Meta, r.Spec)
	}
	for _, r := range s.ServiceEntries {
		f(KindServiceEntry, &r.Meta, r.Spec)
	}
	for _, r := range s.WorkloadEntries {
		f(KindWorkloadEntry, &r.Meta, r.Spec)
	}
}

// Len returns the number of resources in s (0 for a nil Set).
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.Gateways) + len(s.VirtualServices) + len(s.DestinationRules) + len(s.ServiceEntries) + len(s.WorkloadEntries)
}

// Kinds returns how many resources of each kind s holds. Every kind of
// the package-level Kinds list is present, with 0 when there are none.
func (s *Set) Kinds() map[Kind]int {
	out := make(map[Kind]int, len(Kinds))
	for _, k := range Kinds {
		out[k] = 0
	}
	s.each(func(k Kind, _ *Meta, _ proto.Message) { out[k]++ })
	return out
}

// Validate checks every resource of s again, as Parse does, plus the checks
// across resources (duplicates, Gateway server names). Use it for a Set
// built in memory or received from elsewhere; a Set from Parse or Load
// always passes. A nil Set is valid and empty.
func (s *Set) Validate() error {
	var errs Errors
	s.each(func(kind Kind, m *Meta, spec proto.Message) {
		c := &collector{at: where{file: m.Source, index: m.Index + 1, kind: kind, name: m.Namespace + "/" + m.Name}, errs: &errs}
		if m.Source == "" {
			c.at.index = 0
		}
		checkMeta(c, kind, m, false)
		if isNilSpec(spec) {
			c.invalid("spec", "spec is required")
			return
		}
		validateResource(c, kind, m, spec)
	})
	checkSet(s, &errs)
	return errs.errOrNil()
}

func isNilSpec(m proto.Message) bool {
	return m == nil || !m.ProtoReflect().IsValid()
}

// Gateway returns the Gateway namespace/name, or nil.
func (s *Set) Gateway(namespace, name string) *Gateway {
	if s == nil {
		return nil
	}
	for _, g := range s.Gateways {
		if g.Namespace == namespace && g.Name == name {
			return g
		}
	}
	return nil
}

// GatewayRef resolves a VirtualService gateways entry ("name" or
// "namespace/name") seen in namespace vsNamespace to the Gateway's
// namespace and name. ok is false for "mesh" and malformed entries.
func GatewayRef(ref, vsNamespace string) (namespace, name string, ok bool) {
	if ref == "mesh" || ref == "" {
		return "", "", false
	}
	if ns, n, has := splitNamespaced(ref); has {
		return ns, n, ns != "" && n != ""
	}
	return vsNamespace, ref, true
}

// ExportedTo reports whether a resource of namespace owner whose
// spec.exportTo is exportTo is visible to namespace consumer, with Istio's
// meaning: an empty list is "*" (Istio's defaultServiceExportTo,
// defaultVirtualServiceExportTo and defaultDestinationRuleExportTo all
// default to "*"); "*" is every namespace; "." is owner; "~" is no
// namespace; any other entry is that namespace. Empty namespaces are read
// as DefaultNamespace.
//
// meshgate has no sidecars: the consumer of a resource is the Gateway
// that routes to it (the Gateway's namespace) and the VirtualService that
// names it (see README, "exportTo").
func ExportedTo(exportTo []string, owner, consumer string) bool {
	if len(exportTo) == 0 {
		return true
	}
	if owner == "" {
		owner = DefaultNamespace
	}
	if consumer == "" {
		consumer = DefaultNamespace
	}
	for _, e := range exportTo {
		switch e {
		case "*":
			return true
		case "~":
		case ".":
			if owner == consumer {
				return true
			}
		default:
			if e == consumer {
				return true
			}
		}
	}
	return false
}

// VirtualServicesFor returns the VirtualServices bound to gw through their
// spec.gateways and exported to gw's namespace (ExportedTo), in Set
// order. "mesh" entries bind nothing here.
func (s *Set) VirtualServicesFor(gw *Gateway) []*VirtualService {
	if s == nil || gw == nil {
		return nil
	}
	var out []*VirtualService
	for _, vs := range s.VirtualServices {
		if !ExportedTo(vs.Spec.GetExportTo(), vs.Namespace, gw.Namespace) {
			continue
		}
		for _, ref := range vs.Spec.GetGateways() {
			if ns, n, ok := GatewayRef(ref, vs.Namespace); ok && ns == gw.Namespace && n == gw.Name {
				out = append(out, vs)
				break
			}
		}
	}
	return out
}

// DestinationRuleFor returns the DestinationRule that applies to host for a
// lookup made from namespace, or nil. It follows Istio's lookup order:
//
//  1. a rule whose host equals host, in namespace;
//  2. a rule whose host equals host, in any namespace (the first in Set
//     order);
//  3. the rule with the longest wildcard host matching host, preferring
//     namespace on a tie, then Set order.
//
// Rules not exported to namespace (ExportedTo) are skipped. Short hosts
// in rules are expanded with ResolveHost relative to the rule's
// namespace; host should be a fully qualified name.
func (s *Set) DestinationRuleFor(host, namespace string) *DestinationRule {
	if s == nil {
		return nil
	}
	host = strings.ToLower(host)
	var exactElsewhere, best *DestinationRule
	bestLen := -1
	for _, dr := range s.DestinationRules {
		if !ExportedTo(dr.Spec.GetExportTo(), dr.Namespace, namespace) {
			continue
		}
		h := ResolveHost(dr.Spec.GetHost(), dr.Namespace)
		if h == host {
			if dr.Namespace == namespace {
				return dr
			}
			if exactElsewhere == nil {
				exactElsewhere = dr
			}
			continue
		}
		if (h == "*" || strings.HasPrefix(h, "*.")) && hostMatches(h, host) {
			l := len(h)
			if h == "*" {
				l = 0
			}
			if l > bestLen || l == bestLen && dr.Namespace == namespace && best.Namespace != namespace {
				best, bestLen = dr, l
			}
		}
	}
	if exactElsewhere != nil {
		return exactElsewhere
	}
	return best
}

// Subset returns the subset called name, or nil.
func (dr *DestinationRule) Subset(name string) *networking.Subset {
	if dr == nil {
		return nil
	}
	for _, ss := range dr.Spec.GetSubsets() {
		if ss.GetName() == name {
			return ss
		}
	}
	return nil
}

// WorkloadEntriesFor returns the WorkloadEntries a ServiceEntry selects
// with spec.workloadSelector: those in the ServiceEntry's namespace whose
// labels include every selector label. It returns nil when se has no
// workloadSelector (its endpoints are then in se.Spec.Endpoints).
func (s *Set) WorkloadEntriesFor(se *ServiceEntry) []*WorkloadEntry {
	if s == nil || se == nil || se.Spec.GetWorkloadSelector() == nil {
		return nil
	}
	sel := se.Spec.GetWorkloadSelector().GetLabels()
	var out []*WorkloadEntry
	for _, we := range s.WorkloadEntries {
		if we.Namespace == se.Namespace && LabelsMatch(sel, we.Spec.GetLabels()) {
			out = append(out, we)
		}
	}
	return out
}

// LabelsMatch reports whether labels include every key and value of
// selector (an empty selector matches everything), which is how Istio
// matches workload selectors and DestinationRule subsets.
func LabelsMatch(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Merge combines sets into a new Set, in argument order. Resources are
// shared, not copied. The result is checked across all sources: two
// resources with the same kind, namespace and name, wherever they come
// from, are an error (an Errors wrapping ErrDuplicate) and the Set is nil.
// Nil sets are skipped.
func Merge(sets ...*Set) (*Set, error) {
	out := &Set{}
	for _, s := range sets {
		if s == nil {
			continue
		}
		out.Gateways = append(out.Gateways, s.Gateways...)
		out.VirtualServices = append(out.VirtualServices, s.VirtualServices...)
		out.DestinationRules = append(out.DestinationRules, s.DestinationRules...)
		out.ServiceEntries = append(out.ServiceEntries, s.ServiceEntries...)
		out.WorkloadEntries = append(out.WorkloadEntries, s.WorkloadEntries...)
	}
	var errs Errors
	checkSet(out, &errs)
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

// entry is one resource in canonical (kind, namespace, name) order.
type entry struct {
	kind Kind
	meta *Meta
	spec proto.Message
}

func (s *Set) sorted() []entry {
	var out []entry
	s.each(func(k Kind, m *Meta, spec proto.Message) { out = append(out, entry{k, m, spec}) })
	order := func(k Kind) int { return slices.Index(Kinds, k) }
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return cmp.Or(
			cmp.Compare(order(a.kind), order(b.kind)),
			cmp.Compare(a.meta.Namespace, b.meta.Namespace),
			cmp.Compare(a.meta.Name, b.meta.Name),
		) < 0
	})
	return out
}

// Hash returns a hex SHA-256 of a canonical encoding of s: resources in
// (kind, namespace, name) order with their labels and specs. Where they
// came from (Source, Index) and file order do not count, so two Sets with
// the same resources hash the same. The value is stable within one build
// of meshgate (it uses deterministic protobuf encoding); do not store it
// across upgrades. A nil Set hashes like an empty one.
func (s *Set) Hash() string {
	h := sha256.New()
	var n [8]byte
	write := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	opts := proto.MarshalOptions{Deterministic: true}
	for _, e := range s.sorted() {
		write([]byte(e.kind))
		write([]byte(e.meta.Namespace))
		write([]byte(e.meta.Name))
		keys := sortedKeys(e.meta.Labels)
		binary.BigEndian.PutUint64(n[:], uint64(len(keys)))
		h.Write(n[:])
		for _, k := range keys {
			write([]byte(k))
			write([]byte(e.meta.Labels[k]))
		}
		var b []byte
		if !isNilSpec(e.spec) {
			var err error
			if b, err = opts.Marshal(e.spec); err != nil {
				b = []byte("marshal error: " + err.Error())
			}
		}
		write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// YAML renders s as multi-document YAML that Parse reads back into an
// equal Set (same Hash): one document per resource, in (kind, namespace,
// name) order, with apiVersion networking.istio.io/v1 and the spec in
// Istio's JSON field names. Source and Index are not written.
func (s *Set) YAML() ([]byte, error) {
	var out bytes.Buffer
	mo := protojson.MarshalOptions{UseProtoNames: false}
	for i, e := range s.sorted() {
		if isNilSpec(e.spec) {
			return nil, fmt.Errorf("config: %s %s/%s has no spec", e.kind, e.meta.Namespace, e.meta.Name)
		}
		spec, err := mo.Marshal(e.spec)
		if err != nil {
			return nil, fmt.Errorf("config: %s %s/%s: %w", e.kind, e.meta.Namespace, e.meta.Name, err)
		}
		meta := map[string]any{"name": e.meta.Name, "namespace": e.meta.Namespace}
		if len(e.meta.Labels) > 0 {
			meta["labels"] = e.meta.Labels
		}
		doc := struct {
			APIVersion string          `json:"apiVersion"`
			Kind       Kind            `json:"kind"`
			Metadata   map[string]any  `json:"metadata"`
			Spec       json.RawMessage `json:"spec"`
		}{APIVersions[0], e.kind, meta, spec}
		js, err := json.Marshal(doc)
		if err != nil {
			return nil, fmt.Errorf("config: %s %s/%s: %w", e.kind, e.meta.Namespace, e.meta.Name, err)
		}
		y, err := yaml.JSONToYAML(js)
		if err != nil {
			return nil, fmt.Errorf("config: %s %s/%s: %w", e.kind, e.meta.Namespace, e.meta.Name, err)
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(y)
	}
	return out.Bytes(), nil
}

// sortedKeys returns the keys of m in increasing order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
