package sni

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrNotAutoPassthrough means a name does not start with "outbound_." or
// "outbound|", so it is not an Istio AUTO_PASSTHROUGH name at all.
var ErrNotAutoPassthrough = errors.New("sni: not an AUTO_PASSTHROUGH name")

// ErrInvalidAutoPassthrough is wrapped by every *AutoPassthroughError: the
// name has the AUTO_PASSTHROUGH prefix but a bad port, subset or host.
var ErrInvalidAutoPassthrough = errors.New("sni: invalid AUTO_PASSTHROUGH name")

// AutoPassthroughError says which part of an AUTO_PASSTHROUGH name is bad.
type AutoPassthroughError struct {
	// Name is the refused input, cut to its first 256 bytes.
	Name string
	// Part is "port", "subset", "host" or "length".
	Part string
	// Reason says what is wrong with Part.
	Reason string
	// Err is the cause, if any (a *NameError for a bad host).
	Err error
}

// Error describes the problem; it quotes at most 256 bytes of client input.
func (e *AutoPassthroughError) Error() string {
	return fmt.Sprintf("sni: invalid AUTO_PASSTHROUGH name %q: %s: %s", e.Name, e.Part, e.Reason)
}

// Unwrap returns ErrInvalidAutoPassthrough and the cause, if any.
func (e *AutoPassthroughError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrInvalidAutoPassthrough, e.Err}
	}
	return []error{ErrInvalidAutoPassthrough}
}

func apError(s, part, reason string, cause error) error {
	if len(s) > maxErrorName {
		s = s[:maxErrorName]
	}
	return &AutoPassthroughError{Name: s, Part: part, Reason: reason, Err: cause}
}

// AutoPassthrough is a parsed Istio AUTO_PASSTHROUGH name: the service,
// service port and DestinationRule subset that an Istio sidecar in another
// network asks an east-west gateway for, as
// outbound_.<port>_.<subset>_.<host>. It is a plain value, safe to copy
// and to share between goroutines.
type AutoPassthrough struct {
	// Port is the service port (not the target port), 1 to 65535.
	Port uint32
	// Subset is the DestinationRule subset name; "" for the whole service.
	Subset string
	// Host is the service's fully qualified host name.
	Host Name
}

// Prefixes and separators of Istio's two spellings of a subset key
// (istio/istio pilot/pkg/model/service.go BuildDNSSrvSubsetKey and
// BuildSubsetKey).
const (
	apDirection = "outbound"
	apSNISep    = "_."
	apPipeSep   = "|"
)

// ParseAutoPassthrough parses an AUTO_PASSTHROUGH name in either of the
// spellings Istio uses:
//
//	outbound_.9080_.v1_.reviews.default.svc.cluster.local  (the SNI)
//	outbound|9080|v1|reviews.default.svc.cluster.local     (the Envoy cluster)
//
// The subset may be empty ("outbound_.9080_._.reviews…", "outbound|9080||reviews…").
// The host is the last field and may itself contain "_.". The port is decimal 1..65535 without sign or leading zeros;
// the subset is a DNS-1123 label of at most 62 bytes (with its "_" it is one
// label of the SNI); the host follows ParseName; and the SNI spelling must
// fit a host name (253 bytes). Letters are folded to lower case, as in SNI.
//
// A name without the "outbound" prefix gives ErrNotAutoPassthrough
// (unwrapped, and without allocating); a bad part gives an
// *AutoPassthroughError. ParseAutoPassthrough does not allocate when s is
// already lower case.
func ParseAutoPassthrough(s string) (AutoPassthrough, error) {
	var sep string
	switch {
	case hasPrefixFold(s, apDirection+apSNISep):
		sep = apSNISep
	case hasPrefixFold(s, apDirection+apPipeSep):
		sep = apPipeSep
	default:
		return AutoPassthrough{}, ErrNotAutoPassthrough
	}
	rest := s[len(apDirection)+len(sep):]
	port, rest, ok := strings.Cut(rest, sep)
	if !ok {
		return AutoPassthrough{}, apError(s, "port", "no "+strconv.Quote(sep)+" after the port", nil)
	}
	subset, host, ok := strings.Cut(rest, sep)
	if !ok {
		return AutoPassthrough{}, apError(s, "subset", "no "+strconv.Quote(sep)+" after the subset", nil)
	}
	var ap AutoPassthrough
	p, reason := parsePort(port)
	if reason != "" {
		return AutoPassthrough{}, apError(s, "port", reason, nil)
	}
	ap.Port = p
	if reason := checkSubset(subset); reason != "" {
		return AutoPassthrough{}, apError(s, "subset", reason, nil)
	}
	ap.Subset = lowerASCII(subset)
	h, err := ParseName(host)
	if err != nil {
		return AutoPassthrough{}, apError(s, "host", "not a host name", err)
	}
	ap.Host = h
	if n := ap.sniLen(); n > maxNameLen {
		return AutoPassthrough{}, apError(s, "length", "SNI form is "+strconv.Itoa(n)+" bytes, more than 253", nil)
	}
	return ap, nil
}

// String renders the SNI spelling outbound_.<port>_.<subset>_.<host>,
// which ParseAutoPassthrough parses back to an equal value.
func (a AutoPassthrough) String() string { return a.render(apSNISep) }

// ClusterName renders Istio's Envoy cluster spelling
// outbound|<port>|<subset>|<host>.
func (a AutoPassthrough) ClusterName() string { return a.render(apPipeSep) }

// SNI returns the SNI spelling as a Name.
func (a AutoPassthrough) SNI() (Name, error) { return ParseName(a.String()) }

func (a AutoPassthrough) render(sep string) string {
	var sb strings.Builder
	sb.Grow(len(apDirection) + 3*len(sep) + 5 + len(a.Subset) + len(a.Host))
	sb.WriteString(apDirection)
	sb.WriteString(sep)
	var num [10]byte
	sb.Write(strconv.AppendUint(num[:0], uint64(a.Port), 10))
	sb.WriteString(sep)
	sb.WriteString(a.Subset)
	sb.WriteString(sep)
	sb.WriteString(string(a.Host))
	return sb.String()
}

// sniLen is len(a.String()) without building it.
func (a AutoPassthrough) sniLen() int {
	digits := 1
	for p := a.Port; p >= 10; p /= 10 {
		digits++
	}
	return len(apDirection) + 3*len(apSNISep) + digits + len(a.Subset) + len(a.Host)
}

// parsePort parses 1..65535 in plain decimal.
func parsePort(s string) (uint32, string) {
	switch {
	case s == "":
		return 0, "empty"
	case len(s) > 5:
		return 0, "more than 5 digits"
	case s[0] == '0':
		return 0, "zero or leading zero"
	}
	var p uint32
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, "not a decimal number"
		}
		p = p*10 + uint32(s[i]-'0')
	}
	if p > 65535 {
		return 0, "above 65535"
	}
	return p, ""
}

// maxSubsetLen keeps "<subset>_" within one 63-byte DNS label of the SNI.
const maxSubsetLen = maxLabelLen - 1

// checkSubset validates a DestinationRule subset name as a DNS-1123 label
// (letters, digits, hyphens, alphanumeric at both ends); "" is allowed.
func checkSubset(s string) string {
	if s == "" {
		return ""
	}
	if len(s) > maxSubsetLen {
		return "longer than 62 bytes"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (c != '-' || i == 0 || i == len(s)-1) {
			return "not a DNS-1123 label"
		}
	}
	return ""
}

// lowerASCII folds ASCII letters, allocating only if there are any.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// meshALPNs are the protocols Istio's AUTO_PASSTHROUGH filter chains
// require (istio/istio pilot/pkg/networking/core/listener.go, mtlsALPNs).
var meshALPNs = [...]string{"istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"}

// MeshALPNProtocols returns a new slice of the ALPN protocols that mark a
// connection as Istio mesh mTLS: istio, istio-peer-exchange,
// istio-http/1.0, istio-http/1.1 and istio-h2.
func MeshALPNProtocols() []string { return append([]string(nil), meshALPNs[:]...) }

// IsMeshALPN reports whether alpn offers any Istio mesh mTLS protocol
// (see MeshALPNProtocols). Istio accepts an AUTO_PASSTHROUGH connection
// only then, so a plain TLS client cannot reach mesh services by guessing
// their SNI.
func IsMeshALPN(alpn []string) bool {
	for _, p := range alpn {
		if isMeshALPN(p) {
			return true
		}
	}
	return false
}

func isMeshALPN[T ~string | ~[]byte](p T) bool {
	for _, m := range meshALPNs {
		if string(p) == m {
			return true
		}
	}
	return false
}
