package pki

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestKeyedLimiterBoundedTable(t *testing.T) {
	now := time.Now()
	l := newKeyedLimiter(1, 2, 64)
	for i := range 10_000 {
		l.take(fmt.Sprintf("198.51.100.%d:%d", i%256, i), now)
	}
	if n := l.len(); n > 64 {
		t.Fatalf("after 10000 keys with LimiterMaxKeys 64: table holds %d keys, want <= 64", n)
	}
}

func TestKeyedLimiterPerKey(t *testing.T) {
	now := time.Now()
	l := newKeyedLimiter(1, 3, 1024)
	for i := range 3 {
		if !l.take("a", now) {
			t.Fatalf("take(a) #%d within burst 3 = false", i+1)
		}
	}
	if l.take("a", now) || l.has("a", now) {
		t.Fatalf("take/has(a) after the burst = true, want false")
	}
	if !l.take("b", now) {
		t.Fatalf("take(b) = false: another key's bucket was spent by a")
	}
	if !l.has("a", now.Add(time.Second)) {
		t.Fatalf("has(a) one second later (rate 1/s) = false, want a refilled token")
	}
	var off *keyedLimiter = newKeyedLimiter(0, 0, 0)
	if off != nil || !off.take("a", now) || !off.has("a", now) {
		t.Fatalf("a limiter with rate 0 limits")
	}
}

func TestTruncateField(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"short", "token:abc"},
		{"at the cap", strings.Repeat("a", maxAuditField)},
		{"one over", strings.Repeat("a", maxAuditField+1)},
		{"60 KB URI", "cert:spiffe://cluster.local/ns/x/sa/" + strings.Repeat("a", 60<<10)},
		{"multi-byte at the cut", strings.Repeat("€", 1000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkTruncated(t, tc.in)
		})
	}
}

func checkTruncated(t *testing.T, in string) {
	got := truncateField(in)
	if len(got) > maxAuditField {
		t.Fatalf("truncateField(%d bytes) = %d bytes, want <= %d", len(in), len(got), maxAuditField)
	}
	if len(in) <= maxAuditField && got != in {
		t.Fatalf("truncateField(%q) = %q, want it unchanged", in, got)
	}
	if len(in) > maxAuditField && !strings.Contains(got, truncatedMark) {
		t.Fatalf("truncateField(%d bytes) = %q, want a truncation mark", len(in), got)
	}
	if utf8.ValidString(in) && !utf8.ValidString(got) {
		t.Fatalf("truncateField(valid UTF-8) = invalid UTF-8 %q", got)
	}
}

func FuzzTruncateField(f *testing.F) {
	f.Add("")
	f.Add(strings.Repeat("a", maxAuditField+1))
	f.Add(strings.Repeat("€", 1000))
	f.Fuzz(func(t *testing.T, in string) { checkTruncated(t, in) })
}

// FuzzParseKeptBatch feeds stored audit batches (as the retention code
// reads them back at start) of any shape: it must never panic, and a batch
// it accepts has a time and a count.
func FuzzParseKeptBatch(f *testing.F) {
	const prefix = "pki/audit/local/"
	for _, seed := range []struct{ key, val string }{
		{prefix + "00000001700000000000-00000001", `[{"outcome":"issued"}]`},
		{prefix + "00000001700000000000-00000001", `[]`},
		{prefix + "00000001700000000000-00000001", `{"not":"a list"}`},
		{prefix + "17-1", `[]`},
		{prefix + "abcdefghijklmnopqrst-1", `[]`},
		{prefix, ``},
	} {
		f.Add(seed.key, []byte(seed.val))
	}
	f.Fuzz(func(t *testing.T, key string, val []byte) {
		k, err := parseKeptBatch(prefix, KV{Key: key, Value: val})
		if k.key != key {
			t.Fatalf("parseKeptBatch(%q) key = %q", key, k.key)
		}
		if err != nil && (k.n != 0 || k.nanos != 0) {
			t.Fatalf("parseKeptBatch(%q, %q) = %+v with error %v, want zero time and count", key, val, k, err)
		}
		if err == nil && k.n < 0 {
			t.Fatalf("parseKeptBatch(%q) count %d", key, k.n)
		}
	})
}
