package pki_test

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"testing"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
)

// BenchmarkCRL reports the time to build and sign a CRL of n revoked
// serials, and its size (bytes/CRL).
func BenchmarkCRL(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("serials=%d", n), func(b *testing.B) {
			ca, _ := pkitest.NewCA(b, pkitest.Config(b))
			serials := make([]*big.Int, n)
			for i := range serials {
				s, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 159))
				serials[i] = s.Add(s, big.NewInt(1))
			}
			for i := 0; i < n; i += 1000 {
				for _, s := range serials[i:min(n, i+1000)] {
					if _, err := ca.RevokeCertificate(b.Context(), s, pki.RevocationKeyCompromise); err != nil {
						b.Fatal(err)
					}
				}
			}
			var size int
			for b.Loop() {
				// A fresh set each time defeats the cache: this is the cost
				// of the CRL made after a revocation.
				if _, err := ca.ReloadRevocations(b.Context()); err != nil {
					b.Fatal(err)
				}
				der, err := ca.CRL(b.Context())
				if err != nil {
					b.Fatal(err)
				}
				size = len(der)
			}
			b.ReportMetric(float64(size), "bytes/CRL")
		})
	}
}
