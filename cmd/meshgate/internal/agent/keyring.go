package agent

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/meshgate/meshgate/cluster"
)

// keyringRecord is where the fleet's gossip keyring lives in the
// replicated store. Every node follows it, so one `meshgate keyring`
// command at any node changes the keys of the whole fleet, and a node that
// was down catches up over raft (mutual TLS) even if the fleet has moved
// to keys it never saw over gossip. The keys sit in the raft data under
// data_dir (0700), as Consul keeps them in each agent's local keyring file.
const keyringRecord = "gossip/keyring"

// fleetKeys is the stored keyring: base64 keys, the primary first.
type fleetKeys struct {
	Keys []string `json:"keys"`
}

// ErrKeyringOp: a keyring operation that cannot apply (unknown key, the
// primary removed, a bad key).
var ErrKeyringOp = errors.New("agent: keyring")

// changeKeys returns cur after op ("install", "use" or "remove") of key.
// Installing a key already there is not an error, as in Consul.
func changeKeys(cur []string, op string, key []byte) ([]string, error) {
	switch len(key) {
	case 16, 24, 32:
	default:
		return nil, fmt.Errorf("%w: key is %d bytes, want 16, 24 or 32", ErrKeyringOp, len(key))
	}
	k := base64.StdEncoding.EncodeToString(key)
	i := slices.Index(cur, k)
	out := slices.Clone(cur)
	switch op {
	case "install":
		if i < 0 {
			out = append(out, k)
		}
	case "use":
		if i < 0 {
			return nil, fmt.Errorf("%w: key is not installed; install it first", ErrKeyringOp)
		}
		out = append([]string{k}, slices.Delete(out, i, i+1)...)
	case "remove":
		switch {
		case i < 0:
			return nil, fmt.Errorf("%w: key is not installed", ErrKeyringOp)
		case i == 0:
			return nil, fmt.Errorf("%w: cannot remove the primary key; use another first", ErrKeyringOp)
		}
		out = slices.Delete(out, i, i+1)
	default:
		return nil, fmt.Errorf("%w: operation must be install, use or remove", ErrKeyringOp)
	}
	return out, nil
}

// storedKeys reads the fleet keyring and the index to check before
// replacing it (0 = none stored yet).
func (c *Cluster) storedKeys() (fleetKeys, uint64, error) {
	rec, ok := c.node.Get(keyringRecord)
	if !ok {
		return fleetKeys{}, 0, nil
	}
	var fk fleetKeys
	if err := json.Unmarshal(rec.Value, &fk); err != nil {
		return fleetKeys{}, rec.ModIndex, fmt.Errorf("agent: stored keyring: %w", err)
	}
	return fk, rec.ModIndex, nil
}

// syncKeyring makes the local gossip keyring match the stored one: new
// keys installed, the primary used, keys no longer listed removed.
func (c *Cluster) syncKeyring() error {
	fk, idx, err := c.storedKeys()
	if err != nil || idx == 0 || len(fk.Keys) == 0 {
		return err
	}
	kr := c.node.Catalog().Keyring()
	if kr == nil {
		return nil
	}
	want := make([][]byte, 0, len(fk.Keys))
	for _, s := range fk.Keys {
		k, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return fmt.Errorf("agent: stored keyring: %w", err)
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
	return nil
}

func (c *Cluster) keyringList(w http.ResponseWriter, _ *http.Request) {
	kr := c.node.Catalog().Keyring()
	if kr == nil {
		writeJSON(w, http.StatusOK, map[string]any{"keys": []string{}, "local": []string{}})
		return
	}
	fk, idx, err := c.storedKeys()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	local := kr.List()
	keys := fk.Keys
	if idx == 0 {
		keys = local // no fleet-wide change yet: every node runs its keyring_file
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys, "local": local})
}

// keyringOp changes the fleet keyring: a compare-and-set on the stored
// record (forwarded to the raft leader), then applied here at once; the
// other nodes apply it as the record reaches them.
func (c *Cluster) keyringOp(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Key string `json:"key"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body must be {\"key\": \"<base64>\"}"})
		return
	}
	key, err := base64.StdEncoding.DecodeString(req.Key)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "key is not standard base64"})
		return
	}
	kr := c.node.Catalog().Keyring()
	if kr == nil {
		writeJSON(w, http.StatusConflict, map[string]string{"error": "gossip encryption is off on this node (no gossip.keyring_file)"})
		return
	}
	fk, idx, err := c.storedKeys()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	cur := fk.Keys
	if idx == 0 {
		cur = kr.List()
	}
	next, err := changeKeys(cur, r.PathValue("op"), key)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	val, _ := json.Marshal(fleetKeys{Keys: next})
	if _, err := c.node.Apply(r.Context(), cluster.Check(keyringRecord, idx), cluster.Put(keyringRecord, val)); err != nil {
		status := http.StatusServiceUnavailable
		if errors.Is(err, cluster.ErrConflict) {
			status = http.StatusConflict // another keyring change won; retry
		}
		writeJSON(w, status, map[string]string{"error": err.Error()})
		return
	}
	if err := c.syncKeyring(); err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": next, "local": kr.List()})
}
