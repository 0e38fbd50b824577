package api

import (
	"errors"
	"net/url"
	"testing"
)

var revokeRows = []struct {
	name string
	body string
	ok   bool
}{
	{"serial", `{"serial":"1a2b"}`, true},
	{"serial and reason", `{"serial":"1A:2B","reason":"keyCompromise"}`, true},
	{"empty", ``, false},
	{"null", `null`, false},
	{"truncated", `{"serial":"1a`, false},
	{"trailing", `{"serial":"1a"} {}`, false},
	{"unknown field", `{"serial":"1a","x":1}`, false},
	{"no serial", `{}`, false},
	{"number serial", `{"serial":26}`, false},
	{"bad serial", `{"serial":"xyz"}`, false},
	{"zero serial", `{"serial":"00"}`, false},
	{"long serial", `{"serial":"` + "ff112233445566778899aabbccddeeff0011223344" + `"}`, false},
	{"hold", `{"serial":"1a","reason":"certificateHold"}`, false},
	{"bad reason", `{"serial":"1a","reason":"because"}`, false},
}

func TestDecodeRevokeRequestHostile(t *testing.T) {
	for _, tc := range revokeRows {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeRevokeRequest([]byte(tc.body))
			if tc.ok != (err == nil) {
				t.Fatalf("decodeRevokeRequest(%q) = %v, want ok=%v", tc.body, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrBadRequest) {
				t.Fatalf("decodeRevokeRequest(%q) error %v does not wrap ErrBadRequest", tc.body, err)
			}
		})
	}
}

func FuzzDecodeRevokeRequest(f *testing.F) {
	for _, r := range revokeRows {
		f.Add([]byte(r.body))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rr, err := decodeRevokeRequest(b)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		if rr.Serial == "" {
			t.Fatalf("accepted %q with an empty serial", b)
		}
	})
}

func TestTokenRevokeQueryHostile(t *testing.T) {
	for _, tc := range []struct {
		q     string
		certs bool
		ok    bool
	}{
		{"", false, true},
		{"certs=true", true, true},
		{"certs=1&reason=superseded", true, true},
		{"certs=false", false, true},
		{"certs=yes", false, false},
		{"certs=true&certs=false", false, false},
		{"reason=superseded", false, false},
		{"certs=true&reason=hold", false, false},
		{"all=1", false, false},
	} {
		q, _ := url.ParseQuery(tc.q)
		certs, _, err := tokenRevokeQuery(q)
		if tc.ok != (err == nil) || (tc.ok && certs != tc.certs) {
			t.Errorf("tokenRevokeQuery(%q) = %v, %v; want certs=%v ok=%v", tc.q, certs, err, tc.certs, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadRequest) {
			t.Errorf("tokenRevokeQuery(%q) error %v does not wrap ErrBadRequest", tc.q, err)
		}
	}
}
