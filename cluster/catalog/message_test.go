package catalog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

var testEp = Endpoint{
	Service: "reviews.default.svc.cluster.local",
	Port:    9080,
	Addr:    "10.0.0.7:9080",
	Labels:  map[string]string{"version": "v1", "app": "reviews"},
	Weight:  3,
}

// testSeal and testChainSeal are well-formed seals (the bytes are not a
// real signature; decoding does not verify).
var (
	testSeal      = seal{KeyID: [keyIDLen]byte{1, 2, 3, 4}, Sig: bytes.Repeat([]byte{7}, sigLen)}
	testChainSeal = seal{Chain: [][]byte{bytes.Repeat([]byte{0x30}, 600), bytes.Repeat([]byte{0x31}, 500)}, Sig: bytes.Repeat([]byte{9}, sigLen)}
)

func validMessages() map[string][]byte {
	return map[string][]byte{
		"signed delta": encodeDelta(delta{Owner: "a", Ver: version{7, 2}, ID: "r1", Ep: testEp, Seal: testSeal}),
		"signed state": encodeState(state{Owner: "b", Ver: version{1, 9}, Eps: map[string]Endpoint{"x": testEp}, Digest: []digestRow{{"a", version{7, 3}}}, Seal: testChainSeal}),
		"signed leave": encodeLeave(leaveIntent{Owner: "c", Ver: version{4, 5}, Seal: testSeal}),
		"delta put":    encodeDelta(delta{Owner: "a", Ver: version{7, 2}, ID: "r1", Ep: testEp}),
		"delta del":    encodeDelta(delta{Owner: "a", Ver: version{7, 3}, ID: "r1", Delete: true}),
		"state":        encodeState(state{Owner: "b", Ver: version{1, 9}, Eps: map[string]Endpoint{"x": testEp, "y": {Service: "s", Port: 1, Addr: "[::1]:80"}}, Digest: []digestRow{{"a", version{7, 3}}}}),
		"state none":   encodeState(state{Owner: "b", Ver: version{1, 0}, Eps: map[string]Endpoint{}}),
		"sync req":     encodeSyncReq("node-3"),
		"leave":        encodeLeave(leaveIntent{Owner: "c", Ver: version{4, 5}}),
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for name, b := range validMessages() {
		t.Run(name, func(t *testing.T) {
			m, err := decodeMessage(b)
			if err != nil {
				t.Fatalf("decodeMessage(%x) error = %v, want nil", b, err)
			}
			var again []byte
			switch {
			case m.Delta != nil:
				again = encodeDelta(*m.Delta)
			case m.State != nil:
				again = encodeState(*m.State)
			case m.SyncReq != "":
				again = encodeSyncReq(m.SyncReq)
			case m.Leave != nil:
				again = encodeLeave(*m.Leave)
			}
			if !bytes.Equal(again, b) {
				t.Fatalf("re-encoding decodeMessage(%x) gave %x, want the input back", b, again)
			}
		})
	}
}

func TestDeltaFitsOnePacket(t *testing.T) {
	ep := Endpoint{Service: strings.Repeat("s", MaxServiceLen), Port: 65535, Addr: "[" + strings.Repeat("f", 60) + "]:65535",
		Network: strings.Repeat("n", MaxNetworkLen), Weight: 1 << 31, Labels: map[string]string{}}
	for i := 0; len(appendEndpoint(nil, ep)) < MaxEndpointBytes-2*MaxLabelLen-4 && i < MaxLabels; i++ {
		ep.Labels[strings.Repeat(string(rune('a'+i)), MaxLabelLen)] = strings.Repeat("v", MaxLabelLen)
	}
	if n := len(appendEndpoint(nil, ep)); n > MaxEndpointBytes || n < MaxEndpointBytes-2*MaxLabelLen-4 {
		t.Fatalf("test endpoint encodes to %d bytes, want close to MaxEndpointBytes %d", n, MaxEndpointBytes)
	}
	b := encodeDelta(delta{Owner: strings.Repeat("o", maxNameLen), Ver: version{1 << 62, 1 << 62}, ID: strings.Repeat("i", MaxIDLen), Ep: ep, Seal: testSeal})
	// memberlist packs a broadcast only if len+3 <= 1400 - 2 (compound
	// header) - 29 (AES-GCM) - label framing: 1366 bytes without a label.
	// The worst case pads this endpoint to MaxEndpointBytes.
	worst := len(b) - len(appendEndpoint(nil, ep)) + MaxEndpointBytes
	if worst > 1366 {
		t.Fatalf("largest valid signed delta encodes to %d bytes, want <= 1366 to fit one encrypted UDP packet", worst)
	}
	t.Logf("signed delta with a %d-byte endpoint: %d bytes; worst case %d", len(appendEndpoint(nil, ep)), len(b), worst)
	t.Logf("largest signed delta: %d bytes", len(b))
}

type hostileMessage struct {
	name string
	in   []byte
}

// hostileMessages are inputs decodeMessage must refuse; they seed
// FuzzDecodeMessage too.
func hostileMessages() []hostileMessage {
	long := func(n int) []byte { return binary.AppendUvarint(nil, uint64(n)) }
	put := encodeDelta(delta{Owner: "a", Ver: version{1, 1}, ID: "r", Ep: testEp})
	signed := encodeDelta(delta{Owner: "a", Ver: version{1, 1}, ID: "r", Ep: testEp, Seal: testSeal})
	st := encodeState(state{Owner: "b", Ver: version{1, 1}, Eps: map[string]Endpoint{}, Seal: testChainSeal})
	stBody := stateBody(state{Owner: "b", Ver: version{1, 1}, Eps: map[string]Endpoint{}})
	chainOf := func(certs ...[]byte) []byte {
		return appendChainSeal(append([]byte(nil), stBody...), seal{Chain: certs, Sig: testChainSeal.Sig})
	}
	return []hostileMessage{
		{"truncated signature", signed[:len(signed)-10]},
		{"signature of 63 bytes", append(append([]byte(nil), signed[:len(signed)-sigLen-1]...), append([]byte{63}, testSeal.Sig[:63]...)...)},
		{"signature of 65 bytes", append(append([]byte(nil), signed[:len(signed)-sigLen-1]...), append([]byte{65}, append(testSeal.Sig, 0)...)...)},
		{"signature length overflows", append(append([]byte(nil), signed[:len(signed)-sigLen-1]...), 0xff, 0xff, 0xff, 0xff, 0x0f)},
		{"truncated key id", signed[:len(deltaBody(delta{Owner: "a", Ver: version{1, 1}, ID: "r", Ep: testEp}))+2]},
		{"truncated chain", st[:len(st)-sigLen-1-100]},
		{"five certificates", chainOf([]byte{1}, []byte{2}, []byte{3}, []byte{4}, []byte{5})},
		{"certificate over 4 KiB", chainOf(bytes.Repeat([]byte{0x30}, maxCertBytes+1))},
		{"chain over 8 KiB", chainOf(bytes.Repeat([]byte{1}, 3000), bytes.Repeat([]byte{2}, 3000), bytes.Repeat([]byte{3}, 3000))},
		{"empty certificate", chainOf([]byte{})},
		{"leave without key id", encodeLeave(leaveIntent{Owner: "c", Ver: version{1, 1}})[:4]},
		{"empty", nil},
		{"unknown type", []byte{99}},
		{"truncated delta", put[:len(put)-3]},
		{"trailing bytes", append(append([]byte(nil), put...), 0)},
		{"bad varint", []byte{msgDelta, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"huge string length", append([]byte{msgSyncReq}, long(1<<40)...)},
		{"empty owner", encodeSyncReq("")},
		{"owner with space", encodeSyncReq("a b")},
		{"huge endpoint count", append(append([]byte{msgState, 1, 'a', 1, 1}, long(1<<30)...), 0)},
		{"bad delta op", append(encodeDelta(delta{Owner: "a", Ver: version{1, 1}, ID: "r", Delete: true})[:7], 7)},
		{"port zero", encodeDelta(delta{Owner: "a", Ver: version{1, 1}, ID: "r", Ep: Endpoint{Service: "s", Addr: "1.2.3.4:1"}})},
		{"addr without port", encodeDelta(delta{Owner: "a", Ver: version{1, 1}, ID: "r", Ep: Endpoint{Service: "s", Port: 1, Addr: "1.2.3.4"}})},
		{"empty id", encodeDelta(delta{Owner: "a", Ver: version{1, 1}, ID: "", Delete: true})},
		{"port overflow", func() []byte {
			b := []byte{msgDelta}
			b = appendString(b, "a")
			b = appendVersion(b, version{1, 1})
			b = appendString(b, "r")
			b = append(b, 1)
			b = appendString(b, "svc")
			b = binary.AppendUvarint(b, 1<<33)
			return b
		}()},
	}
}

func TestDecodeMessageHostile(t *testing.T) {
	for _, tc := range hostileMessages() {
		t.Run(tc.name, func(t *testing.T) {
			m, err := decodeMessage(tc.in)
			if !errors.Is(err, ErrBadMessage) {
				t.Fatalf("decodeMessage(%x) = %+v, %v; want ErrBadMessage", tc.in, m, err)
			}
		})
	}
}

func FuzzDecodeMessage(f *testing.F) {
	for _, b := range validMessages() {
		f.Add(b)
	}
	for _, h := range hostileMessages() {
		f.Add(h.in)
	}
	f.Add([]byte{msgState, 1, 'a', 1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode to something that decodes equal.
		var again []byte
		switch {
		case m.Delta != nil:
			again = encodeDelta(*m.Delta)
		case m.State != nil:
			again = encodeState(*m.State)
		case m.SyncReq != "":
			again = encodeSyncReq(m.SyncReq)
		case m.Leave != nil:
			again = encodeLeave(*m.Leave)
		default:
			t.Fatalf("decodeMessage(%x) returned no error and no message", b)
		}
		m2, err := decodeMessage(again)
		if err != nil {
			t.Fatalf("re-encoded message %x does not decode: %v", again, err)
		}
		if !reflect.DeepEqual(normalize(m), normalize(m2)) {
			t.Fatalf("round trip changed message: %+v != %+v", m, m2)
		}
	})
}

// normalize makes empty and nil maps compare equal.
func normalize(m message) message {
	if m.State != nil {
		s := *m.State
		eps := map[string]Endpoint{}
		for k, e := range s.Eps {
			if len(e.Labels) == 0 {
				e.Labels = nil
			}
			eps[k] = e
		}
		s.Eps = eps
		m.State = &s
	}
	if m.Delta != nil && len(m.Delta.Ep.Labels) == 0 {
		d := *m.Delta
		d.Ep.Labels = nil
		m.Delta = &d
	}
	return m
}

func TestMetaRoundTrip(t *testing.T) {
	m := Meta{ProtocolVersion: ProtocolVersion, ClusterID: "prod", Network: "net-a", GatewayAddr: "192.0.2.1:15443",
		RaftAddr: "10.0.0.1:8300", LabelsDigest: LabelsDigest(map[string]string{"zone": "a"}), Flags: FlagRaftReady}
	b, err := m.Encode()
	if err != nil {
		t.Fatalf("Meta.Encode() error = %v", err)
	}
	got, err := DecodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("DecodeMeta(Encode(%+v)) = %+v, %v; want the input back", m, got, err)
	}
	// Newer versions may append fields; they must be ignored.
	got, err = DecodeMeta(append(b, 1, 2, 3))
	if err != nil || got != m {
		t.Fatalf("DecodeMeta(with trailing fields) = %+v, %v; want %+v", got, err, m)
	}
	// bridge_addr travels beside gateway_addr.
	m.BridgeAddr = "192.0.2.1:15008"
	b, err = m.Encode()
	if err != nil {
		t.Fatalf("Meta.Encode(with BridgeAddr) error = %v", err)
	}
	if got, err = DecodeMeta(append(b, 7, 7)); err != nil || got != m {
		t.Fatalf("DecodeMeta(Encode(%+v)) = %+v, %v; want the input back", m, got, err)
	}
	// Meta of a peer that predates bridge_addr ends at flags.
	old := b[:len(b)-len(m.BridgeAddr)-1]
	want := m
	want.BridgeAddr = ""
	if got, err = DecodeMeta(old); err != nil || got != want {
		t.Fatalf("DecodeMeta(meta without bridge_addr) = %+v, %v; want %+v", got, err, want)
	}
}

func TestMetaHostile(t *testing.T) {
	good, _ := Meta{ProtocolVersion: 1, ClusterID: "c", Network: "n"}.Encode()
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrBadMessage},
		{"wrong format", append([]byte{'x'}, good[1:]...), ErrBadMessage},
		{"truncated digest", good[:len(good)-4], ErrBadMessage},
		{"oversized", make([]byte, 600), ErrMetaTooLarge},
		{"bridge addr longer than its bytes", append(slices.Clone(good[:len(good)-1]), 40, 'x'), ErrBadMessage},
		{"bridge addr over the address limit", append(slices.Clone(good[:len(good)-1]), append([]byte{0x80, 0x04}, make([]byte, 300)...)...), ErrBadMessage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeMeta(tc.in); !errors.Is(err, tc.want) {
				t.Fatalf("DecodeMeta(%x) error = %v, want %v", tc.in, err, tc.want)
			}
		})
	}
	big := Meta{ClusterID: strings.Repeat("c", 128), Network: strings.Repeat("n", 63), GatewayAddr: strings.Repeat("g", 261), RaftAddr: strings.Repeat("r", 261)}
	if _, err := big.Encode(); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("Encode(oversized meta) error = %v, want ErrMetaTooLarge", err)
	}
}

func FuzzDecodeMeta(f *testing.F) {
	good, _ := Meta{ProtocolVersion: 1, ClusterID: "c", Network: "n", GatewayAddr: "1.2.3.4:15443", Flags: 1}.Encode()
	f.Add(good)
	bridged, _ := Meta{ProtocolVersion: 2, ClusterID: "c", Network: "n", GatewayAddr: "1.2.3.4:15443", BridgeAddr: "1.2.3.4:15008"}.Encode()
	f.Add(bridged)
	f.Add(bridged[:len(bridged)-14])
	f.Add([]byte{})
	f.Add([]byte{'m', 1, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			return
		}
		if enc, err := m.Encode(); err == nil {
			if m2, err := DecodeMeta(enc); err != nil || m2 != m {
				t.Fatalf("meta round trip: %+v -> %x -> %+v, %v", m, enc, m2, err)
			}
		}
	})
}
