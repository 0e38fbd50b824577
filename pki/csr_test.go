package pki_test

import (
	"bytes"
	"errors"
	"net"
	"testing"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
)

var web = pki.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}

type csrRow struct {
	name   string
	csr    []byte
	want   error
	reason pki.Reason
}

func csrRows(t testing.TB) []csrRow {
	good, _ := pkitest.WorkloadCSR(t, web)
	noSAN, _ := pkitest.CSR(t, pkitest.CSROptions{})
	return []csrRow{
		{"good", good, nil, ""},
		{"no SAN", noSAN, nil, ""},
		{"rsa 2048", first(pkitest.CSR(t, pkitest.CSROptions{Key: pkitest.RSA2048, URIs: []string{web.String()}})), nil, ""},
		{"p384", first(pkitest.CSR(t, pkitest.CSROptions{Key: pkitest.P384})), nil, ""},
		{"empty", nil, pki.ErrBadCSR, pki.ReasonCSRMalformed},
		{"garbage", []byte("hello, I am a CSR"), pki.ErrBadCSR, pki.ReasonCSRMalformed},
		{"pem garbage", []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"), pki.ErrBadCSR, pki.ReasonCSRMalformed},
		{"wrong pem type", bytes.Replace(good, []byte("CERTIFICATE REQUEST"), []byte("CERTIFICATE"), 2), pki.ErrBadCSR, pki.ReasonCSRMalformed},
		{"truncated", good[:len(good)/2], pki.ErrBadCSR, pki.ReasonCSRMalformed},
		{"oversized", append(bytes.Repeat([]byte(" "), 20000), good...), pki.ErrBadCSR, pki.ReasonCSRTooLarge},
		{"bad signature", pkitest.BadSignature(t, good), pki.ErrBadCSR, pki.ReasonCSRSignature},
		{"asks CA", first(pkitest.CSR(t, pkitest.CSROptions{CA: true, URIs: []string{web.String()}})), pki.ErrBadCSR, pki.ReasonCSRIsCA},
		{"rsa 1024", first(pkitest.CSR(t, pkitest.CSROptions{Key: pkitest.RSA1024})), pki.ErrBadCSR, pki.ReasonCSRKey},
		{"p224", first(pkitest.CSR(t, pkitest.CSROptions{Key: pkitest.P224})), pki.ErrBadCSR, pki.ReasonCSRKey},
		{"ed25519", first(pkitest.CSR(t, pkitest.CSROptions{Key: pkitest.Ed25519})), pki.ErrBadCSR, pki.ReasonCSRKey},
		{"point off the curve", pkitest.OffCurve(t, good), pki.ErrBadCSR, pki.ReasonCSRMalformed},
		{"dns SAN", first(pkitest.CSR(t, pkitest.CSROptions{URIs: []string{web.String()}, DNSNames: []string{"web.default.svc"}})), pki.ErrPermissionDenied, pki.ReasonExtraSAN},
		{"ip SAN", first(pkitest.CSR(t, pkitest.CSROptions{IPs: []net.IP{net.IPv4(10, 0, 0, 1)}})), pki.ErrPermissionDenied, pki.ReasonExtraSAN},
		{"email SAN", first(pkitest.CSR(t, pkitest.CSROptions{Emails: []string{"a@b.c"}})), pki.ErrPermissionDenied, pki.ReasonExtraSAN},
		{"two URIs", first(pkitest.CSR(t, pkitest.CSROptions{URIs: []string{web.String(), "spiffe://cluster.local/ns/default/sa/db"}})), pki.ErrPermissionDenied, pki.ReasonExtraSAN},
		{"non-spiffe URI", first(pkitest.CSR(t, pkitest.CSROptions{URIs: []string{"https://evil.example/"}})), pki.ErrPermissionDenied, pki.ReasonIdentityMismatch},
	}
}

func first[A, B any](a A, _ B) A { return a }

func TestParseCSR(t *testing.T) {
	for _, tc := range csrRows(t) {
		t.Run(tc.name, func(t *testing.T) {
			c, err := pki.ParseCSR(tc.csr, 16<<10)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ParseCSR(%s) error = %v, want %v", tc.name, err, tc.want)
			}
			if got := pki.ReasonOf(err); got != tc.reason {
				t.Fatalf("ParseCSR(%s) reason = %q, want %q", tc.name, got, tc.reason)
			}
			if err == nil && c.Request == nil {
				t.Fatalf("ParseCSR(%s) returned no request", tc.name)
			}
		})
	}
}

func FuzzParseCSR(f *testing.F) {
	for _, tc := range csrRows(f) {
		f.Add(tc.csr)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := pki.ParseCSR(b, 16<<10)
		if err != nil {
			if pki.ReasonOf(err) == "" {
				t.Fatalf("ParseCSR error %v carries no refusal reason", err)
			}
			return
		}
		if c.Request.CheckSignature() != nil {
			t.Fatal("ParseCSR accepted a CSR whose signature does not verify")
		}
		if len(c.Request.DNSNames)+len(c.Request.IPAddresses)+len(c.Request.EmailAddresses) != 0 || len(c.Request.URIs) > 1 {
			t.Fatalf("ParseCSR accepted extra SANs: %v %v %v %v", c.Request.DNSNames, c.Request.IPAddresses, c.Request.EmailAddresses, c.Request.URIs)
		}
		if len(c.Request.URIs) == 1 && c.Identity.String() != c.Request.URIs[0].String() {
			t.Fatalf("ParseCSR identity %q differs from the URI SAN %q", c.Identity, c.Request.URIs[0])
		}
	})
}
