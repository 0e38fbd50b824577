package pki

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/cloudflare/cfssl/config"
	cflog "github.com/cloudflare/cfssl/log"
	"github.com/cloudflare/cfssl/signer"
	"github.com/cloudflare/cfssl/signer/local"
)

// cfssl signing profile names. Requests never name a profile that is not
// in this list: cfssl would silently fall back to the default profile.
const (
	// ProfileWorkload is the Istio workload leaf profile.
	ProfileWorkload = "workload"
	// profileNode is the gateway node's own certificate: the same leaf
	// profile, with DNS and IP SANs next to the SPIFFE URI.
	profileNode = "node"
)

// leafUsages are the key usages of every leaf: KeyUsage digitalSignature +
// keyEncipherment, ExtKeyUsage serverAuth + clientAuth (as Istio).
var leafUsages = []string{"digital signature", "key encipherment", "server auth", "client auth"}

var quietCFSSL sync.Once

// newSigner builds the cfssl local signer for key and cert.
//
// cfssl is pinned to v1.6.5: v1.7.x requires Go 1.27 (its go.mod says
// "go 1.27" and it imports crypto/mldsa), which would force the go1.27
// toolchain on every build of meshgate; v1.6.5 builds with Go 1.26 and has
// the same signer API and speed for everything used here.
//
// The profile is built so that cfssl cannot widen or strip what we issue:
//   - the CSR whitelist copies only the public key (and its algorithm) from
//     the CSR: never its subject, SANs, basic constraints or extensions
//     (copy_extensions stays off: in v1.6.5 it would copy KU/EKU/SAN from
//     the CSR);
//   - the subject is therefore empty, and the SANs are exactly the Hosts we
//     pass (the caller's SPIFFE URI, set by us, never by a request's hosts);
//     with an empty subject crypto/x509 marks the SAN extension critical
//     (RFC 5280 4.2.1.6), which is Istio's leaf profile;
//   - NotBefore/NotAfter and the serial come from us (ClientProvidesSerial
//     Numbers), CA=false comes from the profile, KU/EKU from leafUsages;
//   - no linting, CT, OCSP/CRL URLs, policies or extension whitelist.
func newSigner(key crypto.Signer, cert *x509.Certificate) (*local.Signer, error) {
	quietCFSSL.Do(func() {
		// cfssl logs one line per signed certificate to the standard
		// logger at Info. It has only this process-wide switch.
		cflog.Level = cflog.LevelCritical
	})
	s, err := local.NewSigner(key, cert, signer.DefaultSigAlgo(key), SigningPolicy())
	if err != nil {
		return nil, fmt.Errorf("pki: cfssl signer: %w", err)
	}
	return s, nil
}

// SigningPolicy returns a new copy of the cfssl signing policy the CA
// signs with (see newSigner for why each field is set). It is exported for
// tools and benchmarks that drive cfssl's signer directly; requests must
// still name ProfileWorkload and pass Hosts, Serial, NotBefore and NotAfter.
func SigningPolicy() *config.Signing {
	profile := func() *config.SigningProfile {
		return &config.SigningProfile{
			Usage:        leafUsages,
			ExpiryString: "24h",
			Expiry:       24 * time.Hour, // unused: every request sets NotAfter
			CSRWhitelist: &config.CSRWhitelist{
				PublicKeyAlgorithm: true,
				PublicKey:          true,
				SignatureAlgorithm: true,
			},
			ClientProvidesSerialNumbers: true,
		}
	}
	return &config.Signing{
		Default: profile(),
		Profiles: map[string]*config.SigningProfile{
			ProfileWorkload: profile(),
			profileNode:     profile(),
		},
	}
}
