package pki_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
)

// issueOp issues one certificate for web as an operator.
func issueOp(t *testing.T, ca *pki.CA) {
	t.Helper()
	csr, _ := pkitest.WorkloadCSR(t, web)
	if _, err := ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.Operator{Name: "test"}, Remote: "192.0.2.1:1"}); err != nil {
		t.Fatalf("Issue(operator) = %v", err)
	}
}

func auditKeys(t *testing.T, st interface {
	List(context.Context, string) ([]pki.KV, error)
}) (keys, records int) {
	t.Helper()
	kvs, err := st.List(context.Background(), "pki/audit/")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		records += strings.Count(string(kv.Value), `"outcome"`)
	}
	return len(kvs), records
}

func TestAuditRetentionByCount(t *testing.T) {
	cfg := pkitest.Config(t)
	cfg.AuditMaxRecords = 10
	ca, st := pkitest.NewCA(t, cfg)
	for range 40 {
		issueOp(t, ca)
	}
	keys, records := auditKeys(t, st)
	// Issued one at a time, each batch holds one record.
	if records != cfg.AuditMaxRecords || keys != cfg.AuditMaxRecords {
		t.Fatalf("after 40 issuances with AuditMaxRecords %d: store holds %d batches, %d records; want %d of each",
			cfg.AuditMaxRecords, keys, records, cfg.AuditMaxRecords)
	}
	recs, err := ca.AuditLog(t.Context(), time.Time{})
	if err != nil || len(recs) != cfg.AuditMaxRecords {
		t.Fatalf("AuditLog() = %d records, %v; want %d", len(recs), err, cfg.AuditMaxRecords)
	}
}

func TestAuditRetentionByAge(t *testing.T) {
	cfg := pkitest.Config(t)
	cfg.AuditMaxAge = time.Hour
	clock := pkitest.NewClock(time.Now())
	ca, st := pkitest.NewCA(t, cfg, pki.WithClock(clock.Now))
	for range 5 {
		issueOp(t, ca)
	}
	if _, records := auditKeys(t, st); records != 5 {
		t.Fatalf("after 5 issuances: %d records in the store, want 5", records)
	}
	clock.Advance(2 * time.Hour)
	issueOp(t, ca)
	if keys, records := auditKeys(t, st); keys != 1 || records != 1 {
		t.Fatalf("after 2h and one more issuance with AuditMaxAge 1h: %d batches, %d records in the store; want only the new one", keys, records)
	}
}

func TestAuditRetentionAcrossRestart(t *testing.T) {
	cfg := pkitest.Config(t)
	cfg.AuditMaxRecords = 5
	ca, st := pkitest.NewCA(t, cfg)
	for range 5 {
		issueOp(t, ca)
	}
	ca.Close()
	// A new CA on the same store learns the batches already there.
	ca2, err := pki.NewCA(t.Context(), cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca2.Close() })
	for range 3 {
		issueOp(t, ca2)
	}
	if _, records := auditKeys(t, st); records != 5 {
		t.Fatalf("after a restart and 3 more issuances with AuditMaxRecords 5: %d records, want 5", records)
	}
}

func TestAuditRecordFieldsBounded(t *testing.T) {
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	csr, _ := pkitest.WorkloadCSR(t, web)
	long := strings.Repeat("é", 30<<10) // multi-byte: the cut must keep UTF-8 valid
	_, err := ca.Issue(t.Context(), pki.Request{
		CSR:        csr,
		Identity:   pki.Identity{TrustDomain: "evil.local", Namespace: "a", ServiceAccount: "b"},
		Credential: pki.Operator{Name: long},
		Remote:     long,
	})
	if pki.ReasonOf(err) != pki.ReasonIdentityMismatch {
		t.Fatalf("Issue(operator, other trust domain) = %v, want identity_mismatch", err)
	}
	recs, err := ca.AuditLog(t.Context(), time.Time{})
	if err != nil || len(recs) != 1 {
		t.Fatalf("AuditLog() = %d records, %v; want 1", len(recs), err)
	}
	r := recs[0]
	for name, v := range map[string]string{"Caller": r.Caller, "Remote": r.Remote} {
		if len(v) > 512 || !strings.Contains(v, "...[truncated ") || !strings.HasSuffix(v, " bytes]") {
			t.Fatalf("audit record %s = %d bytes %q..., want at most 512 bytes marked as truncated", name, len(v), v[:min(len(v), 40)])
		}
		if !strings.HasPrefix(v, "é") && !strings.HasPrefix(v, "operator:é") {
			t.Fatalf("audit record %s starts %q, want the start of the value", name, v[:20])
		}
	}
}
