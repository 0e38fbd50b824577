package catalog

import (
	"encoding/binary"
	"fmt"
)

// Gossip message types: the first byte of every catalog message.
const (
	msgDelta   byte = 1 // one endpoint put/delete by its owner (UDP broadcast)
	msgState   byte = 2 // an owner's full endpoint set plus a digest (push-pull, sync reply)
	msgSyncReq byte = 3 // "send me your full state" (TCP, to an owner)
	msgLeave   byte = 4 // leave intent: the owner withdraws everything and departs
)

// maxNameLen bounds node names in messages.
const maxNameLen = 128

// maxStateEntries bounds how many endpoints or digest rows one state message
// may carry.
const maxStateEntries = 1 << 16

// Seal limits: a P-256 signature is r||s, 32 bytes each; a chain is at
// most maxChainCerts certificates of at most maxCertBytes each.
const (
	sigLen        = 64
	keyIDLen      = 4
	maxChainCerts = 4
	maxCertBytes  = 4096
	maxChainBytes = 8192
)

// seal is the owner's signature over a record, and what identifies the
// key: the key ID (deltas, leave intents) or the whole chain (states). An
// empty Sig means the record is unsigned (signing off).
type seal struct {
	KeyID [keyIDLen]byte
	Chain [][]byte
	Sig   []byte
}

// version orders an owner's changes: a node restart gets a higher
// incarnation, and every change within an incarnation a higher counter.
type version struct {
	Inc uint64
	Ctr uint64
}

// delta is one endpoint change, broadcast by its owner and relayed by
// every node that found it new.
type delta struct {
	Owner  string
	Ver    version
	ID     string
	Delete bool
	Ep     Endpoint // zero when Delete
	Seal   seal     // KeyID and Sig
}

// state is an owner's complete endpoint set at Ver, plus a digest of the
// versions the sender knows for other owners.
type state struct {
	Owner  string
	Ver    version
	Eps    map[string]Endpoint
	Digest []digestRow
	Seal   seal // Chain and Sig
}

type digestRow struct {
	Owner string
	Ver   version
}

// leaveIntent says Owner at Ver withdraws all its endpoints and leaves.
type leaveIntent struct {
	Owner string
	Ver   version
	Seal  seal // KeyID and Sig
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendVersion(b []byte, v version) []byte {
	b = binary.AppendUvarint(b, v.Inc)
	return binary.AppendUvarint(b, v.Ctr)
}

// The wire form of an owner's record is its body, the part the owner
// signs, followed by the seal:
//
//	delta: body keyID(4) sigLen sig
//	leave: body keyID(4) sigLen sig
//	state: body nCerts {certLen cert} sigLen sig
//
// sigLen is 0 (unsigned) or 64.

func deltaBody(d delta) []byte {
	b := make([]byte, 0, 96+keyIDLen+sigLen+len(d.Ep.Service)+len(d.Ep.Addr))
	b = append(b, msgDelta)
	b = appendString(b, d.Owner)
	b = appendVersion(b, d.Ver)
	b = appendString(b, d.ID)
	if d.Delete {
		return append(b, 0)
	}
	b = append(b, 1)
	return appendEndpoint(b, d.Ep)
}

func encodeDelta(d delta) []byte { return appendKeySeal(deltaBody(d), d.Seal) }

func stateBody(s state) []byte {
	b := []byte{msgState}
	b = appendString(b, s.Owner)
	b = appendVersion(b, s.Ver)
	b = binary.AppendUvarint(b, uint64(len(s.Eps)))
	for _, id := range sortedKeys(s.Eps) {
		b = appendString(b, id)
		b = appendEndpoint(b, s.Eps[id])
	}
	b = binary.AppendUvarint(b, uint64(len(s.Digest)))
	for _, r := range s.Digest {
		b = appendString(b, r.Owner)
		b = appendVersion(b, r.Ver)
	}
	return b
}

func encodeState(s state) []byte { return appendChainSeal(stateBody(s), s.Seal) }

func encodeSyncReq(requester string) []byte {
	return appendString([]byte{msgSyncReq}, requester)
}

func leaveBody(l leaveIntent) []byte {
	b := appendString([]byte{msgLeave}, l.Owner)
	return appendVersion(b, l.Ver)
}

func encodeLeave(l leaveIntent) []byte { return appendKeySeal(leaveBody(l), l.Seal) }

func appendKeySeal(b []byte, s seal) []byte {
	b = append(b, s.KeyID[:]...)
	return appendBytes(b, s.Sig)
}

func appendChainSeal(b []byte, s seal) []byte {
	b = binary.AppendUvarint(b, uint64(len(s.Chain)))
	for _, c := range s.Chain {
		b = appendBytes(b, c)
	}
	return appendBytes(b, s.Sig)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

// message is one decoded catalog message; exactly one field is set.
type message struct {
	Delta   *delta
	State   *state
	SyncReq string
	Leave   *leaveIntent
	// Body is the signed part of a delta, state or leave intent.
	Body []byte
}

// decodeMessage decodes any catalog message. It never panics, bounds every
// count by the bytes present, and validates every endpoint.
func decodeMessage(b []byte) (message, error) {
	d := &decoder{b: b}
	var m message
	body := func() { m.Body = b[:len(b)-len(d.b)] }
	switch typ := d.byte(); typ {
	case msgDelta:
		x := &delta{Owner: d.name(), Ver: d.version(), ID: d.str(MaxIDLen)}
		switch op := d.byte(); op {
		case 0:
			x.Delete = true
		case 1:
			x.Ep = d.endpoint()
		default:
			d.fail("unknown delta op %d", op)
		}
		if d.err == nil && validName(x.ID, MaxIDLen) != "" {
			d.fail("bad endpoint id %q", x.ID)
		}
		body()
		x.Seal = d.keySeal()
		m.Delta = x
	case msgState:
		x := &state{Owner: d.name(), Ver: d.version()}
		n := d.count(maxStateEntries)
		x.Eps = make(map[string]Endpoint, n)
		for i := 0; i < n && d.err == nil; i++ {
			id := d.str(MaxIDLen)
			ep := d.endpoint()
			if d.err == nil && validName(id, MaxIDLen) != "" {
				d.fail("bad endpoint id %q", id)
			}
			x.Eps[id] = ep
		}
		n = d.count(maxStateEntries)
		for i := 0; i < n && d.err == nil; i++ {
			x.Digest = append(x.Digest, digestRow{Owner: d.name(), Ver: d.version()})
		}
		body()
		x.Seal = d.chainSeal()
		m.State = x
	case msgSyncReq:
		m.SyncReq = d.name()
	case msgLeave:
		x := &leaveIntent{Owner: d.name(), Ver: d.version()}
		body()
		x.Seal = d.keySeal()
		m.Leave = x
	default:
		d.fail("unknown message type %d", typ)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return message{}, fmt.Errorf("%w: %w", ErrBadMessage, d.err)
	}
	return m, nil
}

// decoder reads fields from b; the first error sticks and later reads
// return zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	if n != len(binary.AppendUvarint(nil, v)) {
		d.fail("non-minimal varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint32() uint32 {
	v := d.uvarint()
	if v > 1<<32-1 {
		d.fail("value %d overflows uint32", v)
		return 0
	}
	return uint32(v)
}

// count reads an element count, bounded by limit and by the bytes left
// (every element takes at least one byte).
func (d *decoder) count(limit int) int {
	v := d.uvarint()
	if d.err != nil {
		return 0
	}
	if v > uint64(limit) || v > uint64(len(d.b)) {
		d.fail("count %d exceeds limit", v)
		return 0
	}
	return int(v)
}

func (d *decoder) str(limit int) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(limit) || n > uint64(len(d.b)) {
		d.fail("string of %d bytes (limit %d, %d left)", n, limit, len(d.b))
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// bytes reads a length-prefixed byte string of at most limit bytes; the
// result aliases the input.
func (d *decoder) bytes(what string, limit int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(limit) || n > uint64(len(d.b)) {
		d.fail("%s of %d bytes (limit %d, %d left)", what, n, limit, len(d.b))
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) sig() []byte {
	s := d.bytes("signature", sigLen)
	if d.err == nil && len(s) != 0 && len(s) != sigLen {
		d.fail("signature of %d bytes, want %d", len(s), sigLen)
	}
	return s
}

func (d *decoder) keySeal() seal {
	var s seal
	if d.err == nil && len(d.b) < keyIDLen {
		d.fail("truncated key id")
	}
	if d.err != nil {
		return s
	}
	copy(s.KeyID[:], d.b)
	d.b = d.b[keyIDLen:]
	s.Sig = d.sig()
	return s
}

func (d *decoder) chainSeal() seal {
	var s seal
	n := d.count(maxChainCerts)
	total := 0
	for i := 0; i < n && d.err == nil; i++ {
		c := d.bytes("certificate", maxCertBytes)
		if d.err == nil && len(c) == 0 {
			d.fail("empty certificate %d", i)
		}
		if total += len(c); d.err == nil && total > maxChainBytes {
			d.fail("chain of more than %d bytes", maxChainBytes)
		}
		s.Chain = append(s.Chain, c)
	}
	s.Sig = d.sig()
	return s
}

func (d *decoder) name() string {
	s := d.str(maxNameLen)
	if d.err == nil && validName(s, maxNameLen) != "" {
		d.fail("bad node name %q", s)
	}
	return s
}

func (d *decoder) version() version {
	return version{Inc: d.uvarint(), Ctr: d.uvarint()}
}
