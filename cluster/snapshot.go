package cluster

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/google/btree"
)

// Snapshot stream layout (all integers uvarint unless noted):
//
//	magic "MGKV" version(1 byte) index count
//	count x { keylen key vallen value createIndex modIndex }
//	crc32-IEEE of everything before it (4 bytes, big endian)
//
// Keys must be strictly increasing, so a snapshot has one canonical form.
var snapshotMagic = []byte("MGKV")

const snapshotVersion = 1

// writeSnapshot streams tree to w.
func writeSnapshot(w io.Writer, tree *btree.BTreeG[*Record], index uint64) error {
	h := crc32.NewIEEE()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 64<<10)
	var scratch [binary.MaxVarintLen64]byte
	uv := func(v uint64) {
		n := binary.PutUvarint(scratch[:], v)
		bw.Write(scratch[:n])
	}
	bw.Write(snapshotMagic)
	bw.WriteByte(snapshotVersion)
	uv(index)
	uv(uint64(tree.Len()))
	tree.Ascend(func(r *Record) bool {
		uv(uint64(len(r.Key)))
		bw.WriteString(r.Key)
		uv(uint64(len(r.Value)))
		bw.Write(r.Value)
		uv(r.CreateIndex)
		uv(r.ModIndex)
		return true
	})
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("cluster: write snapshot: %w", err)
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], h.Sum32())
	if _, err := w.Write(sum[:]); err != nil {
		return fmt.Errorf("cluster: write snapshot: %w", err)
	}
	return nil
}

// readSnapshot decodes a snapshot stream. It bounds every field, so hostile
// input costs at most the bytes it actually contains.
func readSnapshot(r io.Reader) (*btree.BTreeG[*Record], uint64, error) {
	h := crc32.NewIEEE()
	br := bufio.NewReaderSize(r, 64<<10)
	sr := &snapReader{r: io.TeeReader(br, h)}
	bad := func(format string, args ...any) (*btree.BTreeG[*Record], uint64, error) {
		return nil, 0, fmt.Errorf("%w: %s", ErrBadSnapshot, fmt.Sprintf(format, args...))
	}
	magic := sr.full(len(snapshotMagic) + 1)
	if sr.err != nil {
		return bad("header: %v", sr.err)
	}
	if string(magic[:len(snapshotMagic)]) != string(snapshotMagic) || magic[len(snapshotMagic)] != snapshotVersion {
		return bad("unknown header %q", magic)
	}
	index := sr.uvarint()
	count := sr.uvarint()
	if sr.err != nil {
		return bad("header: %v", sr.err)
	}
	tree := newTree()
	var last string
	for i := uint64(0); i < count; i++ {
		key := sr.field(MaxKeyLen)
		val := sr.field(MaxValueLen)
		create := sr.uvarint()
		mod := sr.uvarint()
		if sr.err != nil {
			return bad("record %d: %v", i, sr.err)
		}
		k := string(key)
		if err := ValidKey(k); err != nil {
			return bad("record %d: %v", i, err)
		}
		if i > 0 && k <= last {
			return bad("record %d: key %q not after %q", i, k, last)
		}
		if create > mod || mod > index {
			return bad("record %d: indexes create=%d modify=%d snapshot=%d", i, create, mod, index)
		}
		last = k
		tree.ReplaceOrInsert(&Record{Key: k, Value: val, CreateIndex: create, ModIndex: mod})
	}
	want := h.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(br, sum[:]); err != nil {
		return bad("checksum: %v", err)
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return bad("checksum %08x, computed %08x", got, want)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		return bad("trailing data after checksum")
	}
	return tree, index, nil
}

// snapReader reads snapshot fields; the first error sticks.
type snapReader struct {
	r   io.Reader
	err error
	one [1]byte
	n   int // bytes read by ReadByte since the last uvarint began
}

func (s *snapReader) ReadByte() (byte, error) {
	_, err := io.ReadFull(s.r, s.one[:])
	s.n++
	return s.one[0], err
}

func (s *snapReader) uvarint() uint64 {
	if s.err != nil {
		return 0
	}
	s.n = 0
	v, err := binary.ReadUvarint(s)
	if err != nil {
		s.err = fmt.Errorf("varint: %w", err)
		return 0
	}
	if s.n != uvarintLen(v) {
		s.err = fmt.Errorf("non-minimal varint")
		return 0
	}
	return v
}

func (s *snapReader) full(n int) []byte {
	if s.err != nil {
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(s.r, b); err != nil {
		s.err = err
		return nil
	}
	return b
}

// field reads a length-prefixed field of at most limit bytes. It reads in
// chunks so a lying length costs no more memory than the data present.
func (s *snapReader) field(limit int) []byte {
	n := s.uvarint()
	if s.err != nil {
		return nil
	}
	if n > uint64(limit) {
		s.err = fmt.Errorf("field of %d bytes exceeds %d", n, limit)
		return nil
	}
	var b []byte
	for rem := int(n); rem > 0; {
		c := min(rem, 64<<10)
		chunk := s.full(c)
		if s.err != nil {
			return nil
		}
		b = append(b, chunk...)
		rem -= c
	}
	if b == nil {
		b = []byte{}
	}
	return b
}
