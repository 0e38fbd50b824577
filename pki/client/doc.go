// Package client has the library side of the meshgate CLI's certificate
// commands, so that cmd/meshgate only parses flags:
//
//   - cert issue: Issue (gRPC CreateCertificate with a bearer token) then
//     WriteBundle(dir) -> key.pem (0600), cert-chain.pem, root-cert.pem,
//     the files Istio's VM setup uses;
//
//   - cert renew: LoadBundle(dir), Renew (mTLS with the current
//     certificate, same identity, new key), WriteBundle(dir);
//
//   - token create|list|revoke: CreateToken, ListTokens, RevokeToken over
//     the HTTP admin API;
//
//   - ca init|show: InitCA (against the local store) and WriteCAInfo,
//     FetchRoots for a remote node.
//
//     b, err := client.Issue(ctx, client.Config{Addr: "gw:15012", RootCAs: pool},
//     client.IssueRequest{TrustDomain: "cluster.local", Namespace: "ns", ServiceAccount: "sa", Token: tok})
//     if err == nil {
//     err = client.WriteBundle("/etc/certs", b)
//     }
package client
