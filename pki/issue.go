package pki

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	cferr "github.com/cloudflare/cfssl/errors"
	"github.com/cloudflare/cfssl/signer"
)

// Credential is how a caller proves which identity it may hold. The
// implementations are BearerToken, PeerCertificates and Operator.
type Credential interface {
	// caller describes the credential for the audit log.
	caller() string
}

// BearerToken is a token made by CA.CreateToken (gRPC metadata
// "authorization: Bearer <token>", or the HTTP Authorization header). It
// authorizes the identity it was created for.
type BearerToken string

func (t BearerToken) caller() string {
	if !strings.HasPrefix(string(t), tokenPrefix) || len(t) > maxTokenLen {
		return "token:invalid"
	}
	return "token:" + tokenHash(string(t))[:tokenIDLen]
}

// PeerCertificates is the certificate chain a TLS client presented, leaf
// first (tls.ConnectionState.PeerCertificates). It authorizes the leaf's
// SPIFFE identity if the chain verifies to the CA's trust bundle for
// client auth now: this is renewal.
type PeerCertificates []*x509.Certificate

func (p PeerCertificates) caller() string {
	if len(p) > 0 && len(p[0].URIs) == 1 {
		return "cert:" + p[0].URIs[0].String()
	}
	return "cert:invalid"
}

// Credentials is what a TLS caller brought: a client certificate chain,
// a bearer token, or both. As in Istio, a client certificate that verifies
// wins; otherwise the token is used; otherwise the certificate's refusal
// (or "no credential") is returned.
type Credentials struct {
	Peer  PeerCertificates
	Token BearerToken
}

func (c Credentials) caller() string {
	switch {
	case len(c.Peer) > 0 && c.Token != "":
		return c.Peer.caller() + "+" + c.Token.caller()
	case len(c.Peer) > 0:
		return c.Peer.caller()
	case c.Token != "":
		return c.Token.caller()
	}
	return "none"
}

// Operator is a caller the API layer has already authenticated with an
// operator credential (the cfssl auth key, or the node itself). It may
// obtain any identity in the trust domain: Request.Identity if set,
// otherwise the one the CSR's URI SAN names.
type Operator struct {
	Name string
}

func (o Operator) caller() string { return "operator:" + o.Name }

// Request asks for a workload certificate.
type Request struct {
	// CSR is the PEM certificate signing request. Only its public key is
	// used; its SANs must be empty or exactly the authorized identity.
	CSR []byte
	// TTL is the requested lifetime; <= 0 means Config.DefaultTTL, above
	// Config.MaxTTL is refused.
	TTL time.Duration
	// Credential authenticates the caller (required).
	Credential Credential
	// Identity, when set, is the identity the caller asks for (for
	// example the SPIFFE ID in a cfssl request's hosts). It is refused
	// unless the credential authorizes exactly it; it never widens what
	// the credential allows.
	Identity Identity
	// Remote is the caller's address, for the audit log.
	Remote string
}

// Certificate is an issued certificate with everything a workload needs.
type Certificate struct {
	Identity  Identity
	Serial    *big.Int
	NotBefore time.Time
	NotAfter  time.Time
	// Grant is the longest lifetime a renewal of this certificate may
	// get: the lifetime its token's issuance allowed, inherited by every
	// renewal (see CertificateRecord).
	Grant time.Duration
	// TokenID is the token the certificate descends from ("" for operator
	// issuances and renewals of unrecorded certificates).
	TokenID string
	// LeafPEM is the issued certificate.
	LeafPEM string
	// IntermediatesPEM are the certificates between the leaf and the root,
	// nearest first (empty for a self-signed CA outside a rotation).
	IntermediatesPEM []string
	// RootsPEM is the trust bundle, current root first.
	RootsPEM []string

	renews    string // serial of the renewed certificate
	defaulted bool   // grant defaulted (renewed certificate had no record)
}

// ChainPEM returns leaf, intermediates, then the current root: one PEM
// certificate per element, leaf first, root last.
func (c *Certificate) ChainPEM() []string {
	out := make([]string, 0, 2+len(c.IntermediatesPEM))
	out = append(out, c.LeafPEM)
	out = append(out, c.IntermediatesPEM...)
	return append(out, c.RootsPEM[0])
}

// IstioChainPEM returns the chain as Istio's CreateCertificate returns it:
// leaf, intermediates, and as the last element the whole trust bundle
// (every root, concatenated), which Istio agents store as root-cert.pem.
// Outside a root rotation it equals ChainPEM.
func (c *Certificate) IstioChainPEM() []string {
	out := make([]string, 0, 2+len(c.IntermediatesPEM))
	out = append(out, c.LeafPEM)
	out = append(out, c.IntermediatesPEM...)
	return append(out, strings.Join(c.RootsPEM, ""))
}

// Issue authenticates the caller, checks the CSR and the TTL, signs a
// workload certificate for the caller's identity with cfssl, and returns
// it once its audit record is durable. Refusals are *RefusalError (with
// an audit record too). Safe for concurrent use.
func (ca *CA) Issue(ctx context.Context, req Request) (*Certificate, error) {
	now := ca.now()
	// rec.Caller is filled in by authentication (or by refused).
	rec := AuditRecord{Time: now.UTC(), Node: ca.cfg.NodeID, Remote: req.Remote}
	// Tell the audit writer a record is coming, so that it may wait for
	// it to share a store write (see Config.AuditLinger).
	ca.audit.begin()
	cert, grant, err := ca.issue(ctx, req, now, &rec)
	if err != nil {
		return nil, ca.refused(ctx, req, &rec, err, true)
	}
	rec.Outcome = OutcomeIssued
	rec.Serial = cert.Serial.Text(16)
	rec.NotAfter = cert.NotAfter
	// The certificate's record (its grant) is written with the audit
	// record, in the same store write.
	ca.life.expect(CertificateRecord{
		Serial: cert.Serial, Identity: cert.Identity.String(), TokenID: cert.TokenID, Grant: cert.Grant,
		NotAfter: cert.NotAfter, Renews: cert.renews, Defaulted: cert.defaulted,
	})
	defer ca.life.forget(cert.Serial)
	counted := "" // an unlimited token's use is counted with the audit batch
	if grant != nil {
		if grant.limited {
			rec.TokenUse = grant.legacy + grant.slot
		} else {
			counted = grant.hash
		}
	}
	if err := ca.audit.recordBegun(ctx, rec, counted); err != nil {
		// The certificate is withheld. A claimed use stays consumed: the
		// record may yet have been written.
		ca.m.refused.WithLabelValues(string(ReasonAuditFailed)).Inc()
		return nil, &RefusalError{Reason: ReasonAuditFailed, Err: ErrAudit, Detail: err.Error()}
	}
	ca.m.issued.Inc()
	return cert, nil
}

// Refuse accounts for a request that the API layer refused before it
// reached Issue (an undecodable body, an unsupported option) and returns
// it as a *RefusalError wrapping sentinel. Such a caller has not
// authenticated: the refusal is counted, spends the remote address's
// failure budget and is sampled in the log, but is not audited.
func (ca *CA) Refuse(ctx context.Context, req Request, reason Reason, sentinel error, detail string) error {
	rec := AuditRecord{Time: ca.now().UTC(), Node: ca.cfg.NodeID, Remote: req.Remote}
	return ca.refused(ctx, req, &rec, &RefusalError{Reason: reason, Err: sentinel, Detail: detail}, false)
}

// callerOf describes a request's credential for the audit log.
func callerOf(req Request) string {
	if req.Credential == nil {
		return "none"
	}
	return req.Credential.caller()
}

// refused records a refusal and returns err as a *RefusalError. begun
// says the caller announced the record with auditor.begin.
func (ca *CA) refused(ctx context.Context, req Request, rec *AuditRecord, err error, begun bool) error {
	var re *RefusalError
	if !errors.As(err, &re) {
		re = &RefusalError{Reason: ReasonSigningFailed, Err: ErrSigning, Detail: err.Error()}
	}
	ca.m.refused.WithLabelValues(string(re.Reason)).Inc()
	if re.Reason == ReasonClosed {
		if begun {
			ca.audit.cancel()
		}
		return re
	}
	if rec.Caller == "" {
		rec.Caller = callerOf(req)
	}
	now := ca.now()
	if re.Reason != ReasonRateLimited {
		ca.failures.take(remoteHost(req.Remote), now)
	}
	if !rec.authenticated || re.Reason == ReasonRateLimited {
		// Refusals of callers that did not authenticate, and rate-limit
		// refusals, cost a flood nothing to make: they are counted and
		// sampled in the log, never replicated.
		if begun {
			ca.audit.cancel()
		}
		if ca.cfg.RefusalLogPerMinute > 0 && ca.refusalLog.allow(now) {
			ca.log.Warn("certificate request refused (sampled)", "reason", re.Reason,
				"remote", truncateField(req.Remote), "caller", truncateField(rec.Caller), "err", truncateField(re.Detail))
		}
		return re
	}
	rec.Outcome = OutcomeRefused
	rec.Reason = re.Reason
	rec.Detail = re.Detail
	record := ca.audit.record
	if begun {
		record = ca.audit.recordBegun
	}
	if aerr := record(ctx, *rec, ""); aerr != nil {
		ca.log.Warn("refusal not audited", "reason", re.Reason, "err", aerr)
	}
	return re
}

// issue does the work of Issue; on success it returns the grant of the
// bearer token the caller authenticated with (nil for other credentials),
// with its use slot claimed if the token is use-limited.
func (ca *CA) issue(ctx context.Context, req Request, now time.Time, rec *AuditRecord) (*Certificate, *tokenGrant, error) {
	if ca.closed.Load() {
		return nil, nil, refuse(ReasonClosed, ErrClosed, "")
	}
	if remote := remoteHost(req.Remote); !ca.failures.has(remote, now) {
		// Checked before any work; refusals spend the bucket (refused).
		return nil, nil, refuse(ReasonRateLimited, ErrRateLimited, "more than %g refused requests per second from %s; retry later", ca.cfg.FailureRateLimit, remote)
	}
	ttl, err := ca.ttl(req.TTL)
	if err != nil {
		return nil, nil, err
	}
	csr, _, err := checkCSR(req.CSR, ca.cfg.MaxCSRBytes)
	if err != nil {
		return nil, nil, err
	}
	st := ca.state.Load()
	if len(st.retire) > 0 && st.retireDue(now) {
		// A previous root's time is up: drop it (and its cross
		// certificate) before signing. Rare; Reload is cheap otherwise.
		if err := ca.Reload(ctx); err != nil {
			ca.log.Warn("retiring the previous root failed", "err", err)
		}
		st = ca.state.Load()
	}
	if _, op := req.Credential.(Operator); op {
		rec.authenticated = true // by the API layer
	}
	id, grant, caller, err := ca.authenticate(ctx, req.Credential, req.Identity, csr, st, now)
	rec.Caller = caller
	if !id.IsZero() {
		rec.Identity = id.String()
	} else if !csr.Identity.IsZero() {
		rec.Identity = csr.Identity.String()
	}
	if err != nil {
		return nil, nil, err
	}
	rec.authenticated = true
	if _, op := req.Credential.(Operator); !op && !ca.callers.take(caller, now) {
		// Operators (the cfssl auth key, the node) may obtain any
		// identity anyway; only the global budget bounds them.
		return nil, nil, refuse(ReasonRateLimited, ErrRateLimited, "more than %g requests per second from %s; retry later", ca.cfg.CallerRateLimit, caller)
	}
	if !csr.Identity.IsZero() && csr.Identity != id {
		return nil, nil, refuse(ReasonIdentityMismatch, ErrPermissionDenied,
			"CSR names %s but the caller may only obtain %s", csr.Identity, id)
	}
	if !req.Identity.IsZero() && req.Identity != id {
		return nil, nil, refuse(ReasonIdentityMismatch, ErrPermissionDenied,
			"request asks for %s but the caller may only obtain %s", req.Identity, id)
	}
	if !ca.limiter.allow(now) {
		return nil, nil, refuse(ReasonRateLimited, ErrRateLimited, "more than %g certificates per second; retry later", ca.cfg.RateLimit)
	}
	is, err := ca.grantFor(ctx, req.Credential, grant, id, ttl)
	if err != nil {
		return nil, nil, err
	}
	if grant != nil && grant.limited {
		// Every check has passed: consume the use before signing, so
		// that no instance can sign more than the token allows.
		if err := ca.claimUse(ctx, grant); err != nil {
			return nil, nil, err
		}
	}
	cert, err := ca.sign(st, string(req.CSR), ProfileWorkload, []string{id.String()}, is.ttl, now)
	if err != nil {
		ca.unclaimUse(ctx, grant)
		return nil, nil, err
	}
	cert.Identity = id
	cert.Grant, cert.TokenID = is.record.Grant, is.record.TokenID
	cert.renews, cert.defaulted = is.record.Renews, is.record.Defaulted
	return cert, grant, nil
}

func (ca *CA) ttl(req time.Duration) (time.Duration, error) {
	if req <= 0 {
		return ca.cfg.DefaultTTL, nil
	}
	if req > ca.cfg.MaxTTL {
		return 0, refuse(ReasonTTLTooLong, ErrTTLTooLong, "requested TTL %v is greater than the max allowed TTL %v", req, ca.cfg.MaxTTL)
	}
	return req, nil
}

// authenticate returns the identity the credential authorizes, the grant
// of the bearer token it used (nil for other credentials), and the audit
// caller.
func (ca *CA) authenticate(ctx context.Context, cred Credential, want Identity, csr *CSR, st *signingState, now time.Time) (Identity, *tokenGrant, string, error) {
	switch c := cred.(type) {
	case nil:
		return Identity{}, nil, "none", refuse(ReasonNoCredential, ErrUnauthenticated, "no bearer token or client certificate")
	case BearerToken:
		id, g, err := ca.authToken(ctx, string(c), now)
		caller := "token:invalid"
		if g != nil {
			caller = "token:" + g.hash[:tokenIDLen]
		}
		if err != nil {
			return id, nil, caller, err
		}
		return id, g, caller, nil
	case PeerCertificates:
		id, err := ca.verifyPeerLive(ctx, c, st, now)
		return id, nil, c.caller(), err
	case Credentials:
		if len(c.Peer) > 0 {
			id, err := ca.verifyPeerLive(ctx, c.Peer, st, now)
			if err == nil || c.Token == "" {
				return id, nil, c.Peer.caller(), err
			}
		}
		if c.Token != "" {
			return ca.authenticate(ctx, c.Token, want, csr, st, now)
		}
		return Identity{}, nil, "none", refuse(ReasonNoCredential, ErrUnauthenticated, "no bearer token or client certificate")
	case Operator:
		caller := c.caller()
		if !want.IsZero() {
			if want.TrustDomain != ca.cfg.TrustDomain {
				return Identity{}, nil, caller, refuse(ReasonIdentityMismatch, ErrPermissionDenied, "identity %s is outside trust domain %s", want, ca.cfg.TrustDomain)
			}
			return want, nil, caller, nil
		}
		if csr.Identity.IsZero() {
			return Identity{}, nil, caller, refuse(ReasonIdentityMismatch, ErrPermissionDenied, "operator request: the CSR must carry the SPIFFE URI SAN to issue")
		}
		if csr.Identity.TrustDomain != ca.cfg.TrustDomain {
			return Identity{}, nil, caller, refuse(ReasonIdentityMismatch, ErrPermissionDenied, "identity %s is outside trust domain %s", csr.Identity, ca.cfg.TrustDomain)
		}
		return csr.Identity, nil, caller, nil
	default:
		return Identity{}, nil, "none", refuse(ReasonNoCredential, ErrUnauthenticated, "unsupported credential %T", cred)
	}
}

// VerifyPeer checks a TLS client's certificate chain (leaf first) against
// the trust bundle for client auth, now, and returns the SPIFFE identity
// of its leaf. A revoked leaf is refused (ErrCertRevoked). The API uses
// it to authenticate administrators.
func (ca *CA) VerifyPeer(chain []*x509.Certificate) (Identity, error) {
	return ca.verifyPeerLive(context.Background(), chain, ca.state.Load(), ca.now())
}

// verifyPeerLive is verifyPeer, then the revocation check.
func (ca *CA) verifyPeerLive(ctx context.Context, chain PeerCertificates, st *signingState, now time.Time) (Identity, error) {
	id, err := ca.verifyPeer(chain, st, now)
	if err != nil {
		return id, err
	}
	if err := ca.checkRevoked(ctx, chain[0].SerialNumber); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// verifyPeer checks a client certificate chain for renewal.
func (ca *CA) verifyPeer(chain PeerCertificates, st *signingState, now time.Time) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, refuse(ReasonNoCredential, ErrUnauthenticated, "no client certificate")
	}
	leaf := chain[0]
	inter := st.interPool
	if len(chain) > 1 {
		inter = st.interPool.Clone()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         st.rootPool,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return Identity{}, refuse(ReasonBadClientCert, ErrUnauthenticated, "client certificate does not verify: %v", err)
	}
	if len(leaf.URIs) != 1 {
		return Identity{}, refuse(ReasonBadClientCert, ErrUnauthenticated, "client certificate has %d URI SANs, want 1", len(leaf.URIs))
	}
	id, err := IdentityFromURL(leaf.URIs[0])
	if err != nil {
		return Identity{}, refuse(ReasonBadClientCert, ErrUnauthenticated, "client certificate: %v", err)
	}
	if id.TrustDomain != ca.cfg.TrustDomain {
		return Identity{}, refuse(ReasonBadClientCert, ErrUnauthenticated, "client certificate identity %s is outside trust domain %s", id, ca.cfg.TrustDomain)
	}
	return id, nil
}

// sign has cfssl sign csrPEM with profile, for exactly hosts.
func (ca *CA) sign(st *signingState, csrPEM, profile string, hosts []string, ttl time.Duration, now time.Time) (*Certificate, error) {
	notBefore := now.Add(-ca.cfg.Backdate).UTC()
	notAfter := now.Add(ttl).UTC()
	// Never past the signing certificate, nor anything above it.
	limit := st.cert.NotAfter
	for _, c := range st.chain {
		if c.NotAfter.Before(limit) {
			limit = c.NotAfter
		}
	}
	if st.root.NotAfter.Before(limit) {
		limit = st.root.NotAfter
	}
	if limit.Before(notAfter) {
		notAfter = limit
	}
	if !notAfter.After(now) {
		return nil, refuse(ReasonSigningFailed, ErrSigning, "the CA certificate expired at %s", limit.Format(time.RFC3339))
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, refuse(ReasonSigningFailed, ErrSigning, "%v", err)
	}
	leaf, err := st.signer.Sign(signer.SignRequest{
		Request:   csrPEM,
		Profile:   profile,
		Hosts:     hosts, // non-nil: replaces whatever SANs the CSR has
		Serial:    serial,
		NotBefore: notBefore,
		NotAfter:  notAfter,
	})
	if err != nil {
		return nil, cfsslRefusal(err)
	}
	return &Certificate{
		Serial:           serial,
		NotBefore:        notBefore,
		NotAfter:         notAfter,
		LeafPEM:          string(leaf),
		IntermediatesPEM: append([]string(nil), st.intermediatesPEM...),
		RootsPEM:         append([]string(nil), st.rootsPEM...),
	}, nil
}

// cfsslRefusal maps a cfssl signing error to a refusal.
func cfsslRefusal(err error) error {
	var ce *cferr.Error
	if errors.As(err, &ce) {
		switch {
		case ce.ErrorCode == int(cferr.CSRError)+int(cferr.KeyMismatch):
			return refuse(ReasonCSRSignature, ErrBadCSR, "CSR signature does not verify")
		case ce.ErrorCode/1000 == int(cferr.CSRError)/1000:
			return refuse(ReasonCSRMalformed, ErrBadCSR, "cfssl: %s", ce.Message)
		}
	}
	return &RefusalError{Reason: ReasonSigningFailed, Err: ErrSigning, Detail: fmt.Sprintf("cfssl: %v", err)}
}
