package api_test

import (
	"crypto/x509"
	"errors"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/client"
	"github.com/meshgate/meshgate/pki/pkitest"
)

func TestHTTPRevokeAndCRL(t *testing.T) {
	ts := startServer(t, nil, nil)
	cfg := client.Config{Addr: ts.addr, RootCAs: ts.roots}
	id := pki.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}
	b, err := client.Issue(t.Context(), cfg, client.IssueRequest{TrustDomain: id.TrustDomain, Namespace: id.Namespace, ServiceAccount: id.ServiceAccount, Token: ts.token(t, id.Namespace, id.ServiceAccount, 0)})
	if err != nil {
		t.Fatalf("Issue = %v", err)
	}
	serial := pki.SerialOf(b.Chain[0])

	noKey := client.Admin{Config: cfg}
	var ae *client.APIError
	if _, err := noKey.RevokeCertificate(t.Context(), serial, ""); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("RevokeCertificate without the admin key = %v, want HTTP 401", err)
	}
	admin := client.Admin{Config: cfg, Key: adminKey}
	if _, err := admin.RevokeCertificate(t.Context(), "not-hex", ""); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Fatalf("RevokeCertificate(not-hex) = %v, want HTTP 400", err)
	}
	rev, err := admin.RevokeCertificate(t.Context(), serial, "keyCompromise")
	if err != nil || rev.Serial != serial || rev.Identity != id.String() || !rev.Recorded {
		t.Fatalf("RevokeCertificate = %+v, %v; want serial %s of %s", rev, err, serial, id)
	}
	if _, err = client.Renew(t.Context(), cfg, b, 0); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Renew(revoked) = %v, want gRPC Unauthenticated", err)
	}
	der, err := client.FetchCRL(t.Context(), cfg)
	if err != nil {
		t.Fatalf("FetchCRL = %v", err)
	}
	l, err := x509.ParseRevocationList(der)
	if err != nil || l.CheckSignatureFrom(ts.ca.Info().Signing) != nil {
		t.Fatalf("CRL parse/signature: %v", err)
	}
	if len(l.RevokedCertificateEntries) != 1 || pki.SerialOf(&x509.Certificate{SerialNumber: l.RevokedCertificateEntries[0].SerialNumber}) != serial {
		t.Fatalf("CRL entries = %v, want [%s]", l.RevokedCertificateEntries, serial)
	}
}

func TestHTTPRevokeTokenCerts(t *testing.T) {
	ts := startServer(t, nil, nil)
	cfg := client.Config{Addr: ts.addr, RootCAs: ts.roots}
	admin := client.Admin{Config: cfg, Key: adminKey}
	tok, err := admin.CreateToken(t.Context(), "default", "web", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var serials []string
	for range 2 {
		csr, _ := pkitest.WorkloadCSR(t, pki.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"})
		c, err := ts.ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.BearerToken(tok.Secret)})
		if err != nil {
			t.Fatal(err)
		}
		serials = append(serials, c.Serial.Text(16))
	}
	res, err := admin.RevokeTokenCertificates(t.Context(), tok.ID, "cessationOfOperation")
	if err != nil || !res.Revoked || len(res.RevokedCertificates) != 2 {
		t.Fatalf("RevokeTokenCertificates = %+v, %v; want the token and 2 certificates", res, err)
	}
	for _, s := range serials {
		n, _ := pki.ParseSerial(s)
		if !ts.ca.Revocations().Revoked(n) {
			t.Errorf("serial %s not revoked", s)
		}
	}
}
