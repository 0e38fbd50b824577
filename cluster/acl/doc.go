// Package acl controls access to meshgate's admin API.
//
// An admin token is a random secret the caller presents as
// "Authorization: Bearer <secret>". Only the SHA-256 of the secret is
// stored, with the token's ID, description, scopes, optional expiry and, for
// endpoints:write tokens, the services and DestinationRule subsets it may
// register. In a fleet the records live in the raft-replicated store
// (KVStore), so a token works at every node; a node outside any fleet keeps
// them in a file in its data dir (FileStore).
//
// SHA-256 without a salt or a slow KDF is enough here because the secret is
// 32 bytes from crypto/rand, not a password: nobody can search a 2^256
// space, and a fast hash keeps every admin request cheap to check.
//
// Scopes:
//
//	read             GET of routes, endpoints, config, members, metrics
//	endpoints:write  PUT/DELETE /v1/endpoints/{id}, limited by Services and Subsets
//	operator         everything, including config, join, leave, keyring, CA and tokens
//
// Guard is the HTTP middleware for the admin listener: it refuses requests
// whose Host is not the listener's own address (DNS rebinding), refuses
// cross-site or non-JSON writes (CSRF), resolves the bearer token and checks
// the scope a Policy assigns to the request:
//
//	m := acl.NewManager(acl.NewFileStore(dir), nil)
//	g, _ := acl.NewGuard(acl.GuardConfig{Tokens: m, Policy: policy, OpenReads: true})
//	g.SetListener(ln.Addr())
//	srv := &http.Server{Handler: g.Wrap(mux)}
package acl
