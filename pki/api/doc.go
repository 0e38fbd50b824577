// Package api serves the CA's certificate API on one TLS port (default
// 15012), with a server certificate the CA issues to the node itself:
//
//   - gRPC istio.v1.auth.IstioCertificateService/CreateCertificate
//     (istio.io/api security/v1alpha1), so an Istio agent pointed at it
//     with CA_ADDR gets its workload certificate. The caller authenticates
//     with "authorization: Bearer <token>" metadata or with its current
//     workload certificate (mTLS renewal).
//   - HTTP JSON: POST /v1/certificates {"csr","ttl"} -> {"certChain",
//     "rootCerts"}; GET /v1/roots; and the token administration endpoints
//     POST/GET /v1/tokens, DELETE /v1/tokens/{id}.
//   - cfssl-compatible POST /api/v1/cfssl/info and /api/v1/cfssl/authsign
//     (HMAC auth key), so that the cfssl CLI works against it
//     (cfssl info -remote, cfssl sign -remote with an auth_remote config).
//     /api/v1/cfssl/sign only accepts a client certificate (renewal).
//     Unknown profiles are refused, not defaulted, and a request's hosts
//     can neither widen nor strip the SPIFFE SAN.
//
// gRPC clients that offer only "h2" in ALPN (grpc-go, Envoy) are served
// by grpc-go's own transport; everything else (HTTP/1.1, or HTTP/2 from
// clients that also offer http/1.1) by net/http, which hands gRPC
// requests it sees to the same service.
//
//	srv, err := api.NewServer(api.DefaultConfig(), ca)
//	ln, _ := net.Listen("tcp", ":15012")
//	go srv.Serve(ctx, ln) // returns when ctx is done
//	defer srv.Close()
package api
