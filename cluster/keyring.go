package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/meshgate/meshgate/cluster/catalog"
)

// KeyringKey is where the fleet's gossip keyring lives in the replicated
// store. Every node follows it, so one keyring change at any node changes
// the keys of the whole fleet, and a node that was down catches up over
// raft (mutual TLS) even if the fleet has moved to keys it never saw over
// gossip. The keys sit in the raft data under the data dir (0700), as
// Consul keeps them in each agent's local keyring file.
const KeyringKey = "gossip/keyring"

// FleetKeys is the stored keyring: base64 keys, the primary first.
type FleetKeys struct {
	Keys []string `json:"keys"`
}

// ErrKeyring: a keyring operation that cannot apply (unknown key, the
// primary removed, a bad key), or a stored keyring that does not decode.
var ErrKeyring = errors.New("cluster: keyring")

// Keyring operations of ChangeKeys.
const (
	KeyringInstall = "install"
	KeyringUse     = "use"
	KeyringRemove  = "remove"
)

// ChangeKeys returns cur after op (KeyringInstall, KeyringUse or
// KeyringRemove) of key. Installing a key already there is not an error,
// as in Consul. cur is not modified.
func ChangeKeys(cur []string, op string, key []byte) ([]string, error) {
	switch len(key) {
	case 16, 24, 32:
	default:
		return nil, fmt.Errorf("%w: key is %d bytes, want 16, 24 or 32", ErrKeyring, len(key))
	}
	k := base64.StdEncoding.EncodeToString(key)
	i := slices.Index(cur, k)
	out := slices.Clone(cur)
	switch op {
	case KeyringInstall:
		if i < 0 {
			out = append(out, k)
		}
	case KeyringUse:
		if i < 0 {
			return nil, fmt.Errorf("%w: key is not installed; install it first", ErrKeyring)
		}
		out = append([]string{k}, slices.Delete(out, i, i+1)...)
	case KeyringRemove:
		switch {
		case i < 0:
			return nil, fmt.Errorf("%w: key is not installed", ErrKeyring)
		case i == 0:
			return nil, fmt.Errorf("%w: cannot remove the primary key; use another first", ErrKeyring)
		}
		out = slices.Delete(out, i, i+1)
	default:
		return nil, fmt.Errorf("%w: operation must be install, use or remove", ErrKeyring)
	}
	return out, nil
}

// FleetKeys reads the fleet keyring from this node's replica and the
// index to check before replacing it (0 = none stored yet).
func (n *Node) FleetKeys() (FleetKeys, uint64, error) {
	rec, ok := n.Get(KeyringKey)
	if !ok {
		return FleetKeys{}, 0, nil
	}
	var fk FleetKeys
	if err := json.Unmarshal(rec.Value, &fk); err != nil {
		return FleetKeys{}, rec.ModIndex, fmt.Errorf("%w: stored keyring: %w", ErrKeyring, err)
	}
	return fk, rec.ModIndex, nil
}

// LocalKeys are the gossip keys this node runs with (base64, the primary
// first); nil when gossip is not encrypted.
func (n *Node) LocalKeys() []string {
	if kr := n.cat.Keyring(); kr != nil {
		return kr.List()
	}
	return nil
}

// ChangeKeyring applies op (see ChangeKeys) to the fleet keyring: a
// compare-and-set on the stored record (forwarded to the leader), then
// applied on this node at once; the other nodes follow as the record
// reaches them. Before any fleet-wide change, the node's own keys are the
// starting point. A concurrent change makes it fail with ErrConflict.
func (n *Node) ChangeKeyring(ctx context.Context, op string, key []byte) ([]string, error) {
	if n.cat.Keyring() == nil {
		return nil, fmt.Errorf("%w: gossip encryption is off on this node", ErrKeyring)
	}
	fk, idx, err := n.FleetKeys()
	if err != nil {
		return nil, err
	}
	cur := fk.Keys
	if idx == 0 {
		cur = n.LocalKeys()
	}
	next, err := ChangeKeys(cur, op, key)
	if err != nil {
		return nil, err
	}
	val, _ := json.Marshal(FleetKeys{Keys: next})
	if _, err := n.Apply(ctx, Check(KeyringKey, idx), Put(KeyringKey, val)); err != nil {
		return nil, err
	}
	if err := n.SyncKeyring(); err != nil {
		return nil, err
	}
	return next, nil
}

// SyncKeyring makes the local gossip keyring match the stored one: new
// keys installed, the primary used, keys no longer listed removed; then
// keeps the result in Config.KeyringFile. Nothing changes while no fleet
// keyring is stored or gossip is not encrypted here.
func (n *Node) SyncKeyring() error {
	n.keysMu.Lock()
	defer n.keysMu.Unlock()
	fk, idx, err := n.FleetKeys()
	if err != nil || idx == 0 || len(fk.Keys) == 0 {
		return err
	}
	kr := n.cat.Keyring()
	if kr == nil {
		return nil
	}
	want := make([][]byte, 0, len(fk.Keys))
	for _, s := range fk.Keys {
		k, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return fmt.Errorf("%w: stored keyring: %w", ErrKeyring, err)
		}
		want = append(want, k)
	}
	have := kr.List()
	for i, k := range want {
		if !slices.Contains(have, fk.Keys[i]) {
			if err := kr.Install(k); err != nil {
				return err
			}
		}
	}
	if len(have) == 0 || have[0] != fk.Keys[0] {
		if err := kr.Use(want[0]); err != nil {
			return err
		}
	}
	for _, s := range kr.List() {
		if slices.Contains(fk.Keys, s) {
			continue
		}
		k, _ := base64.StdEncoding.DecodeString(s)
		if bytes.Equal(k, want[0]) {
			continue
		}
		if err := kr.Remove(k); err != nil {
			return err
		}
	}
	return n.keepKeys()
}

// keepKeys writes the local keys to Config.KeyringFile if they differ.
// The caller holds keysMu.
func (n *Node) keepKeys() error {
	if n.cfg.KeyringFile == "" {
		return nil
	}
	keys := n.LocalKeys()
	if len(keys) == 0 {
		return nil
	}
	data := []byte(strings.Join(keys, "\n") + "\n")
	if old, err := os.ReadFile(n.cfg.KeyringFile); err == nil && bytes.Equal(old, data) {
		return nil
	}
	return WriteKeyringFile(n.cfg.KeyringFile, keys)
}

// WriteKeyringFile writes base64 keys, one a line, atomically with mode
// 0600 (the directory is made 0700 if missing).
func WriteKeyringFile(path string, keys []string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("%w: %w", ErrKeyring, err)
	}
	// A temp file of its own per write: two writers (a keyring command
	// and the store watcher) must not rename each other's file away.
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrKeyring, err)
	}
	tmp := f.Name()
	_, werr := f.Write([]byte(strings.Join(keys, "\n") + "\n"))
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%w: %w", ErrKeyring, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%w: %w", ErrKeyring, err)
	}
	return nil
}

// ReadKeyringFile reads gossip keys, one standard-base64 key per line (16,
// 24 or 32 bytes); the first is the primary. Blank lines and lines
// starting with # are skipped; a file without keys gives none. The error
// names the file and the line.
func ReadKeyringFile(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyring, err)
	}
	var keys [][]byte
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := catalog.ParseKey(line)
		if err != nil {
			return nil, fmt.Errorf("%w: %s line %d: want a base64 key of 16, 24 or 32 bytes", ErrKeyring, path, i+1)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// keyringLoop follows the stored keyring until the node closes and, with
// Config.SeedKeyring, publishes this node's keys while none is stored.
func (n *Node) keyringLoop(ch <-chan struct{}, cancel func()) {
	defer n.wg.Done()
	defer cancel()
	seeded := !n.cfg.SeedKeyring
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-ch:
			if err := n.SyncKeyring(); err != nil {
				n.log.Error("gossip keyring from the replicated store not applied", "err", err)
			}
		case <-retry.C:
			if seeded {
				continue
			}
			seeded = n.seedKeyring()
			if !seeded {
				retry.Reset(time.Second)
			}
		}
	}
}

// seedKeyring stores the local keys as the fleet keyring unless one is
// stored already. It reports whether nothing is left to do.
func (n *Node) seedKeyring() bool {
	keys := n.LocalKeys()
	if len(keys) == 0 {
		return true
	}
	if _, idx, _ := n.FleetKeys(); idx != 0 {
		return true
	}
	val, _ := json.Marshal(FleetKeys{Keys: keys})
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	_, err := n.Apply(ctx, Check(KeyringKey, 0), Put(KeyringKey, val))
	switch {
	case err == nil:
		n.log.Info("gossip key published as the fleet keyring")
		return true
	case errors.Is(err, ErrConflict):
		return true // another node published first; SyncKeyring follows it
	case n.ctx.Err() != nil:
		return true
	default:
		n.log.Debug("fleet keyring not published yet; retrying", "err", err)
		return false
	}
}
