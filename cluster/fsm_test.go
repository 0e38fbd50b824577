package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

var commandRows = []struct {
	name string
	ops  []Op
}{
	{"one put", []Op{Put("config/Gateway/default/gw", []byte("kind: Gateway"))}},
	{"empty value", []Op{Put("k", nil)}},
	{"mixed", []Op{Check("ca/token/x", 0), Put("ca/token/x", []byte{0, 1, 2}), Delete("ca/old"), DeletePrefix("tmp/")}},
	{"check index", []Op{Check("k", 1<<40)}},
}

func TestCommandRoundTrip(t *testing.T) {
	for _, tc := range commandRows {
		t.Run(tc.name, func(t *testing.T) {
			b, err := encodeCommand(tc.ops)
			if err != nil {
				t.Fatalf("encodeCommand(%+v) error = %v", tc.ops, err)
			}
			got, err := decodeCommand(b)
			if err != nil {
				t.Fatalf("decodeCommand(encodeCommand(%+v)) error = %v", tc.ops, err)
			}
			if !opsEqual(got, tc.ops) {
				t.Fatalf("decodeCommand(encodeCommand(%+v)) = %+v, want the input back", tc.ops, got)
			}
		})
	}
}

func opsEqual(a, b []Op) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Type != b[i].Type || a[i].Key != b[i].Key || a[i].Index != b[i].Index || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

func TestDecodeCommandHostile(t *testing.T) {
	good, _ := encodeCommand([]Op{Put("k", []byte("v"))})
	uv := func(v uint64) []byte { return binary.AppendUvarint(nil, v) }
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"wrong version", append([]byte{9}, good[1:]...)},
		{"zero ops", []byte{commandVersion, 0}},
		{"op count beyond input", append([]byte{commandVersion}, uv(1000)...)},
		{"op count beyond limit", append([]byte{commandVersion}, uv(MaxOps+1)...)},
		{"truncated value", good[:len(good)-1]},
		{"trailing byte", append(append([]byte(nil), good...), 0)},
		{"key length overflow", append([]byte{commandVersion, 1, byte(OpPut)}, uv(1<<62)...)},
		{"value length beyond limit", append(append([]byte{commandVersion, 1, byte(OpPut), 1, 'k'}, uv(MaxValueLen+1)...), 0)},
		{"unknown op", []byte{commandVersion, 1, 77, 1, 'k'}},
		{"empty key", []byte{commandVersion, 1, byte(OpDelete), 0}},
		{"key with newline", []byte{commandVersion, 1, byte(OpDelete), 2, 'k', '\n'}},
		{"oversized input", make([]byte, MaxCommandLen+1)},
		{"non-minimal varint", []byte{commandVersion, 1, byte(OpCheck), 1, '0', 0x80, 0x00}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ops, err := decodeCommand(tc.in)
			if !errors.Is(err, ErrBadCommand) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("decodeCommand(%.40x) = %+v, %v; want ErrBadCommand or ErrTooLarge", tc.in, ops, err)
			}
		})
	}
}

func FuzzDecodeCommand(f *testing.F) {
	for _, tc := range commandRows {
		b, _ := encodeCommand(tc.ops)
		f.Add(b)
	}
	f.Add([]byte{commandVersion, 1, byte(OpPut), 1, 'k', 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		ops, err := decodeCommand(b)
		if err != nil {
			return
		}
		again, err := encodeCommand(ops)
		if err != nil {
			t.Fatalf("decoded ops %+v do not re-encode: %v", ops, err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("decode/encode is not the identity: %x -> %x", b, again)
		}
		// Applying any decodable command must not panic.
		newFSM().Apply(&raft.Log{Index: 1, Data: b})
	})
}

func applyOps(t *testing.T, f *fsm, index uint64, ops ...Op) error {
	t.Helper()
	b, err := encodeCommand(ops)
	if err != nil {
		t.Fatalf("encodeCommand(%+v) error = %v", ops, err)
	}
	res := f.Apply(&raft.Log{Index: index, Data: b, Type: raft.LogCommand}).(applyResult)
	return res.err
}

func TestFSMApply(t *testing.T) {
	f := newFSM()
	ch, cancel := f.watch("a/")
	defer cancel()
	if err := applyOps(t, f, 1, Put("a/1", []byte("x")), Put("a/2", []byte("y")), Put("b/1", []byte("z"))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatalf("watch(a/) did not fire after a put under a/")
	}
	if err := applyOps(t, f, 2, Put("a/1", []byte("x2"))); err != nil {
		t.Fatal(err)
	}
	if r, _ := f.get("a/1"); r.CreateIndex != 1 || r.ModIndex != 2 || string(r.Value) != "x2" {
		t.Fatalf("get(a/1) after update = %+v, want create 1, modify 2, value x2", r)
	}
	// A failed check changes nothing, even the ops before it.
	err := applyOps(t, f, 3, Put("a/3", []byte("new")), Check("a/1", 1))
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Have != 2 || ce.Want != 1 {
		t.Fatalf("Apply(check a/1 at 1) error = %v, want ConflictError{want 1, have 2}", err)
	}
	if _, ok := f.get("a/3"); ok {
		t.Fatalf("a batch with a failed check wrote a/3")
	}
	if f.appliedIndex() != 3 {
		t.Fatalf("appliedIndex() = %d after a refused batch, want 3 (the index still advances)", f.appliedIndex())
	}
	if err := applyOps(t, f, 4, DeletePrefix("a/")); err != nil {
		t.Fatal(err)
	}
	if got := f.list(""); len(got) != 1 || got[0].Key != "b/1" {
		t.Fatalf("list() after DeletePrefix(a/) = %+v, want only b/1", got)
	}
	res := f.Apply(&raft.Log{Index: 5, Data: []byte{1, 2, 3}}).(applyResult)
	if !errors.Is(res.err, ErrBadCommand) {
		t.Fatalf("Apply(garbage) = %v, want ErrBadCommand", res.err)
	}
}

type memSink struct {
	bytes.Buffer
	canceled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.canceled = true; return nil }
func (s *memSink) Close() error  { return nil }

func snapshotOf(t *testing.T, f *fsm) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatalf("Persist error = %v", err)
	}
	snap.Release()
	return sink.Bytes()
}

func TestSnapshotRoundTrip(t *testing.T) {
	f := newFSM()
	if err := applyOps(t, f, 7, Put("a", []byte("1")), Put("b", nil), Put("c/"+strings.Repeat("x", 100), bytes.Repeat([]byte{7}, 100000))); err != nil {
		t.Fatal(err)
	}
	snap, _ := f.Snapshot()
	// Writes after Snapshot must not leak into it.
	if err := applyOps(t, f, 8, Delete("a")); err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	ch, cancel := g.watch("zzz")
	defer cancel()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatalf("Restore error = %v", err)
	}
	if g.appliedIndex() != 7 {
		t.Fatalf("restored appliedIndex = %d, want 7", g.appliedIndex())
	}
	if r, ok := g.get("a"); !ok || string(r.Value) != "1" {
		t.Fatalf("restored get(a) = %+v, %v; want the value at snapshot time", r, ok)
	}
	if got := g.list(""); len(got) != 3 {
		t.Fatalf("restored list() has %d records, want 3", len(got))
	}
	select {
	case <-ch:
	default:
		t.Fatalf("Restore did not notify watchers")
	}
	// The encoding is canonical.
	if again := snapshotOf(t, g); !bytes.Equal(again, sink.Bytes()) {
		t.Fatalf("snapshot of a restored FSM differs from the original snapshot")
	}
}

func TestRestoreHostile(t *testing.T) {
	f := newFSM()
	if err := applyOps(t, f, 5, Put("a", []byte("1")), Put("b", []byte("2"))); err != nil {
		t.Fatal(err)
	}
	good := snapshotOf(t, f)
	withCRC := func(body []byte) []byte {
		return binary.BigEndian.AppendUint32(append([]byte(nil), body...), crc32.ChecksumIEEE(body))
	}
	rec := func(key, val string, create, mod uint64) []byte {
		b := binary.AppendUvarint(nil, uint64(len(key)))
		b = append(b, key...)
		b = binary.AppendUvarint(b, uint64(len(val)))
		b = append(b, val...)
		b = binary.AppendUvarint(b, create)
		return binary.AppendUvarint(b, mod)
	}
	head := func(index, count uint64) []byte {
		b := append([]byte("MGKV"), snapshotVersion)
		b = binary.AppendUvarint(b, index)
		return binary.AppendUvarint(b, count)
	}
	flipped := append([]byte(nil), good...)
	flipped[7] ^= 1
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"bad magic", append([]byte("XXXX"), good[4:]...)},
		{"bad version", append(append([]byte("MGKV"), 9), good[5:]...)},
		{"truncated", good[:len(good)-5]},
		{"bit flip", flipped},
		{"trailing data", append(append([]byte(nil), good...), 0)},
		{"unsorted keys", withCRC(append(append(head(5, 2), rec("b", "", 1, 1)...), rec("a", "", 1, 1)...))},
		{"duplicate keys", withCRC(append(append(head(5, 2), rec("a", "", 1, 1)...), rec("a", "", 1, 1)...))},
		{"index beyond snapshot", withCRC(append(head(5, 1), rec("a", "", 1, 9)...))},
		{"create after modify", withCRC(append(head(5, 1), rec("a", "", 4, 3)...))},
		{"bad key", withCRC(append(head(5, 1), rec("a b", "", 1, 1)...))},
		{"huge count", withCRC(head(5, 1<<60))},
		{"huge value length", withCRC(append(append(head(5, 1), 1, 'a'), binary.AppendUvarint(nil, MaxValueLen+1)...))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newFSM()
			if err := applyOps(t, g, 1, Put("keep", []byte("me"))); err != nil {
				t.Fatal(err)
			}
			err := g.Restore(io.NopCloser(bytes.NewReader(tc.in)))
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("Restore(%s) error = %v, want ErrBadSnapshot", tc.name, err)
			}
			if r, ok := g.get("keep"); !ok || string(r.Value) != "me" {
				t.Fatalf("a refused Restore changed the state: get(keep) = %+v, %v", r, ok)
			}
		})
	}
}

func FuzzReadSnapshot(f *testing.F) {
	g := newFSM()
	b, _ := encodeCommand([]Op{Put("a", []byte("1")), Put("b/c", bytes.Repeat([]byte("z"), 40))})
	g.Apply(&raft.Log{Index: 3, Data: b})
	snap, _ := g.Snapshot()
	var sink memSink
	snap.Persist(&sink)
	f.Add(sink.Bytes())
	f.Add([]byte("MGKV\x01\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		tree, index, err := readSnapshot(bytes.NewReader(in))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := writeSnapshot(&out, tree, index); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), in) {
			t.Fatalf("accepted snapshot is not canonical: %x re-encodes to %x", in, out.Bytes())
		}
	})
}

func TestConfigValidation(t *testing.T) {
	set, err := parseConfigRecord(ConfigKey("Gateway", "istio-system", "cross-network"), []byte(testGateway))
	if err != nil || set.Len() != 1 {
		t.Fatalf("parseConfigRecord(matching key) = %v, %v; want one Gateway", set, err)
	}
	for _, tc := range []struct {
		name, key, doc string
	}{
		{"wrong name in key", ConfigKey("Gateway", "istio-system", "other"), testGateway},
		{"wrong kind in key", ConfigKey("VirtualService", "istio-system", "cross-network"), testGateway},
		{"two resources", ConfigKey("Gateway", "istio-system", "cross-network"), testGateway + "---\n" + strings.Replace(testGateway, "cross-network", "second", 1)},
		{"not yaml", ConfigKey("Gateway", "istio-system", "cross-network"), "{{{"},
		{"empty", ConfigKey("Gateway", "istio-system", "cross-network"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := parseConfigRecord(tc.key, []byte(tc.doc)); err == nil {
				t.Fatalf("parseConfigRecord(%s) = %v, nil; want an error", tc.key, s)
			}
		})
	}
}

const testGateway = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: cross-network
  namespace: istio-system
spec:
  selector:
    istio: eastwestgateway
  servers:
  - port:
      number: 15443
      name: tls
      protocol: TLS
    tls:
      mode: AUTO_PASSTHROUGH
    hosts:
    - "*.local"
`
