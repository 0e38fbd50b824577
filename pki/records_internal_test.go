package pki

import (
	"errors"
	"testing"
)

var recordRows = []struct {
	name string
	key  string
	val  string
	ok   bool
}{
	{"cert ok", "pki/cert/1a", `{"v":1,"identity":"spiffe://cluster.local/ns/a/sa/b","token":"0123456789abcdef","grant":86400,"notAfter":"2030-01-01T00:00:00Z"}`, true},
	{"cert renewal", "pki/cert/1a", `{"v":1,"identity":"spiffe://cluster.local/ns/a/sa/b","grant":3600,"notAfter":"2030-01-01T00:00:00Z","renews":"ff","defaulted":true}`, true},
	{"cert empty", "pki/cert/1a", ``, false},
	{"cert truncated", "pki/cert/1a", `{"v":1,"identity":"spiffe://cluster`, false},
	{"cert trailing", "pki/cert/1a", `{"v":1,"identity":"spiffe://cluster.local/ns/a/sa/b","grant":1,"notAfter":"2030-01-01T00:00:00Z"} {}`, false},
	{"cert unknown field", "pki/cert/1a", `{"v":1,"identity":"spiffe://cluster.local/ns/a/sa/b","grant":1,"notAfter":"2030-01-01T00:00:00Z","x":1}`, false},
	{"cert version", "pki/cert/1a", `{"v":2,"identity":"spiffe://cluster.local/ns/a/sa/b","grant":1,"notAfter":"2030-01-01T00:00:00Z"}`, false},
	{"cert zero grant", "pki/cert/1a", `{"v":1,"identity":"spiffe://cluster.local/ns/a/sa/b","grant":0,"notAfter":"2030-01-01T00:00:00Z"}`, false},
	{"cert huge grant", "pki/cert/1a", `{"v":1,"identity":"spiffe://cluster.local/ns/a/sa/b","grant":9223372036854775807,"notAfter":"2030-01-01T00:00:00Z"}`, false},
	{"cert grant overflow", "pki/cert/1a", `{"v":1,"identity":"spiffe://cluster.local/ns/a/sa/b","grant":1e40,"notAfter":"2030-01-01T00:00:00Z"}`, false},
	{"cert no identity", "pki/cert/1a", `{"v":1,"grant":1,"notAfter":"2030-01-01T00:00:00Z"}`, false},
	{"cert bad identity", "pki/cert/1a", `{"v":1,"identity":"spiffe://evil/x","grant":1,"notAfter":"2030-01-01T00:00:00Z"}`, false},
	{"cert bad token", "pki/cert/1a", `{"v":1,"identity":"spiffe://cluster.local/ns/a/sa/b","token":"XYZ","grant":1,"notAfter":"2030-01-01T00:00:00Z"}`, false},
	{"cert bad renews", "pki/cert/1a", `{"v":1,"identity":"spiffe://cluster.local/ns/a/sa/b","grant":1,"notAfter":"2030-01-01T00:00:00Z","renews":"00ff"}`, false},
	{"cert no notAfter", "pki/cert/1a", `{"v":1,"identity":"spiffe://cluster.local/ns/a/sa/b","grant":1}`, false},
	{"cert key not canonical", "pki/cert/001a", `{"v":1,"identity":"spiffe://cluster.local/ns/a/sa/b","grant":1,"notAfter":"2030-01-01T00:00:00Z"}`, false},
	{"cert key not hex", "pki/cert/zz", `{"v":1,"identity":"spiffe://cluster.local/ns/a/sa/b","grant":1,"notAfter":"2030-01-01T00:00:00Z"}`, false},
	{"rev ok", "pki/revoked/1a", `{"v":1,"reason":1,"revokedAt":"2029-01-01T00:00:00Z","notAfter":"2030-01-01T00:00:00Z","recorded":true}`, true},
	{"rev bad reason", "pki/revoked/1a", `{"v":1,"reason":6,"revokedAt":"2029-01-01T00:00:00Z","notAfter":"2030-01-01T00:00:00Z"}`, false},
	{"rev negative reason", "pki/revoked/1a", `{"v":1,"reason":-1,"revokedAt":"2029-01-01T00:00:00Z","notAfter":"2030-01-01T00:00:00Z"}`, false},
	{"rev no times", "pki/revoked/1a", `{"v":1,"reason":0}`, false},
	{"rev null", "pki/revoked/1a", `null`, false},
	{"rev array", "pki/revoked/1a", `[]`, false},
	{"rev wrong prefix", "pki/cert/1a", `{"v":1,"reason":1,"revokedAt":"2029-01-01T00:00:00Z","notAfter":"2030-01-01T00:00:00Z"}`, false},
}

func decodeRecord(key string, val []byte) error {
	if len(key) >= len(keyRevoked) && key[:len(keyRevoked)] == keyRevoked {
		_, err := decodeRevocation(key, val)
		return err
	}
	_, err := decodeCertRecord(key, val)
	return err
}

func TestStoredRecordsHostile(t *testing.T) {
	for _, tc := range recordRows {
		t.Run(tc.name, func(t *testing.T) {
			err := decodeRecord(tc.key, []byte(tc.val))
			if tc.ok != (err == nil) {
				t.Fatalf("decode(%s, %q) = %v, want ok=%v", tc.key, tc.val, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrCorruptRecord) {
				t.Fatalf("decode(%s) error %v does not wrap ErrCorruptRecord", tc.key, err)
			}
		})
	}
}

func FuzzStoredRecords(f *testing.F) {
	for _, r := range recordRows {
		f.Add(r.key, []byte(r.val))
	}
	f.Fuzz(func(t *testing.T, key string, val []byte) {
		if r, err := decodeCertRecord(key, val); err == nil {
			// What decodes must encode and decode to the same record.
			b, err := r.encode()
			if err != nil {
				t.Fatalf("encode(%+v) = %v", r, err)
			}
			r2, err := decodeCertRecord(key, b)
			if err != nil || r2.Grant != r.Grant || r2.Identity != r.Identity || r2.Serial.Cmp(r.Serial) != 0 {
				t.Fatalf("round trip of %q: %+v, %v", val, r2, err)
			}
		}
		if r, err := decodeRevocation(key, val); err == nil && (r.Serial == nil || r.Serial.Sign() <= 0 || !r.Reason.valid()) {
			t.Fatalf("decodeRevocation(%q, %q) accepted %+v", key, val, r)
		}
	})
}
