package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// This file holds the name rules Istio applies (DNS-1123 labels and
// subdomains, wildcard hosts, Kubernetes label keys and values) and the
// host-matching rules it uses between resources.

// isDNS1123Label reports whether s is a lowercase RFC 1123 label of at most
// 63 characters, as Kubernetes and Istio define it.
func isDNS1123Label(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// isDNS1123Subdomain reports whether s is a lowercase RFC 1123 subdomain
// (dot-separated labels, at most 253 characters).
func isDNS1123Subdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if !isDNS1123Label(label) {
			return false
		}
	}
	return true
}

// checkHost validates a host name the way Istio's ValidateWildcardDomain
// does: at most 255 characters, lowercase DNS labels, a top-level label
// that is not all digits, and a wildcard only as the whole first label
// ("*.example.com"). star says whether the bare "*" is accepted.
//
// meshgate is stricter than Istio in two places, because it matches SNI
// names and an SNI name never has them: a trailing dot and a partial
// wildcard ("*foo.example.com") are refused.
func checkHost(h string, wildcard, star bool) error {
	switch {
	case h == "":
		return errors.New("host must not be empty")
	case len(h) > 255:
		return fmt.Errorf("host %q is longer than 255 characters", h)
	case h == "*":
		if !star {
			return errors.New(`the catch-all host "*" is not allowed here`)
		}
		return nil
	case strings.HasSuffix(h, "."):
		return fmt.Errorf("host %q must not end with a dot", h)
	}
	rest := h
	if strings.HasPrefix(h, "*") {
		if !wildcard {
			return fmt.Errorf("host %q: a wildcard is not allowed here", h)
		}
		if !strings.HasPrefix(h, "*.") {
			return fmt.Errorf("host %q: only a whole-label wildcard (\"*.example.com\") is supported", h)
		}
		rest = h[2:]
	}
	labels := strings.Split(rest, ".")
	for _, l := range labels {
		if !isDNS1123Label(l) {
			if strings.Contains(l, "*") {
				return fmt.Errorf("host %q: a wildcard is only allowed as the whole first label", h)
			}
			return fmt.Errorf("host %q: label %q is not a lowercase DNS-1123 label", h, l)
		}
	}
	if tld := labels[len(labels)-1]; allDigits(tld) {
		return fmt.Errorf("host %q: the top-level label %q must not be all digits", h, tld)
	}
	return nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// parseIP parses an IP address literal without a zone.
func parseIP(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a, true
}

// checkSubnet accepts an IP literal or a CIDR block.
func checkSubnet(s string) error {
	if strings.Contains(s, "/") {
		if _, err := netip.ParsePrefix(s); err != nil {
			return fmt.Errorf("%q is not a valid CIDR block", s)
		}
		return nil
	}
	if _, ok := parseIP(s); !ok {
		return fmt.Errorf("%q is not a valid IP address or CIDR block", s)
	}
	return nil
}

// hostSubsetOf reports whether every name host a matches is also matched
// by host b (Istio's host.Name.SubsetOf). Comparison is case-insensitive.
func hostSubsetOf(a, b string) bool {
	a, b = strings.ToLower(a), strings.ToLower(b)
	if b == "*" {
		return true
	}
	if a == "*" {
		return false
	}
	if strings.HasPrefix(b, "*.") {
		if strings.HasPrefix(a, "*.") {
			return strings.HasSuffix(a[1:], b[1:])
		}
		return strings.HasSuffix(a, b[1:])
	}
	return !strings.HasPrefix(a, "*") && a == b
}

// hostsOverlap reports whether some name is matched by both a and b
// (Istio's host.Name.Matches).
func hostsOverlap(a, b string) bool {
	return hostSubsetOf(a, b) || hostSubsetOf(b, a)
}

// hostMatches reports whether the concrete name matches pattern, which may
// be "*" or "*.suffix". Comparison is case-insensitive.
func hostMatches(pattern, name string) bool {
	pattern, name = strings.ToLower(pattern), strings.ToLower(name)
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*."):
		return len(name) > len(pattern)-1 && strings.HasSuffix(name, pattern[1:])
	default:
		return pattern == name
	}
}

// checkLabelKey validates a Kubernetes label key: an optional DNS-1123
// subdomain prefix and "/", then a name of at most 63 characters made of
// alphanumerics, '-', '_' and '.', starting and ending alphanumeric.
func checkLabelKey(k string) error {
	name := k
	if i := strings.LastIndexByte(k, '/'); i >= 0 {
		prefix := k[:i]
		name = k[i+1:]
		if !isDNS1123Subdomain(prefix) {
			return fmt.Errorf("label key %q: prefix %q is not a lowercase DNS-1123 subdomain", k, prefix)
		}
	}
	if name == "" {
		return fmt.Errorf("label key %q: name part must not be empty", k)
	}
	if !isLabelValue(name) {
		return fmt.Errorf("label key %q: name part must be at most 63 characters of [A-Za-z0-9._-], starting and ending alphanumeric", k)
	}
	return nil
}

// isLabelValue reports whether v is a valid Kubernetes label value
// (empty is valid).
func isLabelValue(v string) bool {
	if len(v) > 63 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if alnum {
			continue
		}
		if (c == '-' || c == '_' || c == '.') && i > 0 && i < len(v)-1 {
			continue
		}
		return false
	}
	return true
}

// checkLabels reports every bad key or value of a label map under field.
func checkLabels(c *collector, field string, m map[string]string) {
	for _, k := range sortedKeys(m) {
		if err := checkLabelKey(k); err != nil {
			c.invalid(mapField(field, k), "%v", err)
		}
		if v := m[k]; !isLabelValue(v) {
			c.invalid(mapField(field, k), "label value %q must be at most 63 characters of [A-Za-z0-9._-], starting and ending alphanumeric", v)
		}
	}
}

// checkSelector validates a workload selector: valid labels, no wildcards.
func checkSelector(c *collector, field string, m map[string]string) {
	checkLabels(c, field, m)
	for _, k := range sortedKeys(m) {
		if strings.Contains(k, "*") || strings.Contains(m[k], "*") {
			c.invalid(mapField(field, k), "wildcards are not supported in a selector")
		}
	}
}

// splitNamespaced splits "ns/name" into its parts; ok is false when there
// is no slash.
func splitNamespaced(s string) (ns, name string, ok bool) {
	ns, name, ok = strings.Cut(s, "/")
	return ns, name, ok
}

// fieldIndex returns field[i].
func fieldIndex(field string, i int) string {
	return field + "[" + strconv.Itoa(i) + "]"
}

// mapField returns the path of key k inside map field: field.k when k is a
// plain identifier, field["k"] otherwise.
func mapField(field, k string) string {
	plain := k != ""
	for i := 0; i < len(k) && plain; i++ {
		c := k[i]
		plain = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' && i > 0
	}
	if plain {
		return field + "." + k
	}
	return field + "[" + strconv.Quote(k) + "]"
}
