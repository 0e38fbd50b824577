package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Istio plug-in CA file names (the cacerts secret / ROOT_CA_DIR layout).
const (
	FileCACert    = "ca-cert.pem"
	FileCAKey     = "ca-key.pem"
	FileRootCert  = "root-cert.pem"
	FileCertChain = "cert-chain.pem"
)

// PluginCA is a CA read from Istio's plug-in files.
type PluginCA struct {
	// Key signs; it matches Cert.
	Key crypto.Signer
	// Cert is ca-cert.pem, the signing (usually intermediate) certificate.
	Cert *x509.Certificate
	// Chain are the certificates strictly between Cert and Root, nearest
	// first, taken from cert-chain.pem.
	Chain []*x509.Certificate
	// Root is the root in root-cert.pem that Cert chains to.
	Root *x509.Certificate
	// OtherRoots are the other roots root-cert.pem holds, kept in the
	// trust bundle beside Root: during a plug-in root rotation the file
	// carries both the old and the new root (see README).
	OtherRoots []*x509.Certificate
}

// LoadPluginCA reads ca-cert.pem, ca-key.pem, root-cert.pem and
// cert-chain.pem from dir and checks that they form one CA: the key
// matches ca-cert.pem, ca-cert.pem is a CA with keyCertSign, and it chains
// through cert-chain.pem to root-cert.pem. cert-chain.pem may be absent
// when ca-cert.pem is the root itself. Errors wrap ErrCAFiles and name the
// file.
func LoadPluginCA(dir string) (*PluginCA, error) {
	read := func(name string, optional bool) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			if optional && errors.Is(err, fs.ErrNotExist) {
				return nil, nil
			}
			return nil, fmt.Errorf("%w: %v", ErrCAFiles, err)
		}
		return b, nil
	}
	certPEMBytes, err := read(FileCACert, false)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read(FileCAKey, false)
	if err != nil {
		return nil, err
	}
	rootPEM, err := read(FileRootCert, false)
	if err != nil {
		return nil, err
	}
	chainPEM, err := read(FileCertChain, true)
	if err != nil {
		return nil, err
	}
	fileErr := func(name string, err error) error {
		return fmt.Errorf("%w: %s: %v", ErrCAFiles, filepath.Join(dir, name), err)
	}

	certs, err := parseCertsPEM(certPEMBytes)
	if err != nil {
		return nil, fileErr(FileCACert, err)
	}
	cert := certs[0] // extra certificates in ca-cert.pem are ignored
	roots, err := parseCertsPEM(rootPEM)
	if err != nil {
		return nil, fileErr(FileRootCert, err)
	}
	rootPool := x509.NewCertPool()
	for i, r := range roots {
		if !bytes.Equal(r.RawIssuer, r.RawSubject) || r.CheckSignatureFrom(r) != nil {
			return nil, fileErr(FileRootCert, fmt.Errorf("certificate %d (%s) is not self-signed", i+1, r.Subject))
		}
		rootPool.AddCert(r)
	}
	key, err := ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, fileErr(FileCAKey, err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, fileErr(FileCAKey, errors.New("key does not match "+FileCACert))
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fileErr(FileCACert, errors.New("not a CA certificate with keyCertSign"))
	}
	inter := x509.NewCertPool()
	if chainPEM != nil {
		chainCerts, err := parseCertsPEM(chainPEM)
		if err != nil {
			return nil, fileErr(FileCertChain, err)
		}
		for _, c := range chainCerts {
			inter.AddCert(c)
		}
	}
	at := cert.NotBefore.Add(time.Second)
	for _, r := range roots {
		if r.NotBefore.After(at) && !r.NotBefore.After(cert.NotAfter) {
			at = r.NotBefore.Add(time.Second)
		}
	}
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots:         rootPool,
		Intermediates: inter,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fileErr(FileCACert, fmt.Errorf("does not chain to %s through %s: %v", FileRootCert, FileCertChain, err))
	}
	path := chains[0] // cert, intermediates..., root
	root := path[len(path)-1]
	p := &PluginCA{Key: key, Cert: cert, Root: root}
	if len(path) > 2 {
		p.Chain = path[1 : len(path)-1]
	}
	for _, r := range roots {
		if !r.Equal(root) && !slices.ContainsFunc(p.OtherRoots, r.Equal) {
			p.OtherRoots = append(p.OtherRoots, r)
		}
	}
	return p, nil
}

// ParsePrivateKeyPEM parses the first PEM private key in data: PKCS#8,
// PKCS#1 RSA or SEC 1 EC. Encrypted PEM is not supported.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no PEM private key found")
		}
		var (
			k   any
			err error
		)
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted private keys are not supported")
		default:
			continue // e.g. "EC PARAMETERS"
		}
		if err != nil {
			return nil, err
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("key of type %T cannot sign", k)
		}
		return s, nil
	}
}
