package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cloudflare/cfssl/signer/local"
)

// stateVersion is the version of the caState encoding.
const stateVersion = 1

// Sources of the CA.
const (
	sourceSelfSigned = "self-signed"
	sourcePlugin     = "plugin"
)

// caState is what the store holds under keyState (JSON). The CA key is
// sealed with the key-encryption key; nothing in here is secret in clear.
type caState struct {
	Version   int       `json:"version"`
	Source    string    `json:"source"`
	CreatedAt time.Time `json:"createdAt"`
	// SigningCert signs workload certificates (PEM). For a self-signed CA
	// it is the root.
	SigningCert string `json:"signingCert"`
	// Chain holds the certificates a leaf needs between SigningCert and
	// Root (PEM, nearest first). During a root rotation it holds the new
	// root cross-signed by the previous one.
	Chain []string `json:"chain,omitempty"`
	// Root is the root the chain ends in (PEM).
	Root string `json:"root"`
	// PrevRoots are earlier roots still in the trust bundle until
	// RetireAfter (root rotation).
	PrevRoots []prevRoot `json:"prevRoots,omitempty"`
	// KEKID fingerprints the key-encryption key SealedKey was sealed with.
	KEKID string `json:"kekId"`
	// SealedKey is the PKCS#8 CA key sealed with AES-256-GCM.
	SealedKey []byte `json:"sealedKey"`
}

type prevRoot struct {
	Cert        string    `json:"cert"`
	RetireAfter time.Time `json:"retireAfter"`
}

// signingState is a parsed caState, immutable once published.
type signingState struct {
	raw     []byte // the stored JSON it was built from
	source  string
	signer  *local.Signer
	key     crypto.Signer
	cert    *x509.Certificate
	chain   []*x509.Certificate // between cert and root
	root    *x509.Certificate
	roots   []*x509.Certificate // bundle: root first, then unretired previous roots
	retire  []time.Time         // parallel to roots[1:]
	created time.Time

	intermediatesPEM []string // chain, then cert itself unless it is the root
	rootPEM          string
	rootsPEM         []string
	bundlePEM        string // every root, concatenated (Istio's last chain element)

	rootPool  *x509.CertPool // the bundle
	interPool *x509.CertPool // cert (if not root) and chain
}

func caKeyAAD(signingDER []byte) []byte {
	sum := sha256.Sum256(signingDER)
	return append([]byte("meshgate pki ca key v1\x00"), sum[:]...)
}

// sealState builds the stored form of a CA.
func sealState(k *kek, key crypto.Signer, source string, created time.Time, signing *x509.Certificate, chain []*x509.Certificate, root *x509.Certificate, prev []prevRoot) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: marshal CA key: %w", err)
	}
	sealed, err := k.seal(der, caKeyAAD(signing.Raw))
	clear(der)
	if err != nil {
		return nil, err
	}
	st := caState{
		Version:     stateVersion,
		Source:      source,
		CreatedAt:   created.UTC(),
		SigningCert: certPEM(signing),
		Root:        certPEM(root),
		PrevRoots:   prev,
		KEKID:       k.id,
		SealedKey:   sealed,
	}
	for _, c := range chain {
		st.Chain = append(st.Chain, certPEM(c))
	}
	return json.Marshal(st)
}

// openState parses and checks a stored CA and builds its signer.
func openState(raw []byte, k *kek, now time.Time) (*signingState, error) {
	var st caState
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("pki: stored CA state: %w", err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("pki: stored CA state has version %d, want %d", st.Version, stateVersion)
	}
	if st.KEKID != k.id {
		return nil, fmt.Errorf("%w: the CA key was sealed with key-encryption key %s, this node has %s", ErrKEK, st.KEKID, k.id)
	}
	cert, err := parseOneCert(st.SigningCert)
	if err != nil {
		return nil, fmt.Errorf("pki: stored signing certificate: %w", err)
	}
	root, err := parseOneCert(st.Root)
	if err != nil {
		return nil, fmt.Errorf("pki: stored root certificate: %w", err)
	}
	var chain []*x509.Certificate
	for i, p := range st.Chain {
		c, err := parseOneCert(p)
		if err != nil {
			return nil, fmt.Errorf("pki: stored chain certificate %d: %w", i, err)
		}
		chain = append(chain, c)
	}
	der, err := k.open(st.SealedKey, caKeyAAD(cert.Raw))
	if err != nil {
		return nil, err
	}
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	clear(der)
	if err != nil {
		return nil, fmt.Errorf("pki: stored CA key: %w", err)
	}
	key, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki: stored CA key of type %T cannot sign", parsed)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("pki: stored CA key does not match the signing certificate")
	}
	s := &signingState{
		raw:     raw,
		source:  st.Source,
		key:     key,
		cert:    cert,
		chain:   chain,
		root:    root,
		created: st.CreatedAt,
	}
	s.roots = append(s.roots, root)
	for i, p := range st.PrevRoots {
		if !now.Before(p.RetireAfter) {
			continue // retired: every leaf it signed has expired
		}
		c, err := parseOneCert(p.Cert)
		if err != nil {
			return nil, fmt.Errorf("pki: stored previous root %d: %w", i, err)
		}
		s.roots = append(s.roots, c)
		s.retire = append(s.retire, p.RetireAfter)
	}
	if len(s.retire) == 0 && len(chain) > 0 && isCrossOf(chain[0], cert) {
		// Rotation finished: the cross-signed root is no longer needed.
		chain = chain[1:]
		s.chain = chain
	}
	if err := s.finish(); err != nil {
		return nil, err
	}
	return s, nil
}

// isCrossOf reports whether c certifies the same key and subject as root
// (a cross-signed copy of it).
func isCrossOf(c, root *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, root.RawSubject) && bytes.Equal(c.RawSubjectPublicKeyInfo, root.RawSubjectPublicKeyInfo) &&
		!bytes.Equal(c.Raw, root.Raw)
}

// finish checks the chain and precomputes everything the hot path reads.
func (s *signingState) finish() error {
	s.rootPool = x509.NewCertPool()
	for _, r := range s.roots {
		s.rootPool.AddCert(r)
	}
	s.interPool = x509.NewCertPool()
	for _, c := range s.chain {
		s.interPool.AddCert(c)
	}
	selfRoot := bytes.Equal(s.cert.Raw, s.root.Raw)
	if !selfRoot {
		s.interPool.AddCert(s.cert)
	}
	if !s.cert.IsCA || s.cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%w: signing certificate is not a CA with keyCertSign", ErrCAFiles)
	}
	// The signing certificate must chain to the current root. The check is
	// structural, at a time when every certificate is valid, so an expired
	// CA still loads (and then refuses to issue).
	at := s.cert.NotBefore
	for _, c := range append([]*x509.Certificate{s.root}, s.chain...) {
		if c.NotBefore.After(at) {
			at = c.NotBefore
		}
	}
	if _, err := s.cert.Verify(x509.VerifyOptions{
		Roots:         singlePool(s.root),
		Intermediates: s.interPool,
		CurrentTime:   at.Add(time.Second),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("%w: signing certificate does not chain to the root: %v", ErrCAFiles, err)
	}
	sg, err := newSigner(s.key, s.cert)
	if err != nil {
		return err
	}
	s.signer = sg
	// A leaf's chain is: leaf, signing cert (unless it is the root), the
	// chain, then the root bundle.
	if !selfRoot {
		s.intermediatesPEM = append(s.intermediatesPEM, certPEM(s.cert))
	}
	for _, c := range s.chain {
		s.intermediatesPEM = append(s.intermediatesPEM, certPEM(c))
	}
	s.rootPEM = certPEM(s.root)
	var b strings.Builder
	for _, r := range s.roots {
		p := certPEM(r)
		s.rootsPEM = append(s.rootsPEM, p)
		b.WriteString(p)
	}
	s.bundlePEM = b.String()
	return nil
}

func singlePool(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

func certPEM(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

// parseOneCert parses exactly one PEM certificate.
func parseOneCert(p string) (*x509.Certificate, error) {
	certs, err := parseCertsPEM([]byte(p))
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("want 1 certificate, found %d", len(certs))
	}
	return certs[0], nil
}

// parseCertsPEM parses every CERTIFICATE block; any other block or
// trailing non-whitespace is an error.
func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("trailing data after the last PEM certificate")
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return out, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	switch k := a.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
		return k.(equaler).Equal(b)
	}
	return false
}
