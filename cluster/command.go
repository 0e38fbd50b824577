package cluster

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Limits on what one write may carry. They keep raft log entries small
// enough to replicate quickly and bound what a decoder allocates.
const (
	// MaxKeyLen is the longest key, in bytes.
	MaxKeyLen = 512
	// MaxValueLen is the largest value, in bytes.
	MaxValueLen = 1 << 20
	// MaxOps is the most operations one batch may carry.
	MaxOps = 4096
	// MaxCommandLen is the largest encoded batch, in bytes.
	MaxCommandLen = 4 << 20
)

// OpType says what an Op does.
type OpType uint8

// Operation types.
const (
	// OpPut stores Value under Key.
	OpPut OpType = 1
	// OpDelete removes Key; deleting a missing key is not an error.
	OpDelete OpType = 2
	// OpCheck asserts that Key's ModIndex equals Index (0 = the key is
	// absent). A failed check aborts the whole batch with a *ConflictError.
	OpCheck OpType = 3
	// OpDeletePrefix removes every key that starts with Key.
	OpDeletePrefix OpType = 4
)

func (t OpType) String() string {
	switch t {
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	case OpCheck:
		return "check"
	case OpDeletePrefix:
		return "delete-prefix"
	}
	return fmt.Sprintf("op(%d)", uint8(t))
}

// Op is one operation of a batch. A batch is applied atomically in one raft
// log entry: every Check is evaluated first, then the writes in order.
type Op struct {
	Type  OpType
	Key   string
	Value []byte // OpPut only
	Index uint64 // OpCheck only
}

// Put returns an Op that stores value under key.
func Put(key string, value []byte) Op { return Op{Type: OpPut, Key: key, Value: value} }

// Delete returns an Op that removes key.
func Delete(key string) Op { return Op{Type: OpDelete, Key: key} }

// DeletePrefix returns an Op that removes every key starting with prefix.
func DeletePrefix(prefix string) Op { return Op{Type: OpDeletePrefix, Key: prefix} }

// Check returns an Op that holds only if key's ModIndex is index; index 0
// means "key is absent".
func Check(key string, index uint64) Op { return Op{Type: OpCheck, Key: key, Index: index} }

// Record is one stored key with its value and the raft indexes at which it
// was created and last modified. Records handed out by a Node are copies.
type Record struct {
	Key         string
	Value       []byte
	CreateIndex uint64
	ModIndex    uint64
}

// ValidKey reports whether key is usable: 1 to MaxKeyLen bytes of printable
// ASCII without spaces. Keys are namespaced with "/", for example
// "config/Gateway/default/ingress" or "ca/root".
func ValidKey(key string) error {
	if key == "" || len(key) > MaxKeyLen {
		return fmt.Errorf("%w: length %d not in 1..%d", ErrInvalidKey, len(key), MaxKeyLen)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%w: byte 0x%02x at offset %d", ErrInvalidKey, c, i)
		}
	}
	return nil
}

// validateOps checks a batch before it is encoded.
func validateOps(ops []Op) error {
	if len(ops) == 0 {
		return fmt.Errorf("%w: empty batch", ErrBadCommand)
	}
	if len(ops) > MaxOps {
		return fmt.Errorf("%w: %d operations, limit %d", ErrTooLarge, len(ops), MaxOps)
	}
	for _, op := range ops {
		switch op.Type {
		case OpPut, OpDelete, OpCheck:
			if err := ValidKey(op.Key); err != nil {
				return err
			}
		case OpDeletePrefix:
			// An empty prefix would wipe everything: refuse it.
			if err := ValidKey(op.Key); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: unknown op type %d", ErrBadCommand, op.Type)
		}
		if op.Type == OpPut && len(op.Value) > MaxValueLen {
			return fmt.Errorf("%w: value of %q is %d bytes, limit %d", ErrTooLarge, op.Key, len(op.Value), MaxValueLen)
		}
	}
	return nil
}

// commandVersion is the first byte of every encoded command.
const commandVersion = 1

// encodeCommand encodes a validated batch as a raft log entry:
//
//	version(1) nops(uvarint) { type(1) keylen(uvarint) key [vallen(uvarint) value | index(uvarint)] }
func encodeCommand(ops []Op) ([]byte, error) {
	if err := validateOps(ops); err != nil {
		return nil, err
	}
	size := 1 + binary.MaxVarintLen64
	for _, op := range ops {
		size += 1 + 2*binary.MaxVarintLen64 + len(op.Key) + len(op.Value)
	}
	b := make([]byte, 0, size)
	b = append(b, commandVersion)
	b = binary.AppendUvarint(b, uint64(len(ops)))
	for _, op := range ops {
		b = append(b, byte(op.Type))
		b = binary.AppendUvarint(b, uint64(len(op.Key)))
		b = append(b, op.Key...)
		switch op.Type {
		case OpPut:
			b = binary.AppendUvarint(b, uint64(len(op.Value)))
			b = append(b, op.Value...)
		case OpCheck:
			b = binary.AppendUvarint(b, op.Index)
		}
	}
	if len(b) > MaxCommandLen {
		return nil, fmt.Errorf("%w: encoded batch is %d bytes, limit %d", ErrTooLarge, len(b), MaxCommandLen)
	}
	return b, nil
}

// decodeCommand is the inverse of encodeCommand. It never panics and never
// allocates more than len(b) for values; the ops it returns alias b.
func decodeCommand(b []byte) ([]Op, error) {
	if len(b) > MaxCommandLen {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), MaxCommandLen)
	}
	d := decoder{b: b}
	if v := d.byte(); v != commandVersion {
		if d.err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadCommand, d.err)
		}
		return nil, fmt.Errorf("%w: version %d", ErrBadCommand, v)
	}
	n := d.uvarint()
	if d.err == nil && (n == 0 || n > MaxOps) {
		return nil, fmt.Errorf("%w: %d operations", ErrBadCommand, n)
	}
	// Each op takes at least 2 bytes, so n is bounded by the input as well.
	if d.err == nil && n > uint64(len(b)) {
		return nil, fmt.Errorf("%w: %d operations in %d bytes", ErrBadCommand, n, len(b))
	}
	var ops []Op
	if d.err == nil {
		ops = make([]Op, 0, n)
	}
	for i := uint64(0); d.err == nil && i < n; i++ {
		op := Op{Type: OpType(d.byte())}
		op.Key = string(d.bytes(MaxKeyLen))
		switch op.Type {
		case OpPut:
			op.Value = d.bytes(MaxValueLen)
		case OpCheck:
			op.Index = d.uvarint()
		case OpDelete, OpDeletePrefix:
		default:
			if d.err == nil {
				d.err = fmt.Errorf("unknown op type %d", op.Type)
			}
		}
		ops = append(ops, op)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCommand, d.err)
	}
	if err := validateOps(ops); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	return ops, nil
}

// decoder reads length-prefixed fields from a byte slice. The first error
// sticks; later reads return zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = fmt.Errorf("truncated")
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
		d.err = fmt.Errorf("bad varint")
		return 0
	}
	if n != uvarintLen(v) {
		d.err = fmt.Errorf("non-minimal varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// uvarintLen is the length of v's minimal uvarint encoding. Decoders refuse
// longer encodings, so every value has exactly one wire form.
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func (d *decoder) bytes(limit int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(limit) {
		d.err = fmt.Errorf("field of %d bytes exceeds %d", n, limit)
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("truncated field: want %d bytes, have %d", n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// hasPrefix is strings.HasPrefix, named for how List and DeletePrefix use it.
func hasPrefix(key, prefix string) bool { return strings.HasPrefix(key, prefix) }
