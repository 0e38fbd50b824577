package sni

import (
	"errors"
	"fmt"
	"iter"
	"net"
	"time"
)

// Sentinel errors returned by Peek and ParseHello. Each maps to a refusal
// reason (see Reason).
var (
	// ErrNotTLS means the first bytes are not a TLS handshake record.
	ErrNotTLS = errors.New("sni: not a TLS handshake")
	// ErrNoSNI means the ClientHello carries no server_name extension.
	ErrNoSNI = errors.New("sni: ClientHello has no server_name")
	// ErrTooLarge means the ClientHello exceeds Limits.MaxBytes.
	ErrTooLarge = errors.New("sni: ClientHello exceeds size limit")
	// ErrTimeout means the ClientHello did not arrive within Limits.Timeout.
	ErrTimeout = errors.New("sni: timed out reading ClientHello")
	// ErrIncomplete means ParseHello needs more bytes; RawHello.Need says
	// how many at least. Peek never returns it.
	ErrIncomplete = errors.New("sni: ClientHello incomplete")
)

// MalformedError says which field of the ClientHello was bad and where.
type MalformedError struct {
	// Field names the bad part, e.g. "record.length",
	// "client_hello.session_id.length" or "server_name.host_name".
	Field string
	// Offset is the byte offset of the bad part in the bytes as read from
	// the connection, record headers included.
	Offset int
	// Err is the underlying cause, if any: a *NameError for a bad server
	// name, io.EOF or io.ErrUnexpectedEOF when the client closed early.
	Err error
}

// Error names the field and offset, and the cause if any.
func (e *MalformedError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("sni: malformed ClientHello: %s at offset %d: %v", e.Field, e.Offset, e.Err)
	}
	return fmt.Sprintf("sni: malformed ClientHello: %s at offset %d", e.Field, e.Offset)
}

// Unwrap returns the cause, if any.
func (e *MalformedError) Unwrap() error { return e.Err }

// MaxHelloBytes is the hard cap on a ClientHello, all records and their
// headers included: 64 KiB, as Envoy's tls_inspector.
const MaxHelloBytes = 64 << 10

// minLimitBytes is the smallest MaxBytes Limits.Validate accepts; real
// hellos are rarely below 200 bytes.
const minLimitBytes = 256

// Limits bound how much a client may make Peek read and wait.
type Limits struct {
	// MaxBytes caps the ClientHello (all records). Default (0) is 64 KiB,
	// which is also the most allowed (MaxHelloBytes).
	MaxBytes int
	// Timeout is the deadline for the whole hello. Default (0) is 5s; a
	// negative Timeout sets no deadline.
	Timeout time.Duration
}

// DefaultLimits returns 64 KiB and 5 s.
func DefaultLimits() Limits { return Limits{MaxBytes: 64 << 10, Timeout: 5 * time.Second} }

// Validate reports limits Peek would have to correct: MaxBytes must be 0 or
// between 256 and MaxHelloBytes.
func (l Limits) Validate() error {
	if l.MaxBytes != 0 && (l.MaxBytes < minLimitBytes || l.MaxBytes > MaxHelloBytes) {
		return fmt.Errorf("sni: Limits.MaxBytes %d: want 0 (default) or %d..%d", l.MaxBytes, minLimitBytes, MaxHelloBytes)
	}
	return nil
}

// withDefaults fills zero fields and clamps MaxBytes into range.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	switch {
	case l.MaxBytes <= 0:
		l.MaxBytes = d.MaxBytes
	case l.MaxBytes < minLimitBytes:
		l.MaxBytes = minLimitBytes
	case l.MaxBytes > MaxHelloBytes:
		l.MaxBytes = MaxHelloBytes
	}
	if l.Timeout == 0 {
		l.Timeout = d.Timeout
	}
	return l
}

// Hello is what routing needs from a ClientHello.
type Hello struct {
	ServerName string   // lower-cased, validated
	ALPN       []string // application_layer_protocol_negotiation, in client order
}

// TLS wire constants (RFC 8446 §5.1, §4, RFC 6066 §3, RFC 7301 §3.1).
const (
	recordTypeHandshake = 0x16
	recordHeaderLen     = 5
	maxRecordLen        = 1 << 14
	handshakeHeaderLen  = 4
	typeClientHello     = 1
	extServerName       = 0
	extALPN             = 16
	hostNameType        = 0
	maxSessionIDLen     = 32
	randomLen           = 32
)

// RawHello is a parsed ClientHello whose byte fields alias memory that
// ParseHello was given or that RawHello owns. Reuse one RawHello across
// calls to parse without allocating. A RawHello must not be used by two
// goroutines at once; its slices are valid until the next ParseHello with
// it, or until the input bytes change.
type RawHello struct {
	// ServerName is the validated, lower-cased host_name of server_name,
	// one trailing dot removed. Empty when the hello has none.
	ServerName []byte
	// Version is the legacy_version of the ClientHello body.
	Version uint16
	// Len is how many input bytes the hello's records span. Bytes after
	// Len (early data, a ChangeCipherSpec) are not examined.
	Len int
	// Need is set with ErrIncomplete: the input must be at least this
	// long before ParseHello can say more. It is a lower bound.
	Need int

	alpn    []byte // protocol_name_list, validated
	waiting string // field awaited when ErrIncomplete
	scratch []byte // reassembly of a hello split across records
	name    [maxNameLen]byte
}

// ALPN yields each protocol the client offers, in order. The slices alias
// the RawHello's storage; copy them to keep them.
func (h *RawHello) ALPN() iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		for l := h.alpn; len(l) > 0; {
			n := int(l[0])
			if !yield(l[1 : 1+n]) {
				return
			}
			l = l[1+n:]
		}
	}
}

// HasMeshALPN reports whether the client offers one of Istio's mesh mTLS
// protocols (see IsMeshALPN), without allocating.
func (h *RawHello) HasMeshALPN() bool {
	for p := range h.ALPN() {
		if isMeshALPN(p) {
			return true
		}
	}
	return false
}

func (h *RawHello) reset() {
	scratch := h.scratch[:0]
	*h = RawHello{scratch: scratch}
}

func (h *RawHello) incomplete(need int, field string) error {
	if need > MaxHelloBytes {
		return fmt.Errorf("sni: ClientHello needs at least %d bytes: %w", need, ErrTooLarge)
	}
	h.Need, h.waiting = need, field
	return ErrIncomplete
}

// ParseHello parses the TLS ClientHello at the start of b into h. b holds
// the bytes as read from the connection: one or more handshake records,
// which are reassembled when the hello spans several. It never reads past
// a length it has not checked and does not allocate on success when h is
// reused (a hello split across records is reassembled in h's storage).
//
// Errors: ErrIncomplete (with h.Need) when b stops early; ErrNotTLS when b
// does not start with a TLS handshake record; ErrTooLarge when a record
// exceeds 16 KiB or the hello cannot fit in MaxHelloBytes; ErrNoSNI for a
// well-formed hello without a host_name (h is filled in); a
// *MalformedError naming the bad field otherwise.
func ParseHello(b []byte, h *RawHello) error {
	h.reset()
	// Sniff the first record header byte by byte, so that HTTP, SSLv2 and
	// other protocols are refused as soon as their first bytes arrive.
	if len(b) < 1 {
		return h.incomplete(recordHeaderLen+1, "record.header")
	}
	if b[0] != recordTypeHandshake {
		return ErrNotTLS
	}
	if len(b) >= 2 && b[1] != 3 || len(b) >= 3 && b[2] > 4 {
		return ErrNotTLS
	}

	var hdr [handshakeHeaderLen]byte
	got, msgEnd, records, pos := 0, -1, 0, 0
	for {
		rest := len(b) - pos
		if rest < recordHeaderLen {
			if pos > 0 {
				if rest >= 1 && b[pos] != recordTypeHandshake {
					return &MalformedError{Field: "record.type", Offset: pos}
				}
				if rest >= 2 && b[pos+1] != 3 || rest >= 3 && b[pos+2] > 4 {
					return &MalformedError{Field: "record.version", Offset: pos + 1}
				}
			}
			more := 1
			if msgEnd >= 0 {
				more = msgEnd - got
			}
			return h.incomplete(pos+recordHeaderLen+more, "record.header")
		}
		if pos > 0 {
			if b[pos] != recordTypeHandshake {
				return &MalformedError{Field: "record.type", Offset: pos}
			}
			if b[pos+1] != 3 || b[pos+2] > 4 {
				return &MalformedError{Field: "record.version", Offset: pos + 1}
			}
		}
		rlen := int(b[pos+3])<<8 | int(b[pos+4])
		if rlen == 0 {
			return &MalformedError{Field: "record.length", Offset: pos + 3}
		}
		if rlen > maxRecordLen {
			return fmt.Errorf("sni: TLS record of %d bytes at offset %d: %w", rlen, pos, ErrTooLarge)
		}
		body := pos + recordHeaderLen
		avail := min(rlen, len(b)-body)
		// The handshake header may itself be split across records.
		for k := 0; got+k < handshakeHeaderLen && k < avail; k++ {
			hdr[got+k] = b[body+k]
			if got+k == 0 && hdr[0] != typeClientHello {
				return &MalformedError{Field: "handshake.type", Offset: body}
			}
			if got+k == handshakeHeaderLen-1 {
				msgLen := int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
				if msgLen == 0 {
					return &MalformedError{Field: "handshake.length", Offset: physOffset(b, 1)}
				}
				msgEnd = handshakeHeaderLen + msgLen
				if recordHeaderLen+msgEnd > MaxHelloBytes {
					return fmt.Errorf("sni: ClientHello of %d bytes: %w", msgEnd, ErrTooLarge)
				}
			}
		}
		if msgEnd >= 0 && got+rlen > msgEnd {
			// The record goes on after the ClientHello: a client may send
			// nothing else in a handshake record before the server answers.
			return &MalformedError{Field: "record.length", Offset: pos + 3}
		}
		if avail < rlen {
			need := body + rlen
			if msgEnd >= 0 && got+rlen < msgEnd {
				need += recordHeaderLen + msgEnd - got - rlen
			}
			return h.incomplete(need, "record.fragment")
		}
		got += rlen
		pos = body + rlen
		records++
		if got == msgEnd {
			break
		}
		if pos >= MaxHelloBytes {
			return fmt.Errorf("sni: ClientHello records pass %d bytes: %w", pos, ErrTooLarge)
		}
	}
	h.Len = pos

	var m []byte
	if records == 1 {
		m = b[recordHeaderLen:pos]
	} else {
		h.scratch = h.scratch[:0]
		for p := 0; p < pos; {
			rlen := int(b[p+3])<<8 | int(b[p+4])
			h.scratch = append(h.scratch, b[p+recordHeaderLen:p+recordHeaderLen+rlen]...)
			p += recordHeaderLen + rlen
		}
		m = h.scratch
	}
	if field, off, cause := h.parseClientHello(m); field != "" {
		return &MalformedError{Field: field, Offset: physOffset(b[:pos], off), Err: cause}
	}
	if len(h.ServerName) == 0 {
		return ErrNoSNI
	}
	return nil
}

// physOffset maps an offset in the reassembled handshake message to the
// offset in the record stream b. The records were validated already.
func physOffset(b []byte, off int) int {
	got, p := 0, 0
	for p+recordHeaderLen <= len(b) {
		rlen := int(b[p+3])<<8 | int(b[p+4])
		if off < got+rlen {
			return p + recordHeaderLen + off - got
		}
		got += rlen
		p += recordHeaderLen + rlen
	}
	return min(p, len(b))
}

// cursor reads big-endian fields from a handshake message.
type cursor struct {
	b   []byte
	off int
}

func (c *cursor) u8() (int, bool) {
	if len(c.b)-c.off < 1 {
		return 0, false
	}
	v := int(c.b[c.off])
	c.off++
	return v, true
}

func (c *cursor) u16() (int, bool) {
	if len(c.b)-c.off < 2 {
		return 0, false
	}
	v := int(c.b[c.off])<<8 | int(c.b[c.off+1])
	c.off += 2
	return v, true
}

func (c *cursor) bytes(n int) ([]byte, bool) {
	if n < 0 || len(c.b)-c.off < n {
		return nil, false
	}
	v := c.b[c.off : c.off+n]
	c.off += n
	return v, true
}

// parseClientHello parses one whole handshake message (header included).
// On failure it returns the field, its offset in m, and any cause.
func (h *RawHello) parseClientHello(m []byte) (field string, off int, cause error) {
	c := cursor{b: m, off: handshakeHeaderLen}
	start := c.off
	v, ok := c.u16()
	if !ok || v>>8 != 3 {
		return "client_hello.version", start, nil
	}
	h.Version = uint16(v)
	if _, ok := c.bytes(randomLen); !ok {
		return "client_hello.random", c.off, nil
	}
	start = c.off
	if n, ok := c.u8(); !ok || n > maxSessionIDLen {
		return "client_hello.session_id.length", start, nil
	} else if _, ok := c.bytes(n); !ok {
		return "client_hello.session_id", start, nil
	}
	start = c.off
	if n, ok := c.u16(); !ok || n < 2 || n%2 != 0 {
		return "client_hello.cipher_suites.length", start, nil
	} else if _, ok := c.bytes(n); !ok {
		return "client_hello.cipher_suites.length", start, nil
	}
	start = c.off
	if n, ok := c.u8(); !ok || n < 1 {
		return "client_hello.compression_methods.length", start, nil
	} else if _, ok := c.bytes(n); !ok {
		return "client_hello.compression_methods.length", start, nil
	}
	if c.off == len(m) {
		return "", 0, nil // no extensions (allowed before TLS 1.3)
	}
	start = c.off
	if n, ok := c.u16(); !ok || n != len(m)-c.off {
		return "client_hello.extensions.length", start, nil
	}
	// seen has one bit per extension type below 256; TLS forbids a type
	// twice. Higher types (GREASE among them) are not tracked.
	var seen [4]uint64
	for c.off < len(m) {
		start = c.off
		typ, ok1 := c.u16()
		n, ok2 := c.u16()
		if !ok1 || !ok2 {
			return "extension.header", start, nil
		}
		dataOff := c.off
		data, ok := c.bytes(n)
		if !ok {
			return "extension.length", start + 2, nil
		}
		if typ < 256 {
			if seen[typ>>6]&(1<<(typ&63)) != 0 {
				return "extension.duplicate", start, nil
			}
			seen[typ>>6] |= 1 << (typ & 63)
		}
		switch typ {
		case extServerName:
			if field, off, cause := h.parseServerName(data, dataOff); field != "" {
				return field, off, cause
			}
		case extALPN:
			if field, off := h.parseALPN(data, dataOff); field != "" {
				return field, off, nil
			}
		}
	}
	return "", 0, nil
}

// parseServerName parses a server_name extension body (RFC 6066 §3).
// base is the offset of data in the handshake message.
func (h *RawHello) parseServerName(data []byte, base int) (string, int, error) {
	c := cursor{b: data}
	if n, ok := c.u16(); !ok || n == 0 || n != len(data)-2 {
		return "server_name.list.length", base, nil
	}
	for c.off < len(data) {
		start := c.off
		typ, ok1 := c.u8()
		n, ok2 := c.u16()
		if !ok1 || !ok2 {
			return "server_name.entry", base + start, nil
		}
		name, ok := c.bytes(n)
		if !ok {
			return "server_name.entry.length", base + start + 1, nil
		}
		if typ != hostNameType {
			continue // unknown name types carry an opaque vector; skip it
		}
		if len(h.ServerName) != 0 {
			return "server_name.host_name.duplicate", base + start, nil
		}
		keep, _, eoff, reason := checkName(name)
		if reason != "" {
			return "server_name.host_name", base + start + 3 + eoff, newNameError(name, eoff, reason)
		}
		for i, ch := range name[:keep] {
			if 'A' <= ch && ch <= 'Z' {
				ch += 'a' - 'A'
			}
			h.name[i] = ch
		}
		h.ServerName = h.name[:keep]
	}
	return "", 0, nil
}

// parseALPN parses an application_layer_protocol_negotiation body
// (RFC 7301 §3.1): a non-empty list of non-empty protocol names.
func (h *RawHello) parseALPN(data []byte, base int) (string, int) {
	c := cursor{b: data}
	if n, ok := c.u16(); !ok || n < 2 || n != len(data)-2 {
		return "alpn.list.length", base
	}
	for c.off < len(data) {
		start := c.off
		n, _ := c.u8()
		if n == 0 {
			return "alpn.protocol.length", base + start
		}
		if _, ok := c.bytes(n); !ok {
			return "alpn.protocol.length", base + start
		}
	}
	h.alpn = data[2:]
	return "", 0
}

// Peek reads one TLS ClientHello from c without consuming it. It stops at
// lim.MaxBytes or lim.Timeout. The returned conn replays the peeked bytes
// before reading more from c; it is always a *PeekedConn.
//
// The read deadline of c is set to lim.Timeout (unless negative) and
// cleared before Peek returns. Zero or out-of-range limits are replaced by
// defaults (see Limits.Validate).
//
// On ErrNoSNI Peek still returns the Hello (ServerName empty) and the
// replaying conn, so a caller may send hellos without SNI to a catch-all
// route. On every other error both are nil and the caller closes c.
// Errors: ErrNotTLS, ErrTooLarge, ErrTimeout, *MalformedError (wrapping
// io.EOF or io.ErrUnexpectedEOF if the client closed before a whole hello),
// or a wrapped read error. Peek is safe to call concurrently on different
// conns.
func Peek(c net.Conn, lim Limits) (*Hello, net.Conn, error) {
	hello, pc, err := peek(c, lim)
	if pc == nil {
		return hello, nil, err
	}
	return hello, pc, err
}
