package store

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/meshgate/meshgate/pki"
)

// ErrClosed is returned by a File after Close.
var ErrClosed = errors.New("store: closed")

// maxRecord bounds one journal record (one Apply batch).
const maxRecord = 64 << 20

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// File is a pki.Store kept in one journal file: each Apply appends one
// record (length, CRC-32C, JSON ops) and fsyncs it, so a batch is durable
// and atomic (a torn record at the tail is dropped on open). When the
// journal outgrows the live data it is compacted into a new file that
// replaces the old one by atomic rename. The file is created with mode
// 0600 and locked against a second opener. Safe for concurrent use.
//
// Applies are serialized; reads are not held up by an Apply's write and
// fsync: they see a batch once it is durable, all at once.
type File struct {
	path string

	// wmu serializes Apply, compaction and Close. Only its holder changes
	// data, so it may read data without mu.
	wmu  sync.Mutex
	f    *os.File
	size int64 // journal bytes
	live int64 // bytes of live keys and values

	mu      sync.RWMutex // guards data, applies and closed
	data    map[string][]byte
	applies int
	closed  bool
}

var _ pki.Store = (*File)(nil)

type journalOp struct {
	Key    string `json:"k"`
	Value  []byte `json:"v,omitempty"`
	Delete bool   `json:"d,omitempty"`
}

// OpenFile opens or creates the journal at path (and its directory, mode
// 0700). A file readable by group or others is tightened to 0600.
func OpenFile(path string) (*File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: %s is in use by another process: %w", path, err)
	}
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o077 != 0 {
		if err := f.Chmod(0o600); err != nil {
			f.Close()
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	s := &File{path: path, f: f, data: map[string][]byte{}}
	good, err := s.replay()
	if err != nil {
		f.Close()
		return nil, err
	}
	// Drop a torn tail so that the next record starts on a boundary.
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: truncate torn tail: %w", err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	s.size = good
	return s, nil
}

// replay applies every whole record and returns the offset after the last.
func (s *File) replay() (int64, error) {
	r := bufio.NewReader(s.f)
	var off int64
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return off, nil // EOF or torn header
		}
		n := binary.BigEndian.Uint32(hdr[:4])
		if n > maxRecord {
			return off, nil
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return off, nil
		}
		if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(hdr[4:]) {
			return off, nil
		}
		var ops []journalOp
		if err := json.Unmarshal(payload, &ops); err != nil {
			return 0, fmt.Errorf("store: %s: record at offset %d: %w", s.path, off, err)
		}
		for _, op := range ops {
			s.applyOne(op)
		}
		off += int64(len(hdr)) + int64(n)
	}
}

func (s *File) applyOne(op journalOp) {
	if old, ok := s.data[op.Key]; ok {
		s.live -= int64(len(op.Key) + len(old))
	}
	if op.Delete {
		delete(s.data, op.Key)
		return
	}
	s.data[op.Key] = op.Value
	s.live += int64(len(op.Key) + len(op.Value))
}

func frame(payload []byte) []byte {
	buf := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint32(buf[:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(buf[4:8], crc32.Checksum(payload, crcTable))
	copy(buf[8:], payload)
	return buf
}

// Get implements pki.Store.
func (s *File) Get(ctx context.Context, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	v, ok := s.data[key]
	if !ok {
		return nil, fmt.Errorf("store: %s: %w", key, pki.ErrNotFound)
	}
	return append([]byte(nil), v...), nil
}

// List implements pki.Store.
func (s *File) List(ctx context.Context, prefix string) ([]pki.KV, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	return list(s.data, prefix), nil
}

// Apply implements pki.Store: one appended, fsynced record per call.
func (s *File) Apply(ctx context.Context, ops []pki.Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	jops := make([]journalOp, len(ops))
	for i, op := range ops {
		jops[i] = journalOp{Key: op.Key, Delete: op.Delete}
		if !op.Delete {
			jops[i].Value = append([]byte{}, op.Value...)
		}
	}
	payload, err := json.Marshal(jops)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if len(payload) > maxRecord {
		return fmt.Errorf("store: batch of %d bytes exceeds %d", len(payload), maxRecord)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	// Holding wmu, nothing else changes data: check, write and fsync
	// without blocking readers, then publish the batch.
	if err := conflicts(s.data, ops); err != nil {
		return err
	}
	rec := frame(payload)
	if _, err := s.f.Write(rec); err != nil {
		// Cut back whatever part was written; the record is not applied.
		s.f.Truncate(s.size)
		s.f.Seek(s.size, io.SeekStart)
		return fmt.Errorf("store: append: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("store: fsync: %w", err)
	}
	s.size += int64(len(rec))
	s.mu.Lock()
	for _, op := range jops {
		s.applyOne(op)
	}
	s.applies++
	s.mu.Unlock()
	if s.size > 4*s.live+(1<<20) {
		if err := s.compact(); err != nil {
			return fmt.Errorf("store: compact (the batch itself is durable): %w", err)
		}
	}
	return nil
}

// compact writes the live data as one record to a new file and renames it
// over the journal. Called with wmu held.
func (s *File) compact() error {
	jops := make([]journalOp, 0, len(s.data))
	for _, kv := range list(s.data, "") {
		jops = append(jops, journalOp{Key: kv.Key, Value: kv.Value})
	}
	payload, err := json.Marshal(jops)
	if err != nil {
		return err
	}
	tmp := s.path + ".compact"
	nf, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	rec := frame(payload)
	if _, err := nf.Write(rec); err != nil {
		nf.Close()
		os.Remove(tmp)
		return err
	}
	if err := nf.Sync(); err != nil {
		nf.Close()
		os.Remove(tmp)
		return err
	}
	if err := syscall.Flock(int(nf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		nf.Close()
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, s.path); err != nil {
		nf.Close()
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(filepath.Dir(s.path)); err == nil {
		d.Sync()
		d.Close()
	}
	s.f.Close()
	s.f = nf
	s.size = int64(len(rec))
	return nil
}

// Applies returns how many Apply calls succeeded.
func (s *File) Applies() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applies
}

// Close closes the journal, after an Apply in progress. Idempotent.
func (s *File) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.f.Close()
}
