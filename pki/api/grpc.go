package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshgate/meshgate/pki"
)

// grpcService implements istio.v1.auth.IstioCertificateService.
type grpcService struct {
	pb.UnimplementedIstioCertificateServiceServer
	s *Server
}

// CreateCertificate issues a workload certificate for the caller. The
// reply's cert_chain is leaf, intermediates, then the trust bundle as the
// last element, as istiod answers.
func (g *grpcService) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	var cred pki.Credentials
	// ValueFromIncomingContext copies only this key's values, not the
	// whole metadata map as FromIncomingContext does.
	cred.Token = bearer(metadata.ValueFromIncomingContext(ctx, "authorization"))
	remote := ""
	if p, ok := peer.FromContext(ctx); ok {
		if p.Addr != nil {
			remote = p.Addr.String()
		}
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			cred.Peer = ti.State.PeerCertificates
		}
	}
	r, err := decodeGRPCRequest(req)
	r.Credential, r.Remote = cred, remote
	if err != nil {
		err = g.s.ca.Refuse(ctx, r, reasonFor(err), err, "")
		g.s.m.requests.WithLabelValues("grpc", codeOf(err).String()).Inc()
		g.s.m.refusal(err)
		return nil, grpcError(err)
	}
	cert, err := g.s.ca.Issue(ctx, r)
	if err != nil {
		g.s.m.requests.WithLabelValues("grpc", codeOf(err).String()).Inc()
		g.s.m.refusal(err)
		return nil, grpcError(err)
	}
	g.s.m.grpcOK.Inc()
	return &pb.IstioCertificateResponse{CertChain: cert.IstioChainPEM()}, nil
}

var errImpersonation = fmt.Errorf("%w: ImpersonatedIdentity is not supported (no trusted node accounts)", pki.ErrPermissionDenied)

// reasonFor is the audit reason of a decoding error.
func reasonFor(err error) pki.Reason {
	if errors.Is(err, pki.ErrPermissionDenied) {
		return pki.ReasonIdentityMismatch
	}
	return pki.ReasonBadRequest
}

// decodeGRPCRequest turns an IstioCertificateRequest into a pki.Request
// (without credentials). validity_duration is seconds; <= 0 means the
// default, and values beyond what a time.Duration holds saturate (and are
// then refused as above the maximum). Metadata asking for impersonation
// is refused: meshgate has no trusted node accounts.
func decodeGRPCRequest(req *pb.IstioCertificateRequest) (pki.Request, error) {
	if req == nil || req.GetCsr() == "" {
		return pki.Request{}, fmt.Errorf("%w: csr is empty", ErrBadRequest)
	}
	if md := req.GetMetadata(); md != nil {
		if v, ok := md.GetFields()["ImpersonatedIdentity"]; ok && !isEmptyValue(v) {
			return pki.Request{}, errImpersonation
		}
	}
	return pki.Request{CSR: []byte(req.GetCsr()), TTL: secondsTTL(req.GetValidityDuration())}, nil
}

func isEmptyValue(v *structpb.Value) bool {
	if v == nil {
		return true
	}
	switch k := v.GetKind().(type) {
	case nil, *structpb.Value_NullValue:
		return true
	case *structpb.Value_StringValue:
		return k.StringValue == ""
	}
	return false
}

// secondsTTL converts seconds to a Duration, saturating.
func secondsTTL(s int64) time.Duration {
	if s <= 0 {
		return 0
	}
	if s > math.MaxInt64/int64(time.Second) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(s) * time.Second
}

// bearer extracts the token of the first "Bearer <token>" value.
func bearer(vals []string) pki.BearerToken {
	for _, v := range vals {
		scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
		if ok && strings.EqualFold(scheme, "bearer") {
			return pki.BearerToken(strings.TrimSpace(tok))
		}
	}
	return ""
}

// handshakenCreds are gRPC transport credentials for connections whose
// TLS handshake the server already did (to route them by ALPN): they hand
// the *tls.Conn through and report its state as credentials.TLSInfo, so
// peer.FromContext sees the client certificate.
type handshakenCreds struct{}

func (handshakenCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, fmt.Errorf("api: server-only credentials")
}

func (handshakenCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil, nil, fmt.Errorf("api: connection of type %T is not TLS", c)
	}
	return tc, credentials.TLSInfo{
		State:          tc.ConnectionState(),
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
	}, nil
}

func (handshakenCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (h handshakenCreds) Clone() credentials.TransportCredentials { return h }

func (handshakenCreds) OverrideServerName(string) error { return nil }
