package pki

import (
	"fmt"
	"net/url"
	"strings"
)

// Identity is a workload identity in the Istio SPIFFE form
// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>. The zero
// value means "no identity". Build one with NewIdentity or ParseIdentity,
// which validate every part; an Identity is a plain value, safe to copy and
// share.
type Identity struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

const spiffeScheme = "spiffe://"

// NewIdentity validates the three parts and returns the identity.
func NewIdentity(trustDomain, namespace, serviceAccount string) (Identity, error) {
	id := Identity{TrustDomain: trustDomain, Namespace: namespace, ServiceAccount: serviceAccount}
	if err := id.validate(); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// ParseIdentity parses s, which must be exactly
// spiffe://<td>/ns/<ns>/sa/<sa> with no port, user info, query, fragment,
// percent-encoding or trailing slash.
func ParseIdentity(s string) (Identity, error) {
	rest, ok := strings.CutPrefix(s, spiffeScheme)
	if !ok {
		return Identity{}, &IdentityError{Value: s, Problem: "not a spiffe:// URI"}
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok {
		return Identity{}, &IdentityError{Value: s, Problem: "no path"}
	}
	ns, sa, ok := strings.Cut(path, "/sa/")
	if !ok {
		return Identity{}, &IdentityError{Value: s, Problem: "path is not /ns/<namespace>/sa/<service-account>"}
	}
	ns, ok = strings.CutPrefix(ns, "ns/")
	if !ok {
		return Identity{}, &IdentityError{Value: s, Problem: "path is not /ns/<namespace>/sa/<service-account>"}
	}
	id := Identity{TrustDomain: td, Namespace: ns, ServiceAccount: sa}
	if err := id.validate(); err != nil {
		if ie, ok := err.(*IdentityError); ok {
			ie.Value = s
		}
		return Identity{}, err
	}
	return id, nil
}

// IdentityFromURL parses a URI SAN as an Identity. The URL's string form
// must itself be canonical (see ParseIdentity).
func IdentityFromURL(u *url.URL) (Identity, error) {
	if u == nil {
		return Identity{}, &IdentityError{Problem: "nil URI"}
	}
	if u.Scheme != "spiffe" || u.Opaque != "" || u.User != nil || u.RawQuery != "" ||
		u.Fragment != "" || u.RawPath != "" || u.ForceQuery || u.RawFragment != "" {
		return Identity{}, &IdentityError{Value: u.String(), Problem: "not a plain spiffe:// URI"}
	}
	return ParseIdentity(u.String())
}

// String returns the SPIFFE URI, or "" for the zero Identity.
func (id Identity) String() string {
	if id.IsZero() {
		return ""
	}
	return spiffeScheme + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URL returns the SPIFFE URI as a *url.URL (a new value on every call).
func (id Identity) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

// IsZero reports whether id is the zero Identity.
func (id Identity) IsZero() bool { return id == Identity{} }

func (id Identity) validate() error {
	if err := ValidateTrustDomain(id.TrustDomain); err != nil {
		return err
	}
	if !isDNSName(id.Namespace, 63, false) {
		return &IdentityError{Value: id.String(), Problem: fmt.Sprintf("namespace %q is not a DNS-1123 label (lowercase letters, digits, '-', at most 63)", id.Namespace)}
	}
	if !isDNSName(id.ServiceAccount, 253, true) {
		return &IdentityError{Value: id.String(), Problem: fmt.Sprintf("service account %q is not a DNS-1123 subdomain (lowercase letters, digits, '-', '.', at most 253)", id.ServiceAccount)}
	}
	return nil
}

// ValidateTrustDomain checks a SPIFFE trust domain name: 1-255 characters
// of lowercase letters, digits, '.', '-' and '_'.
func ValidateTrustDomain(td string) error {
	if td == "" || len(td) > 255 {
		return &IdentityError{Value: td, Problem: "trust domain must be 1-255 characters"}
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return &IdentityError{Value: td, Problem: fmt.Sprintf("trust domain has invalid character %q (allowed: a-z 0-9 . - _)", c)}
		}
	}
	return nil
}

// isDNSName accepts a DNS-1123 label (lowercase alphanumerics and '-',
// starting and ending with an alphanumeric, at most 63 bytes) or, when dots
// is set, a dot-separated sequence of such labels of at most max bytes.
func isDNSName(s string, max int, dots bool) bool {
	if s == "" || len(s) > max {
		return false
	}
	for {
		label, rest, more := strings.Cut(s, ".")
		if more && !dots {
			return false
		}
		if !isDNSLabel(label) {
			return false
		}
		if !more {
			return true
		}
		s = rest
	}
}

func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
