package pki

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// kekSize is the key-encryption key length: AES-256.
const kekSize = 32

// kek seals and opens the CA private key with AES-256-GCM.
type kek struct {
	aead cipher.AEAD
	id   string // short fingerprint, stored next to the ciphertext
}

// loadKEK reads the key-encryption key from cfg.KEKFile or cfg.KEKEnv.
func loadKEK(cfg Config) (*kek, error) {
	var (
		raw    string
		source string
	)
	switch {
	case cfg.KEKFile != "":
		source = cfg.KEKFile
		fi, err := os.Stat(cfg.KEKFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKEK, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%w: %s is not a regular file", ErrKEK, cfg.KEKFile)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("%w: %s has mode %v; it must not be readable by group or others (chmod 600)", ErrKEK, cfg.KEKFile, fi.Mode().Perm())
		}
		b, err := os.ReadFile(cfg.KEKFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKEK, err)
		}
		raw = string(b)
	default:
		source = "$" + cfg.KEKEnv
		v, ok := os.LookupEnv(cfg.KEKEnv)
		if !ok {
			return nil, fmt.Errorf("%w: environment variable %s is not set", ErrKEK, cfg.KEKEnv)
		}
		raw = v
	}
	key, err := decodeKEK(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrKEK, source, err)
	}
	return newKEK(key)
}

func decodeKEK(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if b, err := hex.DecodeString(s); err == nil && len(b) == kekSize {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == kekSize {
		return b, nil
	}
	return nil, errors.New("want 32 bytes as 64 hex characters or standard base64")
}

func newKEK(key []byte) (*kek, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKEK, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKEK, err)
	}
	sum := sha256.Sum256(append([]byte("meshgate pki kek id\x00"), key...))
	return &kek{aead: aead, id: hex.EncodeToString(sum[:8])}, nil
}

// seal encrypts plain; aad binds the ciphertext to its context (the CA
// certificate it belongs to). The result is nonce || ciphertext.
func (k *kek) seal(plain, aad []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plain)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("%w: nonce: %v", ErrKEK, err)
	}
	return k.aead.Seal(nonce, nonce, plain, aad), nil
}

func (k *kek) open(sealed, aad []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(sealed) < n+k.aead.Overhead() {
		return nil, fmt.Errorf("%w: sealed CA key is truncated", ErrKEK)
	}
	plain, err := k.aead.Open(nil, sealed[:n], sealed[n:], aad)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot open the sealed CA key (wrong key-encryption key or tampered state)", ErrKEK)
	}
	return plain, nil
}

// WriteKEKFile creates path with a new random key-encryption key (64 hex
// characters), mode 0600. It refuses to overwrite an existing file.
func WriteKEKFile(path string) error {
	key := make([]byte, kekSize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("%w: %v", ErrKEK, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("%w: %v", ErrKEK, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s already exists; not overwriting", ErrKEK, path)
		}
		return fmt.Errorf("%w: %v", ErrKEK, err)
	}
	_, werr := f.WriteString(hex.EncodeToString(key) + "\n")
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(path)
		return fmt.Errorf("%w: %v", ErrKEK, err)
	}
	return nil
}
