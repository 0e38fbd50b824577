package acl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Environment variables the CLI reads a token from.
const (
	EnvToken     = "MESHGATE_ADMIN_TOKEN"
	EnvTokenFile = "MESHGATE_ADMIN_TOKEN_FILE"
)

// TokenSources are the places a client looks for its admin token, in
// order: Flag, Env (MESHGATE_ADMIN_TOKEN), File (flag), EnvFile
// (MESHGATE_ADMIN_TOKEN_FILE), then DataDir/operator.token.
type TokenSources struct {
	Flag, Env, File, EnvFile, DataDir string
}

// ClientToken returns the token to send and where it came from ("" and
// "" when there is none: reads may still pass on loopback). A named file
// that cannot be read is an error; a missing default file is not.
func ClientToken(s TokenSources) (token, from string, err error) {
	switch {
	case s.Flag != "":
		return strings.TrimSpace(s.Flag), "--admin-token", nil
	case s.Env != "":
		return strings.TrimSpace(s.Env), EnvToken, nil
	}
	for _, f := range []struct{ path, name string }{{s.File, "--admin-token-file"}, {s.EnvFile, EnvTokenFile}} {
		if f.path == "" {
			continue
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			return "", "", fmt.Errorf("acl: admin token file (%s): %w", f.name, err)
		}
		return strings.TrimSpace(string(b)), f.name + " " + f.path, nil
	}
	if s.DataDir != "" {
		p := filepath.Join(s.DataDir, OperatorTokenFile)
		b, err := os.ReadFile(p)
		if err == nil {
			return strings.TrimSpace(string(b)), p, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", "", fmt.Errorf("acl: admin token file %s: %w", p, err)
		}
	}
	return "", "", nil
}

// Explain turns an admin refusal into one sentence for a CLI user: which
// credential is missing or lacking and how to supply one. from says where
// the client's token came from ("" when it sent none).
func Explain(status int, body ErrorBody, from string) string {
	need := string(body.Scope)
	if need == "" {
		need = "a suitable"
	}
	switch {
	case status == 401 && from == "":
		return fmt.Sprintf("this command needs an admin token with scope %s and none was found: pass --admin-token, set %s or %s, or run on a node whose data dir holds %s (use --data-dir)", need, EnvToken, EnvTokenFile, OperatorTokenFile)
	case status == 401:
		return fmt.Sprintf("the admin token from %s was refused (%s); supply a valid token with scope %s", from, body.Error, need)
	case status == 403 && body.Reason == "scope":
		return fmt.Sprintf("the admin token from %s lacks scope %s (%s); use a token with scope %s, e.g. from `meshgate acl token create --scope %s`", from, need, body.Error, need, need)
	}
	return body.Error
}
