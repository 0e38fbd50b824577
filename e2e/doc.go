// Package e2e holds the tests that cross processes and networks: they run
// the built meshgate binary (MESHGATE_BIN, or one built on the fly) against
// real clients (openssl s_client, curl, crypto/tls) and TLS backends on
// loopback.
package e2e
