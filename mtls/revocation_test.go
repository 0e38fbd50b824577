package mtls_test

import (
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"testing"

	"github.com/meshgate/meshgate/mtls"
	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
)

func TestRevokedPeerRefusedAtHandshake(t *testing.T) {
	m := newMeshCA(t)
	auth := mtls.AuthorizeOneOf(gatewayID)
	server := mtls.NewSource(m.cert(t, gatewayID), m.roots(t))
	revokedCert := m.cert(t, gatewayID)
	fresh := mtls.NewSource(m.cert(t, gatewayID), m.roots(t))
	bad := mtls.NewSource(revokedCert, m.roots(t))

	if _, err := m.ca.RevokeCertificate(t.Context(), revokedCert.Leaf.SerialNumber, pki.RevocationKeyCompromise); err != nil {
		t.Fatalf("RevokeCertificate = %v", err)
	}
	// Before the set is fed, the revoked certificate still passes: the
	// check is only as fresh as the last SetRevocations.
	if serr, _, cerr := pair(t, mtls.MutualConfig(server, auth), mtls.MutualConfig(bad, auth)); serr != nil || cerr != nil {
		t.Fatalf("handshake before feeding the set: server %v, client %v; want both nil", serr, cerr)
	}
	server.SetRevocations(m.ca.Revocations())

	serr, _, cerr := pair(t, mtls.MutualConfig(server, auth), mtls.MutualConfig(bad, auth))
	var pe *mtls.PeerError
	if !errors.As(serr, &pe) || !errors.Is(serr, mtls.ErrRevoked) || !errors.Is(serr, mtls.ErrPeerRefused) {
		t.Fatalf("server handshake with a revoked client = %v, want a PeerError wrapping ErrRevoked", serr)
	}
	if pe.Identity != gatewayID.String() {
		t.Fatalf("PeerError.Identity = %q, want %s", pe.Identity, gatewayID)
	}
	if cerr == nil {
		t.Fatal("client with a revoked certificate: no error, want the connection refused")
	}
	if serr, _, cerr := pair(t, mtls.MutualConfig(server, auth), mtls.MutualConfig(fresh, auth)); serr != nil || cerr != nil {
		t.Fatalf("handshake with a fresh certificate: server %v, client %v; want both nil", serr, cerr)
	}
	// The client end refuses a revoked server as well.
	fresh.SetRevocations(m.ca.Revocations())
	if _, _, cerr := pair(t, mtls.MutualConfig(bad, auth), mtls.MutualConfig(fresh, auth)); !errors.Is(cerr, mtls.ErrRevoked) {
		t.Fatalf("client dialling a revoked server = %v, want ErrRevoked", cerr)
	}
	// Clearing the set lets it through again.
	server.SetRevocations(nil)
	if serr, _, _ := pair(t, mtls.MutualConfig(server, auth), mtls.MutualConfig(bad, auth)); serr != nil {
		t.Fatalf("handshake after SetRevocations(nil) = %v, want nil", serr)
	}
}

// BenchmarkVerifyPeer compares VerifyPeer without and with a revocation
// set of n serials (the check is one map lookup on the leaf's serial).
func BenchmarkVerifyPeer(b *testing.B) {
	ca, _ := pkitest.NewCA(b, pkitest.Config(b))
	cert, err := ca.NodeCertificate(b.Context(), pki.NodeRequest{Identity: gatewayID})
	if err != nil {
		b.Fatal(err)
	}
	chain := []*x509.Certificate{cert.Leaf}
	roots := ca.RootPool()
	auth := mtls.AuthorizeOneOf(gatewayID)
	b.Run("plain", func(b *testing.B) {
		for b.Loop() {
			if _, err := mtls.VerifyPeer(roots, chain, auth); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, n := range []int{1000, 10000} {
		revs := make([]pki.Revocation, n)
		for i := range revs {
			s, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 159))
			revs[i] = pki.Revocation{Serial: s.Add(s, big.NewInt(1))}
		}
		set := pki.NewRevocationSet(revs)
		b.Run(fmt.Sprintf("revocations=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := mtls.VerifyPeer(roots, chain, auth, mtls.WithRevocations(set)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("lookup/revocations=%d", n), func(b *testing.B) {
			s := chain[0].SerialNumber
			b.ReportAllocs()
			for b.Loop() {
				if set.Revoked(s) {
					b.Fatal("revoked")
				}
			}
		})
	}
}

// Gossip record chains are checked against the revocation set too, with
// and without an identity allow-list.
func TestRecordsRefuseRevokedChain(t *testing.T) {
	m := newMeshCA(t)
	own := mtls.NewSource(m.cert(t, gatewayID), m.roots(t))
	revoked := m.cert(t, gatewayID)
	fresh := m.cert(t, gatewayID)
	if _, err := m.ca.RevokeCertificate(t.Context(), revoked.Leaf.SerialNumber, pki.RevocationKeyCompromise); err != nil {
		t.Fatalf("RevokeCertificate = %v", err)
	}
	own.SetRevocations(m.ca.Revocations())
	for _, tc := range []struct {
		name string
		auth mtls.Authorizer
	}{
		{"with peer identities", mtls.AuthorizeOneOf(gatewayID)},
		{"any chain to the roots", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := mtls.NewRecords(own, tc.auth)
			if _, err := rec.VerifyChain(revoked.Certificate); !errors.Is(err, mtls.ErrRevoked) {
				t.Fatalf("VerifyChain(revoked chain) = %v, want ErrRevoked", err)
			}
			if _, err := rec.VerifyChain(fresh.Certificate); err != nil {
				t.Fatalf("VerifyChain(fresh chain) = %v, want nil", err)
			}
		})
	}
}
