package pki_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/store"
)

func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "pki-example")
	defer os.RemoveAll(dir)

	cfg := pki.DefaultConfig()
	cfg.KEKFile = filepath.Join(dir, "kek")
	if err := pki.WriteKEKFile(cfg.KEKFile); err != nil {
		fmt.Println(err)
		return
	}
	ca, err := pki.NewCA(ctx, cfg, store.NewMemory())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ca.Close()

	// An operator mints a token for default/web...
	secret, _, err := ca.CreateToken(ctx, pki.TokenRequest{Namespace: "default", ServiceAccount: "web", Uses: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	// ...and the workload exchanges it for a certificate.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	cert, err := ca.Issue(ctx, pki.Request{CSR: csr, Credential: pki.BearerToken(secret)})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cert.Identity, len(cert.ChainPEM()))

	// The token had one use.
	_, err = ca.Issue(ctx, pki.Request{CSR: csr, Credential: pki.BearerToken(secret)})
	fmt.Println(pki.ReasonOf(err))
	// Output:
	// spiffe://cluster.local/ns/default/sa/web 2
	// token_used_up
}
