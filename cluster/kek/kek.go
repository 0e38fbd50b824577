// Package kek shares a fleet's key-encryption key (KEK) with nodes that
// joined with a token: the KEK seals the CA key kept in the replicated
// store, so a node without it cannot run the CA. The request and the grant
// travel through the replicated store; the grant is sealed to the
// requesting node's certificate key, so the KEK never sits in the store or
// crosses gossip in the clear.
//
//	// On a joining node:
//	err := kek.Request(ctx, node, id, filepath.Join(dataDir, "kek"))
//	// On nodes holding the KEK:
//	g := kek.NewGranter(node, id, filepath.Join(dataDir, "kek"), log)
//	g.Start(ctx)
//	defer g.Close()
package kek

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/meshgate/meshgate/cluster"
	"github.com/meshgate/meshgate/mtls"
	"github.com/meshgate/meshgate/pki"
	"github.com/meshgate/meshgate/pki/client"
)

// NodeCert is the node's own certificate and trust, as a nodeid.Identity
// provides them. Its methods must be safe for concurrent use.
type NodeCert interface {
	// Current is the node's certificate bundle, or nil while it has none.
	Current() *client.Bundle
	// Source holds the current mesh roots.
	Source() *mtls.Source
	// Authorizer admits the identities allowed to get the KEK.
	Authorizer() mtls.Authorizer
}

// Store is the replicated store the request and grant travel through, as
// a cluster.Node provides it.
type Store interface {
	Name() string
	Get(key string) (cluster.Record, bool)
	List(prefix string) []cluster.Record
	Watch(prefix string) (<-chan struct{}, func())
	Apply(ctx context.Context, ops ...cluster.Op) (uint64, error)
}

var _ Store = (*cluster.Node)(nil)

// A node that joined with a token has a node identity but not the fleet's
// key-encryption key, without which it cannot unseal the CA key kept in
// the replicated store. It asks for it through the store: it publishes its
// certificate chain under kekRequestPrefix, a node that holds the KEK
// checks the chain (mesh root, an allowed node identity) and answers under
// kekGrantPrefix with the KEK sealed to the certificate's public key
// (ephemeral ECDH P-256, HKDF-SHA256, AES-256-GCM). Only the holder of the
// node's private key can open the grant, and the KEK never crosses gossip
// or sits in the store in the clear.
const (
	kekRequestPrefix = "kek/requests/"
	kekGrantPrefix   = "kek/grants/"
	kekGrantInfo     = "meshgate kek grant v1"
)

// ErrGrant: a KEK grant or request is malformed or not for this node.
var ErrGrant = errors.New("kek: grant")

type kekRequest struct {
	Chain string `json:"chain"` // PEM, leaf first
}

type kekGrant struct {
	Ephemeral []byte `json:"ephemeral"` // uncompressed P-256 point
	Nonce     []byte `json:"nonce"`
	Sealed    []byte `json:"sealed"`
	Granter   string `json:"granter"`
}

// sealKEK seals kek to pub (the requesting node's certificate key).
func sealKEK(pub *ecdsa.PublicKey, kek []byte, granter string) (kekGrant, error) {
	to, err := pub.ECDH()
	if err != nil {
		return kekGrant{}, fmt.Errorf("%w: node key: %w", ErrGrant, err)
	}
	eph, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return kekGrant{}, fmt.Errorf("%w: %w", ErrGrant, err)
	}
	aead, err := grantAEAD(eph, to, eph.PublicKey().Bytes())
	if err != nil {
		return kekGrant{}, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return kekGrant{}, fmt.Errorf("%w: %w", ErrGrant, err)
	}
	return kekGrant{Ephemeral: eph.PublicKey().Bytes(), Nonce: nonce, Sealed: aead.Seal(nil, nonce, kek, []byte(granter)), Granter: granter}, nil
}

// openKEK opens a grant with the node's private key.
func openKEK(priv *ecdsa.PrivateKey, g kekGrant) ([]byte, error) {
	own, err := priv.ECDH()
	if err != nil {
		return nil, fmt.Errorf("%w: node key: %w", ErrGrant, err)
	}
	eph, err := ecdh.P256().NewPublicKey(g.Ephemeral)
	if err != nil {
		return nil, fmt.Errorf("%w: ephemeral key: %w", ErrGrant, err)
	}
	aead, err := grantAEAD(own, eph, g.Ephemeral)
	if err != nil {
		return nil, err
	}
	if len(g.Nonce) != aead.NonceSize() {
		return nil, fmt.Errorf("%w: nonce is %d bytes, want %d", ErrGrant, len(g.Nonce), aead.NonceSize())
	}
	kek, err := aead.Open(nil, g.Nonce, g.Sealed, []byte(g.Granter))
	if err != nil {
		return nil, fmt.Errorf("%w: grant does not open with this node's key", ErrGrant)
	}
	return kek, nil
}

func grantAEAD(priv *ecdh.PrivateKey, pub *ecdh.PublicKey, ephemeral []byte) (cipher.AEAD, error) {
	shared, err := priv.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGrant, err)
	}
	key, err := hkdf.Key(sha256.New, shared, ephemeral, kekGrantInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGrant, err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGrant, err)
	}
	return cipher.NewGCM(block)
}

// parseChain reads a PEM chain of at most 8 certificates.
func parseChain(s string) ([]*x509.Certificate, error) {
	rest := []byte(s)
	var chain []*x509.Certificate
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: chain holds a %q block", ErrGrant, b.Type)
		}
		if len(chain) == 8 {
			return nil, fmt.Errorf("%w: chain is longer than 8 certificates", ErrGrant)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrGrant, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: no certificate in the request", ErrGrant)
	}
	return chain, nil
}

// Request asks the fleet for its KEK and writes it to kekFile (0600). It
// waits (bounded by ctx) for a node that holds the KEK to answer.
func Request(ctx context.Context, node Store, ident NodeCert, kekFile string) error {
	b := ident.Current()
	if b == nil {
		return fmt.Errorf("%w: no node certificate yet", ErrGrant)
	}
	priv, ok := b.Key.(*ecdsa.PrivateKey)
	if !ok {
		return fmt.Errorf("%w: node key is not ECDSA", ErrGrant)
	}
	var chain strings.Builder
	for _, c := range b.Chain {
		pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	req, _ := json.Marshal(kekRequest{Chain: chain.String()})
	grantKey := kekGrantPrefix + node.Name()
	ch, cancel := node.Watch(grantKey)
	defer cancel()
	// A grant left from an earlier attempt (another key) is replaced.
	if _, err := node.Apply(ctx, cluster.Delete(grantKey), cluster.Put(kekRequestPrefix+node.Name(), req)); err != nil {
		return fmt.Errorf("%w: publish request: %w", ErrGrant, err)
	}
	for {
		if rec, ok := node.Get(grantKey); ok {
			var g kekGrant
			if err := json.Unmarshal(rec.Value, &g); err != nil {
				return fmt.Errorf("%w: %w", ErrGrant, err)
			}
			kek, err := openKEK(priv, g)
			if err != nil {
				return err
			}
			if err := writeFileAtomic(kekFile, kek, 0o600); err != nil {
				return err
			}
			_, _ = node.Apply(context.WithoutCancel(ctx), cluster.Delete(grantKey), cluster.Delete(kekRequestPrefix+node.Name()))
			return nil
		}
		select {
		case <-ctx.Done():
			_, _ = node.Apply(context.WithoutCancel(ctx), cluster.Delete(kekRequestPrefix+node.Name()))
			return fmt.Errorf("%w: no node holding the KEK answered: %w", ErrGrant, ctx.Err())
		case <-ch:
		}
	}
}

// Granter answers KEK requests of nodes whose certificate chains to the
// mesh roots and carries an allowed node identity. It runs on nodes that
// hold the KEK; several may answer the same request, the first write wins.
// It runs between Start and Close.
type Granter struct {
	node    Store
	ident   NodeCert
	kekFile string
	log     *slog.Logger
	stop    context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once
}

// NewGranter answers requests with the KEK in kekFile.
func NewGranter(node Store, ident NodeCert, kekFile string, log *slog.Logger) *Granter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Granter{node: node, ident: ident, kekFile: kekFile, log: log}
}

// Start watches for requests until Close.
func (g *Granter) Start(ctx context.Context) error {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g.stop = cancel
	ch, unwatch := g.node.Watch(kekRequestPrefix)
	g.wg.Go(func() {
		defer unwatch()
		for {
			g.answer(wctx)
			select {
			case <-wctx.Done():
				return
			case <-ch:
			case <-time.After(30 * time.Second):
			}
		}
	})
	return nil
}

// Close stops answering and waits. Idempotent.
func (g *Granter) Close() error {
	g.once.Do(func() {
		if g.stop != nil {
			g.stop()
		}
		g.wg.Wait()
	})
	return nil
}

func (g *Granter) answer(ctx context.Context) {
	for _, rec := range g.node.List(kekRequestPrefix) {
		name := strings.TrimPrefix(rec.Key, kekRequestPrefix)
		if name == g.node.Name() {
			continue
		}
		if _, ok := g.node.Get(kekGrantPrefix + name); ok {
			continue
		}
		grant, id, err := g.grant(rec.Value)
		if err != nil {
			g.log.Warn("KEK request refused", "peer_id", name, "err", err)
			continue
		}
		val, _ := json.Marshal(grant)
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = g.node.Apply(actx, cluster.Check(kekGrantPrefix+name, 0), cluster.Put(kekGrantPrefix+name, val))
		cancel()
		switch {
		case err == nil:
			g.log.Info("KEK granted", "peer_id", name, "identity", id.String())
		case errors.Is(err, cluster.ErrConflict):
			// Another node answered first.
		default:
			g.log.Warn("KEK grant not written", "peer_id", name, "err", err)
		}
	}
}

// grant checks a request and seals the KEK to its certificate.
func (g *Granter) grant(raw []byte) (kekGrant, pki.Identity, error) {
	var req kekRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return kekGrant{}, pki.Identity{}, fmt.Errorf("%w: %w", ErrGrant, err)
	}
	chain, err := parseChain(req.Chain)
	if err != nil {
		return kekGrant{}, pki.Identity{}, err
	}
	id, err := g.ident.Source().Verify(chain, g.ident.Authorizer())
	if err != nil {
		return kekGrant{}, pki.Identity{}, err
	}
	pub, ok := chain[0].PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return kekGrant{}, id, fmt.Errorf("%w: certificate key is not ECDSA", ErrGrant)
	}
	kek, err := os.ReadFile(g.kekFile)
	if err != nil {
		return kekGrant{}, id, fmt.Errorf("%w: %w", ErrGrant, err)
	}
	gr, err := sealKEK(pub, kek, g.node.Name())
	return gr, id, err
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("kek: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("kek: %w", err)
	}
	return nil
}
