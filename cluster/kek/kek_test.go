package kek

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

func TestSealOpenKEK(t *testing.T) {
	node, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kek := []byte(strings.Repeat("ab", 32) + "\n")
	g, err := sealKEK(&node.PublicKey, kek, "gw-1")
	if err != nil {
		t.Fatalf("sealKEK = %v", err)
	}
	if bytes.Contains(g.Sealed, kek[:16]) {
		t.Fatal("sealed grant contains the KEK in the clear")
	}
	got, err := openKEK(node, g)
	if err != nil || !bytes.Equal(got, kek) {
		t.Fatalf("openKEK(right key) = %q, %v; want the KEK", got, err)
	}
	tests := []struct {
		name  string
		key   *ecdsa.PrivateKey
		grant func(kekGrant) kekGrant
	}{
		{"another node's key", other, func(g kekGrant) kekGrant { return g }},
		{"granter name changed", node, func(g kekGrant) kekGrant { g.Granter = "gw-9"; return g }},
		{"ciphertext flipped", node, func(g kekGrant) kekGrant {
			g.Sealed = bytes.Clone(g.Sealed)
			g.Sealed[0] ^= 1
			return g
		}},
		{"short nonce", node, func(g kekGrant) kekGrant { g.Nonce = g.Nonce[:4]; return g }},
		{"ephemeral key not a point", node, func(g kekGrant) kekGrant { g.Ephemeral = []byte{4, 1, 2, 3}; return g }},
		{"no ephemeral key", node, func(g kekGrant) kekGrant { g.Ephemeral = nil; return g }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := openKEK(tc.key, tc.grant(g)); err == nil || !errors.Is(err, ErrGrant) {
				t.Fatalf("openKEK(%s) = %q, %v; want an ErrGrant error", tc.name, got, err)
			}
		})
	}
}

func testCertPEM(t testing.TB) string {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestParseChain(t *testing.T) {
	cert := testCertPEM(t)
	tests := []struct {
		name string
		in   string
		n    int // certificates wanted; 0 = an error
	}{
		{"one certificate", cert, 1},
		{"two certificates", cert + cert, 2},
		{"empty", "", 0},
		{"not PEM", "hello", 0},
		{"a key block", "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n", 0},
		{"garbage DER", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", 0},
		{"nine certificates", strings.Repeat(cert, 9), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := parseChain(tc.in)
			if tc.n == 0 {
				if err == nil || !errors.Is(err, ErrGrant) {
					t.Fatalf("parseChain(%s) = %d certs, %v; want an ErrGrant error", tc.name, len(chain), err)
				}
				return
			}
			if err != nil || len(chain) != tc.n {
				t.Fatalf("parseChain(%s) = %d certs, %v; want %d", tc.name, len(chain), err, tc.n)
			}
		})
	}
}

// FuzzKEKRecords feeds arbitrary store records to the request and grant
// decoders: they must refuse with ErrGrant, never panic.
func FuzzKEKRecords(f *testing.F) {
	node, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	g, _ := sealKEK(&node.PublicKey, []byte("kek"), "gw-1")
	gj, _ := json.Marshal(g)
	rj, _ := json.Marshal(kekRequest{Chain: testCertPEM(f)})
	f.Add(gj)
	f.Add(rj)
	f.Add([]byte(`{"chain":"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----"}`))
	f.Add([]byte(`{"ephemeral":"BA==","nonce":"","sealed":""}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var req kekRequest
		if json.Unmarshal(raw, &req) == nil {
			if _, err := parseChain(req.Chain); err != nil && !errors.Is(err, ErrGrant) {
				t.Fatalf("parseChain error %v does not wrap ErrGrant", err)
			}
		}
		var gr kekGrant
		if json.Unmarshal(raw, &gr) == nil {
			if _, err := openKEK(node, gr); err != nil && !errors.Is(err, ErrGrant) {
				t.Fatalf("openKEK error %v does not wrap ErrGrant", err)
			}
		}
	})
}
