package agent

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/meshgate/meshgate/cluster"
)

// keyringList serves GET /v1/keyring: the fleet keyring and the keys this
// node runs with.
func (c *Cluster) keyringList(w http.ResponseWriter, _ *http.Request) {
	local := c.node.LocalKeys()
	if local == nil {
		writeJSON(w, http.StatusOK, map[string]any{"keys": []string{}, "local": []string{}})
		return
	}
	fk, idx, err := c.node.FleetKeys()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	keys := fk.Keys
	if idx == 0 {
		keys = local // no fleet-wide keyring yet: every node runs its own keys
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys, "local": local})
}

// keyringOp serves POST /v1/keyring/{install|use|remove}.
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
	if c.node.LocalKeys() == nil {
		writeJSON(w, http.StatusConflict, map[string]string{"error": "gossip encryption is off on this node (gossip.encrypt: false, or no key)"})
		return
	}
	next, err := c.node.ChangeKeyring(r.Context(), r.PathValue("op"), key)
	if err != nil {
		status := http.StatusServiceUnavailable
		switch {
		case errors.Is(err, cluster.ErrConflict):
			status = http.StatusConflict // another keyring change won; retry
		case errors.Is(err, cluster.ErrKeyring):
			status = http.StatusBadRequest
		}
		writeJSON(w, status, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": next, "local": c.node.LocalKeys()})
}
