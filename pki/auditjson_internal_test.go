package pki

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

func auditRows() []struct {
	name string
	recs []AuditRecord
} {
	now := time.Date(2026, 11, 25, 11, 44, 19, 123456789, time.UTC)
	zone := time.FixedZone("x", -(3*3600 + 30*60))
	full := AuditRecord{
		Time: now, Node: "node-1", Outcome: OutcomeIssued, Reason: ReasonBadRequest, Detail: "d",
		Serial: "6b1f0c2d", Identity: "spiffe://cluster.local/ns/default/sa/web", Caller: "token:0123456789abcdef",
		Remote: "[::1]:4444", NotAfter: now.Add(24 * time.Hour), TokenUse: 3,
	}
	return []struct {
		name string
		recs []AuditRecord
	}{
		{"empty batch", []AuditRecord{}},
		{"zero record", []AuditRecord{{}}},
		{"every field", []AuditRecord{full}},
		{"two records", []AuditRecord{full, {Time: now, Node: "n", Outcome: OutcomeRefused, Reason: ReasonCSRMalformed, Detail: "no PEM block"}}},
		{"time in a zone, whole seconds", []AuditRecord{{Time: time.Date(2030, 1, 2, 3, 4, 5, 0, zone), NotAfter: time.Date(2030, 1, 2, 3, 4, 5, 100, zone)}}},
		{"quotes and backslashes", []AuditRecord{{Detail: `he said "no" \ \\"`}}},
		{"control characters", []AuditRecord{{Detail: "a\x00b\x01\b\f\n\r\t\x1f\x7fz"}}},
		{"html characters", []AuditRecord{{Detail: "<script>&amp;</script>"}}},
		{"invalid utf-8", []AuditRecord{{Remote: "\xff\xfe ok \xc3\x28 \xe2\x82"}}},
		{"line separators", []AuditRecord{{Detail: "a\u2028b\u2029c\u2027"}}},
		{"multi-byte", []AuditRecord{{Identity: "spiffe://cluster.local/ns/日本/sa/😀"}}},
		{"negative use", []AuditRecord{{TokenUse: -7}}},
		{"year 0", []AuditRecord{{Time: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)}}},
		{"year 10000 (json error)", []AuditRecord{{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}},
		{"negative year (json error)", []AuditRecord{{NotAfter: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}}},
	}
}

// TestMarshalAuditMatchesJSON: the audit writer's encoder produces what
// json.Marshal produces, byte for byte, errors included.
func TestMarshalAuditMatchesJSON(t *testing.T) {
	for _, tc := range auditRows() {
		t.Run(tc.name, func(t *testing.T) {
			if msg := compareAuditJSON(tc.recs); msg != "" {
				t.Fatal(msg)
			}
		})
	}
}

func compareAuditJSON(recs []AuditRecord) string {
	want, werr := json.Marshal(recs)
	got, gerr := marshalAudit(recs)
	if (werr != nil) != (gerr != nil) {
		return fmt.Sprintf("marshalAudit(%+v) error = %v, json.Marshal error = %v", recs, gerr, werr)
	}
	if !bytes.Equal(got, want) {
		return fmt.Sprintf("marshalAudit(%+v) =\n%s\njson.Marshal =\n%s", recs, got, want)
	}
	return ""
}

func FuzzMarshalAudit(f *testing.F) {
	for _, tc := range auditRows() {
		for _, r := range tc.recs {
			f.Add(r.Node, r.Detail, r.Remote, string(r.Reason), r.Time.UnixNano(), r.NotAfter.Unix(), r.TokenUse)
		}
	}
	f.Fuzz(func(t *testing.T, node, detail, remote, reason string, nanos, notAfter int64, use int) {
		zone := time.FixedZone("f", int(nanos%86400))
		rec := AuditRecord{
			Time: time.Unix(0, nanos).In(zone), Node: node, Detail: detail, Remote: remote, Reason: Reason(reason),
			Caller: detail + node, NotAfter: time.Unix(notAfter, 0).UTC(), TokenUse: use,
		}
		if msg := compareAuditJSON([]AuditRecord{rec, {}}); msg != "" {
			t.Fatal(msg)
		}
	})
}

func TestAuditKey(t *testing.T) {
	for _, tc := range []struct {
		name  string
		node  string
		nanos int64
		seq   uint64
	}{
		{"typical", "local", 1795592595123456789, 1},
		{"zero", "n", 0, 0},
		{"sequence past 32 bits", "n-2", 1, 1<<36 + 5},
		{"largest", "a.b", 1<<63 - 1, 1<<64 - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := fmt.Sprintf("%s%s/%020d-%08x", keyAudit, tc.node, tc.nanos, tc.seq)
			if got := auditKey(tc.node, tc.nanos, tc.seq); got != want {
				t.Fatalf("auditKey(%q, %d, %d) = %q, want %q", tc.node, tc.nanos, tc.seq, got, want)
			}
		})
	}
}
