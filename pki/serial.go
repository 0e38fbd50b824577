package pki

import (
	"crypto/x509"
	"fmt"
	"math/big"
	"strings"
)

// maxSerialBytes is RFC 5280's limit on a serial number (20 octets).
const maxSerialBytes = 20

// ParseSerial reads a certificate serial number written in hexadecimal,
// as meshgate prints it (the audit log, `meshgate cert issue`) or as
// openssl does ("1A:2B:..."): an optional "0x", then hex digits, optionally
// separated by colons. The result is positive and at most 20 octets
// (RFC 5280). Errors wrap ErrInvalidSerial and say what was wrong.
func ParseSerial(s string) (*big.Int, error) {
	in := s
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	if s == "" {
		return nil, fmt.Errorf("%w: serial %q is empty", ErrInvalidSerial, in)
	}
	if len(s) > 3*maxSerialBytes {
		return nil, fmt.Errorf("%w: serial %.20q... is longer than %d octets", ErrInvalidSerial, in, maxSerialBytes)
	}
	hex := strings.ReplaceAll(s, ":", "")
	if hex == "" || strings.Contains(s, "::") || strings.HasPrefix(s, ":") || strings.HasSuffix(s, ":") {
		return nil, fmt.Errorf("%w: serial %q has misplaced colons", ErrInvalidSerial, in)
	}
	for i, c := range hex {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return nil, fmt.Errorf("%w: serial %q has a non-hex character %q at %d", ErrInvalidSerial, in, c, i)
		}
	}
	n, ok := new(big.Int).SetString(hex, 16)
	if !ok {
		return nil, fmt.Errorf("%w: serial %q is not hexadecimal", ErrInvalidSerial, in)
	}
	if n.Sign() == 0 {
		return nil, fmt.Errorf("%w: serial %q is zero", ErrInvalidSerial, in)
	}
	if len(n.Bytes()) > maxSerialBytes {
		return nil, fmt.Errorf("%w: serial %q is longer than %d octets", ErrInvalidSerial, in, maxSerialBytes)
	}
	return n, nil
}

// serialKey is the store key suffix of a serial: lowercase hex without
// leading zeros, as AuditRecord.Serial.
func serialKey(n *big.Int) string { return n.Text(16) }

// SerialOf returns a certificate's serial as ParseSerial reads it and as
// the audit log and `meshgate cert revoke` use it (lowercase hex).
func SerialOf(c *x509.Certificate) string { return serialKey(c.SerialNumber) }

// Store keys of the certificate lifecycle (beside those in store.go).
const (
	keyCerts   = "pki/cert/"    // + serial hex -> certRecord JSON (live certificates and their grants)
	keyRevoked = "pki/revoked/" // + serial hex -> revocationRecord JSON (until the certificate expires)
)

// RevokedPrefix is the store prefix of the revocation records; a node
// watches it to refresh the revocation set its handshakes use.
const RevokedPrefix = keyRevoked
