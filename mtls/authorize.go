package mtls

import (
	"fmt"
	"slices"

	"github.com/meshgate/meshgate/pki"
)

// Authorizer decides whether a peer whose chain verified may talk to us.
// It returns nil to accept, or an error saying why not.
type Authorizer func(peer pki.Identity) error

// AuthorizeOneOf accepts exactly the listed identities.
func AuthorizeOneOf(ids ...pki.Identity) Authorizer {
	allowed := slices.Clone(ids)
	return func(peer pki.Identity) error {
		if slices.Contains(allowed, peer) {
			return nil
		}
		return &PeerError{Identity: peer.String(), Problem: fmt.Sprintf("identity is not one of the %d allowed", len(allowed))}
	}
}

// AuthorizeTrustDomain accepts any identity of trust domain td.
func AuthorizeTrustDomain(td string) Authorizer {
	return func(peer pki.Identity) error {
		if peer.TrustDomain == td {
			return nil
		}
		return &PeerError{Identity: peer.String(), Problem: "trust domain is not " + td}
	}
}
