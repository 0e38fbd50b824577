package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net"
	"net/url"
	"testing"
)

func seedCSRs(t testing.TB) [][]byte {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	bcTrue, _ := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	bcFalse, _ := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{false})
	u := func(s string) []*url.URL { x, _ := url.Parse(s); return []*url.URL{x} }
	var out [][]byte
	for _, tc := range []struct {
		key  any
		tmpl *x509.CertificateRequest
	}{
		{ec, &x509.CertificateRequest{}},
		{ec, &x509.CertificateRequest{URIs: u("spiffe://cluster.local/ns/a/sa/b"), Subject: pkix.Name{Organization: []string{"cluster.local"}}}},
		{ec, &x509.CertificateRequest{URIs: u("spiffe://cluster.local/ns/a/sa/%62")}},
		{ec, &x509.CertificateRequest{DNSNames: []string{"a.b"}, IPAddresses: []net.IP{net.IPv4(1, 2, 3, 4)}, EmailAddresses: []string{"a@b.c"}}},
		{ec, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: oidBasicConstraints, Critical: true, Value: bcTrue}}}},
		{ec, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: oidBasicConstraints, Value: bcFalse}}}},
		{rk, &x509.CertificateRequest{URIs: u("spiffe://cluster.local/ns/a/sa/b")}},
	} {
		der, err := x509.CreateCertificateRequest(rand.Reader, tc.tmpl, tc.key)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, der)
	}
	return out
}

func TestInspectCSRMatchesX509(t *testing.T) {
	for i, der := range seedCSRs(t) {
		if msg := compareWithX509(der); msg != "" {
			t.Errorf("seed %d: %s", i, msg)
		}
		if _, err := inspectCSR(der); err != nil {
			t.Errorf("seed %d: inspectCSR refused a CSR made by crypto/x509: %v", i, err)
		}
	}
}

// compareWithX509 returns a description of any disagreement between
// inspectCSR and crypto/x509 (plus cfssl's reading of basicConstraints)
// on a CSR both accept.
func compareWithX509(der []byte) string {
	f, ferr := inspectCSR(der)
	req, xerr := x509.ParseCertificateRequest(der)
	if ferr != nil || xerr != nil {
		return ""
	}
	if len(req.DNSNames) != f.dns || len(req.IPAddresses) != f.ip || len(req.EmailAddresses) != f.email || len(req.URIs) != len(f.uris) {
		return "SAN counts differ"
	}
	for i, u := range req.URIs {
		mine, merr := ParseIdentity(f.uris[i])
		theirs, terr := IdentityFromURL(u)
		if merr == nil && (terr != nil || mine != theirs) {
			return "identity " + f.uris[i] + " accepted here but not as x509 reads it"
		}
	}
	if !publicKeysEqual(f.pub, req.PublicKey) {
		return "public keys differ"
	}
	anyCA := false
	for _, e := range req.Extensions {
		if e.Id.Equal(oidBasicConstraints) {
			var bc struct {
				IsCA       bool `asn1:"optional"`
				MaxPathLen int  `asn1:"optional,default:-1"`
			}
			if _, err := asn1.Unmarshal(e.Value, &bc); err == nil && bc.IsCA {
				anyCA = true
			}
		}
	}
	if anyCA && !f.isCA {
		return "a basicConstraints CA:true that x509/cfssl see was missed"
	}
	return ""
}

func FuzzCheckCSRAgreesWithX509(f *testing.F) {
	for _, der := range seedCSRs(f) {
		f.Add(der)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		if msg := compareWithX509(der); msg != "" {
			t.Fatal(msg)
		}
	})
}
