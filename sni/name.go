package sni

import (
	"errors"
	"fmt"
	"strings"
)

// Limits of a DNS host name (RFC 1035 §2.3.4, RFC 1123 §2.1).
const (
	maxNameLen  = 253 // presentation form, without a trailing dot
	maxLabelLen = 63
	// maxErrorName caps how much of a hostile name an error keeps.
	maxErrorName = 256
)

// ErrInvalidName is wrapped by every *NameError: the text is not an
// acceptable host name or host pattern.
var ErrInvalidName = errors.New("sni: invalid host name")

// NameError says why a host name or host pattern was refused.
type NameError struct {
	// Name is the refused input, cut to its first 256 bytes.
	Name string
	// Offset is the byte offset of the problem within Name.
	Offset int
	// Reason says what is wrong, e.g. "empty label" or "IP address literal".
	Reason string
}

// Error describes the problem; it quotes at most 256 bytes of client input.
func (e *NameError) Error() string {
	return fmt.Sprintf("sni: invalid host name %q: %s at offset %d", e.Name, e.Reason, e.Offset)
}

// Unwrap returns ErrInvalidName.
func (e *NameError) Unwrap() error { return ErrInvalidName }

func newNameError[T ~string | ~[]byte](s T, off int, reason string) *NameError {
	if len(s) > maxErrorName {
		s = s[:maxErrorName]
	}
	return &NameError{Name: string(s), Offset: off, Reason: reason}
}

// Name is a validated host name as carried in a TLS server_name: ASCII,
// lower case, labels of 1 to 63 letters, digits, hyphens or underscores
// (no hyphen at either end of a label), at most 253 bytes, no trailing dot,
// and not an IP address literal (RFC 6066 §3 forbids those in SNI).
// Underscores are allowed because Istio's AUTO_PASSTHROUGH names
// (outbound_.9080_._.reviews.default.svc.cluster.local) use them.
//
// The zero Name is empty and means "no server name". A Name is an
// immutable string and safe for concurrent use.
type Name string

// ParseName validates s as a host name and returns it lower-cased. One
// trailing dot is removed. It allocates only when s has upper-case letters.
func ParseName(s string) (Name, error) {
	n, upper, off, reason := checkName(s)
	if reason != "" {
		return "", newNameError(s, off, reason)
	}
	s = s[:n]
	if upper {
		s = strings.ToLower(s)
	}
	return Name(s), nil
}

// String returns the name.
func (n Name) String() string { return string(n) }

// checkName validates s as a host name. n is the length to keep (a single
// trailing dot dropped) and upper reports upper-case letters, which the
// caller must fold. On failure reason is non-empty and off locates it. It
// never allocates, so ParseHello can use it on client bytes.
func checkName[T ~string | ~[]byte](s T) (n int, upper bool, off int, reason string) {
	n = len(s)
	if n > 0 && s[n-1] == '.' {
		n--
	}
	if n == 0 {
		return 0, false, 0, "empty name"
	}
	if n > maxNameLen {
		return n, false, maxNameLen, "longer than 253 bytes"
	}
	// Istio's cluster-name form outbound|<port>|<subset>|<host> is accepted
	// as an AUTO_PASSTHROUGH SNI, so '|' is allowed in names that start so.
	pipeForm := hasPipePrefix(s[:n])
	start := 0
	for i := 0; i <= n; i++ {
		if i == n || s[i] == '.' {
			switch l := i - start; {
			case l == 0:
				return n, false, i, "empty label"
			case l > maxLabelLen:
				return n, false, start + maxLabelLen, "label longer than 63 bytes"
			case s[start] == '-':
				return n, false, start, "label starts with a hyphen"
			case s[i-1] == '-':
				return n, false, i - 1, "label ends with a hyphen"
			}
			if i < n {
				start = i + 1
			}
			continue
		}
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		case c == '|' && pipeForm:
		case 'A' <= c && c <= 'Z':
			upper = true
		case c >= 0x80:
			return n, false, i, "non-ASCII byte"
		default:
			return n, false, i, "invalid character"
		}
	}
	if numericLabel(s[start:n]) {
		return n, false, start, "IP address literal"
	}
	return n, upper, 0, ""
}

// hasPipePrefix reports whether s starts with "outbound|", in any case.
func hasPipePrefix[T ~string | ~[]byte](s T) bool {
	const p = "outbound|"
	if len(s) <= len(p) {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != p[i] {
			return false
		}
	}
	return true
}

// numericLabel reports whether a last label makes a name read as an IPv4
// address to common resolvers (WHATWG "ends in a number"): all decimal
// digits, or 0x followed by hex digits. No real top-level domain is numeric.
func numericLabel[T ~string | ~[]byte](l T) bool {
	if len(l) >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X') {
		for i := 2; i < len(l); i++ {
			if !isHex(l[i]) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(l); i++ {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// PatternKind says how a Pattern matches.
type PatternKind uint8

// Pattern kinds, from least to most specific.
const (
	// PatternNone is the zero Pattern; it matches nothing.
	PatternNone PatternKind = iota
	// PatternAny is "*": every name, and a hello without server_name.
	PatternAny
	// PatternWildcard is "*.suffix": any name with one or more labels
	// before ".suffix", not "suffix" itself.
	PatternWildcard
	// PatternExact is a plain host name.
	PatternExact
)

// Pattern is a validated host pattern as written in Istio Gateway hosts
// and VirtualService sniHosts, without any "namespace/" prefix (strip it
// first). A Pattern is an immutable value and safe for concurrent use.
type Pattern struct {
	kind PatternKind
	// s is the name for PatternExact, and ".suffix" for PatternWildcard.
	s string
}

// ParsePattern parses "*", "*.suffix" or an exact host name. The wildcard
// must be the whole left-most label; the rest follows ParseName (lower-cased,
// one trailing dot dropped).
func ParsePattern(s string) (Pattern, error) {
	if s == "*" {
		return Pattern{kind: PatternAny}, nil
	}
	if suffix, ok := strings.CutPrefix(s, "*."); ok {
		n, err := ParseName(suffix)
		if err != nil {
			ne := err.(*NameError)
			return Pattern{}, newNameError(s, ne.Offset+2, ne.Reason)
		}
		return Pattern{kind: PatternWildcard, s: "." + string(n)}, nil
	}
	if i := strings.IndexByte(s, '*'); i >= 0 {
		return Pattern{}, newNameError(s, i, "wildcard must be the whole left-most label")
	}
	n, err := ParseName(s)
	if err != nil {
		return Pattern{}, err
	}
	return Pattern{kind: PatternExact, s: string(n)}, nil
}

// Kind reports how p matches.
func (p Pattern) Kind() PatternKind { return p.kind }

// String renders p as ParsePattern accepts it ("" for the zero Pattern).
func (p Pattern) String() string {
	switch p.kind {
	case PatternAny:
		return "*"
	case PatternWildcard:
		return "*" + p.s
	}
	return p.s
}

// Match reports whether n is covered by p. Only PatternAny matches the
// empty Name (a ClientHello without server_name).
func (p Pattern) Match(n Name) bool {
	switch p.kind {
	case PatternAny:
		return true
	case PatternWildcard:
		return len(n) > len(p.s) && strings.HasSuffix(string(n), p.s)
	case PatternExact:
		return string(n) == p.s
	}
	return false
}

// Specificity ranks patterns that match the same name, as Istio resolves
// overlapping hosts: an exact name beats every wildcard, a longer wildcard
// suffix beats a shorter one, and "*" comes last. Higher is more specific.
func (p Pattern) Specificity() int {
	switch p.kind {
	case PatternExact:
		return 1 << 16 // above any wildcard: names are at most 253 bytes
	case PatternWildcard:
		return len(p.s)
	case PatternAny:
		return 0
	}
	return -1
}

// BestMatch returns the index in ps of the most specific pattern matching
// n, or -1 if none does. Of equally specific matches the first wins.
func BestMatch(n Name, ps []Pattern) int {
	best, bestSpec := -1, -1
	for i, p := range ps {
		if s := p.Specificity(); s > bestSpec && p.Match(n) {
			best, bestSpec = i, s
		}
	}
	return best
}
