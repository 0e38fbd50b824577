package pki_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/pkitest"
)

// env is one CA with a settable clock.
type env struct {
	ca    *pki.CA
	clock *pkitest.Clock
}

func newEnv(t *testing.T, mod func(*pki.Config)) *env {
	cfg := pkitest.Config(t)
	if mod != nil {
		mod(&cfg)
	}
	clock := pkitest.NewClock(time.Now())
	ca, _ := pkitest.NewCA(t, cfg, pki.WithClock(clock.Now))
	return &env{ca: ca, clock: clock}
}

func (e *env) token(t *testing.T, ns, sa string, ttl time.Duration, uses int) pki.BearerToken {
	t.Helper()
	tok, _, err := e.ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: ns, ServiceAccount: sa, TTL: ttl, Uses: uses})
	if err != nil {
		t.Fatalf("CreateToken(%s/%s) = %v", ns, sa, err)
	}
	return pki.BearerToken(tok)
}

func (e *env) peer(t *testing.T, id pki.Identity) pki.PeerCertificates {
	t.Helper()
	csr, _ := pkitest.WorkloadCSR(t, id)
	cert, err := e.ca.Issue(t.Context(), pki.Request{CSR: csr, Identity: id, Credential: pki.Operator{Name: "test"}})
	if err != nil {
		t.Fatalf("Issue(operator %v) = %v", id, err)
	}
	return pki.PeerCertificates(pkitest.ParseChain(t, cert.ChainPEM()[:1]))
}

func TestIssueHostile(t *testing.T) {
	db := pki.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "db"}
	goodCSR := func(t *testing.T) []byte { c, _ := pkitest.WorkloadCSR(t, web); return c }
	for _, tc := range []struct {
		name   string
		mod    func(*pki.Config)
		setup  func(t *testing.T, e *env) pki.Request
		want   error
		reason pki.Reason
	}{
		{"no credential", nil, func(t *testing.T, e *env) pki.Request {
			return pki.Request{CSR: goodCSR(t)}
		}, pki.ErrUnauthenticated, pki.ReasonNoCredential},
		{"unknown token", nil, func(t *testing.T, e *env) pki.Request {
			return pki.Request{CSR: goodCSR(t), Credential: pki.BearerToken("mgt.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")}
		}, pki.ErrUnauthenticated, pki.ReasonBadToken},
		{"garbage token", nil, func(t *testing.T, e *env) pki.Request {
			return pki.Request{CSR: goodCSR(t), Credential: pki.BearerToken("eyJhbGciOiJSUzI1NiJ9.k8s.jwt")}
		}, pki.ErrUnauthenticated, pki.ReasonBadToken},
		{"huge token", nil, func(t *testing.T, e *env) pki.Request {
			return pki.Request{CSR: goodCSR(t), Credential: pki.BearerToken("mgt." + string(bytes.Repeat([]byte("A"), 1<<16)))}
		}, pki.ErrUnauthenticated, pki.ReasonBadToken},
		{"expired token", nil, func(t *testing.T, e *env) pki.Request {
			tok := e.token(t, "default", "web", time.Hour, 0)
			e.clock.Advance(time.Hour)
			return pki.Request{CSR: goodCSR(t), Credential: tok}
		}, pki.ErrTokenExpired, pki.ReasonTokenExpired},
		{"revoked token", nil, func(t *testing.T, e *env) pki.Request {
			tok, info, err := e.ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: "default", ServiceAccount: "web"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.ca.RevokeToken(t.Context(), info.ID[:8]); err != nil {
				t.Fatalf("RevokeToken(%s) = %v", info.ID[:8], err)
			}
			return pki.Request{CSR: goodCSR(t), Credential: pki.BearerToken(tok)}
		}, pki.ErrTokenRevoked, pki.ReasonTokenRevoked},
		{"used-up token", nil, func(t *testing.T, e *env) pki.Request {
			tok := e.token(t, "default", "web", 0, 1)
			if _, err := e.ca.Issue(t.Context(), pki.Request{CSR: goodCSR(t), Credential: tok}); err != nil {
				t.Fatalf("Issue(first use) = %v", err)
			}
			return pki.Request{CSR: goodCSR(t), Credential: tok}
		}, pki.ErrTokenUsedUp, pki.ReasonTokenUsedUp},
		{"token for another namespace", nil, func(t *testing.T, e *env) pki.Request {
			return pki.Request{CSR: goodCSR(t), Credential: e.token(t, "other", "web", 0, 0)}
		}, pki.ErrPermissionDenied, pki.ReasonIdentityMismatch},
		{"CSR names another identity", nil, func(t *testing.T, e *env) pki.Request {
			csr, _ := pkitest.WorkloadCSR(t, db)
			return pki.Request{CSR: csr, Credential: e.token(t, "default", "web", 0, 0)}
		}, pki.ErrPermissionDenied, pki.ReasonIdentityMismatch},
		{"CSR in another trust domain", nil, func(t *testing.T, e *env) pki.Request {
			csr, _ := pkitest.CSR(t, pkitest.CSROptions{URIs: []string{"spiffe://evil.local/ns/default/sa/web"}})
			return pki.Request{CSR: csr, Credential: e.token(t, "default", "web", 0, 0)}
		}, pki.ErrPermissionDenied, pki.ReasonIdentityMismatch},
		{"CSR adds a DNS SAN", nil, func(t *testing.T, e *env) pki.Request {
			csr, _ := pkitest.CSR(t, pkitest.CSROptions{URIs: []string{web.String()}, DNSNames: []string{"api.example.com"}})
			return pki.Request{CSR: csr, Credential: e.token(t, "default", "web", 0, 0)}
		}, pki.ErrPermissionDenied, pki.ReasonExtraSAN},
		{"CSR asks CA:true", nil, func(t *testing.T, e *env) pki.Request {
			csr, _ := pkitest.CSR(t, pkitest.CSROptions{URIs: []string{web.String()}, CA: true})
			return pki.Request{CSR: csr, Credential: e.token(t, "default", "web", 0, 0)}
		}, pki.ErrBadCSR, pki.ReasonCSRIsCA},
		{"bad CSR signature", nil, func(t *testing.T, e *env) pki.Request {
			return pki.Request{CSR: pkitest.BadSignature(t, goodCSR(t)), Credential: e.token(t, "default", "web", 0, 0)}
		}, pki.ErrBadCSR, pki.ReasonCSRSignature},
		{"oversized CSR", nil, func(t *testing.T, e *env) pki.Request {
			return pki.Request{CSR: append(bytes.Repeat([]byte("\n"), 17<<10), goodCSR(t)...), Credential: e.token(t, "default", "web", 0, 0)}
		}, pki.ErrBadCSR, pki.ReasonCSRTooLarge},
		{"garbage CSR", nil, func(t *testing.T, e *env) pki.Request {
			return pki.Request{CSR: []byte("-----BEGIN CERTIFICATE REQUEST-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE REQUEST-----\n"), Credential: e.token(t, "default", "web", 0, 0)}
		}, pki.ErrBadCSR, pki.ReasonCSRMalformed},
		{"CSR key off the curve", nil, func(t *testing.T, e *env) pki.Request {
			return pki.Request{CSR: pkitest.OffCurve(t, goodCSR(t)), Credential: e.token(t, "default", "web", 0, 1)}
		}, pki.ErrBadCSR, pki.ReasonCSRMalformed},
		{"ed25519 key", nil, func(t *testing.T, e *env) pki.Request {
			csr, _ := pkitest.CSR(t, pkitest.CSROptions{Key: pkitest.Ed25519, URIs: []string{web.String()}})
			return pki.Request{CSR: csr, Credential: e.token(t, "default", "web", 0, 0)}
		}, pki.ErrBadCSR, pki.ReasonCSRKey},
		{"weak key", nil, func(t *testing.T, e *env) pki.Request {
			csr, _ := pkitest.CSR(t, pkitest.CSROptions{Key: pkitest.RSA1024, URIs: []string{web.String()}})
			return pki.Request{CSR: csr, Credential: e.token(t, "default", "web", 0, 0)}
		}, pki.ErrBadCSR, pki.ReasonCSRKey},
		{"TTL above max", nil, func(t *testing.T, e *env) pki.Request {
			return pki.Request{CSR: goodCSR(t), TTL: 91 * 24 * time.Hour, Credential: e.token(t, "default", "web", 0, 0)}
		}, pki.ErrTTLTooLong, pki.ReasonTTLTooLong},
		{"rate limited", func(c *pki.Config) { c.RateLimit, c.RateBurst = 0.001, 1 }, func(t *testing.T, e *env) pki.Request {
			tok := e.token(t, "default", "web", 0, 0)
			if _, err := e.ca.Issue(t.Context(), pki.Request{CSR: goodCSR(t), Credential: tok}); err != nil {
				t.Fatalf("Issue(within burst) = %v", err)
			}
			return pki.Request{CSR: goodCSR(t), Credential: tok}
		}, pki.ErrRateLimited, pki.ReasonRateLimited},
		{"client cert of another CA", nil, func(t *testing.T, e *env) pki.Request {
			other := newEnv(t, nil)
			return pki.Request{CSR: goodCSR(t), Credential: other.peer(t, web)}
		}, pki.ErrUnauthenticated, pki.ReasonBadClientCert},
		{"expired client cert", nil, func(t *testing.T, e *env) pki.Request {
			p := e.peer(t, web)
			e.clock.Advance(25 * time.Hour)
			return pki.Request{CSR: goodCSR(t), Credential: p}
		}, pki.ErrUnauthenticated, pki.ReasonBadClientCert},
		{"renewal for another identity", nil, func(t *testing.T, e *env) pki.Request {
			csr, _ := pkitest.WorkloadCSR(t, db)
			return pki.Request{CSR: csr, Credential: e.peer(t, web)}
		}, pki.ErrPermissionDenied, pki.ReasonIdentityMismatch},
		{"requested identity wider than token", nil, func(t *testing.T, e *env) pki.Request {
			csr, _ := pkitest.CSR(t, pkitest.CSROptions{})
			return pki.Request{CSR: csr, Identity: db, Credential: e.token(t, "default", "web", 0, 0)}
		}, pki.ErrPermissionDenied, pki.ReasonIdentityMismatch},
		{"bad cert, no token", nil, func(t *testing.T, e *env) pki.Request {
			other := newEnv(t, nil)
			return pki.Request{CSR: goodCSR(t), Credential: pki.Credentials{Peer: other.peer(t, web)}}
		}, pki.ErrUnauthenticated, pki.ReasonBadClientCert},
		{"bad cert, expired token", nil, func(t *testing.T, e *env) pki.Request {
			other := newEnv(t, nil)
			tok := e.token(t, "default", "web", time.Hour, 0)
			e.clock.Advance(2 * time.Hour)
			return pki.Request{CSR: goodCSR(t), Credential: pki.Credentials{Peer: other.peer(t, web), Token: tok}}
		}, pki.ErrTokenExpired, pki.ReasonTokenExpired},
		{"empty credentials", nil, func(t *testing.T, e *env) pki.Request {
			return pki.Request{CSR: goodCSR(t), Credential: pki.Credentials{}}
		}, pki.ErrUnauthenticated, pki.ReasonNoCredential},
		{"empty client cert chain", nil, func(t *testing.T, e *env) pki.Request {
			return pki.Request{CSR: goodCSR(t), Credential: pki.PeerCertificates(nil)}
		}, pki.ErrUnauthenticated, pki.ReasonNoCredential},
		{"operator outside trust domain", nil, func(t *testing.T, e *env) pki.Request {
			return pki.Request{CSR: goodCSR(t), Identity: pki.Identity{TrustDomain: "evil.local", Namespace: "a", ServiceAccount: "b"}, Credential: pki.Operator{Name: "x"}}
		}, pki.ErrPermissionDenied, pki.ReasonIdentityMismatch},
		{"operator without identity or SAN", nil, func(t *testing.T, e *env) pki.Request {
			csr, _ := pkitest.CSR(t, pkitest.CSROptions{})
			return pki.Request{CSR: csr, Credential: pki.Operator{Name: "x"}}
		}, pki.ErrPermissionDenied, pki.ReasonIdentityMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.mod)
			req := tc.setup(t, e)
			req.Remote = "192.0.2.7:4444"
			before := auditCounts(t, e.ca)
			cert, err := e.ca.Issue(t.Context(), req)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Issue(%s) error = %v, want %v", tc.name, err, tc.want)
			}
			if got := pki.ReasonOf(err); got != tc.reason {
				t.Fatalf("Issue(%s) reason = %q, want %q (err %v)", tc.name, got, tc.reason, err)
			}
			if cert != nil {
				t.Fatalf("Issue(%s) returned a certificate with its error", tc.name)
			}
			after := auditCounts(t, e.ca)
			if after.issued != before.issued {
				t.Fatalf("Issue(%s): issued records went %d -> %d, want no issuance", tc.name, before.issued, after.issued)
			}
			// Only callers that authenticated leave an audit record: the
			// others are counted and sampled in the log, never replicated.
			if !audited(tc.name, tc.reason) {
				if after.refused != before.refused {
					t.Fatalf("Issue(%s): refused records went %d -> %d, want none (unauthenticated refusals are not audited)", tc.name, before.refused, after.refused)
				}
				return
			}
			if after.refused != before.refused+1 {
				t.Fatalf("Issue(%s): refused records went %d -> %d, want +1", tc.name, before.refused, after.refused)
			}
			last := after.last
			if last.Reason != tc.reason || last.Remote != req.Remote || last.Caller == "" || last.Serial != "" {
				t.Fatalf("Issue(%s): audit record = %+v, want reason %q, remote %q, a caller, no serial", tc.name, last, tc.reason, req.Remote)
			}
		})
	}
}

// audited says whether a refusal for reason is audited in these tables:
// only refusals after the caller authenticated (identity checks, and the
// CSR faults only cfssl's signing finds) are.
func audited(row string, reason pki.Reason) bool {
	switch {
	case reason == pki.ReasonIdentityMismatch, reason == pki.ReasonCSRSignature:
		return true
	case row == "CSR key off the curve": // the CSR parses; cfssl refuses the key
		return true
	}
	return false
}

type counts struct {
	issued, refused int
	last            pki.AuditRecord
}

func auditCounts(t *testing.T, ca *pki.CA) counts {
	t.Helper()
	recs, err := ca.AuditLog(t.Context(), time.Time{})
	if err != nil {
		t.Fatalf("AuditLog() = %v", err)
	}
	var c counts
	c.issued = countOutcome(recs, pki.OutcomeIssued)
	c.refused = countOutcome(recs, pki.OutcomeRefused)
	if len(recs) > 0 {
		c.last = recs[len(recs)-1]
	}
	return c
}

func TestRenewalSameIdentity(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.token(t, "default", "web", 0, 1)
	csr, key := pkitest.WorkloadCSR(t, web)
	first, err := e.ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: tok})
	if err != nil {
		t.Fatal(err)
	}
	// Renew with the certificate (the token is used up by now).
	chain := pkitest.ParseChain(t, first.ChainPEM())
	tc := tls.Certificate{Certificate: [][]byte{chain[0].Raw}, PrivateKey: key, Leaf: chain[0]}
	e.clock.Advance(12 * time.Hour)
	csr2, _ := pkitest.CSR(t, pkitest.CSROptions{}) // a new key, no SAN
	second, err := e.ca.Issue(t.Context(), pki.Request{CSR: csr2, Credential: pki.PeerCertificates{tc.Leaf}})
	if err != nil {
		t.Fatalf("Issue(renewal with a valid cert) = %v", err)
	}
	if second.Identity != web {
		t.Fatalf("renewed identity = %v, want %v", second.Identity, web)
	}
	recs, _ := e.ca.AuditLog(t.Context(), time.Time{})
	if last := recs[len(recs)-1]; last.Caller != "cert:"+web.String() || last.Outcome != pki.OutcomeIssued {
		t.Fatalf("renewal audit record = %+v, want issued to caller cert:%s", last, web)
	}
}

func TestTokens(t *testing.T) {
	e := newEnv(t, nil)
	_, a, err := e.ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: "default", ServiceAccount: "web", Uses: 3})
	if err != nil {
		t.Fatal(err)
	}
	secret, b, err := e.ca.CreateToken(t.Context(), pki.TokenRequest{Namespace: "prod", ServiceAccount: "api", TTL: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.ID) != 16 || a.ID == b.ID {
		t.Fatalf("token IDs %q, %q: want two distinct 16-hex IDs", a.ID, b.ID)
	}
	list, err := e.ca.Tokens(t.Context())
	if err != nil || len(list) != 2 {
		t.Fatalf("Tokens() = %v, %v; want 2 tokens", list, err)
	}
	for _, ti := range list {
		if ti.ID == b.ID && (ti.Identity.Namespace != "prod" || ti.ExpiresAt.Sub(ti.CreatedAt) != 2*time.Hour) {
			t.Fatalf("Tokens() entry %+v, want prod/api valid 2h", ti)
		}
	}
	// The secret itself is nowhere in the list.
	for _, ti := range list {
		if ti.ID == secret || bytes.Contains([]byte(ti.ID), []byte(secret[4:12])) {
			t.Fatal("Tokens() leaks the secret")
		}
	}
	for _, tc := range []struct {
		name string
		req  pki.TokenRequest
	}{
		{"bad namespace", pki.TokenRequest{Namespace: "Bad_NS", ServiceAccount: "x"}},
		{"empty sa", pki.TokenRequest{Namespace: "a"}},
		{"negative ttl", pki.TokenRequest{Namespace: "a", ServiceAccount: "b", TTL: -time.Second}},
		{"huge ttl", pki.TokenRequest{Namespace: "a", ServiceAccount: "b", TTL: 10 * 365 * 24 * time.Hour}},
		{"negative uses", pki.TokenRequest{Namespace: "a", ServiceAccount: "b", Uses: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := e.ca.CreateToken(t.Context(), tc.req); !errors.Is(err, pki.ErrInvalidToken) {
				t.Fatalf("CreateToken(%+v) = %v, want ErrInvalidToken", tc.req, err)
			}
		})
	}
	for _, tc := range []struct {
		name string
		id   string
		want error
	}{
		{"short", "abc", pki.ErrInvalidToken},
		{"not hex", "zzzzzzzzzz", pki.ErrInvalidToken},
		{"unknown", "0000000000000000", pki.ErrTokenNotFound},
	} {
		t.Run("revoke "+tc.name, func(t *testing.T) {
			if _, err := e.ca.RevokeToken(t.Context(), tc.id); !errors.Is(err, tc.want) {
				t.Fatalf("RevokeToken(%q) = %v, want %v", tc.id, err, tc.want)
			}
		})
	}
	info, err := e.ca.RevokeToken(t.Context(), b.ID)
	if err != nil || !info.Revoked {
		t.Fatalf("RevokeToken(%s) = %+v, %v; want revoked", b.ID, info, err)
	}
	if _, err := e.ca.RevokeToken(t.Context(), b.ID); err != nil {
		t.Fatalf("RevokeToken twice = %v, want nil", err)
	}
}

func TestCredentialsPrecedence(t *testing.T) {
	e := newEnv(t, nil)
	other := newEnv(t, nil)
	csr, _ := pkitest.CSR(t, pkitest.CSROptions{})
	// A foreign certificate plus a good token: the token is used.
	cert, err := e.ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.Credentials{Peer: other.peer(t, web), Token: e.token(t, "default", "web", 0, 0)}})
	if err != nil || cert.Identity != web {
		t.Fatalf("Issue(bad cert + good token) = %v, %v; want a certificate for %v", cert, err, web)
	}
	// A good certificate plus a token for another identity: the certificate wins.
	db := pki.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "db"}
	cert, err = e.ca.Issue(t.Context(), pki.Request{CSR: csr, Credential: pki.Credentials{Peer: e.peer(t, web), Token: e.token(t, "default", "db", 0, 0)}})
	if err != nil || cert.Identity != web {
		t.Fatalf("Issue(good cert + token for %v) = %v, %v; want a certificate for %v", db, cert, err, web)
	}
}
