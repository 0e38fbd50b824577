package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
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
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ec224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	rk1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
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
		{ec384, &x509.CertificateRequest{}},
		{ec224, &x509.CertificateRequest{}},
		{rk1024, &x509.CertificateRequest{}},
		{ed, &x509.CertificateRequest{}},
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
	switch k := req.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if f.key.alg != x509.ECDSA || f.key.curve != k.Curve {
			return "ECDSA key read as " + f.key.name
		}
	case *rsa.PublicKey:
		if f.key.alg != x509.RSA || f.key.rsaBits != k.N.BitLen() {
			return "RSA key read as " + f.key.name + " of another size"
		}
	default:
		if f.key.alg == x509.ECDSA || f.key.alg == x509.RSA {
			return "a key of another type read as " + f.key.name
		}
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
