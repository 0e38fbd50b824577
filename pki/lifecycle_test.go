package pki_test

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
)

var wl = pki.Identity{TrustDomain: "cluster.local", Namespace: "ns", ServiceAccount: "sa"}

// renew renews cert with itself, asking for ttl.
func renew(t *testing.T, ca *pki.CA, cert *pki.Certificate, ttl time.Duration) (*pki.Certificate, error) {
	t.Helper()
	csr, _ := pkitest.WorkloadCSR(t, wl)
	return ca.Issue(t.Context(), pki.Request{CSR: csr, TTL: ttl, Credential: pki.PeerCertificates(pkitest.ParseChain(t, cert.ChainPEM()))})
}

func lifetime(c *pki.Certificate) time.Duration { return c.NotAfter.Sub(c.NotBefore) }

func TestRenewalBoundedByGrant(t *testing.T) {
	cfg := pkitest.Config(t)
	for _, tc := range []struct {
		name      string
		issueTTL  time.Duration
		renewTTLs []time.Duration
		want      time.Duration // max NotAfter-now of every renewal
	}{
		{"24h cert renewed with 2160h", 0, []time.Duration{2160 * time.Hour}, 24 * time.Hour},
		{"chain of renewals stays at 24h", 0, []time.Duration{2160 * time.Hour, 2160 * time.Hour, 0, 1000 * time.Hour}, 24 * time.Hour},
		{"1h grant", time.Hour, []time.Duration{2160 * time.Hour, 0}, time.Hour},
		{"shorter request honoured", 48 * time.Hour, []time.Duration{2 * time.Hour}, 2 * time.Hour},
		{"long grant allows long renewal", 2160 * time.Hour, []time.Duration{2160 * time.Hour}, 2160 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca, _ := pkitest.NewCA(t, cfg)
			csr, _ := pkitest.WorkloadCSR(t, wl)
			cur := issueWithToken(t, ca, wl, csr, tc.issueTTL)
			first := cur
			for i, ttl := range tc.renewTTLs {
				next, err := renew(t, ca, cur, ttl)
				if err != nil {
					t.Fatalf("renewal %d (ttl %v) = %v, want a certificate", i, ttl, err)
				}
				if got := next.NotAfter.Sub(time.Now()); got > tc.want+time.Minute {
					t.Fatalf("renewal %d (ttl %v): lifetime from now %v, want <= %v", i, ttl, got, tc.want)
				}
				if next.Grant != first.Grant || next.TokenID != first.TokenID || next.TokenID == "" {
					t.Fatalf("renewal %d: grant %v token %q, want the original's %v %q", i, next.Grant, next.TokenID, first.Grant, first.TokenID)
				}
				cur = next
			}
		})
	}
}

func TestRenewalOfUnrecordedCertDefaultsTo24h(t *testing.T) {
	ca, st := pkitest.NewCA(t, pkitest.Config(t))
	csr, _ := pkitest.WorkloadCSR(t, wl)
	cur := issueWithToken(t, ca, wl, csr, 2160*time.Hour)
	// A certificate from before serials were recorded has no record.
	kvs, _ := st.List(t.Context(), "pki/cert/")
	if len(kvs) != 1 {
		t.Fatalf("certificate records = %d, want 1", len(kvs))
	}
	if err := st.Apply(t.Context(), []pki.Op{{Key: kvs[0].Key, Delete: true}}); err != nil {
		t.Fatal(err)
	}
	next, err := renew(t, ca, cur, 2160*time.Hour)
	if err != nil {
		t.Fatalf("renew(unrecorded) = %v", err)
	}
	if got := lifetime(next); got > 24*time.Hour+5*time.Minute {
		t.Fatalf("renewal of an unrecorded certificate lives %v, want <= 24h (+backdate)", got)
	}
	rec, ok, err := ca.CertificateRecord(t.Context(), next.Serial)
	if err != nil || !ok || !rec.Defaulted || rec.Grant != 24*time.Hour {
		t.Fatalf("CertificateRecord(renewal) = %+v, %v, %v; want defaulted 24h grant", rec, ok, err)
	}
}

func TestRevokedSerialRefusedAtRenewal(t *testing.T) {
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	csr, _ := pkitest.WorkloadCSR(t, wl)
	cur := issueWithToken(t, ca, wl, csr, 0)
	other := issueWithToken(t, ca, wl, csr, 0)
	if _, err := ca.RevokeCertificate(t.Context(), cur.Serial, pki.RevocationKeyCompromise); err != nil {
		t.Fatalf("RevokeCertificate = %v", err)
	}
	_, err := renew(t, ca, cur, 0)
	if !errors.Is(err, pki.ErrCertRevoked) || !errors.Is(err, pki.ErrUnauthenticated) || pki.ReasonOf(err) != pki.ReasonCertRevoked {
		t.Fatalf("renew(revoked) = %v, want ErrCertRevoked (reason %s)", err, pki.ReasonCertRevoked)
	}
	if _, err := renew(t, ca, other, 0); err != nil {
		t.Fatalf("renew(not revoked) = %v, want a certificate", err)
	}
	if !ca.Revocations().Revoked(cur.Serial) || ca.Revocations().Revoked(other.Serial) {
		t.Fatalf("Revocations(): revoked %v/%v, want true/false", ca.Revocations().Revoked(cur.Serial), ca.Revocations().Revoked(other.Serial))
	}
	// Revoking twice keeps the first revocation.
	again, err := ca.RevokeCertificate(t.Context(), cur.Serial, pki.RevocationSuperseded)
	if err != nil || again.Reason != pki.RevocationKeyCompromise {
		t.Fatalf("second RevokeCertificate = %+v, %v; want the first (keyCompromise)", again, err)
	}
}

func TestRevokeTokenWithCerts(t *testing.T) {
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	tok, info, err := ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: wl.Namespace, ServiceAccount: wl.ServiceAccount})
	if err != nil {
		t.Fatal(err)
	}
	var certs []*pki.Certificate
	for range 3 {
		csr, _ := pkitest.WorkloadCSR(t, wl)
		c, err := ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok)})
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	renewed, err := renew(t, ca, certs[0], 0)
	if err != nil {
		t.Fatal(err)
	}
	certs = append(certs, renewed)
	csr, _ := pkitest.WorkloadCSR(t, wl)
	bystander := issueWithToken(t, ca, wl, csr, 0) // another token

	ti, revs, err := ca.RevokeTokenCertificates(t.Context(), info.ID, pki.RevocationCessationOfOperation)
	if err != nil {
		t.Fatalf("RevokeTokenCertificates = %v", err)
	}
	if !ti.Revoked || !ti.CertsRevoked || len(revs) != len(certs) {
		t.Fatalf("RevokeTokenCertificates = %+v, %d revocations; want revoked, certs revoked, %d", ti, len(revs), len(certs))
	}
	for i, c := range certs {
		if !ca.Revocations().Revoked(c.Serial) {
			t.Errorf("certificate %d (%s) not revoked", i, c.Serial.Text(16))
		}
		if _, err := renew(t, ca, c, 0); !errors.Is(err, pki.ErrCertRevoked) {
			t.Errorf("renew(certificate %d) = %v, want ErrCertRevoked", i, err)
		}
	}
	if ca.Revocations().Revoked(bystander.Serial) {
		t.Fatal("a certificate of another token was revoked")
	}
	// Without --certs, certificates stay valid.
	_, info2, _ := ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: wl.Namespace, ServiceAccount: wl.ServiceAccount})
	if _, err := ca.RevokeToken(t.Context(), info2.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := renew(t, ca, bystander, 0); err != nil {
		t.Fatalf("renew after a plain token revoke = %v, want a certificate", err)
	}
}

func TestCRLListsRevokedSerials(t *testing.T) {
	ca, _ := pkitest.NewCA(t, pkitest.Config(t))
	der0, err := ca.CRL(t.Context())
	if err != nil {
		t.Fatalf("CRL() = %v", err)
	}
	var want []*big.Int
	for range 3 {
		csr, _ := pkitest.WorkloadCSR(t, wl)
		c := issueWithToken(t, ca, wl, csr, 0)
		if _, err := ca.RevokeCertificate(t.Context(), c.Serial, pki.RevocationKeyCompromise); err != nil {
			t.Fatal(err)
		}
		want = append(want, c.Serial)
	}
	unrecorded, _ := pki.ParseSerial("0a:bc:de")
	if r, err := ca.RevokeCertificate(t.Context(), unrecorded, pki.RevocationUnspecified); err != nil || r.Recorded {
		t.Fatalf("RevokeCertificate(unrecorded) = %+v, %v; want Recorded false", r, err)
	}
	want = append(want, unrecorded)
	der, err := ca.CRL(t.Context())
	if err != nil {
		t.Fatalf("CRL() = %v", err)
	}
	l0, _ := x509.ParseRevocationList(der0)
	l, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("ParseRevocationList = %v", err)
	}
	if err := l.CheckSignatureFrom(ca.Info().Signing); err != nil {
		t.Fatalf("CRL signature = %v", err)
	}
	if l.Number.Cmp(l0.Number) <= 0 || !l.NextUpdate.After(l.ThisUpdate) {
		t.Fatalf("CRL number %v after %v, thisUpdate %v nextUpdate %v; want increasing and next > this", l.Number, l0.Number, l.ThisUpdate, l.NextUpdate)
	}
	got := map[string]int{}
	for _, e := range l.RevokedCertificateEntries {
		got[e.SerialNumber.Text(16)] = e.ReasonCode
	}
	for i, s := range want {
		code, ok := got[s.Text(16)]
		if !ok {
			t.Errorf("CRL lacks serial %s", s.Text(16))
		}
		if wantCode := map[bool]int{true: 1, false: 0}[i < 3]; code != wantCode {
			t.Errorf("CRL serial %s reason %d, want %d", s.Text(16), code, wantCode)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("CRL has %d entries, want %d", len(got), len(want))
	}
}

func TestExpiredRecordsPruned(t *testing.T) {
	clock := pkitest.NewClock(time.Now())
	ca, st := pkitest.NewCA(t, pkitest.Config(t), pki.WithClock(clock.Now))
	csr, _ := pkitest.WorkloadCSR(t, wl)
	c := issueWithToken(t, ca, wl, csr, time.Hour)
	if _, err := ca.RevokeCertificate(t.Context(), c.Serial, pki.RevocationUnspecified); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)
	issueWithToken(t, ca, wl, csr, 0) // the audit batch prunes
	for _, p := range []string{"pki/cert/", "pki/revoked/"} {
		if _, err := st.Get(t.Context(), p+c.Serial.Text(16)); !errors.Is(err, pki.ErrNotFound) {
			t.Errorf("record %s%s after expiry: err %v, want ErrNotFound", p, c.Serial.Text(16), err)
		}
	}
	if kvs, _ := st.List(t.Context(), "pki/cert/"); len(kvs) != 1 {
		t.Fatalf("certificate records after prune = %d, want 1 (the live one)", len(kvs))
	}
}

func TestParseSerialHostile(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" = error
	}{
		{"1a2b", "1a2b"},
		{"1A:2B", "1a2b"},
		{"0x00ff", "ff"},
		{"", ""},
		{"0", ""},
		{"-1", ""},
		{"zz", ""},
		{"1a::2b", ""},
		{":1a", ""},
		{"1a:", ""},
		{"0x", ""},
		{"1 2", ""},
		{"ff" + fmt.Sprintf("%040x", 1), ""}, // 21 octets
		{fmt.Sprintf("%0200d", 1), ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			n, err := pki.ParseSerial(tc.in)
			if tc.want == "" {
				if !errors.Is(err, pki.ErrInvalidSerial) {
					t.Fatalf("ParseSerial(%q) = %v, %v; want ErrInvalidSerial", tc.in, n, err)
				}
				return
			}
			if err != nil || n.Text(16) != tc.want {
				t.Fatalf("ParseSerial(%q) = %v, %v; want %s", tc.in, n, err, tc.want)
			}
		})
	}
}

func TestParseRevocationReason(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want pki.RevocationReason
		ok   bool
	}{
		{"", pki.RevocationUnspecified, true},
		{"keyCompromise", pki.RevocationKeyCompromise, true},
		{"key-compromise", pki.RevocationKeyCompromise, true},
		{"SUPERSEDED", pki.RevocationSuperseded, true},
		{"certificateHold", 0, false},
		{"removeFromCRL", 0, false},
		{"bogus", 0, false},
	} {
		got, err := pki.ParseRevocationReason(tc.in)
		if tc.ok != (err == nil) || (tc.ok && got != tc.want) {
			t.Errorf("ParseRevocationReason(%q) = %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if !tc.ok && !errors.Is(err, pki.ErrInvalidRevocation) {
			t.Errorf("ParseRevocationReason(%q) error %v, want ErrInvalidRevocation", tc.in, err)
		}
	}
}

func FuzzParseSerial(f *testing.F) {
	for _, s := range []string{"1a2b", "1A:2B", "0x00ff", "", "0", "1a::2b", "zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := pki.ParseSerial(s)
		if err != nil {
			return
		}
		if n.Sign() <= 0 || len(n.Bytes()) > 20 {
			t.Fatalf("ParseSerial(%q) accepted %v", s, n)
		}
		if m, err := pki.ParseSerial(n.Text(16)); err != nil || m.Cmp(n) != 0 {
			t.Fatalf("ParseSerial(%q) does not round-trip: %v %v", n.Text(16), m, err)
		}
	})
}
