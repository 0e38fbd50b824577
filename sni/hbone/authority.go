package hbone

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// SubsetHeader is the request header naming the DestinationRule subset of
// the destination; absent or empty for the whole service.
const SubsetHeader = "X-Meshgate-Subset"

// RefusalHeader is the response header carrying the reason of a refused
// stream (the same word counted in meshgate_hbone_refused_total).
const RefusalHeader = "X-Meshgate-Refused"

// maxAuthorityLen bounds an authority: a DNS name (253) and ":65535".
const maxAuthorityLen = 253 + 6

// maxSubsetLen bounds a subset name (a DNS-1123 label, as Istio's).
const maxSubsetLen = 63

// ErrBadAuthority is wrapped by every authority decoding error.
var ErrBadAuthority = errors.New("hbone: bad authority")

// ErrBadSubset is wrapped by every subset header decoding error.
var ErrBadSubset = errors.New("hbone: bad subset")

// Target is a decoded tunnel destination.
type Target struct {
	// Service is the lower-cased service hostname.
	Service string
	// Port is the service port, 1-65535.
	Port uint32
	// Subset is the DestinationRule subset, "" for none.
	Subset string
}

// String formats t as the CONNECT authority it travels in.
func (t Target) String() string { return t.Service + ":" + strconv.FormatUint(uint64(t.Port), 10) }

// ParseAuthority decodes a CONNECT :authority as "<hostname>:<port>". The
// host must be a DNS name (letters, digits, hyphens and dots, labels of
// 1-63 characters not starting or ending with a hyphen), not an IP
// address and not localhost; the port a decimal 1-65535 without sign or
// leading zeros. Userinfo, paths, queries, percent escapes and brackets are
// refused. Errors wrap ErrBadAuthority and say what was wrong.
func ParseAuthority(s string) (Target, error) {
	bad := func(format string, args ...any) (Target, error) {
		return Target{}, fmt.Errorf("%w %q: %s", ErrBadAuthority, clip(s), fmt.Sprintf(format, args...))
	}
	if s == "" {
		return bad("empty (want <service hostname>:<port>)")
	}
	if len(s) > maxAuthorityLen {
		return bad("longer than %d bytes", maxAuthorityLen)
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return bad("no port (want <service hostname>:<port>)")
	}
	host, ps := s[:i], s[i+1:]
	if ps == "" {
		return bad("empty port")
	}
	if len(ps) > 1 && ps[0] == '0' {
		return bad("port %q has a leading zero", ps)
	}
	for _, c := range []byte(ps) {
		if c < '0' || c > '9' {
			return bad("port %q is not a decimal number", ps)
		}
	}
	port, err := strconv.ParseUint(ps, 10, 32)
	if err != nil || port == 0 || port > 65535 {
		return bad("port %s is not in 1-65535", ps)
	}
	if strings.HasPrefix(host, "[") || strings.Contains(host, ":") {
		return bad("host is an IPv6 address; a service hostname is required")
	}
	if _, err := netip.ParseAddr(host); err != nil {
		// A partial dotted quad ("10.1") is refused below by the
		// all-numeric last label rule.
	} else {
		return bad("host %s is an IP address; a service hostname is required", host)
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if err := checkHostname(host); err != nil {
		return bad("%v", err)
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return bad("host %s is a loopback name", host)
	}
	return Target{Service: host, Port: uint32(port)}, nil
}

// checkHostname checks a lower-cased DNS name without a trailing dot.
func checkHostname(h string) error {
	if h == "" {
		return errors.New("empty host")
	}
	if len(h) > 253 {
		return fmt.Errorf("host longer than 253 bytes")
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if err := checkLabel(l); err != nil {
			return fmt.Errorf("host label %q: %v", clip(l), err)
		}
	}
	last := labels[len(labels)-1]
	if strings.Trim(last, "0123456789") == "" {
		return fmt.Errorf("host %q ends in an all-numeric label (an address, not a name)", clip(h))
	}
	return nil
}

// checkLabel checks one DNS-1123 label.
func checkLabel(l string) error {
	if l == "" {
		return errors.New("empty label")
	}
	if len(l) > 63 {
		return errors.New("longer than 63 characters")
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-':
			if i == 0 || i == len(l)-1 {
				return errors.New("starts or ends with a hyphen")
			}
		default:
			return fmt.Errorf("character %q is not allowed (letters, digits, hyphens)", c)
		}
	}
	return nil
}

// ParseSubset decodes the subset header: empty, or a DNS-1123 label of at
// most 63 characters. Errors wrap ErrBadSubset.
func ParseSubset(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if len(s) > maxSubsetLen {
		return "", fmt.Errorf("%w: %s longer than %d characters", ErrBadSubset, SubsetHeader, maxSubsetLen)
	}
	if err := checkLabel(s); err != nil {
		return "", fmt.Errorf("%w: %s %q: %v", ErrBadSubset, SubsetHeader, clip(s), err)
	}
	return s, nil
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
