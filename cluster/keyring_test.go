package cluster

import (
	"bytes"
	"encoding/base64"
	"errors"
	"slices"
	"testing"
)

func TestChangeKeys(t *testing.T) {
	k := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	s := func(b byte) string { return base64.StdEncoding.EncodeToString(k(b)) }
	tests := []struct {
		name string
		cur  []string
		op   string
		key  []byte
		want []string // nil = an error
	}{
		{"install a new key", []string{s(1)}, "install", k(2), []string{s(1), s(2)}},
		{"install twice is a no-op", []string{s(1), s(2)}, "install", k(2), []string{s(1), s(2)}},
		{"install into an empty ring", nil, "install", k(1), []string{s(1)}},
		{"use an installed key", []string{s(1), s(2), s(3)}, "use", k(3), []string{s(3), s(1), s(2)}},
		{"use the primary", []string{s(1), s(2)}, "use", k(1), []string{s(1), s(2)}},
		{"remove a secondary", []string{s(1), s(2)}, "remove", k(2), []string{s(1)}},
		{"16-byte key", []string{s(1)}, "install", bytes.Repeat([]byte{7}, 16), []string{s(1), base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 16))}},
		{"use a key not installed", []string{s(1)}, "use", k(2), nil},
		{"remove the primary", []string{s(1), s(2)}, "remove", k(1), nil},
		{"remove a key not installed", []string{s(1)}, "remove", k(9), nil},
		{"short key", []string{s(1)}, "install", []byte("short"), nil},
		{"empty key", []string{s(1)}, "install", nil, nil},
		{"33-byte key", []string{s(1)}, "install", bytes.Repeat([]byte{1}, 33), nil},
		{"unknown operation", []string{s(1)}, "rotate", k(2), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := slices.Clone(tc.cur)
			got, err := ChangeKeys(tc.cur, tc.op, tc.key)
			if tc.want == nil {
				if err == nil || !errors.Is(err, ErrKeyring) {
					t.Fatalf("ChangeKeys(%s) = %v, %v; want an ErrKeyring error", tc.op, got, err)
				}
			} else if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("ChangeKeys(%s) = %v, %v; want %v", tc.op, got, err, tc.want)
			}
			if !slices.Equal(tc.cur, before) {
				t.Fatalf("changeKeys modified its input: %v, was %v", tc.cur, before)
			}
		})
	}
}

// FuzzChangeKeys: whatever the operation and key, the result never holds
// a key twice, never loses the primary except to "use", and never holds a
// key of a bad length.
func FuzzChangeKeys(f *testing.F) {
	f.Add("install", bytes.Repeat([]byte{2}, 32))
	f.Add("use", bytes.Repeat([]byte{1}, 32))
	f.Add("remove", bytes.Repeat([]byte{1}, 16))
	f.Add("remove", []byte{})
	f.Add("", bytes.Repeat([]byte{3}, 24))
	cur := []string{base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32)), base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 16))}
	f.Fuzz(func(t *testing.T, op string, key []byte) {
		got, err := ChangeKeys(cur, op, key)
		if err != nil {
			if !errors.Is(err, ErrKeyring) {
				t.Fatalf("changeKeys error %v does not wrap ErrKeyring", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, s := range got {
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil || (len(b) != 16 && len(b) != 24 && len(b) != 32) || seen[s] {
				t.Fatalf("ChangeKeys(%q, %x) = %v: bad or repeated key %q", op, key, got, s)
			}
			seen[s] = true
		}
		if op != "use" && got[0] != cur[0] {
			t.Fatalf("ChangeKeys(%q) changed the primary: %v", op, got)
		}
	})
}
